"""Marker-free tilt-series alignment: in-plane tilt-axis angle, per-tilt shifts, tilt-axis offset.

Conventions (those of :mod:`napari_tiltgen.physics.geometry`)
-------------------------------------------------------------
* ``TiltSeries.shifts_px[i] = (dy, dx)``: the projection of the volume appears shifted by
  ``+(dy, dx)`` pixels in recorded frame ``i``. So the aligned ("``.ali``") frame is the recorded
  frame shifted by ``-(dy, dx)`` (:func:`aligned_stack`), and the projector called with
  ``shifts_px`` reproduces the recorded frames.
* The tilt-axis offset (a constant ``u`` shift of the axis from the detector centre) enters the
  geometry only as ``dx + axis_offset``; the data model has no separate field for it, so it is
  **folded into** ``shifts_px[:, 1]`` and reported in ``provenance["history"]``.
* Tilt-axis angle: IMOD/SerialEM convention, degrees counter-clockwise from the image Y axis with
  ``x`` = column index and ``y`` = row index (IMOD shows row 0 at the bottom; napari shows it at
  the top, where the same angle looks clockwise). An axis at angle ``phi`` runs along
  ``(x, y) = (-sin phi, cos phi)``; :func:`rotate_tilt_axis_to_vertical` rotates the frames by
  ``-phi`` to bring it onto +y, which is what the projector expects.

What alignment can and cannot know
----------------------------------
Per-tilt ``dx`` shifts are only determined up to ``alpha cos(theta) + beta sin(theta)``: that
pattern is exactly what moving the object by ``(x, z) = (alpha, beta)`` inside the volume does,
so no method can tell them apart. Likewise ``dy`` is determined up to a constant (the object's
``y``). Each method fixes this freedom its own way (cross-correlation: the frame nearest 0 degrees
keeps its shift; centre of mass: the object's centre of mass stays where it was, or moves to the
volume centre with ``center_object=True``). The tilt-axis offset is defined, independent of that
choice, as the constant term of the least-squares fit of the ``dx`` shifts by
``A + alpha cos(theta) + beta sin(theta)``.

Which steps to use
------------------
* Isolated nanoparticle on a flat background (HAADF-STEM): ``align(ts)`` = tilt-axis angle, then
  centre of mass (per-tilt shifts, axis offset, particle centred). Measured on noisy sphere
  phantoms: shifts within 0.1-0.3 px, angle within 0.1-0.4 degrees.
* Several objects, support film or objects leaving the field: ``align(ts, steps=("axis_angle",
  "xcorr"))``; cross-correlation shifts are good to a few tenths of a pixel per 20 tilts.

Functions
---------
:func:`estimate_tilt_axis_angle`, :func:`rotate_tilt_axis_to_vertical`,
:func:`align_cross_correlation`, :func:`center_of_mass`, :func:`fit_center_of_mass`,
:func:`estimate_tilt_axis_offset`, :func:`align_center_of_mass`, :func:`align` (the pipeline),
:func:`align_iter` (the same as a progress generator for napari workers), :func:`aligned_stack`.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_tiltgen.align.axis import (
    find_tilt_axis_iter,
    tilt_axis_known,
    turn_tilt_axis_to_vertical,
)
from napari_tiltgen.align.axis_search import axis_search_iter, needs_search
from napari_tiltgen.align.com import align_center_of_mass
from napari_tiltgen.align.common import _border_stats, _frames
from napari_tiltgen.align.xcorr import _xcorr_iter
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.shifts import unshift_frames

__all__ = ["align", "align_iter", "aligned_stack"]


STEPS = ("axis_angle", "xcorr", "com", "axis_offset")


# --------------------------------------------------------------------------- pipeline
def align_iter(ts: TiltSeries, steps: Sequence[str] = ("axis_angle", "com"), *,
               center_object: bool = True, com_per_tilt: bool = True, stretch: bool = True,
               search_range_deg: float = 12.0) -> Generator[Progress, None, TiltSeries]:
    """:func:`align` as a generator of :class:`~napari_tiltgen.core.progress.Progress` events.

    For napari ``thread_worker``: closing the generator stops the work between frames.
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise TiltgenError(f"unknown alignment step(s) {unknown}; choose from {list(STEPS)}.")
    ts.require_angles()
    _frames(ts, min_tilts=4)
    n = max(len(steps), 1)

    def scaled(gen: Generator[Progress, None, Any], k: int, lo: float = 0.0, hi: float = 1.0
               ) -> Generator[Progress, None, Any]:
        try:
            while True:
                ev = next(gen)
                yield Progress((k + lo + (hi - lo) * ev.fraction) / n, ev.message, ev.preview,
                               ev.values)
        except StopIteration as stop:
            return stop.value

    for k, step in enumerate(steps):
        if step == "axis_angle":
            known = tilt_axis_known(ts)
            est = yield from scaled(find_tilt_axis_iter(
                ts, around_deg=ts.tilt_axis_angle_deg if known else None,
                search_range_deg=search_range_deg), k, 0.0, 0.3)
            why, note = est.distrust()
            dec = None
            if not known and needs_search(est, why):  # as align.prepare: search by reprojection
                dec = yield from scaled(axis_search_iter(ts, est, [], why, note), k, 0.3, 1.0)
                why, note, ts = dec.why, dec.source_note, dec.ts
            if dec is not None and dec.by_search:
                ts = turn_tilt_axis_to_vertical(ts, dec.angle, dec.source)
                ts.provenance["history"][-1]["angle_source"] = (
                    "common lines not used (the object crosses the frame edges, or they were "
                    "unsure): " + dec.source)
            elif why:  # the same rule as every command's preparation (align.prepare)
                keep = float(ts.tilt_axis_angle_deg) if known else 0.0
                msg = (f"{why}not applied; "
                       + (f"the recorded {keep:.2f} deg used" if known
                          else "frames NOT turned, axis assumed vertical (y)")
                       + "; give the tilt axis if you know it")
                warnings.warn(msg, UserWarning, stacklevel=2)
                yield Progress((k + 1) / n, "warning: " + msg)
                src = "recorded value" if known else "assumed vertical"
                ts = turn_tilt_axis_to_vertical(ts, keep, f"{src} ({note})")
                ts.provenance["history"][-1]["angle_source"] = f"{src}; {est.describe()}"
                ts.provenance["history"][-1]["warning"] = msg
            else:
                ts = turn_tilt_axis_to_vertical(ts, est.angle_deg, est.describe())
                ts.provenance["history"][-1]["angle_source"] = (
                    "find_tilt_axis (common lines, "
                    + ("near the recorded value" if known else "full 0-180 deg search")
                    + f", confidence {est.confidence:.2f})")
        elif step == "xcorr":
            ts = yield from scaled(_xcorr_iter(ts, stretch, 20, 0.03, 0.25, 0.05, 0.1, None), k)
        elif step == "com":
            ts = align_center_of_mass(ts, per_tilt=com_per_tilt, center_object=center_object)
        elif step == "axis_offset":
            ts = align_center_of_mass(ts, per_tilt=False, center_object=center_object)
        yield Progress((k + 1) / n, f"alignment: {step} done")
    return ts


def align(ts: TiltSeries, steps: Sequence[str] = ("axis_angle", "com"), *,
          center_object: bool = True, com_per_tilt: bool = True, stretch: bool = True,
          search_range_deg: float = 12.0) -> TiltSeries:
    """Align a tilt series: tilt-axis angle, per-tilt shifts, tilt-axis offset.

    Parameters
    ----------
    ts
        Tilt series with angles, frames as recorded.
    steps
        Run in this order, each on the result of the previous one:

        ``"axis_angle"``
            :func:`estimate_tilt_axis_angle` then :func:`rotate_tilt_axis_to_vertical` (the
            frames are resampled; ``tilt_axis_angle_deg`` becomes 0).
        ``"xcorr"``
            :func:`align_cross_correlation` (neighbour cross-correlation with cosine stretch).
        ``"com"``
            :func:`align_center_of_mass` with ``per_tilt=com_per_tilt``: axis offset, and for a
            compact object per-tilt shifts from the centres of mass.
        ``"axis_offset"``
            :func:`align_center_of_mass` with ``per_tilt=False``: keeps the per-tilt shifts
            (e.g. from ``"xcorr"``) and only adds the fitted axis offset and, with
            ``center_object``, the centring of the particle.

        The default suits an isolated particle. When the field holds several objects or a
        support film enters at high tilt (centres of mass are then meaningless), use
        ``("axis_angle", "xcorr")``.
    center_object
        Move the object's centre of mass to the volume centre (``"com"``/``"axis_offset"``).
    com_per_tilt
        See ``"com"``.
    stretch
        Cosine stretching in ``"xcorr"``.
    search_range_deg
        Search range of ``"axis_angle"`` around ``ts.tilt_axis_angle_deg``.

    Returns
    -------
    TiltSeries
        Copy with ``shifts_px`` (axis offset folded into ``dx``), rotated frames if
        ``"axis_angle"`` ran, and one history entry per step. The input is not modified.
    """
    return run(align_iter(ts, steps, center_object=center_object, com_per_tilt=com_per_tilt,
                          stretch=stretch, search_range_deg=search_range_deg), show=False)


def aligned_stack(ts: TiltSeries, *, order: int = 1) -> np.ndarray:
    """The frames with their shifts removed (each shifted by ``-shifts_px``), like IMOD's ``.ali``.

    For viewing; reconstructions should use ``shifts_px`` through the projector instead, which
    avoids a second interpolation. Outside the frame is filled with the border median.
    """
    frames = _frames(ts, min_tilts=1)
    bg, _ = _border_stats(frames)
    s = np.asarray(ts.shifts_px, dtype=np.float64)
    out = unshift_frames(frames - bg[:, None, None], s[:, 0], s[:, 1], order=order)
    return (out + bg[:, None, None]).astype(np.float32)
