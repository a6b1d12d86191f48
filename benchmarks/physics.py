"""The package's forward models side by side: agreement and time on the same geometry.

Projects one smooth phantom through the batched Joseph projector (``Projector``), its per-tilt
block-diagonal mode (``FrameProjector``, frame ``k`` = the same volume at tilt ``k``) and the INR's
differentiable ray projector (``RayProjector``), all built from one ``Geometry`` with sub-pixel
shifts, and prints the relative differences to the batched projector and the wall time of each
(the per-tilt time includes assembling its block-diagonal matrix on the first call).

Usage::

    python benchmarks/physics.py                       # 32^3 and 64^3, 41 tilts, 1 thread
    python benchmarks/physics.py --sizes 96 --tilts 61 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.per_tilt import FrameProjector
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.physics.rays import RayProjector


def _phantom(n: int, seed: int = 0) -> torch.Tensor:
    """Gaussian-filtered noise, zero within n/6 of every face (smooth, inside the box)."""
    v = ndimage.gaussian_filter(np.random.default_rng(seed).random((n, n, n)), n / 12)
    m = max(1, n // 6)
    v[:m], v[-m:], v[:, :m], v[:, -m:], v[:, :, :m], v[:, :, -m:] = 0, 0, 0, 0, 0, 0
    return torch.from_numpy((v / v.max()).astype(np.float32))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(size: int, n_tilts: int, samples: int | None) -> list[str]:
    vol = _phantom(size)
    rng = np.random.default_rng(1)
    angles = np.linspace(-60.0, 60.0, n_tilts)
    shifts = np.stack([np.zeros(n_tilts), rng.uniform(-1.5, 1.5, n_tilts)], 1)  # dx only
    g = Geometry(tuple(vol.shape), angles, shifts, axis_offset_px=0.3)
    batched = Projector.from_geometry(g)
    batched._ensure_matrices()  # build the operator outside the timing
    ref, t_b = _timed(lambda: batched.forward(vol))
    frames = FrameProjector(g)
    images = vol.permute(1, 0, 2)[:, None].expand(-1, n_tilts, -1, -1)  # same volume, every frame
    per, t_p = _timed(lambda: frames(images.contiguous(), np.arange(n_tilts)))
    rays = RayProjector(g, n_samples=samples)
    ray, t_r = _timed(lambda: rays.project_volume(vol))

    def rel(a: torch.Tensor) -> str:
        return f"{float(torch.linalg.vector_norm(a - ref) / torch.linalg.vector_norm(ref)):.2e}"

    n = f"{size}^3 x {n_tilts}"
    return [
        f"| {n} | Projector (batched Joseph) | 0 | {t_b:.3f} |",
        f"| {n} | FrameProjector (per-tilt) | {rel(per)} | {t_p:.3f} |",
        f"| {n} | RayProjector ({rays.n_samples} samples/ray) | {rel(ray)} | {t_r:.3f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--tilts", type=int, default=41)
    ap.add_argument("--samples", type=int, default=None, help="ray samples (default max(nz, nx))")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU; shifts dx in [-1.5, 1.5] px")
    print("| volume x tilts | model | rel. L2 difference to Projector | seconds |")
    print("|---|---|---|---|")
    for n in args.sizes:
        for row in run(n, args.tilts, args.samples):
            print(row)


if __name__ == "__main__":
    main()
