"""Training of the inpainting GAN: data generated on the fly, resumable, bounded in wall time.

Output folder::

    OUT/checkpoint.safetensors   generator + discriminator + optimiser states + step (resume)
    OUT/best.safetensors         generator with the best validation PSNR (the file to ship)
    OUT/last.safetensors         generator at the last step
    OUT/bank.npz                 the cached cluster and natural-image slices (ground truth)
    OUT/log.jsonl                one JSON line per logged step and per validation
    OUT/config.json              the training configuration

Each step draws its batch from ``numpy.random.default_rng([seed, step])``: phantom faces are made
fresh, cluster slices and natural images are drawn from a bank generated once (then flipped and
turned by quarter turns), and every group of ``group_size`` examples gets its own wedge
(uniform in ``wedge_range_deg``), tilt step and sinogram noise. An interrupted run resumed from
its checkpoint sees the same batches as an uninterrupted one.
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
from napari_tiltgen.nets.inpainting.data import (
    HELDOUT_SEED,
    family_slices,
    make_image,
    wedge_inputs,
)
from napari_tiltgen.nets.inpainting.network import (
    GeneratorConfig,
    PatchDiscriminator,
    UNetPP,
    generator_loss,
    n_parameters,
    ralsgan_d_loss,
    save_generator,
    wedge_mse,
)
from napari_tiltgen.nets.training import (
    item_psnr,
    load_training_state,
    save_training_state,
    warmup_cosine,
)
from napari_tiltgen.simulate.families import training_families

__all__ = ["TrainConfig", "dead_fractions", "make_batch", "make_optimizer", "parameter_groups",
           "revive_dead_blocks", "train", "train_iter", "validation_scores", "validation_set"]

VAL_SEED = HELDOUT_SEED + 1000  # validation images: neither training nor the evaluation set
FAMILY_SLICES_PER_VOLUME = 8  # planes taken from each family volume of the bank


@dataclass
class TrainConfig:
    """Settings of a training run.

    Parameters
    ----------
    out_dir
        Output folder.
    size
        Edge of the training slices, pixels.
    steps
        Length of the learning-rate schedule (optimiser steps).
    batch_size
        Slices per step.
    group_size
        Slices sharing one wedge, tilt step and noise level (one projector per group).
    wedge_range_deg
        Missing wedges drawn in training, degrees (uniform).
    tilt_step_range_deg
        Tilt increments drawn in training, degrees (uniform).
    noise_range
        Sinogram noise (Gaussian, fraction of the sinogram maximum), uniform in this range.
    noise_level
        Instead of ``noise_range``: a degradation level of
        :func:`~napari_tiltgen.nets.inpainting.data.degrade_sinogram` (``"train"``: Poisson
        over a dose range, Gaussian, scan lines, offsets, ramps, detector jitter, blur).
    source_weights
        Share of phantom faces, cluster slices, natural images and ``family`` slices (planes
        of volumes of ``families``).
    families
        Object families of the ``family`` bank, drawn in turn (a family named twice is drawn
        twice as often); training families only. ``None``: :data:`~napari_tiltgen.simulate.
        families.TRAIN_FAMILIES`. Validation always uses every training family once.
    bank_size
        Cluster slices, natural images and family slices generated once (each).
    sirt_iterations
        SIRT iterations of the SIRT input channel (inference uses the same number).
    lr, lr_min, weight_decay
        Generator AdamW learning rate (cosine decay to ``lr_min``) and decoupled weight decay
        (convolution and linear weights only; none on norms and biases, see
        :func:`make_optimizer`).
    d_lr
        Discriminator RMSprop learning rate (paper: 1e-4).
    adv_weight
        Weight of the RaLSGAN generator loss next to the pixel loss.
    adv_start
        Fraction of ``steps`` trained with the pixel loss only before the GAN terms start.
    wedge_weight
        Weight of the MSE of the error's part in the missing wedge (:func:`~.network.
        wedge_mse`) next to the pixel loss: the part the hard data-consistency step cannot
        correct (0: pixel loss only, as before).
    select_on
        Validation score that picks ``best.safetensors``: ``"psnr"`` (the PSNR of the slices)
        or ``"wedge"`` (the PSNR of the error's part in the missing wedge, ``val_wedge_psnr``;
        both are logged).
    val_every, val_size
        Validate every this many steps on this many fixed validation slices.
    seed, device, threads, max_minutes
        Seed; torch device; CPU threads (``None``: torch's default); wall-time bound of this
        process in minutes (weights and checkpoint are written when it is reached).
    log_every, checkpoint_every
        Logging and checkpoint intervals, steps.
    net
        Generator size (:class:`GeneratorConfig`).
    d_width
        Discriminator width.
    init
        Generator weights (``save_generator`` format, e.g. the shipped model) to start from
        instead of a fresh generator: fine-tuning with new optimisers, a new schedule and a new
        discriminator. Its architecture replaces ``net``; its training record is kept in the
        new weights' metadata.
    command
        The command line that started the run (for the model card).
    """

    out_dir: str = "inpainting-run"
    size: int = 64
    steps: int = 3000
    batch_size: int = 16
    group_size: int = 4
    wedge_range_deg: tuple[float, float] = (20.0, 90.0)
    tilt_step_range_deg: tuple[float, float] = (1.0, 3.0)
    noise_range: tuple[float, float] = (0.0, 0.01)
    noise_level: str | None = None
    source_weights: dict[str, float] = field(
        default_factory=lambda: {"phantom": 0.5, "cluster": 0.25, "natural": 0.25})
    families: tuple[str, ...] | None = None
    bank_size: int = 256
    sirt_iterations: int = 30
    lr: float = 1e-3
    lr_min: float = 5e-5
    weight_decay: float = 1e-3
    d_lr: float = 1e-4
    adv_weight: float = 0.003
    adv_start: float = 0.5
    wedge_weight: float = 0.0
    select_on: str = "psnr"
    val_every: int = 100
    val_size: int = 24
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    max_minutes: float | None = None
    log_every: int = 10
    checkpoint_every: int = 50
    net: GeneratorConfig = field(default_factory=GeneratorConfig)
    d_width: int = 8
    init: str | None = None
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        net = GeneratorConfig.from_dict(d.pop("net", {}))
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("wedge_range_deg", "tilt_step_range_deg", "noise_range", "families"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(net=net, **d)


# ---------------------------------------------------------------------------- data
def _bank(cfg: TrainConfig, out: Path) -> dict[str, np.ndarray]:
    """Cluster slices and natural images, generated once and cached in ``OUT/bank.npz``."""
    path = out / "bank.npz"
    need = {s for s, w in cfg.source_weights.items() if w > 0 and s != "phantom"}
    if path.is_file():
        with np.load(path) as z:
            bank = {k: z[k] for k in z.files}
        if all(k in bank and bank[k].shape[1:] == (cfg.size, cfg.size) for k in need):
            return bank
    bank = {}
    for k, src in enumerate(sorted(need)):
        rng = np.random.default_rng([cfg.seed, 99, k])
        if src == "family":
            bank[src], _ = family_slices(training_families(cfg.families), cfg.size,
                                         max(1, cfg.bank_size // FAMILY_SLICES_PER_VOLUME),
                                         FAMILY_SLICES_PER_VOLUME, rng)
        else:
            bank[src] = np.stack([make_image(src, cfg.size, rng) for _ in range(cfg.bank_size)])
    tmp = out / "bank.tmp.npz"
    np.savez_compressed(tmp, **bank)
    tmp.replace(path)
    return bank


def make_batch(cfg: TrainConfig, step: int, bank: dict[str, np.ndarray]):
    """The batch of step ``step`` (deterministic in ``cfg.seed`` and ``step``)."""
    rng = np.random.default_rng([cfg.seed, step])
    names = list(cfg.source_weights)
    p = np.array([cfg.source_weights[n] for n in names], dtype=np.float64)
    srcs = rng.choice(names, size=cfg.batch_size, p=p / p.sum())
    imgs = []
    for s in srcs:
        if s == "phantom" or s not in bank:
            img = make_image("phantom", cfg.size, rng)
        else:
            img = bank[s][int(rng.integers(len(bank[s])))]
        img = np.rot90(img, int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        imgs.append(img * rng.uniform(0.5, 2.0))
    n_groups = math.ceil(cfg.batch_size / cfg.group_size)
    lo, hi = cfg.wedge_range_deg
    g_wedge = rng.uniform(lo, hi, n_groups)
    g_step = rng.uniform(*cfg.tilt_step_range_deg, n_groups)
    g_noise = rng.uniform(*cfg.noise_range, n_groups)
    grp = np.arange(cfg.batch_size) // cfg.group_size
    noise = cfg.noise_level if cfg.noise_level else g_noise[grp]
    return wedge_inputs(np.stack(imgs), g_wedge[grp], g_step[grp], cfg.net.in_channels,
                        cfg.sirt_iterations, noise, rng)


def validation_set(cfg: TrainConfig):
    """Fixed validation batch, wedges spread evenly over the trained range, 2 degree tilt step:
    with the ``family`` source, one slice of each of ``val_size`` volumes of the training
    families with realistic degradations; otherwise phantoms and clusters (training elements),
    no noise. Both from their own seed stream."""
    rng = np.random.default_rng(VAL_SEED)
    wedges = np.linspace(*cfg.wedge_range_deg, cfg.val_size)
    if cfg.source_weights.get("family", 0) > 0:
        # training families (own seed stream), realistic degradations: the checkpoint is
        # picked on the kind of data it will meet, never on held-out families
        imgs, _ = family_slices(training_families(None), cfg.size, cfg.val_size, 1, rng)
        return wedge_inputs(imgs[:cfg.val_size], wedges[:len(imgs)], 2.0, cfg.net.in_channels,
                            cfg.sirt_iterations, "realistic", rng)
    srcs = ["phantom", "cluster"] * (cfg.val_size // 2) + ["phantom"] * (cfg.val_size % 2)
    imgs = np.stack([make_image(s, cfg.size, rng) for s in srcs])
    return wedge_inputs(imgs, wedges, 2.0, cfg.net.in_channels, cfg.sirt_iterations)


# ---------------------------------------------------------------------------- optimiser
def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights of convolutions and linear layers (decayed), and every norm
    weight, bias and 1-D parameter (never decayed).

    Decaying BatchNorm scales and biases pulls them to zero and, with a normalised optimiser,
    switches whole blocks off; convolution weights in front of a BatchNorm are scale-invariant,
    so decoupled decay on them only sets the effective step size.
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, torch.nn.modules.batchnorm._NormBase | torch.nn.GroupNorm
                                 | torch.nn.LayerNorm)
            (no_decay if is_norm or name == "bias" or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay, Loshchilov & Hutter) over :func:`parameter_groups`.

    The shipped generator before this fix was trained with ``Adam(weight_decay=...)``, whose
    decay is added to the gradient and then normalised by Adam's second moment: where a block's
    gradient was small, the decay term dominated and drove its weights to zero at the full
    learning rate per step, and 71 % of the parameters (blocks 4_0, 3_1, most of 2_2) ended
    below 1e-30.
    """
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.99))


def dead_fractions(model: torch.nn.Module, threshold: float = 1e-30) -> dict[str, float]:
    """Fraction of each generator block's parameters with ``|w| < threshold``.

    Blocks are the U-Net++ nodes (``"4_0"``...), ``"embed"`` and ``"head"``; BatchNorm running
    statistics are not parameters and are not counted.
    """
    counts: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        block = parts[1] if parts[0] == "nodes" else parts[0]
        c = counts.setdefault(block, [0, 0])
        c[0] += int((p.detach().abs() < threshold).sum())
        c[1] += p.numel()
    return {k: d / n for k, (d, n) in counts.items()}


def revive_dead_blocks(model: torch.nn.Module, threshold: float = 1e-30,
                       dead_fraction: float = 0.5, seed: int = 0) -> list[str]:
    """Re-initialise every U-Net++ node with more than ``dead_fraction`` of its parameters
    below ``threshold`` (fine-tuning from weights with dead blocks).

    Convolutions get PyTorch's default initialisation, the first BatchNorm of the node scale 1,
    the second scale 0.1 (a small, live contribution to the nodes downstream, which learnt to
    do without it), FiLM the identity. Returns the names of the revived nodes.
    """
    revived = []
    fr = dead_fractions(model, threshold)
    gen = torch.Generator().manual_seed(int(seed))
    for key, block in getattr(model, "nodes", {}).items():
        if fr.get(key, 0.0) <= dead_fraction:
            continue
        norms = 0
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, torch.nn.Conv2d):
                    bound = 1.0 / math.sqrt(m.weight[0].numel())  # kaiming_uniform(a=sqrt 5)
                    m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.weight.fill_(1.0 if norms == 0 else 0.1)
                    m.bias.zero_()
                    norms += 1
                elif isinstance(m, torch.nn.Linear):  # FiLM: identity
                    m.weight.zero_()
                    m.bias.zero_()
        revived.append(key)
    return revived


# ---------------------------------------------------------------------------- training
def _model_info(cfg: TrainConfig, step: int, val_psnr: float,
                init_info: dict[str, Any] | None = None) -> dict[str, Any]:
    extra = {"initialised_from": init_info} if init_info is not None else {}
    if cfg.source_weights.get("family", 0) > 0:
        extra["train_families"] = list(training_families(cfg.families))
    return {**extra,
        "trained_wedge_deg": list(cfg.wedge_range_deg),
        "trained_tilt_step_deg": list(cfg.tilt_step_range_deg),
        "in_channels": list(cfg.net.in_channels),
        "sirt_iterations": cfg.sirt_iterations,
        "train_size_px": cfg.size,
        "steps": step,
        "batch_size": cfg.batch_size,
        f"{_SELECT[cfg.select_on]}_db": val_psnr,
        "wedge_loss_weight": cfg.wedge_weight,
        "sources": cfg.source_weights,
        "noise": cfg.noise_level or f"gaussian {list(cfg.noise_range)}",
        "weight_decay": f"AdamW {cfg.weight_decay:g} (none on norms and biases)",
        "command": cfg.command,
    }


def train_iter(cfg: TrainConfig, resume: bool = True) -> Generator[Progress, None, dict[str, Any]]:
    """Train (or resume) as a progress generator; returns a summary dict.

    Raises
    ------
    TiltgenError
        Bad settings (unknown device, sizes not multiples of 16...).
    """
    from napari_tiltgen.core.devices import resolve_device

    if cfg.size % 16:
        raise TiltgenError(f"the training size must be a multiple of 16 px; got {cfg.size}.")
    training_families(cfg.families)  # refuse held-out or unknown families before any work
    lo, hi = cfg.wedge_range_deg
    if not 0 < lo < hi <= 180:
        raise TiltgenError(f"bad wedge range {cfg.wedge_range_deg} (degrees, 0 < lo < hi).")
    if cfg.select_on not in _SELECT:
        raise TiltgenError(f"unknown validation score {cfg.select_on!r}; use "
                           f"{' or '.join(_SELECT)}.")
    if not cfg.wedge_weight >= 0:
        raise TiltgenError(f"the wedge loss weight must be 0 or more; got {cfg.wedge_weight}.")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    init_info: dict[str, Any] | None = None
    if cfg.init:
        from napari_tiltgen.nets.inpainting.network import load_generator

        G, init_info = load_generator(cfg.init)
        init_sirt = init_info.get("sirt_iterations", cfg.sirt_iterations)
        if int(init_sirt) != cfg.sirt_iterations:
            raise TiltgenError(f"the weights to start from were trained on SIRT-{init_sirt} "
                               f"inputs; use --sirt-iterations {init_sirt}.", cfg.init)
        cfg.net = G.config
        G = G.to(device).train()
    else:
        G = UNetPP(cfg.net).to(device)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    D = PatchDiscriminator(len(cfg.net.in_channels) + 1, cfg.d_width).to(device)
    if init_info is not None:
        revived = revive_dead_blocks(G, seed=cfg.seed)
        if revived:
            init_info = {**init_info, "revived_blocks": revived}
            yield Progress(0.0, f"re-initialised dead blocks of the start weights: {revived}")
    opt_g = make_optimizer(G, cfg.lr, cfg.weight_decay)
    # the discriminator: no weight decay at all (RMSprop's is coupled, like Adam's)
    opt_d = torch.optim.RMSprop(D.parameters(), lr=cfg.d_lr, alpha=0.99)
    nets, opts = {"G": G, "D": D}, {"optG": opt_g, "optD": opt_d}  # the resumable state
    step, best = 0, -math.inf
    ckpt = out / "checkpoint.safetensors"
    if resume and ckpt.is_file():
        state = load_training_state(ckpt, nets, opts, device)
        step, best = int(state["step"]), float(state["best"])
        yield Progress(step / cfg.steps, f"resumed at step {step}")
    yield Progress(step / cfg.steps, "generating the image bank")
    bank = _bank(cfg, out)
    val = validation_set(cfg)
    log = (out / "log.jsonl").open("a")
    t0 = time.perf_counter()
    adv_from = int(cfg.adv_start * cfg.steps)
    last_val = best
    stopped = "finished"
    try:
        while step < cfg.steps:
            if cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes:
                stopped = "time limit"
                break
            G.train()
            D.train()
            lr = warmup_cosine(step, cfg.steps, cfg.lr, cfg.lr_min, max(1, min(100, cfg.steps // 20)))
            for g in opt_g.param_groups:
                g["lr"] = lr
            b = make_batch(cfg, step, bank)
            x, y, w = b.inputs.to(device), b.target.to(device), b.wedge_deg.to(device)
            fake = G(x, w)
            use_adv = cfg.adv_weight > 0 and step >= adv_from
            if use_adv:
                opt_d.zero_grad(set_to_none=True)
                d_loss = ralsgan_d_loss(D(y, x), D(fake.detach(), x))
                d_loss.backward()
                opt_d.step()
                loss, parts = generator_loss(fake, y, D(y, x).detach(), D(fake, x), cfg.adv_weight,
                                             w, cfg.wedge_weight)
                parts["d"] = d_loss.item()
            else:
                loss, parts = generator_loss(fake, y, missing_wedge_deg=w,
                                             wedge_weight=cfg.wedge_weight)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
            opt_g.step()
            step += 1
            if step % cfg.log_every == 0:
                rec = {"step": step, "lr": lr, "loss": loss.item(), **parts,
                       "minutes": round((time.perf_counter() - t0) / 60, 2)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if step % cfg.val_every == 0 or step == cfg.steps:
                scores = validation_scores(G, val, device)
                last_val = scores[_SELECT[cfg.select_on]]
                log.write(json.dumps({"step": step, **scores}) + "\n")
                log.flush()
                if last_val > best:
                    best = last_val
                    save_generator(out / "best.safetensors", G,
                                   _model_info(cfg, step, best, init_info))
            if step % cfg.checkpoint_every == 0:
                save_training_state(ckpt, nets, opts, {"step": step, "best": best})
            yield Progress(step / cfg.steps, f"step {step}/{cfg.steps} loss {loss.item():.4f}",
                           values={"loss": loss.item(), "val_psnr": last_val})
    finally:
        log.close()
    last_val = validation_scores(G, val, device)[_SELECT[cfg.select_on]]
    if last_val > best or not (out / "best.safetensors").is_file():
        best = max(best, last_val)
        save_generator(out / "best.safetensors", G,
                       _model_info(cfg, step, last_val, init_info))
    save_generator(out / "last.safetensors", G, _model_info(cfg, step, last_val, init_info))
    save_training_state(ckpt, nets, opts, {"step": step, "best": best})
    return {"steps": step, "stopped": stopped, "best_val_psnr": best, "last_val_psnr": last_val,
            "minutes": (time.perf_counter() - t0) / 60, "parameters": n_parameters(G),
            "out_dir": str(out)}


_SELECT = {"psnr": "val_psnr", "wedge": "val_wedge_psnr"}


@torch.no_grad()
def validation_scores(G: UNetPP, val, device: torch.device, chunk: int = 8
                      ) -> dict[str, float]:
    """``val_psnr`` (mean PSNR of the slices, dB) and ``val_wedge_psnr`` (mean PSNR of the
    error's part in the missing wedge, :func:`~.network.wedge_mse`, each slice against its
    own range) of the generator on a validation batch."""
    G.eval()
    pred = torch.cat([G(val.inputs[i:i + chunk].to(device),
                        val.wedge_deg[i:i + chunk].to(device)).cpu()
                      for i in range(0, len(val.inputs), chunk)])
    wedge = item_psnr(val.target, mse=wedge_mse(pred, val.target, val.wedge_deg))
    return {"val_psnr": float(item_psnr(val.target, pred).mean()),
            "val_wedge_psnr": float(wedge.mean())}


def train(cfg: TrainConfig, resume: bool = True, show: bool = True) -> dict[str, Any]:
    """:func:`train_iter` run to completion."""
    from napari_tiltgen.core.progress import run

    return run(train_iter(cfg, resume), show=show, desc="train inpainting")
