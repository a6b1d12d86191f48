"""Acquisition times of the frames of a time-resolved tilt series (seconds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries, per_frame_values

__all__ = ["acquisition_times", "nearest_frame"]


def acquisition_times(
    ts: TiltSeries,
    times_s: Sequence[float] | np.ndarray | None = None,
    *,
    order: str | None = None,
    frame_time_s: float = 1.0,
) -> np.ndarray:
    """Acquisition time of every frame of ``ts``, seconds, checked for consistency.

    Parameters
    ----------
    ts
        The tilt series; it must have tilt angles.
    times_s
        Times given by the user, one per frame in stack order (seconds). Default: the series'
        recorded ``acquisition_times_s`` (read from a SerialEM ``.mdoc`` or a simulation), or, when
        there are none, uniform times in the acquisition ``order``.
    order
        How the frames were acquired, when no times are known: ``"angle"`` (from the lowest to
        the highest tilt angle; the default) or ``"stack"`` (in the order stored in the file).
        When times are known and ``order`` is given too, the times must increase in that order.
    frame_time_s
        Time between consecutive frames for uniform times, seconds.

    Returns
    -------
    ndarray
        ``(n_tilts,)`` float64 seconds, in stack order.

    Raises
    ------
    TiltgenError
        No tilt angles; a wrong number of times; NaN, infinite or repeated times; times that do
        not increase in the given acquisition order; an unknown order; a non-positive frame time.
    """
    where = ts.provenance.get("source")
    if ts.tilt_angles is None:
        raise TiltgenError(
            "the time-resolved fit needs the tilt angle of every frame, and this series has none. "
            "Give them with a .rawtlt/.tlt/.mdoc file or a start and step (Tilt series widget, "
            "or --tilt-start/--tilt-step).",
            where,
        )
    angles = ts.tilt_angles
    n = ts.n_tilts
    if order is not None and order not in ("angle", "stack"):
        raise TiltgenError(
            f"unknown acquisition order {order!r}; use 'angle' (lowest to highest "
            "tilt) or 'stack' (the order of the frames in the file).",
            where,
        )
    given = times_s if times_s is not None else ts.acquisition_times_s
    if given is None:
        if not (np.isfinite(frame_time_s) and frame_time_s > 0):
            raise TiltgenError(
                f"the time per frame must be a positive number of seconds; got {frame_time_s}.",
                where,
            )
        rank = (
            np.argsort(np.argsort(angles, kind="stable"), kind="stable")
            if order in (None, "angle")
            else np.arange(n)
        )
        return rank.astype(np.float64) * float(frame_time_s)
    t = per_frame_values(
        given,
        n,
        "acquisition times",
        "give one time (seconds) per frame, in the order of the stack",
        where,
    )
    if np.unique(t).size != n:
        raise TiltgenError(
            "two or more frames have the same acquisition time; every frame needs "
            "its own time (seconds). Check the .mdoc file or the times you gave.",
            where,
        )
    if order is not None:
        seq = np.argsort(angles, kind="stable") if order == "angle" else np.arange(n)
        if np.any(np.diff(t[seq]) <= 0):
            raise TiltgenError(
                f"the acquisition times do not increase in the acquisition order '{order}' "
                f"({'lowest to highest tilt' if order == 'angle' else 'stack order'}); leave the "
                "order unset to use the times as they are, or fix the times.",
                where,
            )
    return t


def nearest_frame(times_s: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Index of the frame recorded nearest in time to each of ``times_s``."""
    return np.abs(np.asarray(times_s)[:, None] - frame_times[None, :]).argmin(axis=1)
