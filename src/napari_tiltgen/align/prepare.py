"""Preparing a recorded tilt series for reconstruction: intensities and tilt-axis orientation.

What a microscope writes is rarely what a reconstruction wants:

* **HAADF-STEM** frames carry a detector offset: the vacuum reads far from zero (about -31900 in
  one int16 FEI stack). Left in, every ray carries the offset and SIRT reconstructs a blob.
  :func:`prepare_intensity` measures the vacuum level of each frame (the lowest well-populated
  plateau of its histogram: a narrow strip of vacuum beside a support that fills most of the
  frame counts, the support's plateau does not) and subtracts it. Frames that show no vacuum
  (the specimen fills them) get the level of the frames that do, and the notes say how many.
  A specimen that fills every frame cannot be told from vacuum this way: its darkest plateau
  is taken (use ``--intensity none`` when the detector has no offset).
* **Bright-field / TEM** frames show a dark object on a bright background. The line integral is
  ``-log(I / I0)`` with ``I0`` the vacuum (bright) level of each frame; the contrast is detected
  (most pixels that differ from the background are darker than it) and converted.
* **Per-frame normalisation** (optional): beam current and detector gain drift during a series.
  For an isolated object in vacuum the total signal of a frame is the object's mass, the same at
  every tilt, so each frame is scaled to the median total; for a laterally extended specimen
  (no vacuum in the frames) the total grows like ``1 / cos(tilt)`` and that is taken into account.
* **Tilt-axis orientation**: given by the user, else from the file's metadata, else estimated
  from the data over the full 0-180 degree range
  (:func:`napari_tiltgen.align.axis.find_tilt_axis`); the frames are then turned so that
  the axis runs along y (whole quarter turns exactly, the rest by interpolation).

:func:`prepare` does both and returns the prepared series and a list of notes saying what was
done (the CLI prints them on stderr, widgets in their status line); every step is also recorded
in ``provenance["history"]``, and ``provenance["intensity"]`` holds what was measured.

Example
-------
>>> import numpy as np
>>> from napari_tiltgen.simulate.phantoms import sphere_phantom
>>> ts, _ = sphere_phantom(size=32, tilt_step=10.0)
>>> raw = TiltSeries(ts.data - 31900.0, tilt_angles=ts.tilt_angles)
>>> out, notes = prepare_intensity(raw)
>>> bool(abs(float(np.median(out.data[:, 0, :]))) < 1e-3)
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.io.model import TiltSeries

__all__ = [
    "INTENSITY_MODES",
    "detect_contrast",
    "inserted_as_recorded",
    "prepare",
    "prepare_intensity",
    "prepare_iter",
    "prepare_tilt_axis_iter",
    "unprepare_frames",
    "vacuum_levels",
]

#: ``auto``: detect; ``none``: leave the intensities; ``haadf``: subtract the vacuum level;
#: ``bf``: bright-field, ``-log(I / I0)``.
INTENSITY_MODES = ("auto", "none", "haadf", "bf")

#: A frame shows vacuum when at least this fraction of its pixels lie at its lowest level.
VACUUM_MIN_FRACTION = 0.01

#: Rotations of the frames smaller than this (degrees) are not worth a resampling.
MIN_ROTATION_DEG = 0.3


# ---------------------------------------------------------------------------- measurements
def _sample(frame: np.ndarray, max_pixels: int = 65536) -> np.ndarray:
    """Every k-th value (at most about ``max_pixels``), as float64; strided before the cast,
    so a whole stack is not copied to float64 first."""
    v = np.asarray(frame).ravel()
    return v[:: max(1, v.size // max_pixels)].astype(np.float64)


def _noise_sigma(frame: np.ndarray) -> float:
    """White-noise sigma from neighbouring-pixel differences (robust to structure)."""
    d = np.diff(np.asarray(frame, dtype=np.float64), axis=-1).ravel()
    mad = float(np.median(np.abs(d - np.median(d))))
    return mad * 1.4826 / math.sqrt(2.0)


def _border(frame: np.ndarray, width: int = 2) -> np.ndarray:
    f = np.asarray(frame, dtype=np.float64)
    w = max(1, min(width, f.shape[0] // 4, f.shape[1] // 4))
    return np.concatenate([f[:w].ravel(), f[-w:].ravel(), f[w:-w, :w].ravel(),
                           f[w:-w, -w:].ravel()])


def _mode(values: np.ndarray, sigma: float) -> float:
    """Mode of a sample: peak of its histogram smoothed to about the noise width."""
    from scipy import ndimage

    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        return float(lo)
    nb = 256
    h, edges = np.histogram(values, bins=nb, range=(lo, hi))
    width_bins = max(1.0, sigma / ((hi - lo) / nb))
    h = ndimage.gaussian_filter1d(h.astype(np.float64), min(width_bins, nb / 8.0))
    k = int(np.argmax(h))
    return float(0.5 * (edges[k] + edges[k + 1]))


def _most_frequent(values: np.ndarray) -> float:
    vals, counts = np.unique(values, return_counts=True)
    return float(vals[np.argmax(counts)])


def _frame_vacuum(frame: np.ndarray, dark: bool) -> tuple[float, bool, bool, float]:
    """Vacuum level of one frame, whether a plateau holds it, whether it is clearly vacuum,
    and the frame's noise sigma (:func:`_noise_sigma`).

    Works on the dark side (HAADF; ``dark=False``: the bright side, for bright field). Starts
    at the mode of the darker 60 % of the pixels, then steps down to a lower population while
    there is one that holds at least :data:`VACUUM_MIN_FRACTION` of the pixels and is
    separated from the current level by a valley of the histogram (bins of one noise sigma):
    a narrow strip of vacuum beside a support that fills most of the frame is the lowest such
    population, while the support's own plateau holds more pixels. A continuous spread below
    the level (a background ramp) has no valley and is not stepped into. The level is refined
    to the mean of the pixels within 1.5 noise sigmas. It is a plateau when at least
    :data:`VACUUM_MIN_FRACTION` of the pixels lie within 2 sigmas of it, and clearly vacuum
    when, in addition, whatever lies further below is dense (the rest of a ramp), not a sparse
    tail of object edges under an object plateau. Noise-free frames (no measurable noise): the same
    with exact values.
    """
    v = _sample(frame)
    if not dark:
        v = -v
    sigma = _noise_sigma(frame)
    span = float(np.ptp(v)) if v.size else 0.0
    exact = sigma <= 1e-6 * max(span, 1e-30)
    s = max(sigma, 1e-6 * max(span, 1e-30))

    def mode(x: np.ndarray) -> float:
        return _most_frequent(x) if exact else _mode(x, sigma)

    m = mode(v[v <= np.percentile(v, 60.0)])
    nmin = max(16.0, VACUUM_MIN_FRACTION * v.size)
    for _ in range(8):  # step down to a lower, separate population
        below = v[v < m - 4.0 * s]
        if below.size < nmin:
            break
        c = mode(below)
        if np.count_nonzero(np.abs(v - c) <= 2.0 * s) < nmin:
            break
        edges = np.arange(c - 1.5 * s, m + 1.5 * s + 1e-6 * s, s)
        h, _ = np.histogram(v, bins=edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        peak = float(h[np.abs(centres - c) <= 1.01 * s].max())
        between = h[(centres > c + 0.5 * s) & (centres < m - 0.5 * s)]
        if between.size == 0 or not (between.min() < 0.8 * peak
                                     and peak - between.min() > 3.0 * math.sqrt(peak)):
            break
        m = c
    if not exact:
        for _ in range(2):
            near = v[np.abs(v - m) <= 1.5 * s]
            if near.size >= 16:
                m = float(near.mean())
    n_near = int(np.count_nonzero(np.abs(v - m) <= 2.0 * s))
    plateau = found = n_near >= nmin
    if found:
        below = v[v < m - 4.0 * s]
        if below.size >= nmin:  # below the level: the rest of a ramp, or object edges?
            lo = float(np.percentile(below, 1.0))
            density = below.size / max(m - 4.0 * s - lo, 1e-30)
            found = density >= 0.5 * n_near / (4.0 * s)
    return (m if dark else -m), bool(plateau), bool(found), sigma


def vacuum_levels(data: np.ndarray, *, bright: bool = False, details: bool = False
                  ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame vacuum (background) level of a stack ``(n, ny, nx)``.

    Each frame's level is its lowest well-populated plateau (:func:`_frame_vacuum`; with
    ``bright=True`` the highest, for bright-field data). A frame shows vacuum when enough of
    its pixels sit at that level (a plateau) and the level lies within 5 robust sigmas of the
    spread, 3 noise sigmas or 0.1 % of the data's range of the median level of the frames
    that are clearly vacuum (nothing but a ramp below the plateau; :func:`_frame_vacuum`), or,
    when no frame is, of all frames with a plateau (a strong ramp spreads the vacuum; a
    support that fills every frame cannot be told from vacuum this way). Frames that show no
    vacuum (the specimen fills them, often at high tilt) get the level interpolated from the
    frames that do, in stack order (the nearest one beyond the ends). When no frame shows
    vacuum the frames' own levels are returned.

    ``details=True`` also returns, per frame, whether it shows vacuum and whether that is
    clearly vacuum (two bool arrays).
    """
    res = [_frame_vacuum(f, dark=not bright) for f in data]
    levels = np.array([r[0] for r in res], dtype=np.float64)
    plateau = np.array([r[1] for r in res], dtype=bool)
    clear = found = np.array([r[2] for r in res], dtype=bool)
    ref = found if found.any() else plateau
    if ref.any():  # plateaus at the level of the clear vacuum (else of most plateaus)
        med = float(np.median(levels[ref]))
        mad = 1.4826 * float(np.median(np.abs(levels[ref] - med)))
        sig = float(np.median([r[3] for r in res[:: max(1, len(data) // 8)]]))
        lo, hi = np.percentile(_sample(data, 1 << 20), [0.1, 99.9])
        tol = max(5.0 * mad, 3.0 * sig, 1e-3 * float(hi - lo), 1e-12)
        found = plateau & (np.abs(levels - med) <= tol)
    out = levels.copy()
    if found.any() and not found.all():
        idx = np.arange(len(levels))
        out[~found] = np.interp(idx[~found], idx[found], levels[found])
    return (out, found, clear) if details else out


def _vacuum_notes(found: np.ndarray, clear: np.ndarray, what: str, record: dict[str, Any]
                  ) -> list[str]:
    """Record which frames show vacuum; say what the user should know about where the level
    came from."""
    record["frames_without_vacuum"] = [int(i) for i in np.flatnonzero(~found)]
    record["frames_with_clear_vacuum"] = int(clear.sum())
    notes = []
    if not found.all():
        notes.append(f"intensity: {int((~found).sum())} of {found.size} frames show no vacuum "
                     f"at the level of the others (the specimen may fill them); their {what} "
                     "was interpolated from the frames that do.")
    return notes


def detect_contrast(data: np.ndarray) -> tuple[str, float]:
    """``("haadf" | "bf", strength)``: is the object brighter or darker than the background?

    The background is each frame's border median; pixels more than 5 noise sigmas (and 2 % of
    the frame's range) from it are counted as object. ``strength`` is the fraction of object
    pixels on the majority side (0.5: undecided, 1: clear).
    """
    idx = np.linspace(0, len(data) - 1, min(len(data), 9)).round().astype(int)
    brighter = darker = 0
    for i in np.unique(idx):
        f = np.asarray(data[i], dtype=np.float64)
        bg = float(np.median(_border(f)))
        sigma = _noise_sigma(f)
        lo, hi = np.percentile(f, [0.1, 99.9])
        t = max(5.0 * sigma, 0.02 * (hi - lo))
        brighter += int(np.count_nonzero(f > bg + t))
        darker += int(np.count_nonzero(f < bg - t))
    total = brighter + darker
    if total == 0:
        return "haadf", 0.5
    return ("bf", darker / total) if darker > brighter else ("haadf", brighter / total)


def _frame_weights(angles: np.ndarray | None, extended: bool) -> np.ndarray | None:
    if angles is None:
        return None
    c = np.cos(np.deg2rad(angles))
    return 1.0 / np.maximum(c, 0.05) if extended else np.ones_like(c)


# ---------------------------------------------------------------------------- intensity
def prepare_intensity(ts: TiltSeries, mode: str = "auto", *, normalise: bool = False
                      ) -> tuple[TiltSeries, list[str]]:
    """Remove the vacuum offset (HAADF) or convert to ``-log(I/I0)`` (bright field).

    Parameters
    ----------
    ts
        Tilt series as recorded (any stored type; converted to float32).
    mode
        ``"auto"`` (detect the contrast), ``"haadf"``, ``"bf"`` or ``"none"``.
    normalise
        Also scale each frame to a common total signal (mass conservation; with a
        ``1/cos(tilt)`` correction when the frames hold no vacuum, i.e. an extended specimen).

    Returns
    -------
    (TiltSeries, list of str)
        The prepared copy (the input is not modified) and notes saying what was done.
    """
    mode = str(mode).lower()
    if mode not in INTENSITY_MODES:
        raise TiltgenError(f"unknown intensity mode {mode!r}; choose one of "
                           f"{', '.join(INTENSITY_MODES)}.")
    where = ts.provenance.get("source")
    notes: list[str] = []
    if mode == "none" and not normalise:
        return ts, ["intensities left as recorded (--intensity none)"]
    data = np.array(ts.data, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; repair or crop "
                           "them before preparing the intensities.", where)
    record: dict[str, Any] = {"mode_requested": mode}
    kind = mode
    if mode == "auto":
        kind, strength = detect_contrast(data)
        record["detected"] = kind
        record["detection_strength"] = round(float(strength), 3)
    if kind == "haadf":
        levels, found, clear = vacuum_levels(data, details=True)
        data -= levels[:, None, None].astype(np.float32)
        record["vacuum_levels"] = [round(float(v), 4) for v in levels]
        how = "detected: bright object on a dark background" if mode == "auto" else "asked"
        notes.append(f"intensity: HAADF ({how}); vacuum level {float(np.median(levels)):.4g} "
                     f"(per frame {float(levels.min()):.4g} to {float(levels.max()):.4g}) "
                     "subtracted")
        notes.extend(_vacuum_notes(found, clear, "level", record))
    elif kind == "bf":
        if float(data.min()) <= 0.0:
            raise TiltgenError(
                "bright-field conversion -log(I/I0) needs intensities above zero, but this "
                f"stack goes down to {float(data.min()):.4g} (a detector offset?). Subtract the "
                "dark level first or use --intensity none / haadf.", where)
        i0, found, clear = vacuum_levels(data, bright=True, details=True)
        if np.any(i0 <= 0):
            raise TiltgenError("could not find a bright vacuum level in every frame for "
                               "-log(I/I0); use --intensity none.", where)
        data = -np.log(np.maximum(data, 1e-6 * i0[:, None, None]) / i0[:, None, None])
        data = data.astype(np.float32)
        record["i0_levels"] = [round(float(v), 4) for v in i0]
        how = "detected: dark object on a bright background" if mode == "auto" else "asked"
        notes.append(f"intensity: bright field ({how}); converted to -log(I/I0), I0 = vacuum "
                     f"level {float(np.median(i0)):.4g}")
        notes.extend(_vacuum_notes(found, clear, "I0", record))
    else:
        notes.append("intensities left as recorded (--intensity none)")
    if normalise:
        totals = data.reshape(data.shape[0], -1).sum(axis=1).astype(np.float64)
        if np.any(totals <= 0):
            raise TiltgenError("per-frame normalisation needs a positive total signal in every "
                               "frame (is the offset removed?).", where)
        sig = float(np.median([_noise_sigma(f) for f in data[:: max(1, len(data) // 8)]]))
        vacuum_fraction = float(np.mean(np.abs(data[:, ::4, ::4]) <= 3.0 * max(sig, 1e-12)))
        extended = vacuum_fraction < 0.05
        w = _frame_weights(ts.tilt_angles, extended)
        if w is None:
            w = np.ones(data.shape[0])
        target = float(np.median(totals / w))
        scale = target * w / totals
        data *= scale[:, None, None].astype(np.float32)
        record["normalise"] = {"scale": [round(float(s), 5) for s in scale],
                               "model": "1/cos(tilt)" if extended else "constant mass"}
        notes.append(f"intensity: frames normalised to a common total "
                     f"({'1/cos(tilt) for an extended specimen' if extended else 'constant mass'};"
                     f" scale {float(scale.min()):.3f} to {float(scale.max()):.3f})")
    prov = copy.deepcopy(ts.provenance)
    prov["intensity"] = record
    prov.setdefault("history", []).append({"step": "prepare_intensity", **record,
                                           "normalise": bool(normalise)})
    return replace(ts, data=data, provenance=prov), notes


# ---------------------------------------------------------------------------- tilt axis
def prepare_tilt_axis_iter(ts: TiltSeries, tilt_axis_deg: float | None = None, *,
                           estimate: bool = True, min_rotation_deg: float = MIN_ROTATION_DEG,
                           low_confidence: float = 0.3, rotation_order: int | None = 3
                           ) -> Generator[Progress, None, tuple[TiltSeries, list[str]]]:
    """Turn the frames so the tilt axis runs along y; as a progress generator.

    The axis comes from, in order: ``tilt_axis_deg`` (the user), the file's metadata (when the
    reader recorded it), or an estimate from the data over the full 0-180 degree range
    (:func:`~napari_tiltgen.align.axis.find_tilt_axis`; ``estimate=False`` assumes
    vertical instead, and says so). Returns the turned series and notes. A rest rotation (after
    exact quarter turns) is a cubic spline (``rotation_order`` 3) or band-limited (``None``):
    see :func:`prepare`.
    """
    from napari_tiltgen.align.axis import (
        tilt_axis_known,
        turn_tilt_axis_to_vertical,
        with_known_tilt_axis,
    )
    from napari_tiltgen.align.axis_estimate import estimate_axis_iter
    notes: list[str] = []
    if tilt_axis_deg is not None:
        if not math.isfinite(float(tilt_axis_deg)):
            raise TiltgenError(f"the tilt-axis angle must be a finite number; got "
                               f"{tilt_axis_deg}.")
        angle, source = float(tilt_axis_deg), "user (--tilt-axis / widget)"
        notes.append(f"tilt axis {angle:.2f} deg from image Y given by the user")
    elif tilt_axis_known(ts):
        angle = float(ts.tilt_axis_angle_deg)
        source = str(ts.provenance.get("tilt_axis_source", "metadata"))
        if abs(angle) < 1e-6:
            return ts, notes
        notes.append(f"tilt axis {angle:.2f} deg from image Y, from {source}")
    elif not estimate:
        notes.append("tilt axis not recorded in the file and estimation is off: assumed "
                     "vertical (y); give --tilt-axis DEG if it is not")
        return with_known_tilt_axis(ts, 0.0, "assumed vertical (not recorded; estimation "
                                      "off)"), notes
    else:
        try:
            found = yield from estimate_axis_iter(ts, low_confidence)
        except TiltgenError as exc:
            notes.append(f"tilt axis not recorded and could not be estimated ({exc}); assumed "
                         "vertical (y): give --tilt-axis DEG")
            return with_known_tilt_axis(ts, 0.0, "assumed vertical (estimation failed)"), notes
        notes.extend(found.notes)
        if found.cached:
            notes.append(f"(the estimate made earlier for these very frames, from the cache "
                         f"{found.path}; TILTGEN_CACHE=off recomputes it)")
        ts = replace(ts, provenance={**copy.deepcopy(ts.provenance), **found.provenance})
        angle, source, why = found.angle, found.source, found.why
        if why:
            notes.append(f"WARNING: {why}frames NOT turned, axis assumed vertical (y); check the "
                         "volume's orientation or give --tilt-axis DEG")
            return with_known_tilt_axis(ts, 0.0, f"assumed vertical ({found.source_note})"), notes
    turned = turn_tilt_axis_to_vertical(ts, angle, source, min_rotation_deg=min_rotation_deg,
                                        order=rotation_order)
    rest = float(angle - 90.0 * round(angle / 90.0))
    quarter = int(round(angle / 90.0)) % 4
    parts = []
    if quarter:
        parts.append(f"turned by {quarter} quarter turn(s) (exact)")
    if abs(rest) >= min_rotation_deg:
        how = "band-limited" if rotation_order is None else f"spline order {rotation_order}"
        parts.append(f"rotated by {-rest:.2f} deg ({how})")
    elif abs(rest) > 1e-3:
        parts.append(f"a rest of {rest:.2f} deg left unrotated (below {min_rotation_deg} deg)")
    if parts:
        notes.append("frames " + ", ".join(parts) + " so that the tilt axis runs along y")
    return turned, notes


# ---------------------------------------------------------------------------- both
def prepare_iter(ts: TiltSeries, *, tilt_axis: float | None = None, intensity: str = "auto",
                 normalise: bool = False, estimate_axis: bool = True,
                 rotation_order: int | None = 3
                 ) -> Generator[Progress, None, tuple[TiltSeries, list[str]]]:
    """:func:`prepare` as a progress generator (for napari workers)."""
    yield Progress(0.0, "preparing intensities")
    ts, notes = prepare_intensity(ts, intensity, normalise=normalise)
    yield Progress(0.1, "intensities prepared")
    gen = prepare_tilt_axis_iter(ts, tilt_axis, estimate=estimate_axis,
                                 rotation_order=rotation_order)
    try:
        while True:
            ev = next(gen)
            yield Progress(0.1 + 0.9 * ev.fraction, ev.message)
    except StopIteration as stop:
        ts, more = stop.value
    yield Progress(1.0, "prepared")
    return ts, notes + more


def prepare(ts: TiltSeries, *, tilt_axis: float | None = None, intensity: str = "auto",
            normalise: bool = False, estimate_axis: bool = True,
            rotation_order: int | None = 3) -> tuple[TiltSeries, list[str]]:
    """Intensities, then tilt-axis orientation: what every command does after reading.

    Parameters
    ----------
    ts
        Tilt series as read.
    tilt_axis
        Tilt-axis angle in degrees (IMOD convention: counter-clockwise from the image Y axis)
        given by the user; overrides the metadata and the estimate.
    intensity
        ``"auto"``, ``"haadf"``, ``"bf"`` or ``"none"`` (see :func:`prepare_intensity`).
    normalise
        Per-frame intensity normalisation.
    estimate_axis
        Estimate an axis the file does not record (default); ``False`` assumes vertical.
    rotation_order
        How the frames are turned by the rest of the axis angle after exact quarter turns: a
        cubic spline (3, default: for reconstructions) or band-limited (``None``: three
        Fourier shears, no blur; ``tiltgen interpolate``, whose inserted frames are turned
        back and must look like the real ones). Measured (docs/alignment.md, "Turning the
        frames"): the spline there and back cost a noisy 256-px needle's inserted frames
        0.16-0.29 dB against its real frames; the spline's slight smoothing lowers SIRT-100's
        NRMSE on noisy held-out series by 3-8 % and changes nothing noise-free.

    Returns
    -------
    (TiltSeries, list of str)
        The prepared series (tilt axis along y, ``tilt_axis_angle_deg = 0``) and notes.
    """
    return run(prepare_iter(ts, tilt_axis=tilt_axis, intensity=intensity, normalise=normalise,
                            estimate_axis=estimate_axis, rotation_order=rotation_order),
               show=False)


# ---------------------------------------------------------------------------- and back
def unprepare_frames(frames: np.ndarray, angles: np.ndarray, prepared: TiltSeries,
                     recorded: TiltSeries) -> np.ndarray:
    """Frames made in ``prepared``'s geometry and units, mapped back to ``recorded``'s.

    For frames a method made from the prepared series (the frames a tilt-frame interpolation
    inserts at ``angles``): the steps :func:`prepare` added to ``recorded``'s history are undone
    in reverse order: the rotation that made the tilt axis vertical (the same band-limited or
    spline rotation, the corners filled with the frame's border median), the quarter turns (exact), the per-frame
    normalisation, then the vacuum level (HAADF: added back) or ``-log(I / I0)`` (bright field:
    ``I0 exp(-p)``), each frame's scale, level and ``I0`` interpolated in angle between the
    recorded frames'.

    Parameters
    ----------
    frames
        ``(m, ny, nx)`` frames in the prepared series' geometry and units.
    angles
        ``(m,)`` their tilt angles, degrees.
    prepared, recorded
        The series after and before :func:`prepare` (``recorded`` as read).

    Returns
    -------
    np.ndarray
        ``(m, ny0, nx0)`` float32 frames in the recorded series' geometry and units.
    """
    from napari_tiltgen.align.common import turn_frames

    out = np.asarray(frames, dtype=np.float32).copy()
    if out.shape[0] == 0:
        return out
    steps = prepared.provenance.get("history", [])[len(recorded.provenance.get("history", [])):]
    rec_angles = np.asarray(prepared.tilt_angles, dtype=np.float64)
    o = np.argsort(rec_angles)

    def per_frame(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        return np.interp(np.asarray(angles, np.float64), rec_angles[o], v[o])[:, None, None]

    for step in reversed(steps):
        name = step.get("step")
        if name == "rotate_tilt_axis_to_vertical" and "order" in step:
            # the same rotation back (the corners get the border median, as going there)
            out = turn_frames(out, -float(step["angle_deg"]), step["order"])
        elif name == "rot90":
            k = int(step["quarter_turns_clockwise"])
            out = np.ascontiguousarray(np.rot90(out, k=-k, axes=(1, 2)))
        elif name == "prepare_intensity":
            if step.get("normalise"):  # the scales are in provenance["intensity"]
                scale = prepared.provenance["intensity"]["normalise"]["scale"]
                out = out / per_frame(scale).astype(np.float32)
            if "vacuum_levels" in step:
                out = out + per_frame(step["vacuum_levels"]).astype(np.float32)
            elif "i0_levels" in step:
                out = (per_frame(step["i0_levels"]) * np.exp(-out.astype(np.float64))
                       ).astype(np.float32)
    if out.shape[1:] != tuple(recorded.data.shape[1:]):
        raise TiltgenError(f"could not map frames of shape {out.shape[1:]} back to the recorded "
                           f"{tuple(recorded.data.shape[1:])}.")
    return out.astype(np.float32)


def inserted_as_recorded(series: TiltSeries, predicted: np.ndarray, source_index: np.ndarray,
                         prepared: TiltSeries, recorded: TiltSeries, note: str) -> TiltSeries:
    """A denser ``series`` made from ``prepared`` (frames inserted between its tilts), as the
    recorded series with those frames inserted.

    Real frames (``predicted`` False; ``source_index`` their index in the input) are
    ``recorded``'s own, untouched (same values, geometry, units); inserted frames are mapped
    back by :func:`unprepare_frames`. Shifts are ``recorded``'s, the inserted frames'
    interpolated in angle; ``series``' history record of the step (``note`` added) is kept.
    """
    if prepared.n_tilts != recorded.n_tilts:
        raise TiltgenError("the prepared and the recorded series have different frame counts.")
    angles = np.asarray(series.tilt_angles, np.float64)
    pred = np.asarray(predicted, bool)
    src = np.asarray(source_index)
    data = np.empty((series.n_tilts, *recorded.data.shape[1:]), np.float32)
    data[~pred] = np.asarray(recorded.data, np.float32)[src[~pred]]
    data[pred] = unprepare_frames(np.asarray(series.data, np.float32)[pred], angles[pred],
                                  prepared, recorded)
    ra = np.asarray(recorded.tilt_angles, np.float64)
    o = np.argsort(ra)
    shifts = np.empty((series.n_tilts, 2))
    shifts[~pred] = recorded.shifts_px[src[~pred]]
    for c in range(2):
        shifts[pred, c] = np.interp(angles[pred], ra[o], recorded.shifts_px[o, c])
    prov = copy.deepcopy(recorded.provenance)
    last = copy.deepcopy(series.provenance.get("history", [{}])[-1])
    last["frames"] = note
    prov.setdefault("history", []).append(last)
    if "interpolation" in series.provenance:
        prov["interpolation"] = {**copy.deepcopy(series.provenance["interpolation"]),
                                 "frames": note}
    times = None
    if recorded.acquisition_times_s is not None:
        times = np.interp(angles, ra[o], np.asarray(recorded.acquisition_times_s)[o])
    return replace(recorded, data=data, tilt_angles=angles, shifts_px=shifts,
                   acquisition_times_s=times, provenance=prov)
