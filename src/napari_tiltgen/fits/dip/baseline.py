"""Baseline for time-resolved fits: a SIRT of the frames recorded nearest in time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.fits.dip.plan import check_int
from napari_tiltgen.fits.dip.times import acquisition_times
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.projector import Projector

__all__ = ["sliding_window_sirt", "sliding_window_sirt_iter"]


def sliding_window_sirt_iter(
    ts: TiltSeries,
    window: int = 25,
    *,
    times_s: Sequence[float] | np.ndarray | None = None,
    order: str | None = None,
    frame_time_s: float = 1.0,
    output_times_s: Sequence[float] | np.ndarray | None = None,
    iterations: int = 50,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    device: str = "auto",
) -> ProgressGen[np.ndarray]:
    """Baseline: a SIRT of the ``window`` frames recorded nearest in time to each output time.

    Parameters
    ----------
    ts
        Tilt series with angles (degrees).
    window
        Number of frames per reconstruction (e.g. 20-30 of 100).
    times_s, order, frame_time_s
        Acquisition times, see :func:`acquisition_times`.
    output_times_s
        Times (seconds) to reconstruct (default: every frame's time).
    iterations
        SIRT iterations per window.
    thickness_px, axis_offset_px, device
        As for :func:`~napari_tiltgen.recon.api.reconstruct_iter`.

    Returns
    -------
    ndarray
        ``(n_times, nz, ny, nx)`` float32, in the order of the sorted output times.
    """
    from napari_tiltgen.recon.iterative import sirt

    times = acquisition_times(ts, times_s, order=order, frame_time_s=frame_time_s)
    window = check_int("the window", window, 2)
    window = min(window, ts.n_tilts)
    dev = resolve_device(device)
    data = np.asarray(ts.data, dtype=np.float32)
    _, ny, nx = data.shape
    nz = int(thickness_px) if thickness_px else nx
    out_times = (
        times[np.argsort(times)]
        if output_times_s is None
        else np.sort(np.asarray(output_times_s, dtype=np.float64).reshape(-1))
    )
    out = np.empty((out_times.size, nz, ny, nx), dtype=np.float32)
    for i, t in enumerate(out_times):
        idx = np.sort(np.argsort(np.abs(times - t), kind="stable")[:window])
        proj = Projector(
            (nz, ny, nx), ts.tilt_angles[idx], ts.shifts_px[idx], axis_offset_px, nx, dev
        )
        out[i] = sirt(proj, data[idx], iterations).detach().float().cpu().numpy()
        yield Progress(
            (i + 1) / out_times.size,
            f"sliding-window SIRT {i + 1}/{out_times.size} ({window} frames)",
        )
    return out


def sliding_window_sirt(ts: TiltSeries, window: int = 25, **kwargs: Any) -> np.ndarray:
    """:func:`sliding_window_sirt_iter` run to completion."""
    return run(sliding_window_sirt_iter(ts, window, **kwargs), show=False)
