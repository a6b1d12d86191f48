"""Reprojection consistency of a tilt series: SIRT of a binned stack with its shifts,
reprojected with the same geometry (the figure of merit of the alignment and of the tilt-axis
searches; :mod:`napari_tiltgen.align.projection_matching`,
:mod:`napari_tiltgen.align.axis_search`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tiltgen.core.progress import run
from napari_tiltgen.io.model import TiltSeries

__all__ = ["reprojection_error"]


def _bin(ts: TiltSeries, max_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Block-averaged frames (at most ``max_size`` px), their shifts in binned pixels, factor."""
    from napari_tiltgen.align.common import _bin_frames, _border_stats

    frames = np.asarray(ts.data, dtype=np.float32)
    frames, b = _bin_frames(frames, max_size)
    frames = np.asarray(frames, dtype=np.float32)
    bg, _ = _border_stats(frames)
    frames = frames - bg[:, None, None].astype(np.float32)
    return np.ascontiguousarray(frames), np.asarray(ts.shifts_px, np.float64) / b, b


def _sirt(frames: np.ndarray, angles: np.ndarray, shifts: np.ndarray, iterations: int,
          thickness: int | None = None) -> tuple[Any, Any]:
    """SIRT volume (torch) and the projector, on the binned stack."""
    import torch

    from napari_tiltgen.core.devices import num_threads
    from napari_tiltgen.physics.projector import Projector
    from napari_tiltgen.recon.iterative import sirt_iter

    _, ny, nx = frames.shape
    nz = int(thickness) if thickness else nx
    proj = Projector((nz, ny, nx), angles, shifts, 0.0, nx, "cpu")
    with num_threads(1), torch.no_grad():
        x = run(sirt_iter(proj, torch.from_numpy(frames), iterations, 1.0, True,
                          preview_every=0), show=False)
    return x, proj


def _reproject(x: Any, proj: Any) -> np.ndarray:
    import torch

    from napari_tiltgen.core.devices import num_threads

    with num_threads(1), torch.no_grad():
        return proj.forward(x).numpy()


def reprojection_error(ts: TiltSeries, *, iterations: int = 20, max_size: int = 64,
                       thickness_px: int | None = None) -> float:
    """``||A x - b|| / ||b||`` for the SIRT volume ``x`` of the (binned) series with its shifts.

    The tilt axis must run along y. Frames are binned to at most ``max_size`` px and have their
    border median removed; ``iterations`` SIRT iterations. Lower is better: well-aligned data
    are consistent with one volume.
    """
    angles = ts.require_angles()
    frames, shifts, b = _bin(ts, max_size)
    x, proj = _sirt(frames, angles, shifts, iterations,
                    None if thickness_px is None else max(1, int(thickness_px) // b))
    p = _reproject(x, proj)
    return float(np.linalg.norm(p - frames) / max(np.linalg.norm(frames), 1e-30))
