"""Training of the interpolation network: resumable, seeded, logged, bounded in wall time.

Output folder::

    OUT/checkpoint.safetensors   model + AdamW state + step (resume point; safetensors, no pickle)
    OUT/best.safetensors         weights with the best validation PSNR (the file to ship)
    OUT/last.safetensors         weights at the last step
    OUT/log.jsonl                one JSON line per logged step and per validation
    OUT/config.json              the training configuration

Each step's batch is drawn from ``numpy.random.default_rng([seed, step])``, so an interrupted
run resumed from its checkpoint sees the same batches as an uninterrupted one.

Two kinds of data: ``simulate-dataset`` folders (clean cluster frames, :class:`Triplets`), or
family pools written by ``tiltgen build-interpolation-data``
(:func:`~napari_tiltgen.nets.interpolation.data.build_family_pool_iter`): clean series
windows of many object families, degraded on the fly (noisy, jittered inputs; clean targets;
:class:`FamilyTriplets`). A pool may still be growing while the run trains: its shards are
re-read every ``reload_every`` steps (batches then depend on how far the pool had grown).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.nets.interpolation.context import forward_batch
from napari_tiltgen.nets.interpolation.data import (
    FamilyTriplets,
    FrameBank,
    Triplets,
    is_family_pool,
    load_family_pool,
    load_frame_bank,
    object_radius_px,
)
from napari_tiltgen.nets.interpolation.network import (
    NetConfig,
    TiltInterpNet,
    interpolation_loss,
    save_model,
)
from napari_tiltgen.nets.training import (
    item_psnr,
    load_training_state,
    save_training_state,
    warmup_cosine,
)

__all__ = ["TrainConfig", "train", "train_iter", "validate"]


@dataclass
class TrainConfig:
    """Settings of a training run.

    Parameters
    ----------
    data
        Data-set folders (``simulate-dataset`` output); their ``train`` shards are used.
    out_dir
        Output folder (checkpoints, log, weights).
    steps
        Length of the learning-rate schedule (optimizer steps).
    batch_size
        Triplets per step.
    lr, lr_min
        Peak and final learning rate (linear warm-up, then cosine decay to ``lr_min``).
    warmup_steps
        Steps of linear warm-up.
    weight_decay
        AdamW weight decay (TSGNet: 0.02).
    gap_range_deg
        Angular gaps between the two known frames used in training, degrees.
    val_series
        Number of stacks held out from the training shards for validation (when the data set
        has no ``val`` split).
    val_every
        Validate every this many steps.
    val_triplets
        Triplets in the fixed validation set.
    seed
        Seed of initialisation and batches.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    threads
        CPU threads for torch (``None``: torch's default).
    max_minutes
        Stop (with checkpoint and weights written) after this much wall time in this process.
    log_every
        Log the loss every this many steps.
    checkpoint_every
        Write the resume checkpoint every this many steps.
    net
        Network size (:class:`NetConfig`).
    init
        Weights file (``save_model`` format, e.g. the shipped model) to start from instead of
        a fresh network: fine-tuning with a new optimiser and schedule. Its architecture
        replaces ``net``; its training record is kept in the new weights' metadata.
    command
        The command line that started the run (recorded in the weights' metadata).
    crops
        Family pools: square crop sizes (pixels, one per batch, multiples of 16).
    val_crop
        Family pools: crop size of the validation triplets.
    reload_every
        Family pools: re-read the pool's shards every this many steps (a pool being built).
    clean_fraction
        Family pools: fraction of training triplets left clean (no noise, jitter or
        background). When > 0 the run also validates on clean triplets and keeps the weights
        with the best sum of the noisy and clean gains over linear interpolation.
    context
        Family pools: 2 trains the four-frame network
        (:class:`~napari_tiltgen.nets.interpolation.context.ContextInterpNet`; from ``init``'s
        pair network when that is one); each sample spans three gaps of the pool's windows.
    absent_fraction
        Four-frame training: probability that each outer frame is left out (marked absent).
    """

    data: list[str]
    out_dir: str
    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.02
    gap_range_deg: tuple[float, float] = (2.0, 12.0)
    val_series: int = 16
    val_every: int = 250
    val_triplets: int = 128
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    max_minutes: float | None = None
    log_every: int = 25
    checkpoint_every: int = 100
    net: NetConfig = field(default_factory=NetConfig)
    init: str | None = None
    command: str = ""
    crops: tuple[int, ...] = (96, 112, 128)
    val_crop: int = 128
    reload_every: int = 500
    clean_fraction: float = 0.0
    context: int = 0
    absent_fraction: float = 0.15

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        d["gap_range_deg"] = list(self.gap_range_deg)
        d["crops"] = list(self.crops)
        return d


@torch.no_grad()
def validate(model: TiltInterpNet, batch: dict[str, torch.Tensor], device: torch.device,
             chunk: int = 32) -> dict[str, float]:
    """Mean PSNR (dB) of the model and of linear interpolation on a fixed batch of triplets."""
    model.eval()
    p_model, p_lin = [], []
    for a in range(0, batch["img0"].shape[0], chunk):
        sl = slice(a, a + chunk)
        sub = {k: v[sl].to(device) for k, v in batch.items()}
        i0, i1, tgt, t = sub["img0"], sub["img1"], sub["target"], sub["t"]
        pred = forward_batch(model, sub, t, sub["gap_deg"])["image"]
        lin = (1 - t.view(-1, 1, 1, 1)) * i0 + t.view(-1, 1, 1, 1) * i1
        p_model.append(item_psnr(tgt, pred).cpu())
        p_lin.append(item_psnr(tgt, lin).cpu())
    model.train()
    pm, pl = torch.cat(p_model), torch.cat(p_lin)
    return {"val_psnr": float(pm.mean()), "val_psnr_linear": float(pl.mean()),
            "val_gain_db": float((pm - pl).mean())}


# ---------------------------------------------------------------------------- the loop
def train_iter(cfg: TrainConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Train (or resume) as a progress generator; returns a summary dict.

    The run resumes from ``OUT/checkpoint.safetensors`` when it exists and was made with the
    same data and network settings. It stops after ``cfg.steps`` steps or ``cfg.max_minutes``,
    whichever comes first, writing the checkpoint, ``last.safetensors`` and (from the best
    validation) ``best.safetensors``.
    """
    from napari_tiltgen.core.devices import resolve_device

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t_start = time.perf_counter()

    yield Progress(0.0, "loading training frames")
    pools = [is_family_pool(d) for d in cfg.data]
    if any(pools) and not all(pools):
        raise TiltgenError("train either on family pools or on simulate-dataset folders, not "
                           "on both at once.")
    use_pool = all(pools)
    sampler: Triplets | FamilyTriplets
    val_clean: dict[str, torch.Tensor] | None = None
    if cfg.context and not all(pools):
        raise TiltgenError("the four-frame network trains on family pools only.")
    ctx = {"context": bool(cfg.context)}
    if use_pool:
        pool = load_family_pool(cfg.data, "train")
        sampler = FamilyTriplets(pool, cfg.gap_range_deg, crops=cfg.crops,
                                 clean_fraction=cfg.clean_fraction, **ctx,
                                 absent_fraction=cfg.absent_fraction)
        val_pool = load_family_pool(cfg.data, "val")
        val_batch = FamilyTriplets(val_pool, cfg.gap_range_deg, crops=(cfg.val_crop,),
                                   augment=False, **ctx).sample(
            np.random.default_rng([cfg.seed, 10**9]), cfg.val_triplets)
        if cfg.clean_fraction > 0:
            val_clean = FamilyTriplets(val_pool, cfg.gap_range_deg, crops=(cfg.val_crop,),
                                       augment=False, level="clean", **ctx).sample(
                np.random.default_rng([cfg.seed, 10**9 + 1]), cfg.val_triplets)

        def pool_summary(p: Any) -> dict[str, Any]:
            summ = p.summary()
            radii = [object_radius_px(s.astype(np.float32))
                     for st in p.stacks.values() for s in st[:32, ::6]]
            summ["object_radius_px"] = [float(np.min(radii)), float(np.percentile(radii, 95))]
            return summ

        data_summary = pool_summary(pool)
    else:
        bank = load_frame_bank(cfg.data, "train")
        try:
            val_bank: FrameBank = load_frame_bank(cfg.data, "val")
            train_bank = bank
        except TiltgenError:
            train_bank, val_bank = bank.split(min(cfg.val_series, max(1, len(bank) // 8)))
        sampler = Triplets(train_bank, cfg.gap_range_deg)
        val_batch = Triplets(val_bank, cfg.gap_range_deg, augment=False).sample(
            np.random.default_rng([cfg.seed, 10**9]), cfg.val_triplets)
        data_summary = train_bank.summary()

    torch.manual_seed(cfg.seed)
    init_info: dict[str, Any] | None = None
    if cfg.init:
        from napari_tiltgen.nets.interpolation.network import load_model

        init_model, init_info = load_model(cfg.init)
        if cfg.net.noise_planes and not init_model.config.noise_planes:
            init_model = init_model.with_noise_planes()
        if cfg.context and not init_model.config.context:
            from napari_tiltgen.nets.interpolation.context import ContextInterpNet

            init_model = ContextInterpNet.from_pair_network(init_model)
        cfg.net = init_model.config
        model = init_model.to(device).train()
    elif cfg.context:
        from dataclasses import replace

        from napari_tiltgen.nets.interpolation.context import ContextInterpNet

        cfg.net = replace(cfg.net, context=2)
        model = ContextInterpNet(cfg.net).to(device)
    else:
        model = TiltInterpNet(cfg.net).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fingerprint = {"net": cfg.net.to_dict(), "data": [str(Path(d).resolve()) for d in cfg.data],
                   "seed": cfg.seed, "batch_size": cfg.batch_size,
                   "init": str(Path(cfg.init).resolve()) if cfg.init else None,
                   **({"clean_fraction": cfg.clean_fraction} if cfg.clean_fraction else {}),
                   **({"context": cfg.context, "absent_fraction": cfg.absent_fraction}
                      if cfg.context else {})}
    ckpt = out / "checkpoint.safetensors"
    step, best, elapsed_before = 0, -math.inf, 0.0
    if ckpt.is_file():
        state = load_training_state(ckpt, {"model": model}, {"opt": opt}, device)
        if state.get("fingerprint") != fingerprint:
            raise TiltgenError("the checkpoint in this folder was made with other data or network "
                               "settings; use a new --out folder to start again.", ckpt)
        step, best = int(state["step"]), float(state.get("best_val_psnr", -math.inf))
        elapsed_before = float(state.get("elapsed_s", 0.0))
        yield Progress(step / cfg.steps, f"resumed at step {step}")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = (out / "log.jsonl").open("a")

    def meta(extra: dict[str, Any]) -> dict[str, Any]:
        return {"training": {**cfg.to_dict(), "step": step,
                             "elapsed_s": round(elapsed_before + time.perf_counter() - t_start)},
                "data": data_summary, "trained_gap_deg": list(cfg.gap_range_deg),
                **({"initialised_from": init_info} if init_info is not None else {}), **extra}

    def checkpoint() -> None:
        save_training_state(ckpt, {"model": model}, {"opt": opt}, {
            "step": step, "best_val_psnr": best, "fingerprint": fingerprint,
            "elapsed_s": elapsed_before + time.perf_counter() - t_start})
        save_model(out / "last.safetensors", model, meta({}))

    def validate_all() -> dict[str, float]:
        """Validation PSNRs and the selection score: the noisy validation PSNR, or (with clean
        triplets) the sum of the noisy and clean gains over linear interpolation."""
        v = validate(model, val_batch, device)
        if val_clean is None:
            return {**v, "score": v["val_psnr"]}
        c = {f"{k}_clean": x for k, x in validate(model, val_clean, device).items()}
        return {**v, **c, "score": v["val_gain_db"] + c["val_gain_db_clean"]}

    model.train()
    running: dict[str, float] = {}
    stopped = "steps"
    try:
        while step < cfg.steps:
            if cfg.max_minutes is not None and \
                    time.perf_counter() - t_start > 60.0 * cfg.max_minutes:
                stopped = "max_minutes"
                break
            if use_pool and step % cfg.reload_every == 0 and step > 0:
                fresh = load_family_pool(cfg.data, "train")
                if fresh.n_shards > sampler.pool.n_shards:  # type: ignore[union-attr]
                    sampler = FamilyTriplets(fresh, cfg.gap_range_deg, crops=cfg.crops,
                                             clean_fraction=cfg.clean_fraction, **ctx,
                                             absent_fraction=cfg.absent_fraction)
                    data_summary = pool_summary(fresh)
                    log.write(json.dumps({"step": step, "pool_series": len(fresh)}) + "\n")
            lr = warmup_cosine(step, cfg.steps, cfg.lr, cfg.lr_min, cfg.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            b = sampler.sample(np.random.default_rng([cfg.seed, step]), cfg.batch_size)
            b = {k: v.to(device) for k, v in b.items()}
            out_net = forward_batch(model, b, b["t"], b["gap_deg"])
            with torch.no_grad():
                tfeat = model.encode(b["target"])
            losses = interpolation_loss(out_net, b["target"], tfeat)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            if step % cfg.log_every == 0:
                rec = {"step": step, "lr": lr, **{k: v / cfg.log_every for k, v in running.items()},
                       "elapsed_s": round(elapsed_before + time.perf_counter() - t_start, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                running = {}
            if step % cfg.val_every == 0 or step == cfg.steps:
                v = validate_all()
                log.write(json.dumps({"step": step, **v}) + "\n")
                log.flush()
                if v["score"] > best:
                    best = v["score"]
                    save_model(out / "best.safetensors", model, meta({"validation": v}))
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            yield Progress(step / cfg.steps, f"step {step}/{cfg.steps} loss "
                           f"{float(losses['total'].detach()):.4f}",
                           values={"loss": float(losses["total"].detach())})
    finally:
        checkpoint()
        v = validate_all()
        log.write(json.dumps({"step": step, "final": True, **v}) + "\n")
        log.close()
        if v["score"] > best or not (out / "best.safetensors").is_file():
            best = v["score"]
            save_model(out / "best.safetensors", model, meta({"validation": v}))
    return {"step": step, "stopped": stopped, "best_val_psnr": best, "final_validation": v,
            "out_dir": str(out), "elapsed_s": elapsed_before + time.perf_counter() - t_start}


def train(cfg: TrainConfig, show_progress: bool = True) -> dict[str, Any]:
    """:func:`train_iter` run to completion."""
    from napari_tiltgen.core.progress import run

    return run(train_iter(cfg), show=show_progress, desc="train-interpolation")
