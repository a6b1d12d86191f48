"""Insert frames into a tilt series: pretrained network, linear interpolation, SIRT reprojection,
and (:mod:`.adapt`) the network fine-tuned on the user's own stack, chosen by leave-one-out QA.

All methods share one API (:func:`interpolate_at`, :func:`interpolate_series`,
:func:`leave_one_out`), take a :class:`~napari_tiltgen.io.model.TiltSeries` and return numpy
frames in the units of the input.

* ``"pretrained"``: the packaged network (``models/interpolation.safetensors``), conditioned on
  the position ``t`` of the new frame between its two neighbours and on their angular gap.
* ``"linear"``: ``(1 - t) I0 + t I1``.
* ``"reprojection"``: SIRT reconstruction of the (sparse) series, forward-projected at the new
  angles with the same projector.
* ``"adapted"``: a copy of the network fine-tuned on the stack's own real frames
  (:func:`~.adapt.adapt_and_select`), used whatever the QA says.
* ``"auto"`` (:func:`interpolate_series` only): adapt, then score pretrained, adapted and linear
  by leave-one-out on held-out real frames of the stack and use the best; a network is used only
  when it beats linear interpolation by a margin, so the result is never knowingly worse than
  linear on the user's data.

Out-of-range input (see :func:`check_inputs`): a gap larger than the model was trained for is
refused (:class:`~napari_tiltgen.errors.TiltgenError`) unless ``allow_out_of_range=True``; gaps
below the trained range, a pixel size far from the training data's, and motion larger than seen
in training give warnings, returned with the result (and emitted as ``UserWarning``). When the
object is much larger in pixels than the training objects, the network estimates flows on a
binned copy of the frames and warps the full-resolution frames with them (``scale="auto"``).
"""

from __future__ import annotations

import copy
import math
import threading
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.methods.interpolation.data import object_radius_px
from napari_tiltgen.methods.interpolation.network import (
    TiltInterpNet,
    load_model,
    normalise_pair,
    pad_to_multiple,
    warp,
)
from napari_tiltgen.progress import Progress

__all__ = [
    "DEFAULT_WEIGHTS",
    "METHODS",
    "SERIES_METHODS",
    "InterpolationResult",
    "LeaveOneOutResult",
    "check_inputs",
    "insertion_plan",
    "interpolate_at",
    "interpolate_series",
    "leave_one_out",
    "linear_frames",
    "load_pretrained",
    "model_frames",
    "real_frames",
    "reprojection_frames",
]

METHODS = ("pretrained", "linear", "reprojection")
"""Methods of :func:`interpolate_at` and :func:`leave_one_out` (plus ``"adapted"`` with a model)."""
SERIES_METHODS = ("auto", "pretrained", "adapted", "linear", "reprojection")
"""Methods of :func:`interpolate_series` (``"auto"``: adapt, then choose by leave-one-out QA)."""
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "interpolation.safetensors"
"""The packaged weights (``napari_tiltgen/models/interpolation.safetensors``)."""

ProgressGen = Generator[Progress, None, Any]


# ---------------------------------------------------------------------------- model loading
_CACHE: dict[tuple[str, str], tuple[TiltInterpNet, dict[str, Any]]] = {}
_CACHE_LOCK = threading.Lock()


def load_pretrained(weights: str | Path | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[TiltInterpNet, dict[str, Any]]:
    """The interpolation network and its metadata (cached per file and device).

    Parameters
    ----------
    weights
        A ``.safetensors`` file written by training; default :data:`DEFAULT_WEIGHTS`. Only
        safetensors are read (no pickle), nothing is downloaded.
    device
        Torch device.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise TiltgenError("the interpolation weights are missing; reinstall napari-tiltgen or "
                           "train them (tiltgen train-interpolation).", path)
    key = (str(path.resolve()), str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_model(path, device)
        return _CACHE[key]


def _device(device: str | torch.device) -> torch.device:
    from napari_tiltgen.physics.projector import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise TiltgenError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiltgenError("device 'cuda' was asked for but no CUDA GPU is available; use "
                           "'auto' or 'cpu'.")
    return dev


# ---------------------------------------------------------------------------- planning
def insertion_plan(tilt_angles: Sequence[float], frames_per_gap: int | None = None,
                   target_step_deg: float | None = None) -> list[tuple[int, list[float]]]:
    """Where new frames go: for each pair of neighbouring tilts, the positions ``t`` in (0, 1).

    Parameters
    ----------
    tilt_angles
        Angles of the known frames, degrees, increasing.
    frames_per_gap
        Insert this many evenly spaced frames between every two neighbours.
    target_step_deg
        Or insert the fewest evenly spaced frames that bring each step to at most this, degrees.

    Returns
    -------
    list of (i, ts)
        Pair ``(i, i + 1)`` and the positions of its new frames (empty pairs left out).

    Examples
    --------
    >>> insertion_plan([0.0, 3.0, 5.0], target_step_deg=1.0)
    [(0, [0.3333333333333333, 0.6666666666666666]), (1, [0.5])]
    """
    a = np.asarray(tilt_angles, dtype=np.float64)
    if (frames_per_gap is None) == (target_step_deg is None):
        raise TiltgenError("give either frames per gap or a target step (degrees), not both.")
    if a.size < 2:
        raise TiltgenError("at least two tilts are needed to interpolate between them.")
    if np.any(np.diff(a) <= 0):
        raise TiltgenError("the tilt angles must increase strictly (sort the series and remove "
                           "duplicate angles first).")
    plan = []
    for i, gap in enumerate(np.diff(a)):
        if frames_per_gap is not None:
            if frames_per_gap < 0:
                raise TiltgenError(f"frames per gap must be >= 0; got {frames_per_gap}.")
            n = int(frames_per_gap)
        else:
            if not target_step_deg > 0:
                raise TiltgenError(f"the target step must be positive; got {target_step_deg}.")
            n = max(0, math.ceil(gap / float(target_step_deg) - 1e-6) - 1)
        if n:
            plan.append((i, [k / (n + 1) for k in range(1, n + 1)]))
    return plan


# ---------------------------------------------------------------------------- checks
def _trained_ranges(info: dict[str, Any]) -> dict[str, Any]:
    data = info.get("data", {})
    return {
        "gap_deg": tuple(info.get("trained_gap_deg", (2.0, 12.0))),
        "pixel_size_A": tuple(data.get("pixel_size_A", (0.0, math.inf))),
        "object_radius_px": float(data.get("object_radius_px", (0, 32.0))[1]),
    }


def check_inputs(ts: TiltSeries, gaps_deg: Sequence[float], info: dict[str, Any],
                 allow_out_of_range: bool = False) -> tuple[list[str], int]:
    """Compare the input with the model's training range; refuse or warn.

    Parameters
    ----------
    ts
        The tilt series (pixel size in Å used when known).
    gaps_deg
        Angular gaps (degrees) the model will be asked to bridge.
    info
        The model's metadata (:func:`load_pretrained`).
    allow_out_of_range
        Turn the refusal of too-large gaps into a warning.

    Returns
    -------
    (warnings, bin_factor)
        Messages for the user, and the binning (1, 2, 4, ...) at which flows are estimated so
        that the object is about as large in pixels as in training.

    Raises
    ------
    TiltgenError
        A gap is larger than the trained maximum (and ``allow_out_of_range`` is off).
    """
    r = _trained_ranges(info)
    lo_gap, hi_gap = r["gap_deg"]
    msgs: list[str] = []
    gaps = np.asarray(gaps_deg, dtype=np.float64)
    if gaps.size == 0:
        return msgs, 1
    big = float(gaps.max())
    if big > hi_gap + 1e-6:
        text = (f"the largest gap to fill is {big:.2f} degrees but the model was trained on gaps "
                f"of {lo_gap:g}-{hi_gap:g} degrees; it would invent frames it has never learnt to "
                "predict. Use linear or reprojection interpolation for such gaps, or fill only "
                "the smaller gaps.")
        if not allow_out_of_range:
            raise TiltgenError(text + " (Override: allow_out_of_range / --allow-out-of-range.)")
        msgs.append("OUT OF RANGE: " + text)
    if float(gaps.min()) < lo_gap - 1e-6:
        msgs.append(f"the smallest gap is {gaps.min():.2f} degrees, below the trained range "
                    f"({lo_gap:g}-{hi_gap:g} degrees); expect results close to linear "
                    "interpolation there.")
    px_lo, px_hi = r["pixel_size_A"]
    if ts.pixel_size_A is None:
        msgs.append("the pixel size is unknown, so it cannot be compared with the training data "
                    f"({px_lo:.2f}-{px_hi:.2f} Å).")
    elif not (0.5 * px_lo <= ts.pixel_size_A <= 2.0 * px_hi):
        msgs.append(f"the pixel size {ts.pixel_size_A:.3g} Å is far from the training data's "
                    f"({px_lo:.2f}-{px_hi:.2f} Å): atoms and particle edges look different to "
                    "the model; check the result with leave-one-out QA.")
    radius = object_radius_px(ts.data)
    trained_r = max(r["object_radius_px"], 1.0)
    factor = 1
    while radius / factor > 1.5 * trained_r and factor < 64:
        factor *= 2
    if factor > 1:
        msgs.append(f"the object reaches {radius:.0f} px from the tilt axis, larger than in "
                    f"training (about {trained_r:.0f} px): motion between frames is estimated on "
                    f"a {factor}x binned copy and applied at full resolution.")
    return msgs, factor


# ---------------------------------------------------------------------------- the three methods
def linear_frames(frame0: np.ndarray, frame1: np.ndarray, ts: Sequence[float]) -> np.ndarray:
    """``(1 - t) I0 + t I1`` for every ``t``; ``(len(ts), ny, nx)`` float32."""
    t = np.asarray(ts, dtype=np.float32)[:, None, None]
    return ((1.0 - t) * frame0[None] + t * frame1[None]).astype(np.float32)


@torch.no_grad()
def model_frames(model: TiltInterpNet, frame0: np.ndarray, frame1: np.ndarray,
                 ts: Sequence[float], gap_deg: float, bin_factor: int = 1,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Frames predicted by the network between two frames.

    Parameters
    ----------
    model
        The network (:func:`load_pretrained`).
    frame0, frame1
        ``(ny, nx)`` frames at the lower and higher angle, any units.
    ts
        Positions of the new frames in (0, 1).
    gap_deg
        Angle between the two frames, degrees.
    bin_factor
        Estimate flows, mask and residual on a copy binned by this factor, then warp the
        full-resolution frames (1: everything at full resolution).
    device
        Torch device.

    Returns
    -------
    np.ndarray
        ``(len(ts), ny, nx)`` float32 in the units of the input.
    """
    dev = torch.device(device)
    x0 = torch.from_numpy(np.array(frame0, np.float32)).to(dev)[None, None]
    x1 = torch.from_numpy(np.array(frame1, np.float32)).to(dev)[None, None]
    lo, scale = normalise_pair(x0, x1)
    x0, x1 = (x0 - lo) / scale, (x1 - lo) / scale
    h, w = x0.shape[-2:]
    f = int(bin_factor)
    if f > 1:
        p0, _ = pad_to_multiple(x0, 16 * f)
        p1, _ = pad_to_multiple(x1, 16 * f)
        s0, s1 = F.avg_pool2d(p0, f), F.avg_pool2d(p1, f)
    else:
        p0, _ = pad_to_multiple(x0, 16)
        p1, _ = pad_to_multiple(x1, 16)
        s0, s1 = p0, p1
    f0, f1 = model.encode(s0), model.encode(s1)
    out = []
    for t in ts:
        tt = torch.tensor([float(t)], device=dev)
        gg = torch.tensor([float(gap_deg)], device=dev)
        o = model.decode(s0, s1, f0, f1, tt, gg)
        if f > 1:
            up = {"scale_factor": float(f), "mode": "bilinear", "align_corners": False}
            fl0 = F.interpolate(o["flow0"], **up) * f
            fl1 = F.interpolate(o["flow1"], **up) * f
            m = F.interpolate(o["mask"], **up)
            img = m * warp(p0, fl0) + (1 - m) * warp(p1, fl1) + F.interpolate(o["residual"], **up)
        else:
            img = o["image"]
        out.append((img[0, 0, :h, :w] * scale[0, 0] + lo[0, 0]).cpu().numpy())
    return np.stack(out).astype(np.float32)


def _interp_shifts(ts: TiltSeries, new_angles: np.ndarray) -> np.ndarray:
    a = ts.require_angles()
    order = np.argsort(a)
    return np.stack([np.interp(new_angles, a[order], ts.shifts_px[order, k]) for k in (0, 1)],
                    axis=1)


def reprojection_frames(ts: TiltSeries, new_angles: Sequence[float], iterations: int = 50,
                        device: str | torch.device = "auto") -> ProgressGen:
    """SIRT-reconstruct ``ts`` and forward-project the volume at ``new_angles`` (generator).

    The new frames get per-tilt shifts interpolated from their neighbours'. Returns
    ``(len(new_angles), ny, nx)`` float32 in the data's units.
    """
    from napari_tiltgen.methods.recon import reconstruct_iter
    from napari_tiltgen.physics.projector import Projector

    angles = np.asarray(new_angles, dtype=np.float64)
    gen = reconstruct_iter(ts, "sirt", iterations, device=str(device), preview_every=0)
    vol = yield from _scaled(gen, 0.0, 0.95, "reprojection: ")
    proj = Projector(vol.shape, angles, _interp_shifts(ts, angles), device=device)
    frames = proj.forward(torch.from_numpy(np.ascontiguousarray(vol.data)))
    yield Progress(1.0, "reprojection: projected")
    return frames.detach().to("cpu", torch.float32).numpy()


def _scaled(gen: Generator[Progress, None, Any], lo: float, hi: float, prefix: str = ""
            ) -> Generator[Progress, None, Any]:
    try:
        while True:
            ev = next(gen)
            yield Progress(lo + (hi - lo) * ev.fraction, prefix + ev.message)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


# ---------------------------------------------------------------------------- one entry point
def interpolate_at(ts: TiltSeries, pairs: Sequence[tuple[int, int, Sequence[float]]],
                   method: str = "pretrained", *, weights: str | Path | None = None,
                   device: str = "auto", allow_out_of_range: bool = False,
                   reprojection_iterations: int = 50, reprojection_source: TiltSeries | None = None,
                   scale: str | int = "auto",
                   model: tuple[TiltInterpNet, dict[str, Any]] | None = None,
                   quiet: bool = False) -> ProgressGen:
    """Predict frames between given pairs of frames of ``ts`` (progress generator).

    Parameters
    ----------
    ts
        Tilt series with angles (degrees).
    pairs
        ``(i0, i1, ts)``: frames ``i0`` and ``i1`` of ``ts`` (``angle[i0] < angle[i1]``) and the
        positions ``t`` in (0, 1) of the frames to predict between them.
    method
        ``"pretrained"``, ``"linear"``, ``"reprojection"``, or ``"adapted"`` (with ``model``).
    weights
        Weights file for ``"pretrained"`` (default: the packaged model).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    allow_out_of_range
        See :func:`check_inputs`.
    reprojection_iterations
        SIRT iterations of the reprojection baseline.
    reprojection_source
        Series to reconstruct for ``"reprojection"`` (default ``ts``).
    scale
        ``"auto"`` (bin for flow estimation when the object is larger than in training) or a
        binning factor (1 = full resolution).
    model
        ``(network, metadata)`` to use instead of the packaged weights for ``"pretrained"``;
        required for ``"adapted"`` (e.g. ``Selection.model`` of :mod:`.adapt`).
    quiet
        Return the warning messages without emitting them as ``UserWarning`` / progress
        (the QA of :mod:`.adapt` collects them itself).

    Returns
    -------
    (frames, angles, warnings)
        ``(n_new, ny, nx)`` float32 frames in the order of ``pairs``, their angles (degrees),
        and the list of warning messages.
    """
    if method not in METHODS + ("adapted",):
        raise TiltgenError(f"unknown interpolation method {method!r}; use one of "
                           f"{', '.join(METHODS)}.")
    if method == "adapted" and model is None:
        raise TiltgenError("the adapted method needs the adapted network (run adapt_and_select "
                           "first, or use interpolate_series(method='adapted')).")
    angles = ts.require_angles()
    if not np.all(np.isfinite(ts.data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; fix them first.")
    jobs = []
    for i0, i1, tlist in pairs:
        gap = float(angles[i1] - angles[i0])
        if gap <= 0:
            raise TiltgenError(f"frame {i1} ({angles[i1]:.2f} deg) must be at a higher angle than "
                               f"frame {i0} ({angles[i0]:.2f} deg).")
        tl = [float(t) for t in tlist]
        if any(not 0.0 < t < 1.0 for t in tl):
            raise TiltgenError("positions t of new frames must lie strictly between 0 and 1.")
        jobs.append((int(i0), int(i1), tl, gap))
    new_angles = np.array([angles[i0] + t * gap for i0, _i1, tl, gap in jobs for t in tl])
    n_new = new_angles.size
    msgs: list[str] = []
    if n_new == 0:
        return np.zeros((0,) + ts.data.shape[1:], np.float32), new_angles, msgs
    out = np.empty((n_new,) + ts.data.shape[1:], np.float32)
    if method == "reprojection":
        src = reprojection_source if reprojection_source is not None else ts
        out[:] = yield from reprojection_frames(src, new_angles, reprojection_iterations,
                                                _device(device))
        return out, new_angles, msgs
    if method in ("pretrained", "adapted"):
        dev = _device(device)
        net, info = model if model is not None else load_pretrained(weights, dev)
        net = net.to(dev)
        msgs, factor = check_inputs(ts, [j[3] for j in jobs if j[2]], info, allow_out_of_range)
        if scale != "auto":
            factor = int(scale)
        for m in msgs if not quiet else ():
            warnings.warn(m, UserWarning, stacklevel=2)
            yield Progress(0.0, "warning: " + m)
    k = 0
    for n, (i0, i1, tl, gap) in enumerate(jobs):
        if not tl:
            continue
        f0, f1 = np.asarray(ts.data[i0], np.float32), np.asarray(ts.data[i1], np.float32)
        if method == "linear":
            frames = linear_frames(f0, f1, tl)
        else:
            frames = model_frames(net, f0, f1, tl, gap, factor, dev)
        out[k:k + len(tl)] = frames
        k += len(tl)
        yield Progress((n + 1) / len(jobs), f"{method}: {k}/{n_new} frames")
    return out, new_angles, msgs


# ---------------------------------------------------------------------------- whole series
@dataclass
class InterpolationResult:
    """A denser tilt series and which of its frames are predicted.

    Attributes
    ----------
    tilt_series
        All frames sorted by angle (real and predicted), with angles in degrees and provenance
        ``interpolation`` (method, predicted indices, warnings).
    predicted
        ``(n_tilts,)`` bool: ``True`` for predicted frames.
    source_index
        ``(n_tilts,)`` index of each real frame in the input series, ``-1`` for predicted ones.
    method
        The method that made the frames: ``"pretrained"``, ``"adapted"``, ``"linear"`` or
        ``"reprojection"`` (for ``"auto"``: the one chosen).
    warnings
        Messages about the input being outside the model's training range.
    selection
        For ``"auto"`` and ``"adapted"``: the leave-one-out QA of pretrained, adapted and linear
        on the input's real frames and the decision (:class:`~.adapt.Selection`).
    """

    tilt_series: TiltSeries
    predicted: np.ndarray
    source_index: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)
    selection: Any = None

    @property
    def predicted_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.predicted)]

    def report(self) -> dict[str, Any]:
        """JSON-ready description: angles, predicted frame indices and angles, warnings."""
        a = self.tilt_series.tilt_angles
        out = {"method": self.method, "n_frames": int(a.size),
               "tilt_angles_deg": [float(x) for x in a],
               "predicted_indices": self.predicted_indices,
               "predicted_angles_deg": [float(a[i]) for i in self.predicted_indices],
               "source_index": [int(i) for i in self.source_index],
               "warnings": list(self.warnings)}
        if self.selection is not None:
            out["selection"] = self.selection.as_dict()
        return out


def real_frames(ts: TiltSeries) -> TiltSeries:
    """The real (recorded) frames of a series: predicted frames of an earlier interpolation,
    listed in its provenance, are dropped, so QA and adaptation never learn from or score
    invented frames."""
    rec = ts.provenance.get("interpolation") or {}
    pred = {int(i) for i in rec.get("predicted_indices", [])}
    if not pred:
        return ts
    keep = [i for i in range(ts.n_tilts) if i not in pred]
    return ts.subset(keep)


def interpolate_series(ts: TiltSeries, *, frames_per_gap: int | None = None,
                       target_step_deg: float | None = None, method: str = "pretrained",
                       weights: str | Path | None = None, device: str = "auto",
                       allow_out_of_range: bool = False, reprojection_iterations: int = 50,
                       scale: str | int = "auto", adapt_seconds: float | None = None,
                       adapt_config: Any = None, margin_db: float | None = None
                       ) -> ProgressGen:
    """Insert frames between the tilts of a series (progress generator).

    Parameters
    ----------
    ts
        Tilt series with angles (degrees); frames are used in angle order.
    frames_per_gap, target_step_deg
        How many frames to insert (see :func:`insertion_plan`).
    method
        One of :data:`SERIES_METHODS`. ``"auto"``: fine-tune a copy of the network on the
        series' real frames, score pretrained, adapted and linear by leave-one-out on held-out
        frames, use the best (linear unless a network wins by ``margin_db``);
        ``"adapted"``: use the fine-tuned network (the QA is still made and reported).
    weights, device, allow_out_of_range, reprojection_iterations, scale
        See :func:`interpolate_at`.
    adapt_seconds
        Fine-tuning budget for ``"auto"``/``"adapted"``, seconds (default
        :data:`~.adapt.DEFAULT_ADAPT_SECONDS`).
    adapt_config
        A full :class:`~.adapt.AdaptConfig` instead (its ``seconds`` wins).
    margin_db
        See :func:`~.adapt.adapt_and_select` (default :data:`~.adapt.DEFAULT_MARGIN_DB`).

    Returns
    -------
    InterpolationResult
        With ``selection`` (the QA table and the decision) for ``"auto"``/``"adapted"``.

    Examples
    --------
    >>> from napari_tiltgen.progress import run
    >>> ts = TiltSeries(np.random.rand(3, 32, 32), tilt_angles=[0.0, 4.0, 8.0])
    >>> res = run(interpolate_series(ts, target_step_deg=2.0, method="linear"), show=False)
    >>> res.tilt_series.tilt_angles.tolist(), res.predicted_indices
    ([0.0, 2.0, 4.0, 6.0, 8.0], [1, 3])
    """
    if method not in SERIES_METHODS:
        raise TiltgenError(f"unknown interpolation method {method!r}; use one of "
                           f"{', '.join(SERIES_METHODS)}.")
    ts = ts.sorted_by_angle()
    angles = ts.require_angles()
    plan = insertion_plan(angles, frames_per_gap, target_step_deg)
    pairs = [(i, i + 1, tl) for i, tl in plan]
    selection = None
    used = method
    lo = 0.0
    model = None
    refused: str | None = None
    if method in ("auto", "adapted"):
        from napari_tiltgen.methods.interpolation.adapt import (
            DEFAULT_ADAPT_SECONDS,
            DEFAULT_MARGIN_DB,
            AdaptConfig,
            adapt_and_select,
        )

        cfg = adapt_config or AdaptConfig()
        if adapt_seconds is not None:
            cfg = replace(cfg, seconds=float(adapt_seconds))
        elif adapt_config is None:
            cfg = replace(cfg, seconds=DEFAULT_ADAPT_SECONDS)
        if pairs:
            # the gaps a network would bridge must be in its range before spending the budget
            _, info = load_pretrained(weights, _device(device))
            try:
                check_inputs(ts, [float(angles[i + 1] - angles[i]) for i, _ in plan], info,
                             allow_out_of_range)
            except TiltgenError as exc:
                if method == "adapted":
                    raise
                refused = str(exc)
        if refused is None:
            selection = yield from _scaled(
                adapt_and_select(real_frames(ts), requested=method, config=cfg,
                                 margin_db=DEFAULT_MARGIN_DB if margin_db is None else margin_db,
                                 weights=weights, device=device), 0.0, 0.9, "")
            used, model, lo = selection.method, selection.model, 0.9
        else:
            used = "linear"
            msg = ("linear interpolation used: the gaps to fill are outside the network's "
                   "range (" + refused + ")")
            warnings.warn(msg, UserWarning, stacklevel=2)
            yield Progress(0.0, "warning: " + msg)
    frames, new_angles, msgs = yield from _scaled(interpolate_at(
        ts, pairs, used, weights=weights, device=device, allow_out_of_range=allow_out_of_range,
        reprojection_iterations=reprojection_iterations, scale=scale, model=model), lo, 1.0)
    if method in ("auto", "adapted") and refused is not None:
        msgs = [msg, *msgs]
    method = used
    all_angles = np.concatenate([angles, new_angles])
    stack = np.concatenate([np.asarray(ts.data, np.float32), frames])
    src = np.concatenate([np.arange(ts.n_tilts), -np.ones(new_angles.size, int)])
    o = np.argsort(all_angles, kind="stable")
    shifts = np.concatenate([ts.shifts_px, _interp_shifts(ts, new_angles)])[o]
    prov = copy.deepcopy(ts.provenance)
    predicted = src[o] < 0
    record = {"step": "interpolate", "method": method,
              "selection": selection.as_dict() if selection is not None else None,
              "frames_per_gap": frames_per_gap, "target_step_deg": target_step_deg,
              "n_inserted": int(new_angles.size),
              "predicted_indices": [int(i) for i in np.flatnonzero(predicted)],
              "warnings": msgs}
    prov["history"].append(record)
    prov["interpolation"] = record
    times = None
    if ts.acquisition_times_s is not None:
        times = np.interp(all_angles[o], angles, ts.acquisition_times_s)
    out = replace(ts, data=stack[o], tilt_angles=all_angles[o], shifts_px=shifts,
                  acquisition_times_s=times, provenance=prov)
    return InterpolationResult(out, predicted, src[o], method, msgs, selection)


# ---------------------------------------------------------------------------- leave-one-out QA
@dataclass
class LeaveOneOutResult:
    """Real frames hidden one at a time and predicted from their neighbours.

    Attributes
    ----------
    indices
        Indices (in angle order) of the frames that were predicted (all but the first and last).
    tilt_angles
        Their angles, degrees.
    gaps_deg
        Angle between each frame's two neighbours, degrees (the gap the method bridged).
    real, predicted
        ``(n, ny, nx)`` real and predicted frames.
    psnr, ssim
        Per frame (data range: each real frame's ``max - min``).
    method
        The method used.
    warnings
        Out-of-range messages.
    """

    indices: np.ndarray
    tilt_angles: np.ndarray
    gaps_deg: np.ndarray
    real: np.ndarray
    predicted: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def difference(self) -> np.ndarray:
        """``predicted - real``."""
        return self.predicted - self.real

    def table(self) -> str:
        lines = [f"leave-one-out QA ({self.method}): {len(self.indices)} frames",
                 f"{'frame':>6} {'angle':>8} {'gap':>6} {'PSNR dB':>8} {'SSIM':>6}"]
        for i, a, g, p, s in zip(self.indices, self.tilt_angles, self.gaps_deg, self.psnr,
                                 self.ssim):
            lines.append(f"{i:6d} {a:8.2f} {g:6.2f} {p:8.2f} {s:6.3f}")
        lines.append(f"{'mean':>6} {'':8} {'':6} {np.mean(self.psnr):8.2f} "
                     f"{np.mean(self.ssim):6.3f}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "indices": self.indices.tolist(),
                "tilt_angles_deg": self.tilt_angles.tolist(), "gaps_deg": self.gaps_deg.tolist(),
                "psnr_db": self.psnr.tolist(), "ssim": self.ssim.tolist(),
                "mean_psnr_db": float(np.mean(self.psnr)), "mean_ssim": float(np.mean(self.ssim)),
                "warnings": list(self.warnings)}


def leave_one_out(ts: TiltSeries, method: str = "pretrained", *,
                  indices: Sequence[int] | None = None, weights: str | Path | None = None,
                  device: str = "auto", allow_out_of_range: bool = False,
                  reprojection_iterations: int = 50, scale: str | int = "auto", k: int = 1,
                  model: tuple[TiltInterpNet, dict[str, Any]] | None = None,
                  quiet: bool = False) -> ProgressGen:
    """Leave-one-out QA for a real (experimental) stack (progress generator).

    Each interior frame ``i`` (in angle order) is hidden and predicted from frames ``i - 1`` and
    ``i + 1``: the model then bridges twice the series' step, so a series recorded every 2
    degrees tests the model at a 4 degree gap. For ``"reprojection"`` the frames are split into
    two interleaved halves; each half is predicted from a SIRT reconstruction of the other (two
    reconstructions instead of one per frame).

    Parameters
    ----------
    ts
        Tilt series with angles (degrees).
    method
        ``"pretrained"``, ``"linear"``, ``"reprojection"``, or ``"adapted"`` (with ``model``).
    indices
        Frames (angle order) to test; default every frame with neighbours at distance ``k``.
    weights, device, allow_out_of_range, reprojection_iterations, scale, model, quiet
        See :func:`interpolate_at`.
    k
        Predict frame ``i`` from frames ``i - k`` and ``i + k`` (the gap is then about ``2 k``
        times the step; ``"reprojection"`` supports only ``k = 1``).

    Returns
    -------
    LeaveOneOutResult
    """
    from napari_tiltgen.metrics import psnr, ssim

    ts = ts.sorted_by_angle()
    a = ts.require_angles()
    n = ts.n_tilts
    k = int(k)
    if k < 1:
        raise TiltgenError(f"the neighbour distance k must be >= 1; got {k}.")
    if n < 2 * k + 1:
        raise TiltgenError(f"leave-one-out at neighbour distance {k} needs at least {2 * k + 1} "
                           "tilts.")
    idx = np.arange(k, n - k) if indices is None else np.asarray(indices, dtype=int)
    if idx.size == 0 or idx.min() < k or idx.max() > n - 1 - k:
        raise TiltgenError(f"frames to test must be frames {k}..{n - 1 - k} (angle order), "
                           f"which have neighbours {k} frames away.")
    gaps = a[idx + k] - a[idx - k]
    if method == "reprojection" and k != 1:
        raise TiltgenError("reprojection leave-one-out supports only k = 1.")
    if method == "reprojection":
        pred = np.empty((idx.size,) + ts.data.shape[1:], np.float32)
        msgs: list[str] = []
        for half in (0, 1):
            sel = idx % 2 == half
            if not sel.any():
                continue
            keep = np.flatnonzero(np.arange(n) % 2 != half)
            frames = yield from _scaled(
                reprojection_frames(ts.subset(keep), a[idx[sel]], reprojection_iterations,
                                    _device(device)), 0.5 * half, 0.5 * half + 0.5,
                f"half {half + 1}/2 ")
            pred[sel] = frames
    else:
        pairs = [(int(i - k), int(i + k), [float((a[i] - a[i - k]) / (a[i + k] - a[i - k]))])
                 for i in idx]
        pred, _angles, msgs = yield from interpolate_at(
            ts, pairs, method, weights=weights, device=device,
            allow_out_of_range=allow_out_of_range, scale=scale, model=model, quiet=quiet)
    real = np.asarray(ts.data[idx], np.float32)
    ps, ss = [], []
    for r, p in zip(real, pred):
        dr = float(r.max() - r.min()) or 1.0
        ps.append(psnr(r, p, dr))
        ss.append(ssim(r, p, dr) if min(r.shape) >= 11 else float("nan"))
    return LeaveOneOutResult(idx, a[idx], gaps, real, pred, np.asarray(ps), np.asarray(ss),
                             method, msgs)
