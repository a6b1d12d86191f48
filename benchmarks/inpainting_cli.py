"""Inpainting through the commands a user runs, on full frames of held-out object families.

For each held-out family (``simulate.families.HELDOUT_FAMILIES``), object and wedge, the
degraded series of ``inpainting_transfer.py`` (realistic noise, jitter, offset, ramp, blur) is
made with all its rows (``--size`` cubed volume), written as an MRC file with a ``.rawtlt``,
and run through ``tiltgen reconstruct IN --out SIRT.mrc --method sirt --iterations 100 --align
no`` and ``tiltgen inpaint IN OUT.mrc``, each as a subprocess (intensity preparation and the
tilt-axis step included, exactly as a user gets them). Extra arguments after ``--`` go to both
commands, e.g. ``-- --tilt-axis 0`` (the true axis is 0 plus at most 1 degree of error):

    OMP_NUM_THREADS=1 python benchmarks/inpainting_cli.py --wedges 60 --objects 0,1 --out D
    OMP_NUM_THREADS=1 python benchmarks/inpainting_cli.py --wedges 60 --objects 0,1 --out D -- --tilt-axis 0

Prints NRMSE of both against the truth per case and the ratio of the means per wedge (about a
minute per case at 128 px on one core). Measured 2 Dec 2026 (docs/inpainting.md).

``--noise clean`` makes the same objects noise-free and jitter-free; ``--oversample 2`` draws and
projects them on a twice finer grid and bins the frames (data that the reconstruction's
projector does not reproduce exactly); ``--sirt-iterations N`` compares with SIRT-N:

    OMP_NUM_THREADS=1 python benchmarks/inpainting_cli.py --noise clean --oversample 2 --out D
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inpainting_transfer as B  # the benchmark's cases and metric

from napari_tiltgen.io import read_volume, write_mrc
from napari_tiltgen.simulate import families as F
from napari_tiltgen.simulate.degrade import DegradeParams


def run_case(stem: Path, extra: list[str], sirt_iterations: int = 100,
             weights: str | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    vols, notes = {}, {}
    for name in ("sirt", "inpaint"):
        out = Path(f"{stem}_{name}.mrc")
        out.unlink(missing_ok=True)
        cmd = (["reconstruct", f"{stem}.mrc", "--out", str(out), "--method", "sirt",
                "--iterations", str(sirt_iterations), "--align", "no"] if name == "sirt"
               else ["inpaint", f"{stem}.mrc", str(out)]
               + (["--weights", weights] if weights else []))
        r = subprocess.run(["tiltgen", *cmd, "--device", "cpu", "--quiet", *extra],
                           check=False, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"tiltgen {cmd[0]} failed:\n{r.stderr[-2000:]}")
        notes[name] = r.stderr.strip().splitlines()
        vols[name] = np.asarray(read_volume(out).data, np.float32)
    return vols, notes


def clean(_params: DegradeParams) -> DegradeParams:
    """No noise, jitter, axis error, offset or ramp (the object and blur stay the same)."""
    return DegradeParams()


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--objects", default="0,1", help="object numbers per family")
    ap.add_argument("--families", default=",".join(F.HELDOUT_FAMILIES),
                    help="held-out families to run (comma-separated)")
    ap.add_argument("--noise", choices=("realistic", "clean"), default="realistic",
                    help="clean: the same objects, jitter-free and noise-free projections")
    ap.add_argument("--oversample", type=int, default=1,
                    help="N > 1: draw and project each object on an N x finer grid, bin the "
                    "frames (data from a projector other than the reconstruction's)")
    ap.add_argument("--sirt-iterations", type=int, default=100,
                    help="iterations of the SIRT compared with (tiltgen reconstruct's default: "
                    "100; the inpainting's bound stays SIRT-100)")
    ap.add_argument("--weights", help="inpainting weights for tiltgen inpaint (default: the "
                    "packaged model)")
    ap.add_argument("--out", required=True, help="folder for the files")
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for wedge in [float(w) for w in args.wedges.split(",")]:
        for fi, fam in enumerate(F.HELDOUT_FAMILIES):
            if fam not in args.families.split(","):
                continue
            for k in [int(k) for k in args.objects.split(",")]:
                t0 = time.perf_counter()
                seed = [B.HELDOUT_SEED, 500 + fi, k, int(wedge)]
                adjust = clean if args.noise == "clean" else None
                if args.oversample > 1:
                    truth, ts = B.make_fine_case(fam, args.size, args.size, wedge, 2.0, seed,
                                                 args.oversample, adjust)
                else:
                    truth, ts = B.make_case(fam, args.size, args.size, wedge, 2.0, seed,
                                            adjust=adjust)
                stem = out / f"{fam}_{k}_{wedge:g}"
                write_mrc(ts, f"{stem}.mrc", overwrite=True)  # with its .rawtlt sidecar
                vols, notes = run_case(stem, extra, args.sirt_iterations, args.weights)
                e = {n: B.nrmse(truth, v) if v.shape == truth.shape else float("nan")
                     for n, v in vols.items()}
                axis = [n for n in notes["inpaint"] if "tilt axis" in n]
                rows.append({"family": fam, "k": k, "wedge": wedge, **e, "notes": notes})
                print(f"{fam} #{k} {wedge:g}: SIRT {e['sirt']:.4f}, inpaint {e['inpaint']:.4f} "
                      f"({time.perf_counter() - t0:.0f} s) {axis[0] if axis else ''}", flush=True)
    print(f"\n| wedge | objects | SIRT-{args.sirt_iterations} NRMSE | inpaint NRMSE | ratio |"
          "\n|---|---|---|---|---|")
    for wedge in sorted({r["wedge"] for r in rows}):
        cs = [r for r in rows if r["wedge"] == wedge]
        s, i = np.mean([r["sirt"] for r in cs]), np.mean([r["inpaint"] for r in cs])
        print(f"| {wedge:g} | {len(cs)} | {s:.4f} | {i:.4f} | {i / s:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
