"""The HAADF vacuum level (``align.prepare.vacuum_levels``) against the known offset of simulated series.

Every series is an object family of ``simulate.families`` projected over a 60- or 80-degree
wedge (2-degree steps, 128 px), noise-free (``clean``) or with the realistic degradation of
``simulate.degrade`` (Poisson + Gaussian + scan-line noise, jitter, axis error, a vacuum offset
and a drifting ramp). The true vacuum of a frame is the drawn offset (the ramp averages to it
over the frame); the error is ``|level - offset|`` as a fraction of the clean frames' range.
Held-out families use the seeds of ``inpainting_transfer.make_case`` (``--oversample 2``: the
object drawn and projected on a 2x finer grid and the frames binned, as
``inpainting_transfer.make_fine_case``), training families seeds of their own.

Prints per series the median and largest per-frame error and the fraction of frames found to
show vacuum, then the number of series with a frame off by more than 5 % of the range:

    OMP_NUM_THREADS=1 python benchmarks/vacuum_levels.py                      # held-out, 3 objects
    OMP_NUM_THREADS=1 python benchmarks/vacuum_levels.py --oversample 2
    OMP_NUM_THREADS=1 python benchmarks/vacuum_levels.py --families train --objects 2

Run it on a checkout of an earlier commit to measure the estimator there (the import is the
installed package's). About 2 s per series on one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_tiltgen.align.prepare import vacuum_levels
from napari_tiltgen.nets.inpainting.data import HELDOUT_SEED, wedge_angles
from napari_tiltgen.simulate import families as F
from napari_tiltgen.simulate.degrade import DegradeParams, _range, degrade, sample_params


def series(family: str, k: int, wedge: float, noise: str, size: int, oversample: int
           ) -> tuple[np.ndarray, float, float]:
    """(frames, true vacuum level, clean range) with the draws of ``make_case``."""
    tag = (500 + F.HELDOUT_FAMILIES.index(family) if family in F.HELDOUT_FAMILIES
           else 900 + list(F.FAMILIES).index(family))
    rng = np.random.default_rng([HELDOUT_SEED, tag, k, int(wedge)])
    n = int(oversample)
    vol, info = F.make_sample(family, n * size, rng)
    angles = wedge_angles(wedge, 2.0)
    blur = float(rng.uniform(0.3, 1.2))
    frames = F.project(vol, angles, info["pixel_size_A"], 0.0, n * blur)
    if n > 1:
        frames = frames.reshape(len(angles), size, n, size, n).mean((2, 4)) / n
    params = sample_params(rng, "realistic") if noise == "realistic" else DegradeParams()
    _, span = _range(frames)
    out = degrade(np.ascontiguousarray(frames, np.float32), rng, params)
    return out, span * params.offset, span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="heldout",
                    help="heldout, train, or a comma-separated list")
    ap.add_argument("--objects", type=int, default=3, help="objects per family and wedge")
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--noise", default="clean,realistic")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--oversample", type=int, default=1)
    args = ap.parse_args()
    fams = {"heldout": list(F.HELDOUT_FAMILIES), "train": list(F.TRAIN_FAMILIES)}.get(
        args.families, args.families.split(","))
    worst, t0 = [], time.perf_counter()
    print("| noise | family | object | wedge | median error | largest error | frames with vacuum |"
          "\n|---|---|---|---|---|---|---|")
    for noise in args.noise.split(","):
        for fam in fams:
            for k in range(args.objects):
                for wedge in [float(w) for w in args.wedges.split(",")]:
                    d, true, span = series(fam, k, wedge, noise, args.size, args.oversample)
                    levels, found, _ = vacuum_levels(d, details=True) \
                        if "details" in vacuum_levels.__code__.co_varnames \
                        else (vacuum_levels(d), np.ones(len(d), bool), None)
                    err = np.abs(levels - true) / span
                    worst.append(float(err.max()))
                    print(f"| {noise} | {fam} | {k} | {wedge:g} | {np.median(err):.3f} | "
                          f"{err.max():.3f} | {found.mean():.2f} |", flush=True)
    bad = sum(w > 0.05 for w in worst)
    print(f"\nseries with a frame's level off by more than 5 % of the range: {bad} of "
          f"{len(worst)} (largest {max(worst):.3f}); {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
