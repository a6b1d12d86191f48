"""Predicting frames between two recorded tilts: the pretrained model (cached), insertion plans,
input checks against the trained ranges, and the three ways to make a frame (pretrained model,
linear blend, reprojection of a SIRT volume) behind one entry point, :func:`interpolate_at`.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, scaled
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.data import object_radius_px
from napari_tiltgen.nets.interpolation.network import (
    TiltInterpNet,
    load_model,
    normalise_pair,
    pad_to_multiple,
    warp,
)

__all__ = ["CONTEXT_WEIGHTS", "DEFAULT_WEIGHTS", "DENOISING_WEIGHTS", "METHODS", "PACKAGED", "SERIES_METHODS", "SYMMETRIC_DEFAULT", "SYMMETRIES", "auto_noisy", "check_inputs", "insertion_plan", "interpolate_at", "linear_frames", "load_pretrained", "model_frames", "outer_indices", "reprojection_frames", "symmetric_on"]


METHODS = ("pretrained", "linear", "reprojection")


SERIES_METHODS = ("auto", "pretrained", "adapted", "linear", "reprojection")


DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "interpolation.safetensors"
#: The packaged DENOISING network: the same architecture, conditioned on the input pair's noise
#: level and fine-tuned on noisy, jittered frames of many object families with clean targets
#: (model card: models/interpolation_denoising.md). ``auto``/``adapted`` score it next to
#: :data:`DEFAULT_WEIGHTS` only where :data:`CONTEXT_WEIGHTS` is not shipped (:func:`auto_noisy`).
DENOISING_WEIGHTS = DEFAULT_WEIGHTS.with_name("interpolation_denoising.safetensors")
#: The packaged FOUR-FRAME network (:mod:`.context`): the denoising network extended to also see
#: the next recorded frame on each side of a pair (model card: models/interpolation_context.md).
CONTEXT_WEIGHTS = DEFAULT_WEIGHTS.with_name("interpolation_context.safetensors")
#: The packaged networks by name (``--weights NAME``).
PACKAGED = {"clean": DEFAULT_WEIGHTS, "denoising": DENOISING_WEIGHTS, "context": CONTEXT_WEIGHTS}


def auto_noisy() -> str | None:
    """The noise-aware packaged network that ``auto`` scores next to the clean-data one: the
    four-frame ``"context"`` network where it is shipped (it was trained from the denoising
    network and beat it in every measurement: validation with and without its outer frames,
    held-out families noisy and noise-free at every gap; models/interpolation_context.md),
    else ``"denoising"``; ``None`` when neither is there."""
    for name in ("context", "denoising"):
        if PACKAGED[name].is_file():
            return name
    return None


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
        A ``.safetensors`` file written by training; default :data:`DEFAULT_WEIGHTS`; the
        names ``"clean"``, ``"denoising"`` and ``"context"`` pick the packaged networks
        (:data:`PACKAGED`). Only safetensors are read (no
        pickle), nothing is downloaded.
    device
        Torch device.
    """
    path = PACKAGED.get(str(weights), Path(weights)) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise TiltgenError("the interpolation weights are missing; reinstall napari-tiltgen or "
                           "train them (tiltgen train-interpolation).", path)
    key = (str(path.resolve()), str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_model(path, device)
        return _CACHE[key]


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


#: Test-time symmetries averaged by :func:`model_frames` (``symmetric=True``): every
#: combination of mirroring x, mirroring y and swapping the two frames (``t -> 1 - t``). Each keeps
#: the tilt geometry (the training data are augmented with the same three), so each is an equally
#: valid prediction and their mean has less of the network's input-noise-driven error.
SYMMETRIES: tuple[tuple[bool, bool, bool], ...] = tuple(
    (fx, fy, sw) for sw in (False, True) for fy in (False, True) for fx in (False, True))

#: Default of ``symmetric`` in :func:`model_frames` and :func:`interpolate_at` (and so of the
#: user's commands): on, because the mean of the eight was better than one prediction on the
#: held-out benchmarks (docs/interpolation.md, "Symmetric prediction"); ``--no-symmetric`` in
#: the CLI makes the networks 8x faster.
SYMMETRIC_DEFAULT = True


def symmetric_on(symmetric: bool | None) -> bool:
    """Whether the networks average the :data:`SYMMETRIES` (``None``: the default)."""
    return SYMMETRIC_DEFAULT if symmetric is None else bool(symmetric)


def _flip(x: torch.Tensor, fx: bool, fy: bool) -> torch.Tensor:
    dims = [d for d, f in ((-1, fx), (-2, fy)) if f]
    return x.flip(dims) if dims else x


@torch.no_grad()
def model_frames(model: TiltInterpNet, frame0: np.ndarray, frame1: np.ndarray,
                 ts: Sequence[float], gap_deg: float, bin_factor: int = 1,
                 device: str | torch.device = "cpu", symmetric: bool | None = None,
                 outer: tuple[np.ndarray | None, np.ndarray | None] | None = None
                 ) -> np.ndarray:
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
    symmetric
        Average the predictions of the eight :data:`SYMMETRIES` (8x the time); ``None``:
        :data:`SYMMETRIC_DEFAULT`.
    outer
        Four-frame networks only (:mod:`.context`): the recorded frame one gap before
        ``frame0`` and the one one gap after ``frame1`` (``None`` where there is none). Pair
        networks ignore it.

    Returns
    -------
    np.ndarray
        ``(len(ts), ny, nx)`` float32 in the units of the input.
    """
    dev = torch.device(device)

    def tensor(f: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(f, np.float32)).to(dev)[None, None]

    x0, x1 = tensor(frame0), tensor(frame1)
    lo, scale = normalise_pair(x0, x1)
    x0, x1 = (x0 - lo) / scale, (x1 - lo) / scale
    context = getattr(model.config, "context", 0) > 0
    oa = ob = None
    if context:
        fa, fb = outer if outer is not None else (None, None)
        oa = (tensor(fa) - lo) / scale if fa is not None else None
        ob = (tensor(fb) - lo) / scale if fb is not None else None
    variants = SYMMETRIES if symmetric_on(symmetric) else SYMMETRIES[:1]
    acc = torch.zeros((len(ts),) + tuple(x0.shape[-2:]), device=dev)
    for fx, fy, sw in variants:
        a, b = _flip(x0, fx, fy), _flip(x1, fx, fy)
        ca = _flip(oa, fx, fy) if oa is not None else None
        cb = _flip(ob, fx, fy) if ob is not None else None
        if sw:
            a, b, ca, cb = b, a, cb, ca
        tv = [1.0 - float(t) for t in ts] if sw else [float(t) for t in ts]
        outer_v = (ca, cb) if context else None
        acc += _flip(_predict(model, a, b, tv, gap_deg, int(bin_factor), dev, outer_v), fx, fy)
    out = acc / len(variants) * scale[0, 0] + lo[0, 0]
    return out.cpu().numpy().astype(np.float32)


def _predict(model: TiltInterpNet, x0: torch.Tensor, x1: torch.Tensor, ts: Sequence[float],
             gap_deg: float, f: int, dev: torch.device,
             outer: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
             ) -> torch.Tensor:
    """The network's frames ``(len(ts), h, w)`` between normalised ``(1, 1, h, w)`` frames
    (and, for a four-frame network, the outer frames, ``None`` where absent)."""
    h, w = x0.shape[-2:]

    def prep(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, _ = pad_to_multiple(x, 16 * f)
        return p, (F.avg_pool2d(p, f) if f > 1 else p)

    p0, s0 = prep(x0)
    p1, s1 = prep(x1)
    f0, f1 = model.encode(s0), model.encode(s1)
    if outer is not None:
        ca, cb = outer
        present = torch.tensor([[float(ca is not None), float(cb is not None)]], device=dev)
        pa, sa = prep(ca) if ca is not None else (p0, s0)
        pb, sb = prep(cb) if cb is not None else (p1, s1)
        fa = model.encode(sa) if ca is not None else f0
        fb = model.encode(sb) if cb is not None else f1
    out = []
    for t in ts:
        tt = torch.tensor([float(t)], device=dev)
        gg = torch.tensor([float(gap_deg)], device=dev)
        if outer is not None:
            o = model.decode4((sa, s0, s1, sb), (fa, f0, f1, fb), present, tt, gg)
        else:
            o = model.decode(s0, s1, f0, f1, tt, gg)
        if f > 1:
            up = {"scale_factor": float(f), "mode": "bilinear", "align_corners": False}

            def upflow(fl: torch.Tensor, up: dict[str, Any] = up) -> torch.Tensor:
                return F.interpolate(fl, **up) * f

            if outer is not None:
                wts = F.interpolate(o["weights"], **up)
                img = (wts[:, 0:1] * warp(p0, upflow(o["flow0"]))
                       + wts[:, 1:2] * warp(p1, upflow(o["flow1"]))
                       + wts[:, 2:3] * warp(pa, upflow(o["flow_a"]))
                       + wts[:, 3:4] * warp(pb, upflow(o["flow_b"])))
            else:
                m = F.interpolate(o["mask"], **up)
                img = m * warp(p0, upflow(o["flow0"])) + (1 - m) * warp(p1, upflow(o["flow1"]))
            img = img + F.interpolate(o["residual"], **up)
        else:
            img = o["image"]
        out.append(img[0, 0, :h, :w])
    return torch.stack(out)


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
    from napari_tiltgen.physics.projector import Projector
    from napari_tiltgen.recon.api import reconstruct_iter

    angles = np.asarray(new_angles, dtype=np.float64)
    gen = reconstruct_iter(ts, "sirt", iterations, device=str(device), preview_every=0)
    vol = yield from scaled(gen, 0.0, 0.95, "reprojection: ")
    proj = Projector(vol.shape, angles, _interp_shifts(ts, angles), device=device)
    frames = proj.forward(torch.from_numpy(np.ascontiguousarray(vol.data)))
    yield Progress(1.0, "reprojection: projected")
    return frames.detach().to("cpu", torch.float32).numpy()


# ---------------------------------------------------------------------------- one entry point
#: An outer frame is used when its distance to its inner neighbour is within this factor of the
#: inner gap (the four-frame network was trained with equal spacing).
OUTER_SPACING_TOLERANCE = 1.3


def outer_indices(angles: np.ndarray, i0: int, i1: int,
                  exclude: Sequence[int] = ()) -> tuple[int | None, int | None]:
    """The frames a four-frame network takes next to the pair ``(i0, i1)``: ``i0 - (i1 - i0)``
    and ``i1 + (i1 - i0)`` in the stack's order, each ``None`` when it does not exist, is in
    ``exclude``, or lies not about one gap (:data:`OUTER_SPACING_TOLERANCE`) beyond its inner
    neighbour.

    Examples
    --------
    >>> outer_indices(np.array([0.0, 2.0, 4.0, 6.0, 8.0]), 1, 2)
    (0, 3)
    >>> outer_indices(np.array([0.0, 2.0, 4.0, 6.0, 8.0]), 0, 1)
    (None, 2)
    >>> outer_indices(np.array([0.0, 2.0, 4.0, 6.0, 20.0]), 2, 3)
    (1, None)
    """
    a = np.asarray(angles, dtype=np.float64)
    d = int(i1) - int(i0)
    gap = float(a[i1] - a[i0])
    excl = {int(j) for j in exclude}
    out: list[int | None] = []
    for j, inner, sign in ((int(i0) - d, int(i0), -1.0), (int(i1) + d, int(i1), 1.0)):
        ok = 0 <= j < a.size and j not in excl
        if ok:
            r = sign * float(a[j] - a[inner]) / gap
            ok = 1.0 / OUTER_SPACING_TOLERANCE <= r <= OUTER_SPACING_TOLERANCE
        out.append(j if ok else None)
    return out[0], out[1]


def interpolate_at(ts: TiltSeries, pairs: Sequence[tuple[int, int, Sequence[float]]],
                   method: str = "pretrained", *, weights: str | Path | None = None,
                   device: str = "auto", allow_out_of_range: bool = False,
                   reprojection_iterations: int = 50, reprojection_source: TiltSeries | None = None,
                   scale: str | int = "auto",
                   model: tuple[TiltInterpNet, dict[str, Any]] | None = None,
                   quiet: bool = False, symmetric: bool | None = None) -> ProgressGen:
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
    symmetric
        Networks only: average the predictions of the eight :data:`SYMMETRIES` (``None``:
        :data:`SYMMETRIC_DEFAULT`).

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
                                                resolve_device(device))
        return out, new_angles, msgs
    if method in ("pretrained", "adapted"):
        dev = resolve_device(device)
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
            outer = None
            if getattr(net.config, "context", 0):
                ia, ib = outer_indices(angles, i0, i1)
                outer = tuple(None if j is None else np.asarray(ts.data[j], np.float32)
                              for j in (ia, ib))
            frames = model_frames(net, f0, f1, tl, gap, factor, dev, symmetric, outer)
        out[k:k + len(tl)] = frames
        k += len(tl)
        yield Progress((n + 1) / len(jobs), f"{method}: {k}/{n_new} frames")
    return out, new_angles, msgs
