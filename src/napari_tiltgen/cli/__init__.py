"""``tiltgen`` command line. Never imports Qt or napari.

Each sub-command lives in its own module of this package, which defines
``register(subparsers)``: it adds its parser and sets ``func`` to a function taking the parsed
arguments and returning an exit code. Add new modules to :data:`COMMAND_MODULES`.

Errors the user can cause (:class:`~napari_tiltgen.errors.TiltgenError`) are printed as one line
``tiltgen: error: <file>: <problem>`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_tiltgen.errors import Cancelled, TiltgenError

COMMAND_MODULES: list[str] = [
    "info",
    "demo",
    "reconstruct",
    "interpolation",
    "simulate",
    "fit_inr",
    "inpainting",
    "fit_dip",
]


def build_parser() -> argparse.ArgumentParser:
    from napari_tiltgen import __version__

    parser = argparse.ArgumentParser(
        prog="tiltgen",
        description="Electron tomography of nanomaterials: tilt-series I/O, reconstruction, "
        "enhancement and simulation (the napari-tiltgen plugin's headless front end).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_tiltgen.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tiltgen`` script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TiltgenError as exc:
        print(f"tiltgen: error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("tiltgen: cancelled", file=sys.stderr)
        return 130


def add_angle_options(p: argparse.ArgumentParser) -> None:
    """Options shared by commands that read a tilt series whose angles may be missing."""
    g = p.add_argument_group("tilt angles (when the file and its sidecars have none)")
    g.add_argument("--tilt-start", type=float, metavar="DEG", help="first tilt angle, degrees")
    g.add_argument("--tilt-step", type=float, metavar="DEG", help="tilt increment, degrees")
    g.add_argument("--tilt-file", metavar="FILE",
                   help="text file with one angle per line (.rawtlt/.tlt), overrides the file's")
    g.add_argument("--pixel-size", type=float, metavar="Å", help="pixel size in Å, overrides")


def read_series_from_args(args: argparse.Namespace):
    """Read ``args.input`` as a tilt series, applying the angle options of :func:`add_angle_options`."""
    from napari_tiltgen.io import read_tilt_series

    return read_tilt_series(
        args.input,
        tilt_start=getattr(args, "tilt_start", None),
        tilt_step=getattr(args, "tilt_step", None),
        tilt_file=getattr(args, "tilt_file", None),
        pixel_size_A=getattr(args, "pixel_size", None),
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
