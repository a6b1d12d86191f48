"""Choosing, by leave-one-out QA on the user's own stack, the best of the adapted model, the
pretrained model and linear interpolation, and saying which and by how much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, scaled
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.adapt import (
    DEFAULT_ADAPT_SECONDS,
    DEFAULT_MARGIN_DB,
    MIN_FRAMES,
    AdaptConfig,
    AdaptResult,
    ProgressGen,
    adapt_iter,
)
from napari_tiltgen.nets.interpolation.network import TiltInterpNet
from napari_tiltgen.nets.interpolation.qa import clears_margin, paired_gain
from napari_tiltgen.nets.interpolation.transfer import TransferCheck, transfer_check

__all__ = ["ENSEMBLES", "MIN_HOLDOUT_TO_CHOOSE_ADAPTED", "Selection", "TransferCheck", "adapt_and_select", "choose_start", "distrust_adapted", "distrust_ensembles", "transfer_check"]


# ---------------------------------------------------------------------------- selection
SELECTABLE = ("pretrained", "adapted", "linear")
#: The networks averaged with the SIRT reprojection of the other real frames (an ensemble: the
#: network follows the local motion, the reprojection the whole object's geometry).
ENSEMBLES = ("pretrained+reprojection", "adapted+reprojection")
#: Largest ``n_tilts * ny * nx^2`` for which the QA also scores the ensembles (three SIRT runs
#: of 50 iterations; 61 tilts of 160 px frames is about 2.5e8).
REPROJECTION_QA_MAX = 3e8


@dataclass
class Selection:
    """Leave-one-out QA of pretrained, adapted and linear on a stack, and the method chosen.

    Attributes
    ----------
    method
        The method to use: ``"adapted"``, ``"pretrained"`` or ``"linear"``.
    requested
        What the caller asked for (``"auto"``, or ``"adapted"`` to force the adapted network).
    model
        ``(network, metadata)`` of the chosen network (``None`` for linear).
    qa
        ``{k: {method: LeaveOneOutResult}}``: for neighbour distance ``k`` (the frames are
        predicted from ``i - k`` and ``i + k``), the three methods on the same frames.
    gain_db
        Mean PSNR gain over linear (dB) at ``k = 1`` of each network (``linear``: 0).
    stderr_db
        Standard error of those gains over the scored frames.
    frames
        The frames scored (angle order; never used in the fine-tuning).
    adapt
        The :class:`AdaptResult` (``None`` when there were too few frames to adapt).
    message
        One sentence for the user: which method and by how much.
    margin_db
        The margin a network had to beat linear by.
    notes
        Further remarks (QA gap beyond the trained range, too few frames...).
    transfer
        The :class:`~.transfer.TransferCheck` of the adaptation (``None`` when it was not needed: the
        adapted network was not about to be chosen, or was asked for).
    pretrained
        Which packaged network "pretrained" is (and the adaptation started from):
        ``"clean"`` (:data:`~napari_tiltgen.nets.interpolation.frames.DEFAULT_WEIGHTS`),
        ``"context"`` (the four-frame network,
        :data:`~napari_tiltgen.nets.interpolation.frames.CONTEXT_WEIGHTS`, when it scored better
        on the held-out frames; ``"denoising"`` in its place where it is not shipped) or
        ``"given"`` (the caller's weights).
    """

    method: str
    requested: str
    model: tuple[TiltInterpNet, dict[str, Any]] | None
    qa: dict[int, dict[str, Any]]
    gain_db: dict[str, float]
    stderr_db: dict[str, float]
    frames: np.ndarray
    adapt: AdaptResult | None
    message: str
    margin_db: float
    notes: list[str] = field(default_factory=list)
    pretrained: str = "clean"
    transfer: TransferCheck | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per QA gap: gap (degrees, mean), frames, PSNR and SSIM of each method."""
        out = []
        for k in sorted(self.qa):
            res = self.qa[k]
            first = next(iter(res.values()))
            row: dict[str, Any] = {"k": k, "gap_deg": float(np.mean(first.gaps_deg)),
                                   "frames": int(len(first.indices))}
            for m in SELECTABLE + tuple(e for e in ENSEMBLES if e in res):
                r = res.get(m)
                row[f"psnr_{m}"] = float(np.mean(r.psnr)) if r is not None else float("nan")
                row[f"ssim_{m}"] = float(np.nanmean(r.ssim)) if r is not None else float("nan")
            out.append(row)
        return out

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        """Header and cells of the QA table: PSNR and SSIM of the three methods side by side,
        then the ensembles' PSNR where they were scored (``-`` where not)."""
        rows = self.rows()
        cols = qa_columns([e for e in ENSEMBLES if any(f"psnr_{e}" in r for r in rows)])
        cells = [[_cell(r.get(key), fmt) for _, key, fmt in cols] for r in rows]
        return [c[0] for c in cols], cells

    def table(self) -> str:
        """The QA table (pretrained, adapted, linear side by side) and the decision, as text."""
        head, cells = self._cells()
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(head)]
        line = "  ".join(h.rjust(w) for h, w in zip(head, widths))
        lines = ["leave-one-out QA on held-out real frames (PSNR dB, SSIM)", line, "-" * len(line)]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        lines.append(self.message)
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def markdown(self) -> str:
        """The QA table as Markdown."""
        head, cells = self._cells()
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines + ["", self.message] + [f"note: {n}" for n in self.notes])

    def as_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if not math.isfinite(v) else round(float(v), 4)

        return {"method": self.method, "requested": self.requested,
                "gain_over_linear_db": {k: clean(v) for k, v in self.gain_db.items()},
                "stderr_db": {k: clean(v) for k, v in self.stderr_db.items()},
                "margin_db": self.margin_db, "frames": self.frames.tolist(),
                "message": self.message, "notes": list(self.notes),
                "pretrained": self.pretrained,
                "transfer_check": (self.transfer.as_dict() if self.transfer is not None
                                   else None),
                "rows": [{k: (clean(v) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in self.rows()],
                "adaptation": self.adapt.summary() if self.adapt is not None else None}


def qa_columns(ensembles: Sequence[str] = ENSEMBLES) -> list[tuple[str, str, str]]:
    """The QA table's columns as ``(header, key of Selection.rows(), format)``: gap, frames,
    PSNR and SSIM of the three methods side by side, then the PSNR of ``ensembles``. The one
    list behind the text and Markdown tables and the Interpolate widget's table."""
    return [("gap (deg)", "gap_deg", ".2f"), ("frames", "frames", "d"),
            *((f"PSNR {m}", f"psnr_{m}", ".2f") for m in SELECTABLE),
            *((f"SSIM {m}", f"ssim_{m}", ".4f") for m in SELECTABLE),
            *((f"PSNR {e}", f"psnr_{e}", ".2f") for e in ensembles)]


#: Headers of the full QA table (every ensemble column).
QA_COLUMNS: list[str] = [h for h, _, _ in qa_columns()]


def _cell(v: float | None, fmt: str) -> str:
    """A table cell; ``-`` where the method was not scored (ensembles at ``k = 2``)."""
    return format(v, fmt) if v is not None and math.isfinite(v) else "-"


def _nan_loo(like: Any, method: str) -> Any:
    """A QA result of ``method`` with NaN scores on the frames of ``like`` (method not run)."""
    from napari_tiltgen.nets.interpolation.qa import LeaveOneOutResult

    return LeaveOneOutResult(
        like.indices, like.tilt_angles, like.gaps_deg, like.real,
        np.full_like(like.predicted, np.nan), np.full(like.psnr.shape, np.nan),
        np.full(like.ssim.shape, np.nan), method, [])


def _score_ensembles(ts: TiltSeries, res: dict[str, Any], dev: Any,
                     notes: list[str]) -> ProgressGen:
    """Add each network averaged with the SIRT reprojection to the QA results ``res`` (k = 1);
    returns the reprojection's own QA result (``None`` when not scored)."""
    from napari_tiltgen.nets.interpolation.qa import blend, leave_one_out

    n, ny, nx = (int(s) for s in ts.shape)
    if n * ny * nx * nx > REPROJECTION_QA_MAX:
        notes.append(f"the network + reprojection ensembles were not scored: {n} frames of "
                     f"{ny} x {nx} px make three SIRT runs too long for the QA.")
        return None
    try:
        rep = yield from scaled(
            leave_one_out(ts, "reprojection", indices=res["linear"].indices, k=1,
                          device=str(dev), quiet=True), 0.0, 1.0, "QA reprojection: ")
    except TiltgenError as exc:  # e.g. a tilt axis the projector cannot use
        notes.append(f"the network + reprojection ensembles were not scored ({exc}).")
        return None
    for e in ENSEMBLES:
        net = res.get(e.split("+")[0])
        if net is not None and np.all(np.isfinite(net.psnr)):
            res[e] = blend(net, rep, e)
    return rep


def adapt_and_select(ts: TiltSeries, *, requested: str = "auto",
                     seconds: float = DEFAULT_ADAPT_SECONDS, config: AdaptConfig | None = None,
                     margin_db: float = DEFAULT_MARGIN_DB, weights: str | Path | None = None,
                     device: str = "auto", qa_neighbours: Sequence[int] = (1, 2),
                     adapt: bool = True, symmetric: bool | None = None) -> ProgressGen:
    """Adapt the network to ``ts``, score pretrained / adapted / linear on held-out real frames,
    and choose (progress generator).

    Parameters
    ----------
    ts
        The user's tilt series (real frames only; angles in degrees).
    requested
        ``"auto"`` (choose the best; linear unless a network wins by ``margin_db``) or
        ``"adapted"`` (use the adapted network whatever the QA says; the table is still made).
    seconds
        Fine-tuning budget, seconds (ignored when ``config`` is given).
    config
        Full :class:`AdaptConfig`.
    margin_db
        A network is chosen only if its mean PSNR gain over linear on the held-out frames at the
        smallest QA gap is at least this (dB) and above one standard error of the per-frame gains.
    weights, device
        The pretrained network and the torch device. Default (``None``): the packaged
        clean-data and four-frame networks are scored on the held-out frames at ``k = 1``
        before any fine-tuning; the better one is "pretrained" and the start of the
        adaptation (:func:`choose_start`).
    qa_neighbours
        Neighbour distances ``k`` of the QA table (``1``: twice the native step).
    adapt
        ``False``: skip the fine-tuning (the adapted column stays empty).
    symmetric
        Score the networks as they will be used: averaged over the eight flips and swaps
        (``None``: :data:`~.frames.SYMMETRIC_DEFAULT`).

    Returns
    -------
    Selection
    """
    from napari_tiltgen.nets.interpolation.adapt import holdout_indices
    from napari_tiltgen.nets.interpolation.frames import check_inputs, load_pretrained
    from napari_tiltgen.nets.interpolation.qa import leave_one_out

    if requested not in ("auto", "adapted"):
        raise TiltgenError(f"requested must be 'auto' or 'adapted'; got {requested!r}.")
    cfg = config or AdaptConfig(seconds=seconds)
    ts = ts.sorted_by_angle()
    a = ts.require_angles()
    n = ts.n_tilts
    if n < 3:
        raise TiltgenError("choosing a method needs at least 3 real tilts (each one is predicted "
                           "from its neighbours); use --method linear or pretrained.")
    if not np.all(np.isfinite(ts.data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; fix them first.")
    dev = resolve_device(device)
    net, info = load_pretrained(weights, dev)
    notes: list[str] = []
    qa_gap = float(np.median(a[2:] - a[:-2]))
    msgs, factor = check_inputs(ts, [qa_gap], info, allow_out_of_range=True)
    notes.extend(m for m in msgs if m.startswith("OUT OF RANGE"))
    if any(m.startswith("OUT OF RANGE") for m in msgs):
        notes[-1] = (f"the QA bridges {qa_gap:.1f} degrees (twice the step), beyond the "
                     "model's trained gaps; the networks are scored there anyway (extrapolated).")
    can_adapt = adapt and n >= MIN_FRAMES
    held_out = holdout_indices(n, cfg.holdout_every)
    n_held = held_out.size
    # auto never chooses a network fitted to this stack on fewer held-out frames
    # (distrust_adapted): do not fine-tune for nothing, and score the pretrained network and
    # linear on every interior frame instead of the few held out
    too_few_held = can_adapt and requested == "auto" and n_held < MIN_HOLDOUT_TO_CHOOSE_ADAPTED
    can_adapt = can_adapt and not too_few_held
    frames = held_out if can_adapt else np.arange(1, n - 1)
    variant = "given" if weights is not None else "clean"
    first: dict[str, Any] = {}
    if weights is None:
        net, info, variant, first, note = yield from scaled(
            choose_start(ts, frames, (net, info), dev, factor, symmetric), 0.0, 0.05, "")
        if note:
            notes.append(note)
    adapted: AdaptResult | None = None
    if can_adapt:
        adapted = yield from scaled(adapt_iter(ts, net, cfg, bin_factor=factor, device=dev,
                                               holdout=frames), 0.05, 0.40, "")
    elif too_few_held:
        notes.append(f"not fine-tuned: {n} real frames leave {n_held} held-out frame(s), too "
                     f"few to choose a network fitted to this stack (at least "
                     f"{MIN_HOLDOUT_TO_CHOOSE_ADAPTED}); pretrained and linear compared on all "
                     f"{len(frames)} interior frames.")
    elif adapt:
        notes.append(f"only {n} real frames: too few to adapt with held-out frames "
                     f"(at least {MIN_FRAMES}); pretrained and linear compared on all "
                     "interior frames.")
    qa: dict[int, dict[str, Any]] = {}
    ks = [k for k in qa_neighbours if np.any((frames >= k) & (frames <= n - 1 - k))]
    methods: list[tuple[str, Any]] = [("pretrained", (net, info)), ("linear", None)]
    if adapted is not None:
        methods.insert(1, ("adapted", (adapted.model, info)))
    n_jobs = max(1, len(ks) * len(methods))
    job = 0
    for k in ks:
        idx = frames[(frames >= k) & (frames <= n - 1 - k)]
        qa[k] = {}
        for m, mod in methods:
            lo = 0.40 + 0.07 * job / n_jobs  # 0.47-0.5: the ensembles' reprojection
            if k == 1 and m == "pretrained" and "result" in first:
                qa[k][m] = first["result"]  # scored already by choose_start, same frames
                job += 1
                continue
            res = yield from scaled(
                leave_one_out(ts, "linear" if m == "linear" else m, indices=idx, k=k,
                              model=mod, device=str(dev), allow_out_of_range=True,
                              scale=factor, quiet=True, symmetric=symmetric),
                lo, lo + 0.07 / n_jobs, f"QA {m} (gap x{2 * k}): ")
            qa[k][m] = res
            job += 1
        if "adapted" not in qa[k]:
            qa[k]["adapted"] = _nan_loo(qa[k]["linear"], "adapted")
    k0 = min(qa) if qa else None
    rep = None
    if k0 == 1:
        rep = yield from scaled(_score_ensembles(ts, qa[1], dev, notes), 0.47, 0.5, "")
    gain: dict[str, float] = {"linear": 0.0}
    se: dict[str, float] = {"linear": 0.0}
    transfer: TransferCheck | None = None
    candidates = ("pretrained", "adapted") + tuple(e for e in ENSEMBLES
                                                 if k0 is not None and e in qa[k0])
    for m in candidates:
        if k0 is None or not np.all(np.isfinite(qa[k0][m].psnr)):
            gain[m], se[m] = float("nan"), float("nan")
            continue
        gain[m], se[m] = paired_gain(qa[k0][m].psnr, qa[k0]["linear"].psnr)
    ok = {m: clears_margin(gain[m], se[m], margin_db)
          for m in candidates if math.isfinite(gain[m])}
    n_scored = len(qa[k0]["linear"].indices) if k0 is not None else 0
    gap_txt = f"{np.mean(qa[k0]['linear'].gaps_deg):.1f}" if k0 is not None else "?"
    held = "held-out " if can_adapt else ""  # without fine-tuning no frame is held out
    where = f"{n_scored} {held}real frames, gap {gap_txt} deg"
    if requested == "adapted":
        if adapted is None:
            raise TiltgenError(f"the adapted network needs at least {MIN_FRAMES} real frames "
                               f"(this series has {n}); use --method auto, pretrained or linear.")
        method = "adapted"
        message = (f"adapted network used (asked for): {gain['adapted']:+.2f} dB against "
                   f"linear on {where}.")
    else:
        notes.extend(distrust_adapted(qa, ok, n_scored))
        if rep is not None:
            notes.extend(distrust_ensembles(qa, rep, ok))
        winners = [m for m, good in ok.items() if good]
        if winners and max(winners, key=lambda m: gain[m]).startswith("adapted"):
            # about to use the fine-tuned network: check that fine-tuning carries to a gap
            # smaller than those it trained on, as the inserted frames need
            transfer = yield from scaled(
                transfer_check(ts, (net, info), cfg, qa[1]["pretrained"], factor, dev,
                               symmetric), 0.5, 1.0, "")
            if transfer is not None:
                notes.append(transfer.note())
                if not transfer.passed:
                    for m in ok:
                        if m.startswith("adapted"):
                            ok[m] = False
            winners = [m for m, good in ok.items() if good]
        if winners:
            method = max(winners, key=lambda m: gain[m])
            others = [f"{o} {gain[o]:+.2f} dB" for o in candidates
                      if o != method and math.isfinite(gain[o])]
            tail = f"; {', '.join(others)}" if others else ""
            message = (f"{method} chosen: {gain[method]:+.2f} dB over linear "
                       f"(+/- {se[method]:.2f}) on {where}{tail}.")
        else:
            method = "linear"
            parts = [f"{m} {gain[m]:+.2f} dB" for m in candidates if math.isfinite(gain[m])]
            message = (f"linear interpolation used: no network beat it by {margin_db:g} dB on "
                       f"{where} ({', '.join(parts) or 'no network scored'}).")
    if variant in ("denoising", "context"):
        message = message[:-1] + f"; pretrained = the packaged {variant} network."
    model = None
    base = method.split("+")[0]
    if base == "pretrained":
        model = (net, info)
    elif base == "adapted" and adapted is not None:
        model = (adapted.model, info)
    yield Progress(1.0, message)
    return Selection(method, requested, model, qa, gain, se, np.asarray(frames, int), adapted,
                     message, float(margin_db), notes, variant, transfer)


#: ``auto`` picks the adapted network (alone or with the reprojection) only when it was scored
#: on at least this many held-out frames: a series of fewer than 12 real frames has 2.
MIN_HOLDOUT_TO_CHOOSE_ADAPTED = 3


def distrust_adapted(qa: dict[int, dict[str, Any]], ok: dict[str, bool], n_scored: int
                     ) -> list[str]:
    """Withdraw the fine-tuned network (alone and in ensembles) from ``ok`` when its QA gain is
    not evidence enough; returns the notes that say why (empty when it stays eligible).

    Two rules, both against a network fitted to the very stack it is scored on:

    * scored on fewer than :data:`MIN_HOLDOUT_TO_CHOOSE_ADAPTED` held-out frames (series of
      fewer than 12 real frames). Benchmark: a noise-free jittered needle at 12 degrees, +1.00
      dB over linear on 2 frames, -0.20 dB at the inserted ones. (:func:`adapt_and_select`
      with ``auto`` does not fine-tune such a series at all, since 4 Dec 2026);
    * worse than linear at four times the step (``k = 2``), a gap the fine-tuning trained on
      (neighbours 1-2 frames away on each side): it has fitted its training frames, not the
      stack. Benchmark: an atomic cluster, 4-degree steps, noise-free: +0.87 dB at 2 steps,
      -0.63 dB at 4, -2.32 dB at the inserted frames.
    """
    eligible = [m for m in ok if m.startswith("adapted") and ok[m]]
    if not eligible:
        return []
    why = ""
    if n_scored < MIN_HOLDOUT_TO_CHOOSE_ADAPTED:
        why = (f"its gain is measured on only {n_scored} held-out frame(s) (at least "
               f"{MIN_HOLDOUT_TO_CHOOSE_ADAPTED} needed to trust a network fitted to this "
               "stack, i.e. 12 or more real frames)")
    elif 2 in qa and np.all(np.isfinite(qa[2]["adapted"].psnr)):
        d2 = float(np.mean(qa[2]["adapted"].psnr - qa[2]["linear"].psnr))
        if d2 < 0.0:
            why = (f"at four times the step, a gap it was fine-tuned on, it scored {d2:+.2f} dB "
                   f"against linear on {qa[2]['linear'].indices.size} held-out frames "
                   "(over-fitted to the frames it trained on)")
    if not why:
        return []
    for m in eligible:
        ok[m] = False
    return [f"adapted not chosen: {why}; shown in the QA table for information."]


def _mse(res: Any, frames: np.ndarray) -> float:
    """Mean range-normalised MSE of a QA result on ``frames`` (from its per-frame PSNR)."""
    keep = np.isin(res.indices, frames)
    return float(np.mean(10.0 ** (-np.asarray(res.psnr, float)[keep] / 10.0)))


def distrust_ensembles(qa: dict[int, dict[str, Any]], rep: Any, ok: dict[str, bool]
                       ) -> list[str]:
    """Withdraw a network + reprojection ensemble from ``ok`` when, extrapolated to the inserted
    frames, it is predicted to be worse than its network alone; returns the notes.

    The QA scores at twice the step, where the network's error is larger than at the inserted
    frames (half that gap), while the reprojection's error hardly depends on the gap: the QA
    therefore flatters the average of the two. From the QA at 2 and 4 steps (``k = 1, 2``, the
    same frames) the network's mean squared error is extrapolated to 1 step as a power law in
    the gap (``e0 = e1^2 / e2``, never above ``e1``); the reprojection's is kept (``r0 = r1``)
    and so is the correlation of the two errors measured at ``k = 1`` (from the ensemble's own
    error). The ensemble stays eligible only if its predicted error ``(e0 + r0 + 2 rho
    sqrt(e0 r0)) / 4`` is below ``e0``. Benchmark that showed the bias: an atomic cluster at
    4-degree steps, noise-free: the ensemble +0.79 dB over linear in the QA, -2.63 dB at the
    inserted frames (the network alone +0.60).
    """
    notes = []
    if 2 not in qa:
        return notes
    common = np.intersect1d(qa[2]["linear"].indices, rep.indices)
    for e in ENSEMBLES:
        base = e.split("+")[0]
        if not ok.get(e) or e not in qa[1] or base not in qa[2] or common.size == 0:
            continue
        if not np.all(np.isfinite(qa[2][base].psnr)):
            continue
        e1, e2 = _mse(qa[1][base], common), _mse(qa[2][base], common)
        r1, ens1 = _mse(rep, common), _mse(qa[1][e], common)
        rho = float(np.clip((4.0 * ens1 - e1 - r1) / (2.0 * math.sqrt(e1 * r1)), -1.0, 1.0))
        e0 = e1 * min(1.0, e1 / e2)
        ens0 = (e0 + r1 + 2.0 * rho * math.sqrt(e0 * r1)) / 4.0
        if ens0 >= e0:
            ok[e] = False
            notes.append(
                f"{e} not chosen: its {base} network's error falls by "
                f"{10 * math.log10(e2 / e1):.1f} dB from four to two times the step while the "
                f"reprojection's does not depend on the gap; extrapolated to the inserted frames "
                f"the network alone is better ({-10 * math.log10(e0):.1f} dB against "
                f"{-10 * math.log10(ens0):.1f} dB, range-normalised).")
    return notes


def choose_start(ts: TiltSeries, frames: np.ndarray, clean: tuple[TiltInterpNet, dict[str, Any]],
                 device: Any, factor: int, symmetric: bool | None = None) -> ProgressGen:
    """Score the packaged clean-data network and the noise-aware one
    (:func:`~napari_tiltgen.nets.interpolation.frames.auto_noisy`: the four-frame network where
    it is shipped, else the denoising pair network) on ``frames`` (each predicted from its
    neighbours ``i - 1``, ``i + 1``, and for the four-frame network also ``i - 3``, ``i + 3``)
    and return the better (generator).

    Returns ``(network, info, name, {"result": LeaveOneOutResult of the winner}, note)``. Without
    the noise-aware weights (or with no frame to score) the clean network is returned with an
    empty dict and no note.
    """
    from napari_tiltgen.nets.interpolation.frames import PACKAGED, auto_noisy, load_pretrained
    from napari_tiltgen.nets.interpolation.qa import leave_one_out

    n = ts.n_tilts
    idx = frames[(frames >= 1) & (frames <= n - 2)]
    other = auto_noisy()
    if other is None or idx.size == 0:
        return clean[0], clean[1], "clean", {}, ""
    nets = {"clean": clean, other: load_pretrained(PACKAGED[other], device)}
    scores = {}
    for j, (name, mod) in enumerate(nets.items()):
        scores[name] = yield from scaled(
            leave_one_out(ts, "pretrained", indices=idx, k=1, model=mod, device=str(device),
                          allow_out_of_range=True, scale=factor, quiet=True,
                          symmetric=symmetric),
            j / len(nets), (j + 1) / len(nets), f"QA start ({name} network): ")
    psnr = {name: float(np.mean(r.psnr)) for name, r in scores.items()}
    best = other if psnr[other] > psnr["clean"] else "clean"
    rest = "clean" if best == other else other
    note = (f"pretrained = the packaged {best} network ({psnr[best]:.2f} dB on {idx.size} "
            f"held-out frames at twice the step; the {rest} network {psnr[rest]:.2f} dB); "
            "the adaptation starts from it.")
    mod = nets[best]
    return mod[0], mod[1], best, {"result": scores[best]}, note
