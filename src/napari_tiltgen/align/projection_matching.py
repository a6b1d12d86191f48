"""Projection matching and the full alignment pipeline a user runs (``tiltgen align``, Align widget).

Projection matching
-------------------
Reconstruct (SIRT, this package's projector) from the current shifts on a binned stack,
reproject the volume with the same geometry, and re-align every recorded frame to its
reprojection by sub-pixel cross-correlation; repeat a few rounds. Each round the shift updates
are stripped of what no alignment can know (a constant in y; ``A + alpha cos + beta sin`` in
x, i.e. moving the object inside the volume; see :mod:`napari_tiltgen.align.alignment`), so
the rounds do not drift, and the tilt-axis offset found before is kept.

The reprojection error ``||A x - b|| / ||b||`` (SIRT volume ``x`` of the binned stack ``b``,
same geometry) is the figure of merit reported before and after.

Pipeline (:func:`align_series_iter`)
------------------------------------
1. **coarse shifts**: centre of mass when the frames hold one compact object (the frame masses
   agree within 10 %), else cross-correlation with cosine stretching (IMOD tiltxcorr-like);
2. **tilt-axis angle refinement** (for an axis from the file's metadata): common-lines search
   +-3 degrees around the current axis (the frames are turned by the rest when it exceeds 0.3
   degree); an axis estimated from the same frames, or given by the user, is kept;
3. **tilt-axis offset** and centring of the object (centre-of-mass fit of the shifted frames);
4. **projection matching**, ``rounds`` rounds.

The input series must already have its tilt axis along y (run
:func:`napari_tiltgen.align.prepare.prepare` first; :func:`align_series_iter` does it when
``prepare_first``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_tiltgen.align.reprojection import _bin, _reproject, _sirt, reprojection_error
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.core.progress import scaled as _scaled
from napari_tiltgen.io.model import TiltSeries

__all__ = [
    "AXIS_CONFIDENT",
    "AlignmentReport",
    "align_series",
    "align_series_iter",
    "needs_alignment",
    "projection_matching",
    "projection_matching_iter",
    "refine_axis_by_reprojection_iter",
    "reprojection_error",
    "xf_lines",
]


#: Common-lines confidence from which an estimated tilt axis is trusted as it is (sphere
#: phantoms 0.86-1.0, within 0.83 deg; round HAADF clusters 0.5-0.76, off by up to 1.9 deg).
AXIS_CONFIDENT = 0.8


def _turned(ts: TiltSeries, angle_deg: float, rotate: Any) -> TiltSeries:
    """``ts`` with frames and shifts turned as ``rotate_tilt_axis_to_vertical`` would (no
    history entry: a candidate of the search, not a step)."""
    from napari_tiltgen.align.axis import rotated_shifts

    return replace(ts, data=rotate(ts.data, angle_deg),
                   shifts_px=rotated_shifts(ts.shifts_px, angle_deg))


def refine_axis_by_reprojection_iter(
        ts: TiltSeries, *, range_deg: float = 3.0, step_deg: float = 0.5, iterations: int = 20,
        max_size: int = 64, thickness_px: int | None = None, recentre: bool = True
) -> Generator[Progress, None, tuple[float, dict[str, Any]]]:
    """The residual in-plane rotation of the tilt axis that makes the series most consistent.

    For each candidate rotation ``d`` on a grid over ``+-range_deg`` the frames are turned by
    ``-d`` (the axis assumed at ``d`` from y) without blur
    (:func:`~napari_tiltgen.physics.shifts.rotate_frames`: a spline rotation smooths the frames,
    and the smoothing alone lowered the cost of every rotation below that of none), re-centred on the object's centre of mass
    (``recentre``) and reconstructed by SIRT; the candidate's cost is the reprojection error
    (:func:`reprojection_error`). A parabola through the five grid points around the smallest
    cost gives the sub-step optimum. A wrong axis leaves every frame's detail displaced in
    proportion to its distance along the axis, which no single volume explains, so the cost is
    sharpest where common lines are flattest (round objects with fine detail).

    The tilt axis must already run along y with the coarse shifts applied. Returns ``(angle,
    record)``: the rotation to apply with :func:`~napari_tiltgen.align.axis.
    rotate_tilt_axis_to_vertical` and the grid with its costs.
    """
    from napari_tiltgen.align.com import align_center_of_mass
    from napari_tiltgen.physics.shifts import rotate_frames

    if not (range_deg > 0 and step_deg > 0):
        raise TiltgenError("the axis refinement needs a positive range and step.")
    grid = np.arange(-range_deg, range_deg + 1e-9, step_deg)
    costs = np.empty(grid.size)
    for k, d in enumerate(grid):
        cand = _turned(ts, float(d), rotate_frames) if abs(d) > 1e-9 else ts
        if recentre:
            try:
                cand = align_center_of_mass(cand, per_tilt=True, center_object=True)
            except TiltgenError:
                pass
        costs[k] = reprojection_error(cand, iterations=iterations, max_size=max_size,
                                      thickness_px=thickness_px)
        yield Progress((k + 1) / grid.size, f"tilt-axis angle {d:+.2f} deg: reprojection error "
                       f"{costs[k]:.4f}")
    i = int(np.argmin(costs))
    lo, hi = max(0, i - 2), min(grid.size, i + 3)
    best = float(grid[i])
    if hi - lo >= 3:
        a, b, _ = np.polyfit(grid[lo:hi], costs[lo:hi], 2)
        if a > 0:
            vertex = -b / (2 * a)
            if grid[lo] <= vertex <= grid[hi - 1]:
                best = float(vertex)
    return best, {"grid_deg": grid.tolist(), "reprojection_errors": costs.tolist(),
                  "angle_deg": best}


def _gauge_free(delta: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Remove a constant from dy and ``A + alpha cos + beta sin`` from dx (unknowable parts)."""
    from napari_tiltgen.align.common import _gauge_basis

    out = delta.copy()
    out[:, 0] -= out[:, 0].mean()
    basis = _gauge_basis(angles)
    coef, *_ = np.linalg.lstsq(basis, out[:, 1], rcond=None)
    out[:, 1] -= basis @ coef
    return out


def projection_matching_iter(ts: TiltSeries, *, rounds: int = 3, iterations: int = 20,
                             max_size: int = 64, upsample_factor: int = 20,
                             thickness_px: int | None = None
                             ) -> Generator[Progress, None, TiltSeries]:
    """:func:`projection_matching` as a progress generator (cancel between frames)."""
    from skimage.registration import phase_cross_correlation

    angles = ts.require_angles()
    if rounds < 1:
        raise TiltgenError(f"projection matching needs at least 1 round; got {rounds}.")
    if ts.n_tilts < 4:
        raise TiltgenError("projection matching needs at least 4 tilts.",
                           ts.provenance.get("source"))
    shifts = np.array(ts.shifts_px, dtype=np.float64)
    errors: list[float] = []
    moves: list[float] = []
    n = ts.n_tilts
    for r in range(rounds):
        cur = replace(ts, shifts_px=shifts)
        frames, sb, b = _bin(cur, max_size)
        x, proj = _sirt(frames, angles, sb, iterations,
                        None if thickness_px is None else max(1, int(thickness_px) // b))
        reproj = _reproject(x, proj)
        errors.append(float(np.linalg.norm(reproj - frames)
                            / max(np.linalg.norm(frames), 1e-30)))
        yield Progress((r + 0.3) / rounds, f"projection matching round {r + 1}/{rounds}: "
                       f"reprojection error {errors[-1]:.4f}")
        delta = np.zeros((n, 2))
        for i in range(n):
            # frame = reprojection shifted by +d  =>  phase_cross_correlation returns -d
            s, *_ = phase_cross_correlation(reproj[i], frames[i], upsample_factor=upsample_factor,
                                            normalization=None)
            delta[i] = -np.asarray(s, dtype=np.float64) * b
            if i % 8 == 7:
                yield Progress((r + 0.3 + 0.7 * (i + 1) / n) / rounds,
                               f"projection matching round {r + 1}/{rounds}: frame {i + 1}/{n}")
        delta = _gauge_free(delta, angles)
        shifts = shifts + delta
        moves.append(float(np.sqrt(np.mean(delta**2))))
    final = replace(ts, shifts_px=shifts)
    frames, sb, b = _bin(final, max_size)
    x, proj = _sirt(frames, angles, sb, iterations,
                    None if thickness_px is None else max(1, int(thickness_px) // b))
    errors.append(float(np.linalg.norm(_reproject(x, proj) - frames)
                        / max(np.linalg.norm(frames), 1e-30)))
    prov = copy.deepcopy(ts.provenance)
    prov.setdefault("history", []).append({
        "step": "projection_matching", "rounds": rounds, "sirt_iterations": iterations,
        "binning": b, "reprojection_error_per_round": [round(e, 5) for e in errors],
        "shift_update_rms_px_per_round": [round(m, 4) for m in moves]})
    yield Progress(1.0, f"projection matching: reprojection error {errors[0]:.4f} -> "
                   f"{errors[-1]:.4f}")
    return replace(ts, shifts_px=shifts, provenance=prov)


def projection_matching(ts: TiltSeries, **kwargs: Any) -> TiltSeries:
    """Refine per-tilt shifts by matching each frame to the reprojection of a SIRT volume.

    Parameters (keywords)
    ---------------------
    rounds
        Reconstruct-reproject-realign rounds (default 3).
    iterations
        SIRT iterations per round (default 20).
    max_size
        Frames binned to at most this many pixels (default 64).
    upsample_factor
        Sub-pixel precision of the cross-correlation peak, 1/binned px (default 20).
    thickness_px
        Volume thickness along the beam, full-resolution pixels (default: frame width).

    Returns
    -------
    TiltSeries
        Copy with refined ``shifts_px`` and a history entry listing the reprojection error of
        every round (the first is before, the last after).
    """
    return run(projection_matching_iter(ts, **kwargs), show=False)


# ---------------------------------------------------------------------------- pipeline
@dataclass
class AlignmentReport:
    """What :func:`align_series` did and measured.

    Attributes
    ----------
    steps
        The steps run, in order, each a short description.
    notes
        Notes of the preparation (intensity, tilt axis) when it ran.
    reprojection_error_before, reprojection_error_after
        ``||A x - b|| / ||b||`` with the input shifts and with the final ones (binned, SIRT).
    tilt_axis_angle_deg
        Total in-plane rotation that was applied to the recorded frames (IMOD convention):
        the recorded tilt axis, plus the refinement.
    shifts_px
        Final ``(dy, dx)`` per tilt, pixels, in the turned frames.
    """

    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reprojection_error_before: float = float("nan")
    reprojection_error_after: float = float("nan")
    tilt_axis_angle_deg: float = 0.0
    shifts_px: np.ndarray | None = None
    axis_refinement: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "notes": list(self.notes),
                "reprojection_error_before": self.reprojection_error_before,
                "reprojection_error_after": self.reprojection_error_after,
                "tilt_axis_angle_deg": self.tilt_axis_angle_deg,
                "axis_refinement": self.axis_refinement,
                "shifts_px": None if self.shifts_px is None else self.shifts_px.tolist()}


def _total_rotation(ts: TiltSeries) -> float:
    """Sum of the in-plane turns recorded in the history (quarter turns and rotations), deg."""
    total = 0.0
    for h in ts.provenance.get("history", []):
        if h.get("step") == "rot90":
            k = int(h.get("quarter_turns_clockwise", 0))
            total += 90.0 * (k if k <= 2 else k - 4)
        elif h.get("step") == "rotate_tilt_axis_to_vertical" and "note" not in h:
            total += float(h.get("angle_deg", 0.0))
    return total


def align_series_iter(ts: TiltSeries, *, coarse: str = "auto", refine_axis: bool = True,
                      rounds: int = 3, iterations: int = 20, max_size: int = 64,
                      center_object: bool = True, prepare_first: bool = True,
                      tilt_axis: float | None = None, intensity: str = "auto",
                      normalise: bool = False, thickness_px: int | None = None,
                      axis_method: str = "auto"
                      ) -> Generator[Progress, None, tuple[TiltSeries, AlignmentReport]]:
    """:func:`align_series` as a progress generator (for napari workers; cancel between steps)."""
    from napari_tiltgen.align.axis import find_tilt_axis_iter, rotate_tilt_axis_to_vertical
    from napari_tiltgen.align.com import align_center_of_mass, fit_center_of_mass
    from napari_tiltgen.align.xcorr import _xcorr_iter
    if coarse not in ("auto", "com", "xcorr", "none"):
        raise TiltgenError(f"unknown coarse alignment {coarse!r}; use auto, com, xcorr or none.")
    if axis_method not in ("auto", "reprojection", "common-lines"):
        raise TiltgenError(f"unknown tilt-axis refinement {axis_method!r}; use auto, "
                           "reprojection or common-lines.")
    ts.require_angles()
    report = AlignmentReport()
    if prepare_first:
        from napari_tiltgen.align.prepare import prepare_iter

        ts, notes = yield from _scaled(prepare_iter(ts, tilt_axis=tilt_axis, intensity=intensity,
                                                    normalise=normalise), 0.0, 0.15)
        report.notes = notes
    elif abs(((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0) > 1e-3:
        raise TiltgenError("the tilt axis must run along y before alignment; prepare the series "
                           "first (prepare_first=True).", ts.provenance.get("source"))
    pm_size = max_size
    yield Progress(0.16, "reprojection error before alignment")
    report.reprojection_error_before = reprojection_error(ts, iterations=iterations,
                                                          max_size=pm_size,
                                                          thickness_px=thickness_px)
    # 1. coarse shifts
    kind = coarse
    if coarse == "auto":
        try:
            fit = fit_center_of_mass(ts)
            kind = "com" if fit.mass_variation < 0.1 else "xcorr"
        except TiltgenError:
            kind = "xcorr"
    if kind == "com":
        ts = align_center_of_mass(ts, per_tilt=True, center_object=center_object)
        report.steps.append("centre of mass (per-tilt shifts, axis offset"
                            + (", object centred)" if center_object else ")"))
    elif kind == "xcorr":
        ts = yield from _scaled(_xcorr_iter(ts, True, 20, 0.03, 0.25, 0.05, 0.1, None),
                                0.2, 0.35)
        report.steps.append("cross-correlation with cosine stretching")
        try:
            ts = align_center_of_mass(ts, per_tilt=False, center_object=center_object)
            report.steps.append("tilt-axis offset from the centre-of-mass fit")
        except TiltgenError:
            pass
    yield Progress(0.35, "coarse alignment done")
    # 2. tilt-axis angle refinement around the current (vertical) axis. "auto": an axis given by
    # the user is kept; one from the file's metadata is checked by common lines (+-3 deg); one
    # the common lines estimated from these frames is searched again only when their confidence
    # was low (< AXIS_CONFIDENT), and then by reprojection consistency, an independent
    # estimator (the same common lines again only added noise, 0.2 -> 0.5 deg; reprojection
    # took round HAADF clusters from 0.8-1.9 deg to 0.1-0.5 deg but pulled confidently
    # estimated sphere phantoms off by up to 2.9 deg: see docs/alignment.md)
    src = str(ts.provenance.get("tilt_axis_source", ""))
    confidence = float((ts.provenance.get("tilt_axis_estimate") or {}).get("confidence", 0.0))
    if refine_axis and "user (--tilt-axis" in src:
        report.steps.append("tilt-axis angle not refined (given by the user)")
        refine_axis = False
    if refine_axis and axis_method == "auto":
        if "estimated from the data" not in src:
            axis_method = "common-lines"
        elif confidence < AXIS_CONFIDENT:
            axis_method = "reprojection"
        else:
            report.steps.append(f"tilt-axis angle not refined (estimated from these frames "
                                f"with confidence {confidence:.2f})")
            refine_axis = False
    if refine_axis:
        if axis_method == "common-lines":
            est = yield from _scaled(find_tilt_axis_iter(ts, around_deg=0.0, search_range_deg=3.0,
                                                           coarse_step_deg=0.5), 0.35, 0.5)
            angle, how = est.angle_deg, "common lines"
        else:
            angle, rec = yield from _scaled(refine_axis_by_reprojection_iter(
                ts, iterations=iterations, max_size=pm_size, thickness_px=thickness_px,
                recentre=kind == "com"), 0.35, 0.5, "tilt axis: ")
            how = "reprojection"
            report.axis_refinement = rec
        if abs(angle) >= 0.1:
            ts = rotate_tilt_axis_to_vertical(ts, angle)
            report.steps.append(f"tilt-axis angle refined by {angle:+.2f} deg ({how})")
            if kind == "com":
                ts = align_center_of_mass(ts, per_tilt=True, center_object=center_object)
        else:
            report.steps.append(f"tilt-axis angle checked ({how}: {angle:+.2f} deg, below "
                                "0.1 deg, kept)")
    # 3. projection matching
    if rounds > 0:
        ts = yield from _scaled(projection_matching_iter(ts, rounds=rounds, iterations=iterations,
                                                         max_size=pm_size,
                                                         thickness_px=thickness_px), 0.5, 0.97)
        report.steps.append(f"projection matching ({rounds} rounds, SIRT {iterations} "
                            f"iterations, binned to {pm_size} px)")
        if center_object:
            try:
                ts = align_center_of_mass(ts, per_tilt=False, center_object=True)
            except TiltgenError:
                pass
    yield Progress(0.97, "reprojection error after alignment")
    report.reprojection_error_after = reprojection_error(ts, iterations=iterations,
                                                         max_size=pm_size,
                                                         thickness_px=thickness_px)
    report.tilt_axis_angle_deg = _total_rotation(ts)
    report.shifts_px = np.array(ts.shifts_px)
    prov = copy.deepcopy(ts.provenance)
    prov.setdefault("history", []).append({"step": "align_series", **report.to_dict()})
    prov["alignment"] = {k: v for k, v in report.to_dict().items() if k != "shifts_px"}
    yield Progress(1.0, f"aligned: reprojection error {report.reprojection_error_before:.4f} -> "
                   f"{report.reprojection_error_after:.4f}")
    return replace(ts, provenance=prov), report


def align_series(ts: TiltSeries, **kwargs: Any) -> tuple[TiltSeries, AlignmentReport]:
    """Prepare (optional) and align a tilt series; see the module notes for the steps.

    Parameters (keywords)
    ---------------------
    coarse
        ``"auto"`` (centre of mass for one compact object, else cross-correlation), ``"com"``,
        ``"xcorr"`` or ``"none"``.
    refine_axis, axis_method
        Refine the tilt-axis angle after the coarse shifts (never when the user gave it):
        ``"auto"`` (an axis from the file's metadata by common lines, +-3 degrees; one
        estimated from the frames with a confidence below :data:`AXIS_CONFIDENT` by
        reprojection consistency, +-3 degrees, :func:`refine_axis_by_reprojection_iter`; a
        confident estimate is kept), ``"reprojection"`` or ``"common-lines"`` (always).
    rounds, iterations, max_size
        Projection-matching rounds (0: none), SIRT iterations per round, binning bound (px).
    center_object
        Move the object's centre of mass to the volume centre.
    prepare_first, tilt_axis, intensity, normalise
        Run :func:`napari_tiltgen.align.prepare.prepare` first with these settings.
    thickness_px
        Volume thickness for the SIRT inside projection matching (default: frame width).

    Returns
    -------
    (TiltSeries, AlignmentReport)
        The aligned series (tilt axis along y, ``shifts_px`` set, the frames themselves are not
        shifted: use :func:`napari_tiltgen.align.alignment.aligned_stack` for a ``.ali``-like
        stack) and what was done and measured.
    """
    return run(align_series_iter(ts, **kwargs), show=False)


def needs_alignment(ts: TiltSeries, *, max_residual_px: float = 0.5) -> tuple[bool, str]:
    """Whether a (prepared) series should be aligned before reconstruction, and why.

    No when it already carries shifts (an ``.xf`` or an earlier alignment) or when the centres
    of mass of its frames follow the tilt geometry within ``max_residual_px`` (rms); yes when
    they do not (jitter). Undecided (no) when the frames do not hold one compact object (frame
    masses differ by more than 10 %): centres of mass then say nothing about jitter.
    """
    from napari_tiltgen.align.com import fit_center_of_mass

    if np.any(np.asarray(ts.shifts_px) != 0):
        return False, ("the series carries shifts (from its .xf or an earlier alignment); used "
                       "as they are")
    try:
        fit = fit_center_of_mass(ts)
    except TiltgenError as exc:
        return False, f"not judged automatically ({exc})"
    if fit.mass_variation > 0.1:
        return False, (f"frame masses vary by {100 * fit.mass_variation:.0f} % (not one compact "
                       "object), so jitter cannot be judged from centres of mass; not aligned")
    rms = float(np.sqrt(np.mean(fit.residuals_px ** 2)))
    if rms <= max_residual_px:
        return False, (f"frames consistent with the tilt geometry (centre-of-mass residual "
                       f"{rms:.2f} px rms); not aligned")
    return True, f"frames jittered (centre-of-mass residual {rms:.2f} px rms); aligning"


def xf_lines(ts: TiltSeries, rotation_deg: float = 0.0) -> str:
    """IMOD ``.xf`` text for the series: ``A11 A12 A21 A22 DX DY`` per frame.

    IMOD maps a raw-frame position ``r`` (pixels from the centre) to the aligned one by
    ``A r + d``. Here ``A`` rotates by ``-rotation_deg`` (the recorded tilt axis onto y) and
    ``d = -shift`` (the frame's ``(dx, dy)`` in the turned frame), so that
    :func:`napari_tiltgen.io.metadata.read_xf` gives back the shifts (rotated into the recorded
    frame) and ``-rotation_deg``.
    """
    rho = math.radians(-rotation_deg)
    c, s = math.cos(rho), math.sin(rho)
    lines = []
    for dy, dx in np.asarray(ts.shifts_px, dtype=np.float64):
        lines.append(f"{c:12.7f}{-s:12.7f}{s:12.7f}{c:12.7f}{-dx:12.3f}{-dy:12.3f}")
    return "\n".join(lines) + "\n"
