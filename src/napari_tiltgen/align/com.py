"""Centre-of-mass alignment of an isolated object: per-tilt shifts, the sinusoid fit of the
centre of mass, and the tilt-axis offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from napari_tiltgen.align.common import (
    _axis_offset_of,
    _border_stats,
    _centred,
    _frames,
    _gauge_basis,
    _history,
    _object_weights,
)
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries

__all__ = ["CenterOfMassFit", "align_center_of_mass", "center_of_mass", "estimate_tilt_axis_offset", "fit_center_of_mass"]


def _com_and_mass(frames: np.ndarray, smooth_px: float = 2.0, dilate_px: int = 3
                  ) -> tuple[np.ndarray, np.ndarray]:
    bg, _ = _border_stats(frames)
    n, ny, nx = frames.shape
    yc, xc = _centred(ny), _centred(nx)
    com = np.zeros((n, 2))
    mass = np.zeros(n)
    for i in range(n):
        w = _object_weights(frames[i], float(bg[i]), smooth_px, dilate_px)
        mass[i] = w.sum()
        if mass[i] > 0:
            com[i] = (w.sum(axis=1) @ yc / mass[i], w.sum(axis=0) @ xc / mass[i])
    return com, mass


def _checked_com(ts: TiltSeries, smooth_px: float = 2.0, dilate_px: int = 3
                 ) -> tuple[np.ndarray, np.ndarray]:
    com, mass = _com_and_mass(_frames(ts, min_tilts=1), smooth_px, dilate_px)
    empty = np.flatnonzero(mass <= 0)
    if empty.size:
        raise TiltgenError(f"frames {empty[:10].tolist()} have no signal above the background; "
                           "the centre of mass is undefined (is the contrast inverted, e.g. "
                           "bright-field? invert the stack first).", ts.provenance.get("source"))
    return com, mass


def center_of_mass(ts: TiltSeries, *, smooth_px: float = 2.0, dilate_px: int = 3) -> np.ndarray:
    """Centre of mass ``(y, x)`` of every recorded frame, pixels from the frame centre.

    Intensities are taken relative to the frame's border median and summed over a mask of the
    bright object only (the frame smoothed by ``smooth_px`` must exceed 5 noise sigmas and 2 % of
    its peak; the mask is then dilated by ``dilate_px``), so that background noise does not pull
    the centre towards the middle of the frame. Shifts in ``ts.shifts_px`` are *not* removed
    (see :func:`fit_center_of_mass`). Meaningful for a bright (HAADF-like) compact object that
    stays inside every frame.
    """
    return _checked_com(ts, smooth_px, dilate_px)[0]


@dataclass
class CenterOfMassFit:
    """Least-squares fit of the frame centres of mass to the single-axis geometry.

    For a compact object with centre of mass ``(x_c, y_c, z_c)`` the aligned frame at tilt
    ``theta`` has its centre of mass at ``u = x_c cos(theta) + z_c sin(theta) + axis_offset``,
    ``v = y_c`` (pixels from the frame centre).

    Attributes
    ----------
    axis_offset_px
        Fitted constant ``u`` offset (pixels): where the tilt axis projects, relative to the
        frame centre, in the frames corrected by the current shifts.
    object_position_px
        ``(x_c, y_c, z_c)`` of the object in the volume, pixels from its centre.
    residuals_px
        Per-tilt ``(dy, dx)`` left after the fit (what the current shifts miss).
    mass_variation
        Standard deviation / mean of the frame masses (should be small; a large value means the
        object leaves the field of view or the background is not flat).
    """

    axis_offset_px: float
    object_position_px: tuple[float, float, float]
    residuals_px: np.ndarray
    mass_variation: float


def fit_center_of_mass(ts: TiltSeries) -> CenterOfMassFit:
    """Fit the centres of mass of the frames, corrected by the current shifts (see the class)."""
    angles = ts.require_angles()
    if ts.n_tilts < 4:
        raise TiltgenError(f"the centre-of-mass fit needs at least 4 tilts; this series has "
                           f"{ts.n_tilts}.", ts.provenance.get("source"))
    com, mass = _checked_com(ts)
    com = com - ts.shifts_px
    basis = _gauge_basis(angles)
    coef, *_ = np.linalg.lstsq(basis, com[:, 1], rcond=None)
    rx = com[:, 1] - basis @ coef
    yc = float(np.mean(com[:, 0]))
    ry = com[:, 0] - yc
    return CenterOfMassFit(axis_offset_px=float(coef[0]),
                           object_position_px=(float(coef[1]), yc, float(coef[2])),
                           residuals_px=np.stack([ry, rx], axis=1),
                           mass_variation=float(mass.std() / mass.mean()))


def estimate_tilt_axis_offset(ts: TiltSeries, *, method: str = "com") -> float:
    """Tilt-axis offset in pixels along x (``axis_offset`` of the geometry), from the frames.

    ``method="com"``: the constant term of the least-squares fit of the raw frames' x centres
    of mass by ``A + x_c cos(theta) + z_c sin(theta)`` (compact object inside every frame).
    This is independent of ``ts.shifts_px``; per-tilt shifts with a non-zero mean or a
    ``cos``/``sin`` trend are partly read as offset or object position, which no method can
    separate. ``method="shifts"``: the same decomposition applied to the current
    ``shifts_px[:, 1]`` (how much axis offset an alignment has folded into them).

    Returns
    -------
    float
        Offset in pixels; positive means the tilt axis projects to the right (+x) of the frame
        centre.
    """
    angles = ts.require_angles()
    if method == "com":
        if ts.n_tilts < 4:
            raise TiltgenError("estimating the tilt-axis offset needs at least 4 tilts.")
        return _axis_offset_of(center_of_mass(ts)[:, 1], angles)
    if method == "shifts":
        return _axis_offset_of(ts.shifts_px[:, 1], angles)
    raise TiltgenError(f"unknown method {method!r}; use 'com' or 'shifts'.")


def align_center_of_mass(ts: TiltSeries, *, per_tilt: bool = True, center_object: bool = False
                         ) -> TiltSeries:
    """Shifts from the centre-of-mass fit (:func:`fit_center_of_mass`).

    The fit of the frames corrected by the current shifts gives an axis offset ``A``, the object
    position ``(x_c, y_c, z_c)`` and per-tilt residuals; the shifts are updated by

    * ``A`` (always: the axis offset is folded into ``dx``),
    * the residuals, if ``per_tilt`` (the shifts then follow the centres of mass exactly; with
      ``per_tilt=False`` per-tilt shifts from e.g. cross-correlation are kept),
    * ``x_c cos(theta) + z_c sin(theta)`` and ``y_c``, if ``center_object``: the object's centre
      of mass moves to the centre of the reconstructed volume.

    Requires a compact object inside every frame on a flat background (nanoparticles in
    HAADF-STEM). The fit results are recorded in the history entry.
    """
    angles = ts.require_angles()
    fit = fit_center_of_mass(ts)
    delta = np.zeros((ts.n_tilts, 2))
    delta[:, 1] += fit.axis_offset_px
    if per_tilt:
        delta += fit.residuals_px
    if center_object:
        xc, yc, zc = fit.object_position_px
        t = np.deg2rad(angles)
        delta[:, 1] += xc * np.cos(t) + zc * np.sin(t)
        delta[:, 0] += yc
    shifts = ts.shifts_px + delta
    entry = {
        "step": "align_center_of_mass",
        "parameters": {"per_tilt": per_tilt, "center_object": center_object},
        "fitted_axis_offset_px": fit.axis_offset_px,
        "object_position_px": list(fit.object_position_px),
        "residual_rms_px": float(np.sqrt(np.mean(fit.residuals_px**2))),
        "mass_variation": fit.mass_variation,
        "axis_offset_px": _axis_offset_of(shifts[:, 1], angles),
    }
    if fit.mass_variation > 0.1:
        entry["warning"] = (f"frame masses vary by {100 * fit.mass_variation:.0f}%: the object "
                            "may leave the field of view; centre-of-mass shifts are unreliable.")
    return replace(ts, shifts_px=shifts, provenance=_history(ts, entry))
