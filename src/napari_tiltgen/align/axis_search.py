"""Tilt-axis angle over the full range by reprojection consistency, for specimens that cross
the frame edges.

Common lines (:mod:`napari_tiltgen.align.axis`) need the whole object in every frame: a support
film or slab that crosses the frame edges brings material in and out of the field with the
tilt, and their estimate was 3-90 degrees off on such series. What still holds there is that
the frames are projections of one volume about one axis. For each candidate angle on a coarse
grid over -90..90 degrees the frames are turned (band-limited, no blur:
:func:`~napari_tiltgen.physics.shifts.rotate_frames`) so that the candidate runs along y,
given per-tilt shifts for that axis (cross-correlation of neighbouring tilts with cosine
stretching: raw stacks are jittered), masked by the same soft disc (so no candidate sees more
of the frame than another), binned to 64-127 px, reconstructed by SIRT and reprojected
(:func:`~napari_tiltgen.align.reprojection.reprojection_error`); a wrong axis leaves the
frames inconsistent with any volume. A finer grid around the coarse minimum and a parabola
through it give the angle. The lateral truncation of such specimens affects every candidate
alike.

Measured (``OMP_NUM_THREADS=1 python benchmarks/axis_transfer.py --objects 4 --rotations
0,30,-70 --methods flattened``, docs/alignment.md): on held-out series with their axes turned by
30 and -70 degrees, the applied error fell from a median of 30.1 to 2.1 degrees (catalysts on
supports and aggregates within 2.7 degrees where it was applied; texture slabs 1.7-23, and two
slabs 67-69 degrees off with a clear minimum, not applied there); on the same series as made
(axes within 1 degree of y) nothing changed. An estimate within :data:`MIN_TURN_DEG` of the
image Y axis is not applied (frames left as they are): that close, it cannot tell an axis from
y.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.io.model import TiltSeries

if TYPE_CHECKING:
    from napari_tiltgen.align.axis import TiltAxisEstimate

__all__ = ["MIN_TURN_DEG", "AxisDecision", "ReprojectionAxisSearch", "axis_search_iter",
           "needs_search",
           "search_tilt_axis_by_reprojection_iter"]

MIN_TURN_DEG = 10.0
"""An estimate this close to the image Y axis (degrees) is not applied: on full held-out series
the search's errors reached 2.7 degrees (3.6 in a first run), on a series of 11 frames 12
degrees apart 5.5 (it said 5.0 for a true 0.45), so it cannot tell such an axis from y."""

MIN_SEPARATION = 0.2
"""The deepest coarse cost more than 20 degrees from the minimum must lie at least this
fraction of (median - minimum) above the minimum, else the search is not trusted (chosen on
``benchmarks/axis_transfer.py --rotations 0,30,-70``: a held-out texture slab 67 degrees off
at 0.10-0.16, the right answers used at 0.20-0.78; a clear minimum can still be wrong, see
:func:`needs_search`)."""

ELONGATED = 2.5
"""Second-moment ratio (long over short, within the search's disc) of the tilt-averaged object
above which it is a bar or needle (2.5: about 1.6 times longer than wide): one
that crosses the frame looks the same whether it lies along the axis or across it (the
frame edges hide the foreshortening), and the search preferred the wrong one on a
featureless needle along the axis (80-88 degrees off). Its answer is then used only along
the elongation (within :data:`ALONG_DEG`)."""

ALONG_DEG = 20.0
"""How close to an elongated object's long axis (degrees) the search's answer must be to be
used (:data:`ELONGATED`)."""

CROSS_CHECK_CONFIDENCE = 0.5
"""Common-lines confidence below which their estimate, before it is used, is checked by the
search (on rotated held-out catalysts inside the frame they were 35-40 degrees off at
confidence 0.32-0.47)."""

AGREE_DEG = 10.0
"""Common lines and the search agree when this close (degrees)."""


@dataclass
class ReprojectionAxisSearch:
    """Result of :func:`search_tilt_axis_by_reprojection_iter`.

    Attributes
    ----------
    angle_deg
        Tilt-axis angle, degrees counter-clockwise from image Y, on the branch nearest Y.
    grid_deg, costs
        The coarse grid and its reprojection errors.
    fine_deg, fine_costs
        The fine grid around the coarse minimum and its reprojection errors.
    separation
        ``(second - minimum) / (median - minimum)`` of the coarse costs, ``second`` the lowest
        cost more than 20 degrees from the minimum: 0 when another orientation fits as well.
    binned_px
        Frame size the search ran at.
    elongation, elongation_deg
        Second-moment ratio of the tilt-averaged object and the direction of its long axis
        (degrees from image Y, as the tilt axis).
    """

    angle_deg: float
    grid_deg: np.ndarray
    costs: np.ndarray
    fine_deg: np.ndarray
    fine_costs: np.ndarray
    separation: float
    binned_px: int
    elongation: float = 1.0
    elongation_deg: float = 0.0

    @property
    def across_a_bar(self) -> bool:
        """An elongated object (a bar or needle crossing the frame) and an axis across it."""
        from napari_tiltgen.align.axis import wrap_axis_deg

        off = abs(wrap_axis_deg(self.angle_deg - self.elongation_deg))
        return self.elongation > ELONGATED and off > ALONG_DEG

    @property
    def trusted(self) -> bool:
        return bool(self.separation >= MIN_SEPARATION and not self.across_a_bar)

    @property
    def applies(self) -> bool:
        """Trusted and far enough from the image Y axis to be worth turning the frames."""
        return self.trusted and abs(self.angle_deg) >= MIN_TURN_DEG

    def describe(self) -> str:
        return (f"tilt axis {self.angle_deg:.1f} deg from image Y by reprojection consistency "
                f"(full range, {self.binned_px} px; separation {self.separation:.2f})")

    def to_dict(self) -> dict[str, object]:
        return {"angle_deg": self.angle_deg, "separation": self.separation,
                "binned_px": self.binned_px, "elongation": self.elongation,
                "elongation_deg": self.elongation_deg,
                "method": "reprojection consistency, full range",
                "grid_deg": self.grid_deg.tolist(), "costs": self.costs.tolist()}


def _search_frames(ts: TiltSeries, min_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The central square of the frames, block-averaged to between ``min_px`` and twice that,
    border median removed, and the soft disc mask every candidate is multiplied by."""
    from napari_tiltgen.align.common import _border_stats, _centred

    data = np.asarray(ts.data, dtype=np.float32)
    n, ny, nx = data.shape
    s = min(ny, nx)
    data = data[:, (ny - s) // 2:(ny - s) // 2 + s, (nx - s) // 2:(nx - s) // 2 + s]
    b = max(1, s // int(min_px))
    m = s // b
    frames = data[:, :m * b, :m * b].reshape(n, m, b, m, b).mean(axis=(2, 4))
    frames = frames - _border_stats(frames, width=1)[0][:, None, None]
    c = _centred(m)
    r = np.hypot(c[:, None], c[None, :])
    disc = np.clip((m / 2.0 - 1.0 - r) / 3.0, 0.0, 1.0)
    return frames.astype(np.float32), disc.astype(np.float32)


def _elongation(frames: np.ndarray) -> tuple[float, float]:
    """Second-moment ratio and long-axis direction (degrees from image Y, counter-clockwise as
    the tilt axis) of the tilt-averaged object (pixels above 10 % of each frame's maximum;
    the measures of the needle rule, :func:`napari_tiltgen.align.axis._needle_direction`)."""
    from napari_tiltgen.align.axis import _bright_part, _long_axis, _second_moments

    w = _bright_part(np.asarray(frames, np.float64)).mean(axis=0)
    if w.sum() <= 0:
        return 1.0, 0.0
    ratio, angle, _ = _long_axis(_second_moments(w))
    return ratio, angle


def _cost(frames: np.ndarray, disc: np.ndarray, angles: np.ndarray, phi: float,
          iterations: int, align: bool) -> float:
    """Reprojection error of the frames turned so that an axis at ``phi`` runs along y; with
    ``align``, per-tilt shifts for that axis first (cross-correlation of neighbouring tilts
    with cosine stretching, :func:`~napari_tiltgen.align.xcorr.align_cross_correlation`)."""
    from napari_tiltgen.align.reprojection import reprojection_error
    from napari_tiltgen.align.xcorr import align_cross_correlation
    from napari_tiltgen.physics.shifts import rotate_frames

    turned = rotate_frames(frames, phi) if abs(phi) > 1e-9 else frames
    cand = TiltSeries(np.ascontiguousarray(turned, dtype=np.float32), tilt_angles=angles,
                      pixel_size_A=1.0)
    if align:  # cosine stretching needs tilts below 89 degrees (a +-90 series: without)
        cand = align_cross_correlation(cand, stretch=bool(np.all(np.abs(angles) < 89.0)))
    cand = replace(cand, data=np.ascontiguousarray(cand.data * disc, dtype=np.float32))
    return reprojection_error(cand, iterations=iterations, max_size=frames.shape[-1])


def search_tilt_axis_by_reprojection_iter(
        ts: TiltSeries, *, coarse_step_deg: float = 6.0, fine_step_deg: float = 1.0,
        fine_half_deg: float = 8.0, iterations: int = 20, min_px: int = 64,
        align: bool = True
) -> Generator[Progress, None, ReprojectionAxisSearch]:
    """Search the tilt-axis angle over -90..90 degrees by reprojection consistency (see the
    module docstring); a progress generator returning a :class:`ReprojectionAxisSearch`.

    ``ts`` needs tilt angles and prepared intensities (bright object, dark background). With
    ``align`` (default) each candidate gets its own per-tilt shifts by cross-correlation
    first (raw stacks are jittered by many pixels). About 45 SIRT runs of ``iterations``
    iterations at 64-127 px: 10-40 s on one core.
    """
    from napari_tiltgen.align.axis import wrap_axis_deg

    if coarse_step_deg <= 0 or fine_step_deg <= 0 or fine_half_deg <= 0:
        raise TiltgenError("the reprojection axis search needs positive steps and range.")
    angles = ts.require_angles()
    if ts.n_tilts < 3:
        raise TiltgenError("the reprojection axis search needs at least 3 frames.")
    frames, disc = _search_frames(ts, min_px)
    grid = np.arange(-90.0, 90.0, coarse_step_deg)
    fine_off = np.arange(-fine_half_deg, fine_half_deg + 1e-9, fine_step_deg)
    total = grid.size + fine_off.size
    costs = np.empty(grid.size)
    for k, phi in enumerate(grid):
        costs[k] = _cost(frames, disc, angles, float(phi), iterations, align)
        yield Progress((k + 1) / total, f"tilt axis by reprojection: {phi:+.0f} deg")
    best = float(grid[int(np.argmin(costs))])
    fine = best + fine_off
    fine_costs = np.empty(fine.size)
    for k, phi in enumerate(fine):
        fine_costs[k] = _cost(frames, disc, angles, float(phi), iterations, align)
        yield Progress((grid.size + k + 1) / total,
                       f"tilt axis by reprojection: refining {phi:+.0f} deg")
    angle = float(fine[int(np.argmin(fine_costs))])
    a2, a1, _ = np.polyfit(fine_off, fine_costs, 2)
    if a2 > 0:
        angle = best + float(np.clip(-a1 / (2.0 * a2), -fine_half_deg, fine_half_deg))
    far = np.abs(((grid - best + 90.0) % 180.0) - 90.0) > 20.0
    lo, med = float(costs.min()), float(np.median(costs))
    sep = float((costs[far].min() - lo) / (med - lo)) if far.any() and med > lo else 0.0
    ratio, along = _elongation(frames * disc)
    return ReprojectionAxisSearch(wrap_axis_deg(angle), grid, costs, fine, fine_costs, sep,
                                  int(frames.shape[-1]), ratio, along)


def needs_search(est: TiltAxisEstimate, why: str) -> bool:
    """Whether :func:`axis_search_iter` should run after common lines (``why``: the reason
    :meth:`TiltAxisEstimate.distrust` gave for not using their estimate, empty when it would
    be used): the object crosses the frame edges, or their estimate would be used with a
    confidence below :data:`CROSS_CHECK_CONFIDENCE` (not the needle rule's answer). An
    estimate below the confidence threshold is not checked: it is not used, and on a held-out
    texture (confidence 0.11, right) the search was 69 degrees off with a clear minimum."""
    return bool(est.extended or (not why and est.confidence < CROSS_CHECK_CONFIDENCE
                                 and not est.needle_override))


class AxisDecision(NamedTuple):
    """What :func:`axis_search_iter` decided.

    ``angle`` and ``source``: the axis to apply and where it came from; ``why``: empty when
    ``angle`` is to be applied, else the reason it is not (the frames stay as they are);
    ``source_note``: the short reason for the provenance; ``ts``: the series with the search
    recorded in its provenance; ``by_search``: ``angle`` is the search's answer, not common
    lines'."""

    angle: float
    source: str
    why: str
    source_note: str
    ts: TiltSeries
    by_search: bool = False


def axis_search_iter(ts: TiltSeries, est: TiltAxisEstimate, notes: list[str], why: str,
                     source_note: str) -> Generator[Progress, None, AxisDecision]:
    """The search by reprojection after common lines (``est``, and ``why``/``source_note``
    from :meth:`TiltAxisEstimate.distrust`), for
    :func:`~napari_tiltgen.align.prepare.prepare_tilt_axis_iter` and the ``axis_angle`` step
    of :func:`~napari_tiltgen.align.alignment.align_iter` when :func:`needs_search`.

    * The object crosses the frame edges (common lines not used): the search's angle is used
      when it is trusted and at least :data:`MIN_TURN_DEG` from y, else the frames stay as
      they are and ``why`` says what it found.
    * Common lines' estimate about to be used with a confidence below
      :data:`CROSS_CHECK_CONFIDENCE`: where a trusted search disagrees with it by more than
      :data:`AGREE_DEG`, the search decides (as above); otherwise the estimate stands.

    Returns an :class:`AxisDecision`; notes go to ``notes``; its ``ts`` records the search in
    its provenance (``tilt_axis_reprojection``)."""
    from napari_tiltgen.align.axis import wrap_axis_deg

    try:
        found = yield from search_tilt_axis_by_reprojection_iter(ts)
    except TiltgenError as exc:  # the common lines' decision stands, said so
        notes.append(f"the search by reprojection could not run ({exc})")
        return AxisDecision(est.angle_deg, est.describe(), why, source_note, ts)
    ts = replace(ts, provenance={**ts.provenance, "tilt_axis_reprojection": found.to_dict()})
    off = abs(wrap_axis_deg(found.angle_deg - est.angle_deg))
    if not est.extended:
        if found.trusted and off > AGREE_DEG:
            why = (f"common lines ({est.angle_deg:.1f} deg, confidence {est.confidence:.2f}) "
                   f"and a search by reprojection ({found.angle_deg:.1f} deg) disagree by "
                   f"{off:.0f} deg, ")
            source_note = "common lines and the search by reprojection disagree"
        else:
            if found.trusted:
                notes.append(f"{found.describe()} agrees with common lines within {off:.1f} deg")
            return AxisDecision(est.angle_deg, est.describe(), why, source_note, ts)
    if found.applies:
        notes.append(("the object crosses the frame edges, so common lines were not used: "
                      if est.extended else "the search is used: ") + found.describe())
        return AxisDecision(found.angle_deg, found.describe(), "", "", ts, by_search=True)
    if found.across_a_bar:
        why += (f"a search by reprojection found {found.angle_deg:.1f} deg, across the "
                f"object's elongation ({found.elongation_deg:.0f} deg): a bar or needle "
                "crossing the frame looks the same along or across the axis: ")
    elif found.trusted:
        why += (f"a search by reprojection found {found.angle_deg:.1f} deg, within "
                f"{MIN_TURN_DEG:g} deg of y (its accuracy): ")
    else:
        why += ("a search by reprojection found no clear axis (separation "
                f"{found.separation:.2f}): ")
    return AxisDecision(0.0, "", why, source_note, ts)
