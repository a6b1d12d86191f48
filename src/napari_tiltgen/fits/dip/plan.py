"""Checking a DIP fit before it starts: settings, series, frame order, resume state.

:func:`plan_fit` turns the keyword arguments of :func:`~napari_tiltgen.fits.dip.fit_dip_iter`
(:class:`Settings`) and the tilt series into a :class:`FitPlan`: every user error is raised here,
before any compute, as one :class:`~napari_tiltgen.core.errors.TiltgenError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.fits.dip.model import _load_checkpoint
from napari_tiltgen.fits.dip.times import acquisition_times
from napari_tiltgen.io.model import TiltSeries

__all__ = ["FitPlan", "Settings", "check_int", "plan_fit"]


# ============================================================================ helpers
def check_int(name: str, value: Any, lo: int) -> int:
    v = int(value)
    if v < lo:
        raise TiltgenError(f"{name} must be at least {lo}; got {value}.")
    return v


def fingerprint_of(
    data: np.ndarray,
    angles: np.ndarray,
    times: np.ndarray,
    shifts: np.ndarray,
    config: dict[str, Any],
) -> str:
    h = hashlib.sha256()
    for a in (data, angles, times, shifts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The keyword arguments of :func:`fit_dip_iter`, as given (checked by :func:`plan_fit`)."""

    steps: Any
    temporal_smoothness: Any
    times_s: Any
    order: Any
    frame_time_s: Any
    output_times_s: Any
    n_components: Any
    channels: Any
    time_frequencies: Any
    latent_stride: Any
    slices_per_step: Any
    frames_per_step: Any
    learning_rate: Any
    lr_half_life_steps: Any
    warm_start_steps: Any
    sirt_iterations: Any
    thickness_px: Any
    axis_offset_px: Any
    device: Any
    seed: Any
    checkpoint: Any
    checkpoint_every: Any
    resume: Any
    preview_every: Any
    max_output_bytes: Any
    n_threads: Any


@dataclass(frozen=True, kw_only=True)
class FitPlan:
    """A checked fit: data and frames sorted by time, network and fit settings, resume state."""

    ts: TiltSeries
    data: np.ndarray  # (n_frames, ny, nx) float32, stack order
    order_t: np.ndarray  # stack indices of the frames sorted by time
    f_times: np.ndarray  # frame times (s), sorted
    f_angles: np.ndarray  # frame angles (deg), in time order
    f_shifts: np.ndarray  # frame shifts (dy, dx) px, in time order
    s_frames: np.ndarray  # normalised frame times in [0, 1]
    out_times: np.ndarray  # output times (s), sorted
    nz: int
    arch: dict[str, Any]  # DIPNetwork keyword arguments
    params: dict[str, Any]  # fit settings (provenance, checkpoints)
    state: dict[str, Any] | None  # checkpoint to resume, else None
    fingerprint: str
    checkpoint: Path | None
    max_output_bytes: int
    preview_every: int


def plan_fit(ts: TiltSeries, cfg: Settings) -> FitPlan:
    """Check the settings and the series; sort the frames by time; read a checkpoint to resume."""
    steps = check_int("the number of steps", cfg.steps, 0)
    warm_start_steps = check_int("warm_start_steps", cfg.warm_start_steps, 0)
    sirt_iterations = check_int("sirt_iterations", cfg.sirt_iterations, 1)
    n_components = check_int("n_components", cfg.n_components, 1)
    channels = check_int("channels", cfg.channels, 4)
    slices_per_step = check_int("slices_per_step", cfg.slices_per_step, 1)
    checkpoint_every = check_int("checkpoint_every", cfg.checkpoint_every, 1)
    lr_half_life_steps = check_int("lr_half_life_steps", cfg.lr_half_life_steps, 0)
    temporal_smoothness, learning_rate = cfg.temporal_smoothness, cfg.learning_rate
    if not (np.isfinite(temporal_smoothness) and temporal_smoothness >= 0):
        raise TiltgenError(f"temporal_smoothness must be 0 or positive; got {temporal_smoothness}.")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise TiltgenError(f"learning_rate must be positive; got {learning_rate}.")
    where = ts.provenance.get("source")
    times = acquisition_times(ts, cfg.times_s, order=cfg.order, frame_time_s=cfg.frame_time_s)
    axis = ((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
    if abs(axis) > 45.0:
        raise TiltgenError(
            f"the tilt axis is at {ts.tilt_axis_angle_deg:.1f} deg from the image Y axis (near "
            "horizontal); the fit needs it along y. Rotate the stack first (Tilt series widget, "
            "or TiltSeries.with_vertical_tilt_axis()).",
            where,
        )
    if ts.n_tilts < 2:
        raise TiltgenError("a time-resolved fit needs at least 2 frames.", where)
    data = np.asarray(ts.data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise TiltgenError(
            "the tilt series contains NaN or infinite pixels; fix or crop them first.", where
        )
    n_frames, ny, nx = data.shape
    nz = int(cfg.thickness_px) if cfg.thickness_px else nx
    if nz < 4 or nx < 4:
        raise TiltgenError(
            f"the volume must be at least 4 voxels wide and thick; got nz={nz}, nx={nx}.", where
        )
    angles = ts.tilt_angles
    order_t = np.argsort(times, kind="stable")  # frames sorted by time
    f_times = times[order_t]
    t_first, t_last = float(f_times[0]), float(f_times[-1])
    out_times = (
        f_times
        if cfg.output_times_s is None
        else np.sort(np.asarray(cfg.output_times_s, dtype=np.float64).reshape(-1))
    )
    frames_per_step = (
        n_frames
        if cfg.frames_per_step is None
        else min(check_int("frames_per_step", cfg.frames_per_step, 1), n_frames)
    )
    slices_per_step = min(slices_per_step, ny)

    arch = {
        "slice_shape": [nz, nx],
        "ny": ny,
        "n_components": n_components,
        "channels": channels,
        "time_frequencies": int(cfg.time_frequencies),
        "latent_stride": int(cfg.latent_stride),
    }
    params = {
        "steps": steps,
        "temporal_smoothness": float(temporal_smoothness),
        "warm_start_steps": warm_start_steps,
        "sirt_iterations": sirt_iterations,
        "slices_per_step": slices_per_step,
        "frames_per_step": frames_per_step,
        "learning_rate": float(learning_rate),
        "lr_half_life_steps": lr_half_life_steps,
        "thickness_px": nz,
        "axis_offset_px": float(cfg.axis_offset_px),
        "seed": int(cfg.seed),
        "checkpoint_every": checkpoint_every,
        **arch,
    }
    # what a checkpoint must agree on to be resumed (not the step count)
    same = {k: v for k, v in params.items() if k not in ("steps", "checkpoint_every")}
    fingerprint = fingerprint_of(data, angles, times, ts.shifts_px, same)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint is not None else None
    if ckpt is not None and not ckpt.parent.is_dir():
        raise TiltgenError("the folder of the checkpoint file does not exist.", ckpt.parent)
    state = None
    if cfg.resume:
        if ckpt is None:
            raise TiltgenError("resume needs a checkpoint file.")
        if ckpt.exists():
            state = _load_checkpoint(ckpt)
            if state.get("fingerprint") != fingerprint:
                raise TiltgenError(
                    "this checkpoint belongs to other data or other fit settings (only 'steps' "
                    "may change when resuming); use another checkpoint file or start afresh.",
                    ckpt,
                )
    elif ckpt is not None and ckpt.exists():
        raise TiltgenError(
            "the checkpoint file already exists; resume from it, delete it or choose another name.",
            ckpt,
        )
    return FitPlan(
        ts=ts,
        data=data,
        order_t=order_t,
        f_times=f_times,
        f_angles=angles[order_t],
        f_shifts=ts.shifts_px[order_t],
        s_frames=(f_times - t_first) / (t_last - t_first),
        out_times=out_times,
        nz=nz,
        arch=arch,
        params=params,
        state=state,
        fingerprint=fingerprint,
        checkpoint=ckpt,
        max_output_bytes=cfg.max_output_bytes,
        preview_every=cfg.preview_every,
    )
