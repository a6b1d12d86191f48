"""The time-resolved DIP fit: checks, warm start, self-supervised steps, result.

:func:`fit_dip_iter` checks the settings and the series and sorts the frames by time
(:func:`~.plan.plan_fit` -> :class:`~.plan.FitPlan`), then runs :func:`_fit` on one device (restarting on the
CPU after a GPU out-of-memory error). :func:`_fit` is three stages: :func:`_warm_start` (static
SIRT, then the network fitted to it), :func:`_train` (the self-supervised steps through the
per-tilt projector, with checkpoints) and the evaluation of the output volumes.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.devices import flush_denormals, num_threads, resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.fits.dip.model import (
    CHECKPOINT_FORMAT,
    DEFAULT_MAX_OUTPUT_BYTES,
    DIPModel,
    DIPResult,
    _save_checkpoint,
    to_cpu,
)
from napari_tiltgen.fits.dip.network import DIPNetwork
from napari_tiltgen.fits.dip.plan import FitPlan, Settings, plan_fit
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.per_tilt import FrameProjector
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.physics.shifts import unshift_frames

__all__ = ["fit_dip", "fit_dip_iter"]

_SMOOTH_TIMES = 16  # times per step at which the temporal-smoothness penalty is evaluated
_LR_WARMUP_STEPS = 20  # linear learning-rate warm-up after the warm start


# ============================================================================ the fit


def fit_dip_iter(
    ts: TiltSeries,
    *,
    steps: int = 1500,
    temporal_smoothness: float = 0.1,
    times_s: Sequence[float] | np.ndarray | None = None,
    order: str | None = None,
    frame_time_s: float = 1.0,
    output_times_s: Sequence[float] | np.ndarray | None = None,
    n_components: int = 8,
    channels: int = 32,
    time_frequencies: int = 8,
    latent_stride: int = 2,
    slices_per_step: int = 16,
    frames_per_step: int | None = None,
    learning_rate: float = 5e-3,
    lr_half_life_steps: int = 500,
    warm_start_steps: int = 200,
    sirt_iterations: int = 50,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    device: str = "auto",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    preview_every: int = 50,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    n_threads: int | None = None,
) -> ProgressGen[DIPResult]:
    """Fit a time-resolved volume series to a tilt series of a changing sample (generator).

    Parameters
    ----------
    ts
        Tilt series ``(n_tilts, ny, nx)`` with tilt angles (degrees), tilt axis along y; its
        ``shifts_px`` are applied. One frame per time point.
    steps
        Self-supervised optimisation steps (Adam), after the warm start.
    temporal_smoothness
        Weight of the penalty on change per unit of normalised time (0: none; 0.1 mild; 1-10:
        only slow changes). The one knob for temporal regularisation.
    times_s, order, frame_time_s
        Acquisition times (seconds); see :func:`acquisition_times`. Default: the series'
        recorded times, else uniform in angle order, ``frame_time_s`` apart.
    output_times_s
        Times (seconds, within the acquisition) at which to return volumes. Default: the time
        of every frame, i.e. ``n_tilts`` volumes.
    n_components
        Time-varying basis images per slice (``R``): how complex the change may be.
    channels, time_frequencies, latent_stride
        Network size, see :class:`DIPNetwork`.
    slices_per_step, frames_per_step
        Slices (along y) and frames (default: all) in each step's batch; lower them to save
        memory (``slices x frames x nz x nx`` floats, a few times over).
    learning_rate
        Adam step size. It ramps up linearly over the first 20 steps after the warm start, then
        halves every ``lr_half_life_steps`` steps, down to a tenth; the schedule depends on the
        step number only, so a resumed fit follows an uninterrupted one exactly.
    lr_half_life_steps
        Steps per halving of the step size (0: no decay).
    warm_start_steps
        Steps fitting the network to the static SIRT before the self-supervised fit (0: none).
    sirt_iterations
        Iterations of the static SIRT (warm start and intensity scale).
    thickness_px
        Volume thickness ``nz`` along the beam, pixels (default: frame width).
    axis_offset_px
        Tilt-axis offset from the detector centre along x, pixels.
    device
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``. A CUDA out-of-memory error
        restarts the fit on the CPU with a message.
    seed
        Seed of the network initialisation and of the batch order: equal seeds, equal results.
    checkpoint
        File to save the fit to every ``checkpoint_every`` steps, at the end and on cancel.
    checkpoint_every
        Steps between checkpoints.
    resume
        Continue from ``checkpoint`` if it exists (it must belong to the same data and network
        settings); ``steps`` is the total, including the steps already done.
    preview_every
        Attach a preview (central z-plane at the first, middle and last time, side by side)
        every this many steps (0: never).
    max_output_bytes
        Refuse to return volumes larger than this (bytes); ask for fewer ``output_times_s``.
    n_threads
        CPU threads for torch during the fit (default: torch's setting).

    Yields
    ------
    Progress
        Per step, with ``values`` ``loss``, ``data``, ``smoothness`` and ``step``.

    Returns
    -------
    DIPResult
    """
    settings = Settings(
        steps=steps,
        temporal_smoothness=temporal_smoothness,
        times_s=times_s,
        order=order,
        frame_time_s=frame_time_s,
        output_times_s=output_times_s,
        n_components=n_components,
        channels=channels,
        time_frequencies=time_frequencies,
        latent_stride=latent_stride,
        slices_per_step=slices_per_step,
        frames_per_step=frames_per_step,
        learning_rate=learning_rate,
        lr_half_life_steps=lr_half_life_steps,
        warm_start_steps=warm_start_steps,
        sirt_iterations=sirt_iterations,
        thickness_px=thickness_px,
        axis_offset_px=axis_offset_px,
        device=device,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        preview_every=preview_every,
        max_output_bytes=max_output_bytes,
        n_threads=n_threads,
    )
    dev = resolve_device(device)
    plan = plan_fit(ts, settings)
    t0 = time.perf_counter()
    with num_threads(n_threads), flush_denormals():
        try:
            result = yield from _fit(plan, dev)
        except Exception as exc:
            oom = isinstance(exc, torch.cuda.OutOfMemoryError) or (
                isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
            )
            if not oom:
                raise
            if dev.type != "cuda":
                raise TiltgenError(
                    "out of memory: lower slices_per_step or frames_per_step, "
                    "or bin the tilt series."
                ) from None
            torch.cuda.empty_cache()
            yield Progress(0.0, "GPU out of memory; restarting the fit on the CPU")
            result = yield from _fit(plan, torch.device("cpu"))
    result.provenance["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _fit(plan: FitPlan, dev: torch.device) -> ProgressGen[DIPResult]:
    """The fit proper, on one device (see :func:`fit_dip_iter`)."""
    params, state = plan.params, plan.state
    w_sirt = 0.0 if state is not None else 0.1
    w_warm = 0.0 if state is not None or params["warm_start_steps"] == 0 else 0.1
    w_out = 0.03
    run_ = _Run.new(plan, dev)
    if state is not None:
        run_.resume(state)
        yield Progress(w_sirt + w_warm, f"resumed from step {run_.done}")
    else:
        yield from _warm_start(plan, run_, w_sirt, w_warm)
    yield from _train(plan, run_, w_sirt + w_warm, 1.0 - w_sirt - w_warm - w_out)

    out_times = plan.out_times
    yield Progress(1.0 - w_out, f"evaluating {out_times.size} volumes")
    volumes = run_.model.volumes_at(out_times, max_bytes=plan.max_output_bytes)
    h = np.asarray(run_.history, dtype=np.float64).reshape(-1, 3)
    prov_in = plan.ts.provenance
    history_in = copy.deepcopy(prov_in.get("history", []))
    history_in.append({"step": "fit_dip", **params})
    provenance = {
        "method": "dip",
        "parameters": params,
        "device": str(dev),
        "input": prov_in.get("source"),
        "history": history_in,
    }
    yield Progress(1.0, "done")
    return DIPResult(
        volumes=volumes,
        times_s=out_times.copy(),
        tilt_angles=run_.model.angles_at(out_times),
        loss_history=h[:, 0].copy(),
        loss_terms={"data": h[:, 1].copy(), "smoothness": h[:, 2].copy()},
        model=run_.model,
        static_sirt=run_.sirt_vol,
        voxel_size_A=plan.ts.pixel_size_A,
        provenance=provenance,
    )


@dataclass(kw_only=True)
class _Run:
    """The mutable state of one fit on one device: network, optimiser, random numbers, losses."""

    net: DIPNetwork
    opt: torch.optim.Optimizer
    gen: torch.Generator
    dev: torch.device
    scale: float = 1.0
    ms_sirt: float = 1.0
    done: int = 0
    history: list[list[float]]
    sirt_vol: np.ndarray | None = None
    model: DIPModel | None = None
    perm: torch.Tensor | None = None  # slices not yet visited in the current pass over y

    @classmethod
    def new(cls, plan: FitPlan, dev: torch.device) -> _Run:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(plan.params["seed"])
            net = DIPNetwork(**plan.arch)
        net.to(dev)
        gen = torch.Generator(device="cpu").manual_seed(plan.params["seed"] + 1)
        opt = torch.optim.Adam(net.parameters(), lr=plan.params["learning_rate"])
        return cls(net=net, opt=opt, gen=gen, dev=dev, history=[])

    def resume(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["network"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.scale, self.ms_sirt = float(state["model"]["scale"]), float(state["ms_sirt"])
        self.done = int(state["step"])
        self.history = [list(map(float, h)) for h in state["history"].tolist()]

    def checkpoint_state(self, plan: FitPlan, step: int) -> dict[str, Any]:
        nz, ny, nx = self.model.volume_shape  # type: ignore[union-attr]
        f_times, f_angles = plan.f_times, plan.f_angles
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": plan.fingerprint,
            "step": step,
            "architecture": {**plan.arch, "slice_shape": tuple(plan.arch["slice_shape"])},
            "network": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": to_cpu(self.opt.state_dict()),
            "generator": self.gen.get_state(),
            "slice_queue": self.perm.clone(),  # type: ignore[union-attr]
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3),
            "ms_sirt": self.ms_sirt,
            "params": plan.params,
            "model": {
                "scale": self.scale,
                "t_first_s": float(f_times[0]),
                "t_last_s": float(f_times[-1]),
                "frame_times_s": f_times.tolist(),
                "frame_angles_deg": f_angles.tolist(),
                "volume_shape": [nz, ny, nx],
                "voxel_size_A": plan.ts.pixel_size_A,
            },
        }


def _warm_start(plan: FitPlan, run_: _Run, w_sirt: float, w_warm: float) -> ProgressGen[None]:
    """Static SIRT of all tilts (intensity scale), then the network fitted to it at all times."""
    from napari_tiltgen.recon.iterative import sirt_iter

    ts, params, dev = plan.ts, plan.params, run_.dev
    _, ny, nx = plan.data.shape
    geometry = Geometry(
        (plan.nz, ny, nx), ts.tilt_angles, ts.shifts_px, params["axis_offset_px"], nx
    )
    it = sirt_iter(
        Projector.from_geometry(geometry, device=dev),
        plan.data,
        params["sirt_iterations"],
        preview_every=0,
    )
    while True:
        try:
            ev = next(it)
        except StopIteration as stop:
            sirt_t = stop.value
            break
        yield Progress(w_sirt * ev.fraction, f"warm start: static {ev.message}")
    run_.sirt_vol = sirt_t.detach().float().cpu().numpy()
    run_.scale = float(np.percentile(run_.sirt_vol, 99.9))
    if not run_.scale > 0:
        raise TiltgenError(
            "the static SIRT of this series is empty (all zero or negative): "
            "are the frames inverted or all background?",
            ts.provenance.get("source"),
        )
    target = (sirt_t / run_.scale).permute(1, 0, 2).contiguous().to(dev)  # (ny, nz, nx)
    run_.ms_sirt = float((target**2).mean())
    warm_steps, n_batch = params["warm_start_steps"], params["slices_per_step"]
    for i in range(warm_steps):
        y = torch.randperm(ny, generator=run_.gen)[:n_batch].to(dev)
        s = torch.rand(8, generator=run_.gen).to(dev)
        x = run_.net(y, s)
        loss = ((x - target[y][:, None]) ** 2).mean() / run_.ms_sirt
        run_.opt.zero_grad(set_to_none=True)
        loss.backward()
        run_.opt.step()
        yield Progress(
            w_sirt + w_warm * (i + 1) / warm_steps,
            f"warm start: fitting the static SIRT {i + 1}/{warm_steps}",
            values={"warm_loss": loss.detach().item()},
        )
    run_.opt = torch.optim.Adam(run_.net.parameters(), lr=params["learning_rate"])


def _lr_at(params: dict[str, Any], step: int) -> float:
    """Step size of ``step``: a function of the step number alone (not of the total ``steps``),
    so that a fit resumed with more steps follows the same path as one run straight through: a
    short linear warm-up (fresh Adam moments must not kick the network off its warm start), then
    halving every ``lr_half_life_steps`` down to a tenth."""
    half_life = params["lr_half_life_steps"]
    warm = min(1.0, (step + 1) / _LR_WARMUP_STEPS)
    decay = max(0.1, 0.5 ** (step / half_life)) if half_life > 0 else 1.0
    return params["learning_rate"] * warm * decay


def _train(plan: FitPlan, run_: _Run, w0: float, w_main: float) -> ProgressGen[None]:
    """The self-supervised steps: slices at the frames' times, projected at the frames' tilts."""
    params, dev, net, gen = plan.params, run_.dev, run_.net, run_.gen
    n_frames, ny, nx = plan.data.shape
    steps, lam = params["steps"], params["temporal_smoothness"]
    n_batch, n_sel = params["slices_per_step"], params["frames_per_step"]
    f_times = plan.f_times
    run_.model = model = DIPModel(
        network=net,
        scale=run_.scale,
        t_first_s=float(f_times[0]),
        t_last_s=float(f_times[-1]),
        frame_times_s=f_times,
        frame_angles_deg=plan.f_angles,
        volume_shape=(plan.nz, ny, nx),
        voxel_size_A=plan.ts.pixel_size_A,
    )
    geometry = Geometry(
        (plan.nz, ny, nx), plan.f_angles, plan.f_shifts, params["axis_offset_px"], nx
    )
    op = FrameProjector(geometry, device=dev)
    b = unshift_frames(plan.data[plan.order_t], plan.f_shifts[:, 0]) / run_.scale
    b_t = torch.from_numpy(np.ascontiguousarray(b)).to(dev)  # (n_frames, ny, n_det)
    ms_data = float((b_t**2).mean()) or 1.0
    s_all = torch.as_tensor(plan.s_frames, dtype=torch.float32, device=dev)
    ds = float(np.median(np.diff(plan.s_frames)))  # one frame interval in normalised time
    ckpt, preview_every = plan.checkpoint, plan.preview_every
    # saved in checkpoints, so that a resumed fit draws the same batches as an uninterrupted one
    state = plan.state
    run_.perm = (
        state["slice_queue"].long()
        if state is not None and "slice_queue" in state
        else torch.empty(0, dtype=torch.long)
    )
    step = run_.done
    try:
        net.train()
        while step < steps:
            for g in run_.opt.param_groups:
                g["lr"] = _lr_at(params, step)
            if run_.perm.numel() < n_batch:
                run_.perm = torch.cat([run_.perm, torch.randperm(ny, generator=gen)])
            y, run_.perm = run_.perm[:n_batch].to(dev), run_.perm[n_batch:]
            if n_sel < n_frames:
                frames = torch.randperm(n_frames, generator=gen)[:n_sel].sort().values
            else:
                frames = torch.arange(n_frames)
            fr = frames.to(dev)
            basis = net.basis(y)
            x = net.images(basis, net.weights(y, s_all[fr]))  # (B, F, nz, nx)
            pred = op(x, frames.numpy())  # (F, B, n_det)
            d_loss = ((pred - b_t[fr][:, y]) ** 2).mean() / ms_data
            loss = d_loss
            sm = torch.zeros((), device=dev)
            if lam > 0:  # a random subset of the batch's times is enough for the penalty
                sub = torch.randperm(frames.numel(), generator=gen)[:_SMOOTH_TIMES].to(dev)
                x2 = net.images(basis, net.weights(y, s_all[fr][sub] + ds))
                sm = ((x2 - x[:, sub]) ** 2).mean() / run_.ms_sirt
                loss = loss + lam * sm
            run_.opt.zero_grad(set_to_none=True)
            loss.backward()
            run_.opt.step()
            step += 1
            lv, dv, sv = (v.detach().item() for v in (loss, d_loss, sm))
            run_.history.append([lv, dv, sv])
            pv = None
            if preview_every > 0 and (step % preview_every == 0 or step == steps):
                net.eval()
                pv = model.preview(f_times)
                net.train()
            if ckpt is not None and (step % params["checkpoint_every"] == 0):
                _save_checkpoint(ckpt, run_.checkpoint_state(plan, step))
            yield Progress(
                w0 + w_main * step / max(steps, 1),
                f"DIP step {step}/{steps}: loss {lv:.4g}",
                preview=pv,
                values={"loss": lv, "data": dv, "smoothness": sv, "step": float(step)},
            )
    except GeneratorExit:  # cancelled: keep what was done, to resume later
        if ckpt is not None and step > run_.done:
            _save_checkpoint(ckpt, run_.checkpoint_state(plan, step))
        raise
    if ckpt is not None:
        _save_checkpoint(ckpt, run_.checkpoint_state(plan, step))


def fit_dip(
    ts: TiltSeries,
    *,
    show: bool = False,
    callback: Callable[[Progress], Any] | None = None,
    **kwargs: Any,
) -> DIPResult:
    """:func:`fit_dip_iter` run to completion (tqdm bar on stderr when ``show``).

    Accepts every keyword of :func:`fit_dip_iter`.
    """
    return run(fit_dip_iter(ts, **kwargs), show=show, callback=callback, desc="DIP")
