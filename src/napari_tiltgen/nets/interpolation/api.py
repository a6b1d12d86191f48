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
refused (:class:`~napari_tiltgen.core.errors.TiltgenError`) unless ``allow_out_of_range=True``; gaps
below the trained range, a pixel size far from the training data's, and motion larger than seen
in training give warnings, returned with the result (and emitted as ``UserWarning``). When the
object is much larger in pixels than the training objects, the network estimates flows on a
binned copy of the frames and warps the full-resolution frames with them (``scale="auto"``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, scaled
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.frames import (
    SERIES_METHODS,
    ProgressGen,
    _interp_shifts,
    check_inputs,
    insertion_plan,
    interpolate_at,
    load_pretrained,
    symmetric_on,
)

__all__ = ["InterpolationResult", "interpolate_series", "real_frames"]


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
        """JSON-ready description: angles, predicted frame indices and angles, whether the
        networks averaged their eight mirror/swap predictions (``None`` for linear and
        reprojection), warnings."""
        a = self.tilt_series.tilt_angles
        out = {"method": self.method, "n_frames": int(a.size),
               "tilt_angles_deg": [float(x) for x in a],
               "predicted_indices": self.predicted_indices,
               "predicted_angles_deg": [float(a[i]) for i in self.predicted_indices],
               "source_index": [int(i) for i in self.source_index],
               "symmetric": (self.tilt_series.provenance.get("interpolation") or {}).get(
                   "symmetric"),
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
                       adapt_steps: int | None = None, adapt_config: Any = None,
                       margin_db: float | None = None, symmetric: bool | None = None
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
    adapt_steps
        Most fine-tuning steps (default :data:`~.adapt.DEFAULT_ADAPT_STEPS`; 0: time only).
    adapt_config
        A full :class:`~.adapt.AdaptConfig` instead (``adapt_seconds`` and ``adapt_steps``
        override its fields when given).
    margin_db
        See :func:`~.adapt.adapt_and_select` (default :data:`~.adapt.DEFAULT_MARGIN_DB`).
    symmetric
        Networks: average the predictions over the eight flips and swaps of the input pair,
        in the QA and in the output (``None``: :data:`~.frames.SYMMETRIC_DEFAULT`, on;
        ``False``: 8x faster).

    Returns
    -------
    InterpolationResult
        With ``selection`` (the QA table and the decision) for ``"auto"``/``"adapted"``.

    Examples
    --------
    >>> from napari_tiltgen.core.progress import run
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
        from napari_tiltgen.nets.interpolation.adapt import (
            DEFAULT_ADAPT_SECONDS,
            DEFAULT_MARGIN_DB,
            AdaptConfig,
        )
        from napari_tiltgen.nets.interpolation.select import adapt_and_select

        cfg = adapt_config or AdaptConfig()
        if adapt_seconds is not None:
            cfg = replace(cfg, seconds=float(adapt_seconds))
        elif adapt_config is None:
            cfg = replace(cfg, seconds=DEFAULT_ADAPT_SECONDS)
        if adapt_steps is not None:
            cfg = replace(cfg, max_steps=int(adapt_steps))
        if pairs:
            # the gaps a network would bridge must be in its range before spending the budget
            _, info = load_pretrained(weights, resolve_device(device))
            try:
                check_inputs(ts, [float(angles[i + 1] - angles[i]) for i, _ in plan], info,
                             allow_out_of_range)
            except TiltgenError as exc:
                if method == "adapted":
                    raise
                refused = str(exc)
        if refused is None:
            selection = yield from scaled(
                adapt_and_select(real_frames(ts), requested=method, config=cfg,
                                 margin_db=DEFAULT_MARGIN_DB if margin_db is None else margin_db,
                                 weights=weights, device=device, symmetric=symmetric),
                0.0, 0.9, "")
            used, model, lo = selection.method, selection.model, 0.9
        else:
            used = "linear"
            msg = ("linear interpolation used: the gaps to fill are outside the network's "
                   "range (" + refused + ")")
            warnings.warn(msg, UserWarning, stacklevel=2)
            yield Progress(0.0, "warning: " + msg)
    kw = dict(weights=weights, device=device, allow_out_of_range=allow_out_of_range,
              reprojection_iterations=reprojection_iterations, scale=scale, model=model,
              reprojection_source=real_frames(ts), symmetric=symmetric)
    if used.endswith("+reprojection"):  # an ensemble: the network's and the reprojection's mean
        mid = lo + 0.5 * (1.0 - lo)
        frames, new_angles, msgs = yield from scaled(
            interpolate_at(ts, pairs, used.split("+")[0], **kw), lo, mid)
        rep, _, _ = yield from scaled(interpolate_at(ts, pairs, "reprojection", **kw), mid, 1.0)
        frames = (0.5 * (frames + rep)).astype(np.float32)
    else:
        frames, new_angles, msgs = yield from scaled(interpolate_at(ts, pairs, used, **kw),
                                                     lo, 1.0)
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
    # whether networks averaged the symmetries (None: no network made the frames)
    sym = None if method in ("linear", "reprojection") else symmetric_on(symmetric)
    record = {"step": "interpolate", "method": method,
              "selection": selection.as_dict() if selection is not None else None,
              "frames_per_gap": frames_per_gap, "target_step_deg": target_step_deg,
              "symmetric": sym,
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
