"""Benchmark: what turning the frames costs the frames a tilt-frame interpolation inserts.

Every command turns the frames so that the tilt axis runs along y (``align.prepare``) and
``tiltgen interpolate`` turns the inserted frames back to the recorded geometry
(``align.prepare.unprepare_frames``): the inserted frames are resampled twice. This script
measures that cost on the stand-ins of ``benchmarks/interpolation_adapt.py`` (a jittered needle
at 33.6 Å pixels, a supported catalyst; Poisson noise at ``--counts``) whose frames are turned
so that the tilt axis lies at ``alpha`` degrees from y (band-limited, before the noise). The
series every 4 degrees over -60..60 keeps every other frame (8-degree gaps) and the packaged
four-frame network predicts the frame in the middle of each gap, three ways:

* ``none``: on the frames as they are (the network sees an axis ``alpha`` off y);
* ``spline``: frames turned by a cubic spline so the axis runs along y, the predicted frames
  turned back the same way (what ``tiltgen interpolate`` did until 4 Dec 2026; the
  reconstructions still turn their frames this way);
* ``fourier``: the same with the band-limited rotation
  (:func:`napari_tiltgen.physics.shifts.rotate_frames`, three Fourier shears; what
  ``tiltgen interpolate`` does since then).

Prints the gain over linear interpolation of the same gaps, in dB, against the noisy left-out
frames and against the clean ones (PSNR with each true frame's range).

    OMP_NUM_THREADS=1 python benchmarks/interpolation_rotation.py --cases needle,catalyst \
        --alphas 0.6,2,5,10 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interpolation_adapt import CASES, psnr_frames

WAYS = ("none", "spline", "fourier")


def turned(frames: np.ndarray, phi: float, way: str) -> np.ndarray:
    from napari_tiltgen.align.common import turn_frames

    if way == "none" or phi == 0.0:
        return frames
    return turn_frames(frames, phi, 3 if way == "spline" else None)


def one(case: str, n: int, alpha: float, counts: float, seed: int) -> dict:
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.interpolation.frames import interpolate_at, load_pretrained
    from napari_tiltgen.physics.projector import forward_project
    from napari_tiltgen.physics.shifts import rotate_frames

    spec = CASES[case]
    angles = np.arange(-60.0, 60.0 + 1e-6, 4.0)
    rng = np.random.default_rng(seed)
    shifts = (rng.normal(scale=spec["jitter_px"], size=(angles.size, 2))
              if spec["jitter_px"] else None)
    clean = forward_project(torch.from_numpy(spec["volume"](n)), angles, shifts).numpy()
    clean = (clean / clean.max()).astype(np.float32)
    if alpha:  # the tilt axis at alpha degrees from y
        clean = rotate_frames(clean, -alpha)
    noisy = (rng.poisson(np.clip(clean, 0, None) * counts) / counts).astype(np.float32)
    keep, hid = np.arange(0, angles.size, 2), np.arange(1, angles.size, 2)
    pairs = [(i, i + 1, [0.5]) for i in range(keep.size - 1)]
    lin = 0.5 * (noisy[keep][:-1] + noisy[keep][1:])
    net = load_pretrained("context", "cpu")
    row = {"case": case, "size": n, "alpha": alpha, "seed": seed}
    for way in WAYS:
        ts = TiltSeries(turned(noisy[keep], alpha, way), tilt_angles=angles[keep],
                        pixel_size_A=spec["pixel_size_A"])
        out, _, _ = run(interpolate_at(ts, pairs, "pretrained", model=net, device="cpu",
                                       quiet=True), show=False)
        out = turned(out, -alpha, way)
        row[way] = {"noisy": psnr_frames(noisy[hid], out) - psnr_frames(noisy[hid], lin),
                    "clean": psnr_frames(clean[hid], out) - psnr_frames(clean[hid], lin)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="needle,catalyst")
    p.add_argument("--size", type=int, default=256, help="frame side, px (default 256)")
    p.add_argument("--alphas", default="0.6,2,5,10", help="tilt-axis angles from y, degrees")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--counts", type=float, default=200.0)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for case in args.cases.split(","):
        for alpha in (float(a) for a in args.alphas.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(one(case, args.size, alpha, args.counts, seed))
                r = rows[-1]
                print(f"{case} alpha {alpha:g} seed {seed}: " + ", ".join(
                    f"{w} {r[w]['noisy']:+.2f}/{r[w]['clean']:+.2f}" for w in WAYS),
                    file=sys.stderr, flush=True)
    print("| case | axis from y (deg) | seeds | gain over linear, noisy / clean truth (dB): "
          + " | ".join(WAYS) + " |")
    print("|---|---|---|" + "---|" * len(WAYS))
    for case in args.cases.split(","):
        for alpha in sorted({r["alpha"] for r in rows}):
            sel = [r for r in rows if r["case"] == case and r["alpha"] == alpha]
            cells = [f"{np.mean([r[w]['noisy'] for r in sel]):+.2f} / "
                     f"{np.mean([r[w]['clean'] for r in sel]):+.2f}" for w in WAYS]
            print(f"| {case} | {alpha:g} | {len(sel)} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
