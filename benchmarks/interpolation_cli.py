"""Interpolation through the command a user runs, on full frames of held-out object families.

For each held-out family (``simulate.families.HELDOUT_FAMILIES``: supported-particle catalysts,
sintered aggregates, the texture generator on held-out images), object and gap, a series is
projected at -60..60 degrees every ``--step`` degrees (the objects of ``inpainting_cli.py``:
same seeds), degraded with the ``realistic`` setting (Poisson + Gaussian + scan-line noise,
residual jitter, tilt-axis error, vacuum offset and ramp; drawn per series), and every
``gap / step``-th frame is written as an MRC file with its ``.rawtlt`` (no tilt axis: the
command estimates it, as for a user's file without one). Then, each as a subprocess::

    tiltgen interpolate IN --out OUT.mrc --target-step STEP --device cpu --quiet [--method M]

for every ``--methods`` entry (``auto``, the default of the command, and ``linear``; any
``--method`` value; extra arguments after ``--`` go to every command). The inserted frames are
scored by PSNR (each frame scaled by its true range, as ``tiltgen eval-interpolation``)
against the clean frames (same geometry and background, no noise, no jitter) and against the
noisy frames that were left out (what a user can measure on real data). Run::

    OMP_NUM_THREADS=1 python benchmarks/interpolation_cli.py --gaps 4,8,12 --objects 0,1 --out D

Prints one line per case (with what ``auto`` chose) and a table per gap: the mean PSNR of each
method and its gain over linear. About 2-4 minutes per case at 128 px on one core (``auto``
fine-tunes for up to 60 s, twice when its transfer check runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_series(family: str, fi: int, k: int, size: int, step: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Angles, noisy frames and clean frames of object ``k`` of held-out family ``fi``."""
    from napari_tiltgen.nets.inpainting.data import HELDOUT_SEED
    from napari_tiltgen.simulate import families as F
    from napari_tiltgen.simulate.degrade import degrade, sample_params

    rng = np.random.default_rng([HELDOUT_SEED, 500 + fi, k, 7000])
    vol, info = F.make_sample(family, size, rng)
    n = int(round(120 / step)) + 1
    angles = np.linspace(-60.0, 60.0, n)
    blur = float(rng.uniform(0.3, 1.2))
    frames = F.project(vol, angles, info["pixel_size_A"], 0.0, blur)
    noisy, ref = degrade(frames, rng, sample_params(rng, "realistic"), return_clean=True)
    return angles, noisy, ref, float(info["pixel_size_A"])


def run_method(src: Path, out: Path, method: str, step: float, extra: list[str]
               ) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Run the command; its frames, their angles, its stderr lines and its wall time."""
    from napari_tiltgen.io import read_tilt_series

    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run(["tiltgen", "interpolate", str(src), "--out", str(out),
                        "--target-step", f"{step:g}", "--method", method, "--device", "cpu",
                        "--quiet", "--overwrite", *extra],
                       check=False, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"tiltgen interpolate ({method}) failed:\n{r.stderr[-2000:]}")
    ts = read_tilt_series(out)
    return (np.asarray(ts.data, np.float32), np.asarray(ts.tilt_angles, float),
            r.stderr.strip().splitlines(), time.perf_counter() - t0)


def main() -> None:
    from napari_tiltgen.io import write_mrc
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.interpolation.evaluate import frame_metrics
    from napari_tiltgen.simulate import families as F

    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128, help="frame size, px (default 128)")
    ap.add_argument("--step", type=float, default=2.0,
                    help="step of the full series, degrees (default 2)")
    ap.add_argument("--gaps", default="4,8,12", help="gaps of the sparse series, degrees")
    ap.add_argument("--objects", default="0,1", help="object numbers per family")
    ap.add_argument("--families", default=",".join(F.HELDOUT_FAMILIES),
                    help="held-out families to run (comma-separated)")
    ap.add_argument("--methods", default="linear,auto", help="--method values to run")
    ap.add_argument("--out", required=True, help="folder for the files")
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    rows = []
    for fi, fam in enumerate(F.HELDOUT_FAMILIES):
        if fam not in args.families.split(","):
            continue
        for k in [int(k) for k in args.objects.split(",")]:
            angles, noisy, ref, px = make_series(fam, fi, k, args.size, args.step)
            for gap in [float(g) for g in args.gaps.split(",")]:
                every = int(round(gap / args.step))
                if abs(every * args.step - gap) > 1e-6 or every < 2:
                    raise SystemExit(f"gap {gap:g} is not a multiple (>= 2) of the step")
                keep = np.arange(0, len(angles), every)
                left = np.setdiff1d(np.arange(keep[-1] + 1), keep)
                src = out / f"{fam}_{k}_gap{gap:g}.mrc"
                write_mrc(TiltSeries(noisy[keep], tilt_angles=angles[keep], pixel_size_A=px),
                          src, overwrite=True)  # with its .rawtlt sidecar
                row = {"family": fam, "k": k, "gap": gap, "frames": int(len(left))}
                for m in methods:
                    frames, ang, notes, wall = run_method(
                        src, out / f"{fam}_{k}_gap{gap:g}_{m}.mrc", m, args.step, extra)
                    if len(ang) != keep[-1] + 1 or np.abs(ang - angles[:len(ang)]).max() > 1e-3:
                        raise SystemExit(f"{m}: unexpected output angles {ang[:5]}...")
                    row[m] = {
                        "clean": float(frame_metrics(ref[left], frames[left])["psnr"].mean()),
                        "noisy": float(frame_metrics(noisy[left], frames[left])["psnr"].mean()),
                        "seconds": wall,
                        "chose": next((n.split("method: ", 1)[1] for n in notes
                                       if "tiltgen: method: " in n), m)}
                rows.append(row)
                print(f"{fam} #{k} gap {gap:g}: " + "; ".join(
                    f"{m} {row[m]['clean']:.2f}/{row[m]['noisy']:.2f} dB "
                    f"({row[m]['seconds']:.0f} s)" for m in methods), flush=True)
                for m in methods:
                    if row[m]["chose"] != m:
                        print(f"    {m}: {row[m]['chose'][:160]}", flush=True)
    base = methods[0]
    print(f"\nPSNR of the inserted frames against the clean / the noisy frames (dB), gain over "
          f"{base}:\n\n| gap (deg) | series | " + " | ".join(methods[1:] and [
              f"{m} - {base} (clean / noisy)" for m in methods[1:]]) + f" | {base} |"
          "\n|---|---|" + "---|" * max(len(methods), 1))
    for gap in sorted({r["gap"] for r in rows}):
        cs = [r for r in rows if r["gap"] == gap]
        cells = []
        for m in methods[1:]:
            dc = [r[m]["clean"] - r[base]["clean"] for r in cs]
            dn = [r[m]["noisy"] - r[base]["noisy"] for r in cs]
            cells.append(f"{np.mean(dc):+.2f} / {np.mean(dn):+.2f} (min {min(dc):+.2f} / "
                         f"{min(dn):+.2f})")
        b = (np.mean([r[base]["clean"] for r in cs]), np.mean([r[base]["noisy"] for r in cs]))
        print(f"| {gap:g} | {len(cs)} | " + " | ".join(cells)
              + f" | {b[0]:.2f} / {b[1]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
