"""Peer check: how much of the interpolation's gain on noisy stacks is denoising?

For each case and gap of ``interpolation_adapt.py`` (seed 0, 200 counts), ``tiltgen interpolate
--method linear`` and ``--method auto`` are run in-process (60 s adaptation, as the benchmark),
and the inserted frames are scored against the noisy and the clean truth as they are and after a
Gaussian smoothing of sigma 0.3-1.0 px. A smoothed linear interpolation is the peer any learned
method has to beat on noisy data: a noisy frame's noise is unpredictable, so the closest guess is
a clean one, and smoothing alone moves towards it.

    OMP_NUM_THREADS=1 python benchmarks/interpolation_smoothing.py --cases needle,catalyst --gaps 8

Prints one row per case, gap, method and sigma. Measured 2 Dec 2026 (docs/interpolation.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interpolation_adapt as B  # the benchmark's objects, CLI runner and metric

from napari_tiltgen.io import write_mrc
from napari_tiltgen.io.model import TiltSeries

SIGMAS = (0.0, 0.3, 0.5, 0.7, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="needle,catalyst")
    ap.add_argument("--gaps", default="8")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--adapt-seconds", type=float, default=60.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| case | gap | method | smoothing sigma (px) | PSNR vs noisy truth | vs clean truth |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            for gap in [float(g) for g in args.gaps.split(",")]:
                ts, clean, _ = B.make_series(case, args.size, gap / 2, 200.0, 0)
                sparse = TiltSeries(ts.data[::2], tilt_angles=ts.tilt_angles[::2],
                                    pixel_size_A=ts.pixel_size_A)
                path = Path(tmp) / f"{case}_{gap:g}.mrc"
                write_mrc(sparse, path)
                for method in ("linear", "auto"):
                    out = Path(tmp) / f"{case}_{gap:g}_{method}_out.mrc"
                    frames, pred, _, _ = B.run_cli(path, out, method, args.adapt_seconds, "cpu")
                    # the vacuum level tiltgen removed, measured on the real frames, added back
                    est = frames[pred] + float(np.median(sparse.data - frames[~pred]))
                    for s in SIGMAS:
                        e = np.stack([gaussian_filter(f, s) for f in est]) if s else est
                        print(f"| {case} | {gap:g} | {method} | {s:g} | "
                              f"{B.psnr_frames(ts.data[1::2], e):.2f} | "
                              f"{B.psnr_frames(clean[1::2], e):.2f} |", flush=True)


if __name__ == "__main__":
    main()
