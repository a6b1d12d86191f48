"""Test-time adaptation of the interpolation network to the user's own stack, and the choice
between the adapted network, the pretrained one and linear interpolation.

Why
---
The packaged network was trained on simulated frames. A user's stack differs from them (noise,
~1 px residual jitter, supports, other pixel sizes), and there the pretrained network can lose to
plain linear interpolation. Two things fix that without new training data:

1. **Self-supervised fine-tuning on the stack itself** (:func:`adapt_iter`). A *copy* of the
   pretrained network is fine-tuned on triplets of the stack's real frames: frame ``i`` is
   predicted from real neighbours ``i - k0`` and ``i + k1`` (``k0, k1 = 1 .. max_neighbour``),
   i.e. at 2, 3, ... times the native step, with ``t`` the relative angular position, on random
   crops with random flips and swaps, with a small learning rate, for a bounded wall time. The
   loss is the mean squared error in the network's normalised units: with noisy targets this
   learns the expected frame (Noise2Noise), and it is the quantity the PSNR of the QA measures.
   A fixed subset of frames (:func:`holdout_indices`, every ``holdout_every``-th interior frame)
   is **never used** in the fine-tuning, neither as target nor as input.
2. **Selection by leave-one-out QA on the same stack** (:func:`adapt_and_select`). On the
   held-out frames only, the pretrained network, the adapted network and linear interpolation
   each predict frame ``i`` from frames ``i - k`` and ``i + k`` (``k = 1``: twice the native
   step, the smallest gap real frames can test; ``k = 2`` is also shown when the stack is long
   enough). A network is chosen only when its mean PSNR gain over linear at ``k = 1`` is at
   least ``margin_db`` and larger than the standard error of the per-frame gains; otherwise
   linear interpolation is used and the result says so. So the tool is never knowingly worse than
   linear on the user's data.

The frames the tool will insert lie at the native step ``s`` while the QA can only test ``2 s``
and more: the chosen method is the best at ``2 s`` on the user's stack, which is the closest
honest estimate. The adapted network is moreover scored at gaps it trained on (``2 s`` to
``4 s``), so before it is used a transfer check (:func:`~.transfer.transfer_check`) repeats the
situation one octave up: a second copy fine-tuned on ``4 s`` to ``8 s`` must beat its start at
``2 s``, a gap it did not train on.

Example
-------
>>> from napari_tiltgen.core.progress import run
>>> sel = run(adapt_and_select(ts, seconds=30), show=False)          # doctest: +SKIP
>>> sel.method, sel.gain_db[sel.method]                              # doctest: +SKIP
('adapted', 0.84)
>>> print(sel.table())                                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tiltgen.core.devices import flush_denormals
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.context import forward_batch
from napari_tiltgen.nets.interpolation.network import TiltInterpNet

__all__ = ["DEFAULT_ADAPT_SECONDS", "DEFAULT_ADAPT_STEPS", "DEFAULT_MARGIN_DB", "AdaptConfig", "AdaptResult", "adapt_iter", "holdout_indices", "training_triplets"]


DEFAULT_ADAPT_SECONDS = 60.0


#: Most optimiser steps of the fine-tuning, whatever time is left (see AdaptConfig.max_steps).
DEFAULT_ADAPT_STEPS = 300


DEFAULT_MARGIN_DB = 0.05


MIN_FRAMES = 7


ProgressGen = Generator[Progress, None, Any]


@dataclass
class AdaptConfig:
    """Settings of the test-time fine-tuning.

    Parameters
    ----------
    seconds
        Wall-time budget of the fine-tuning, seconds (the QA after it is extra, a few seconds).
        The default, 60 s, made 47-60 optimiser steps (batch 8, 96 px crops) on one thread of
        the shared 2-core machine (load average 8-12) in ``benchmarks/interpolation_adapt.py``
        (128 and 256 px stacks): the held-out loss fell by 13-37 % and the inserted frames
        gained 0.8-2.4 dB over linear interpolation. It is the middle of the 30-90 s a user
        waits for a result; the QA after it adds a few seconds.
    lr
        Adam learning rate (small: the network starts from the pretrained weights).
    batch_size
        Triplets per step.
    crop_px
        Side of the random square crops (multiple of 16), at the resolution the network works at
        (after binning); smaller frames are used whole.
    max_neighbour
        Largest distance, in frames, between the target and each input frame (1: only the
        ``(i - 1, i, i + 1)`` triplets at twice the native step).
    min_neighbour
        Smallest such distance (default 1). The transfer check of ``auto``
        (:func:`~.transfer.transfer_check`) fine-tunes a second copy with both doubled (2..4)
        and scores it at ``k = 1``, a gap it did not train on.
    holdout_every
        Every this-many-th interior frame is held out of the fine-tuning and scored.
    layers
        ``"all"`` or ``"decoders"`` (encoder frozen).
    max_steps
        Stop after this many steps even if time is left (default 300; ``None`` or 0: time
        only).
        The held-out QA cannot see over-fitting: it scores frames at twice the step, the gaps
        the fine-tuning trains on, while the inserted frames lie at half the step. On the
        jittered needle of ``benchmarks/interpolation_adapt.py`` (8 degrees, noisy truth), 216
        steps gave +0.72 dB over linear at the inserted frames, 300 steps +0.83, 580 steps
        +0.42 and 1164 steps -0.05, while the QA rose from +0.67 to +2.23 dB; the catalyst
        gained +1.08, +1.20 and +1.42 dB at 227, 300 and 588 steps. The cap keeps a fast machine
        (a GPU makes thousands of steps in 60 s) at what was measured here, and makes the
        result independent of the machine's load once it is reached.
    seed
        Seed of the triplet, crop and flip draws.
    """

    seconds: float = DEFAULT_ADAPT_SECONDS
    lr: float = 5e-4
    batch_size: int = 8
    crop_px: int = 96
    max_neighbour: int = 2
    min_neighbour: int = 1
    holdout_every: int = 4
    layers: str = "all"
    max_steps: int | None = DEFAULT_ADAPT_STEPS
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.seconds > 0 or not math.isfinite(self.seconds):
            raise TiltgenError(f"the adaptation time must be a positive number of seconds; "
                               f"got {self.seconds}.")
        if self.layers not in ("all", "decoders"):
            raise TiltgenError(f"layers must be 'all' or 'decoders'; got {self.layers!r}.")
        if not 1 <= int(self.min_neighbour) <= int(self.max_neighbour):
            raise TiltgenError(f"the neighbour distances must satisfy 1 <= min_neighbour <= "
                               f"max_neighbour; got {self.min_neighbour} and "
                               f"{self.max_neighbour}.")
        if self.holdout_every < 2:
            raise TiltgenError("holdout_every must be at least 2.")
        if self.max_steps is not None:  # 0 (as `--adapt-steps 0` says it): no cap, time only
            if int(self.max_steps) < 0:
                raise TiltgenError(f"the adaptation step cap must be 0 (none) or more; got "
                                   f"{self.max_steps}.")
            self.max_steps = int(self.max_steps) or None


# ---------------------------------------------------------------------------- frame bookkeeping
def holdout_indices(n_frames: int, every: int = 4) -> np.ndarray:
    """Interior frames (angle order) kept out of the fine-tuning and used to score it.

    Every ``every``-th frame starting at frame 2, and never the first or last frame.

    >>> holdout_indices(12).tolist()
    [2, 6, 10]
    """
    if n_frames < 3:
        return np.zeros(0, dtype=int)
    return np.arange(2, n_frames - 1, every, dtype=int)


def training_triplets(angles: np.ndarray, exclude: Sequence[int], max_neighbour: int = 2,
                      min_neighbour: int = 1) -> list[tuple[int, int, int, float]]:
    """All ``(i0, i, i1, weight)`` with ``i - i0`` and ``i1 - i`` in
    ``min_neighbour..max_neighbour`` and none of the three frames in ``exclude``; ``weight``
    halves with every extra frame of distance so the smallest gaps (closest to the ones the
    user will ask for) are drawn most."""
    n = len(angles)
    bad = {int(j) for j in exclude}
    out = []
    for i in range(1, n - 1):
        if i in bad:
            continue
        for k0 in range(min_neighbour, max_neighbour + 1):
            for k1 in range(min_neighbour, max_neighbour + 1):
                i0, i1 = i - k0, i + k1
                if i0 < 0 or i1 >= n or i0 in bad or i1 in bad:
                    continue
                out.append((i0, i, i1, 0.5 ** (k0 + k1 - 2 * min_neighbour)))
    return out


def _frame_quantiles(frames: np.ndarray, low_q: float = 0.005, high_q: float = 0.999
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``low_q`` / ``high_q`` quantiles, sampled like :func:`normalise_pair`."""
    flat = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).reshape(len(frames), -1)
    step = max(1, flat.shape[-1] // 65536)
    sample = flat[:, ::step]
    return (torch.quantile(sample, low_q, dim=1).numpy(),
            torch.quantile(sample, high_q, dim=1).numpy())


def _bin(frames: np.ndarray, factor: int) -> torch.Tensor:
    """``(n, 1, H', W')`` frames, padded to a multiple of ``16 * factor`` and binned."""
    from napari_tiltgen.nets.interpolation.network import pad_to_multiple

    x = torch.from_numpy(np.ascontiguousarray(frames, np.float32))[:, None]
    x, _ = pad_to_multiple(x, 16 * factor)
    return F.avg_pool2d(x, factor) if factor > 1 else x


# ---------------------------------------------------------------------------- fine-tuning
@dataclass
class AdaptResult:
    """Outcome of :func:`adapt_iter`.

    Attributes
    ----------
    model
        The fine-tuned copy (eval mode); the pretrained network is untouched.
    holdout
        Frames (angle order) never used in the fine-tuning.
    train_frames
        Frames used as targets or inputs.
    steps, seconds
        Optimiser steps done and wall time of the fine-tuning, s.
    holdout_mse_before, holdout_mse_after
        Mean squared error (normalised units) of the held-out frames predicted from their
        ``i - 1`` and ``i + 1`` neighbours, before and after the fine-tuning.
    losses
        Training loss per step.
    stopped
        ``"time"``, ``"steps"`` or ``"no triplets"``.
    bin_factor
        Binning at which the network ran (see :func:`~.api.check_inputs`).
    config
        The :class:`AdaptConfig` used.
    """

    model: TiltInterpNet
    holdout: np.ndarray
    train_frames: np.ndarray
    steps: int
    seconds: float
    holdout_mse_before: float
    holdout_mse_after: float
    losses: list[float]
    stopped: str
    bin_factor: int
    config: AdaptConfig

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "stopped": self.stopped,
                "holdout_frames": self.holdout.tolist(),
                "train_frames": int(self.train_frames.size),
                "holdout_mse_before": self.holdout_mse_before,
                "holdout_mse_after": self.holdout_mse_after, "bin_factor": self.bin_factor,
                "config": asdict(self.config)}


class _Stack:
    """The stack at network resolution with per-frame normalisation ranges."""

    def __init__(self, frames: np.ndarray, bin_factor: int, device: torch.device):
        lo, hi = _frame_quantiles(frames)
        self.lo, self.hi = lo, hi
        self.x = _bin(frames, bin_factor).to(device)
        self.device = device

    def pair_norm(self, i0: int, i1: int) -> tuple[float, float]:
        lo = float(min(self.lo[i0], self.lo[i1]))
        hi = float(max(self.hi[i0], self.hi[i1]))
        scale = hi - lo if hi - lo > 1e-12 * max(abs(hi), 1.0) else 1.0
        return lo, scale

    def batch(self, items: Sequence[tuple[int, int, int, float]], rng: np.random.Generator,
              crop: int, outer: Sequence[tuple[int | None, int | None]] | None = None
              ) -> dict[str, torch.Tensor]:
        """Random crops of the triplets ``items`` (and, for a four-frame network, of their
        outer frames ``outer``, ``None`` where absent), mirrored at random."""
        _, _, h, w = self.x.shape
        ch, cw = min(crop, h), min(crop, w)
        i0s, ts, i1s = [], [], []
        x0, xt, x1, xa, xb, pres = [], [], [], [], [], []
        for n, (i0, i, i1, _w) in enumerate(items):
            lo, scale = self.pair_norm(i0, i1)
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            sl = (slice(None), slice(y, y + ch), slice(x, x + cw))
            ja, jb = outer[n] if outer is not None else (i0, i1)
            ja_, jb_ = (i0 if ja is None else ja), (i1 if jb is None else jb)
            a, b, c, oa, ob = ((self.x[j][sl] - lo) / scale for j in (i0, i, i1, ja_, jb_))
            if rng.random() < 0.5:
                a, b, c, oa, ob = (v.flip(-1) for v in (a, b, c, oa, ob))
            if rng.random() < 0.5:
                a, b, c, oa, ob = (v.flip(-2) for v in (a, b, c, oa, ob))
            x0.append(a)
            xt.append(b)
            x1.append(c)
            xa.append(oa)
            xb.append(ob)
            pres.append((float(ja is not None), float(jb is not None)))
            i0s.append(i0)
            ts.append(i)
            i1s.append(i1)
        out = {"img0": torch.stack(x0), "target": torch.stack(xt), "img1": torch.stack(x1),
               "i0": torch.tensor(i0s), "i": torch.tensor(ts), "i1": torch.tensor(i1s)}
        if outer is not None:
            out.update({"outer_a": torch.stack(xa), "outer_b": torch.stack(xb),
                        "present": torch.tensor(pres, dtype=torch.float32, device=self.device)})
        return out


def _swap(batch: dict[str, torch.Tensor], t: torch.Tensor, rng: np.random.Generator
          ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Swap the two inputs of random items (``t -> 1 - t``; outer frames and their presence
    swap with them)."""
    flip = torch.from_numpy(rng.random(t.shape[0]) < 0.5).to(t.device)
    f = flip.view(-1, 1, 1, 1)
    out = {**batch, "img0": torch.where(f, batch["img1"], batch["img0"]),
           "img1": torch.where(f, batch["img0"], batch["img1"])}
    if "outer_a" in batch:
        out["outer_a"] = torch.where(f, batch["outer_b"], batch["outer_a"])
        out["outer_b"] = torch.where(f, batch["outer_a"], batch["outer_b"])
        out["present"] = torch.where(flip.view(-1, 1), batch["present"].flip(-1),
                                     batch["present"])
    return out, torch.where(flip, 1.0 - t, t)


class _Adam:
    """Plain Adam (Kingma & Ba) on a list of tensors.

    ``torch.optim``'s first ``step()`` imports torch's compiler stack lazily: measured 9 s on the
    shared 2-core machine, a sixth of the default budget, so the few lines are written out here.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (
            0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)


def _outer(model: TiltInterpNet, a: np.ndarray, i0: int, i1: int, exclude: Sequence[int]
           ) -> tuple[int | None, int | None] | None:
    """A four-frame network's outer frames for the pair (None for a pair network)."""
    if not getattr(model.config, "context", 0):
        return None
    from napari_tiltgen.nets.interpolation.frames import outer_indices

    return outer_indices(a, i0, i1, exclude)


@torch.no_grad()
def _holdout_mse(model: TiltInterpNet, stack: _Stack, angles: np.ndarray,
                 holdout: np.ndarray) -> float:
    errs = []
    for i in holdout:
        i0, i1 = int(i) - 1, int(i) + 1
        lo, scale = stack.pair_norm(i0, i1)
        a, b, c = ((stack.x[j:j + 1] - lo) / scale for j in (i0, int(i), i1))
        gap = float(angles[i1] - angles[i0])
        t = float((angles[i] - angles[i0]) / gap)
        batch = {"img0": a, "img1": c}
        outer = _outer(model, angles, i0, i1, holdout)
        if outer is not None:
            ja, jb = outer
            batch.update({
                "outer_a": (stack.x[ja:ja + 1] - lo) / scale if ja is not None else a,
                "outer_b": (stack.x[jb:jb + 1] - lo) / scale if jb is not None else c,
                "present": torch.tensor([[float(ja is not None), float(jb is not None)]],
                                        device=a.device)})
        pred = forward_batch(model, batch, torch.tensor([t]), torch.tensor([gap]))["image"]
        errs.append(float(((pred - b) ** 2).mean()))
    return float(np.mean(errs)) if errs else float("nan")


def adapt_iter(ts: TiltSeries, model: TiltInterpNet, config: AdaptConfig | None = None, *,
               bin_factor: int = 1, device: str | torch.device = "cpu",
               holdout: Sequence[int] | None = None) -> ProgressGen:
    """Fine-tune a copy of ``model`` on the real frames of ``ts`` (progress generator).

    Parameters
    ----------
    ts
        Tilt series with angles (degrees); frames are used in angle order. Only real frames
        should be given (the caller drops predicted ones).
    model
        The starting network (not modified).
    config
        :class:`AdaptConfig` (time budget, learning rate, crops, ...).
    bin_factor
        Work on frames binned by this factor (as the network does at inference for large
        objects).
    device
        Torch device.
    holdout
        Frames never used; default :func:`holdout_indices`.

    Returns
    -------
    AdaptResult
        Cancelling (closing the generator at a yield) stops the work at once.
    """
    cfg = config or AdaptConfig()
    dev = torch.device(device)
    ts = ts.sorted_by_angle()
    a = ts.require_angles().astype(np.float64)
    n = ts.n_tilts
    hold = holdout_indices(n, cfg.holdout_every) if holdout is None else \
        np.asarray(holdout, dtype=int)
    with flush_denormals():
        return (yield from _adapt(ts, model, cfg, a, hold, bin_factor, dev))


def _adapt(ts: TiltSeries, model: TiltInterpNet, cfg: AdaptConfig, a: np.ndarray,
           hold: np.ndarray, bin_factor: int, dev: torch.device) -> ProgressGen:
    triplets = training_triplets(a, hold, cfg.max_neighbour, cfg.min_neighbour)
    outers = [_outer(model, a, tr[0], tr[2], hold) for tr in triplets]
    context = bool(triplets) and outers[0] is not None
    used = sorted({j for tr in triplets for j in tr[:3]}
                  | {j for o in outers if o is not None for j in o if j is not None})
    t_start = time.perf_counter()
    yield Progress(0.0, "adapting: preparing the frames")
    stack = _Stack(np.asarray(ts.data, np.float32), int(bin_factor), dev)
    net = copy.deepcopy(model).to(dev)
    net.eval()
    before = _holdout_mse(net, stack, a, hold)
    losses: list[float] = []
    step = 0
    stopped = "no triplets"
    if triplets:
        for p in net.parameters():
            p.requires_grad_(True)
        if cfg.layers == "decoders":
            for p in net.encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = _Adam(params, lr=cfg.lr)
        rng = np.random.default_rng(cfg.seed)
        w = np.array([tr[3] for tr in triplets])
        w = w / w.sum()
        crop = max(16, (int(cfg.crop_px) // 16) * 16)
        stopped = "time"
        net.train()
        while True:
            elapsed = time.perf_counter() - t_start
            if elapsed >= cfg.seconds:
                stopped = "time"
                break
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stopped = "steps"
                break
            pick = rng.choice(len(triplets), size=cfg.batch_size, p=w)
            b = stack.batch([triplets[k] for k in pick], rng, crop,
                            [outers[k] for k in pick] if context else None)
            i0, i, i1 = (b[k].numpy() for k in ("i0", "i", "i1"))
            gap = torch.from_numpy((a[i1] - a[i0]).astype(np.float32)).to(dev)
            t = torch.from_numpy(((a[i] - a[i0]) / (a[i1] - a[i0])).astype(np.float32)).to(dev)
            b, t = _swap(b, t, rng)
            out = forward_batch(net, b, t, gap)
            loss = F.mse_loss(out["image"], b["target"])
            opt.zero_grad()
            loss.backward()
            _clip_grad_norm(params, 1.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            frac = min(1.0, (time.perf_counter() - t_start) / cfg.seconds)
            if cfg.max_steps:
                frac = max(frac, step / cfg.max_steps)
            yield Progress(0.95 * frac, f"adapting: step {step}, loss {losses[-1]:.2e}",
                           values={"loss": losses[-1]})
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
    seconds = time.perf_counter() - t_start
    after = _holdout_mse(net, stack, a, hold)
    yield Progress(1.0, f"adapted: {step} steps in {seconds:.0f} s")
    return AdaptResult(net, hold, np.asarray(used, dtype=int), step, seconds, before, after,
                       losses, stopped, int(bin_factor), cfg)
