"""``python -m napari_tiltgen.models --update-checksums``: record the shipped weights' sha256."""

import argparse
import sys

from napari_tiltgen.models import (
    SUMS_FILE,
    recorded_sums,
    sha256_of,
    shipped_files,
    update_checksums,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_tiltgen.models",
                                description="Check or record the sha256 of the shipped weights.")
    p.add_argument("--update-checksums", action="store_true",
                   help=f"write the current sums to {SUMS_FILE}")
    args = p.parse_args(argv)
    if args.update_checksums:
        for name, h in update_checksums().items():
            print(f"{h}  {name}")
        print(f"recorded in {SUMS_FILE}")
        return 0
    sums, bad = recorded_sums(), 0
    for f in shipped_files():
        ok = sums.get(f.name) == sha256_of(f)
        bad += not ok
        print(f"{'OK  ' if ok else 'BAD '} {f.name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
