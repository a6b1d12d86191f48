"""Self-supervised INR reconstruction with joint pose refinement (Lim et al., quantEM).

The volume is a :class:`~napari_tiltgen.fits.inr.field.DensityField`. Each step draws a random
mini-batch of recorded pixels, casts the ray of every pixel through the reconstruction box with
the current poses (:class:`~napari_tiltgen.fits.inr.poses.PoseModel`), integrates the density
along it (sum of samples x step length: density x pixel length, the units of the projector in
:mod:`napari_tiltgen.physics.projector`, so INR and SIRT are fitted to the same numbers) and
minimises the smooth-L1 distance to the recorded intensities. The field and, after a warm-up,
the poses (per-tilt shifts, tilt-angle offsets, the global tilt-axis rotation) are updated
together by Adam.

The fit is a progress generator (:mod:`napari_tiltgen.core.progress`): napari runs it in a worker with
a live preview and a real cancel; :func:`fit_inr` runs it to completion. It runs on the CPU or a
CUDA GPU (bf16 autocast there), data-parallel over pixel batches on several GPUs with
``torch.distributed`` (each rank draws its own batch, ``DistributedDataParallel`` averages the
gradients), writes checkpoints and resumes from them, and is deterministic for a given seed on
the CPU: every step's random numbers come from ``(seed, rank, step)``, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_tiltgen.core.devices import flush_denormals, num_threads, resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.fits.inr.field import DensityField, FieldConfig, coarse_to_fine_weights
from napari_tiltgen.fits.inr.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    INRResult,
    _atomic_save,
    _central_slice,
    _fingerprint,
    _fingerprint_mismatch,
    _lr_factor,
    _match_initial_density,
    _pixel_index,
    _RayModel,
    _render,
    _step_seed,
    load_checkpoint,
)
from napari_tiltgen.fits.inr.poses import POSE_PARAMETERS, PoseModel
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.physics.geometry import Geometry

__all__ = [
    "CHECKPOINT_FORMAT",
    "SAMPLING",
    "INRResult",
    "fit_inr",
    "fit_inr_iter",
    "load_checkpoint",
]

#: How ray samples read the field: ``"direct"`` queries the network at every sample (exact for
#: any sample spacing, memory ~ batch); ``"voxel"`` decodes the field on the voxel grid once per
#: step and interpolates the samples from it (faster on a CPU for volumes up to about 128^3,
#: memory ~ volume, but its interpolation biases a refined tilt axis towards 0). ``"auto"``
#: picks ``"voxel"`` on the CPU for volumes of at most 160^3 voxels when the tilt axis is not
#: refined, else ``"direct"``.
SAMPLING = ("auto", "direct", "voxel")
_VOXEL_AUTO_MAX = 160**3
#: Per-tilt angle offsets are weakly determined (they can mimic other errors): they move at this
#: fraction of the pose learning rate.
ANGLE_LR_FACTOR = 0.2


# ---------------------------------------------------------------------------- the fit
def fit_inr_iter(
    ts: TiltSeries,
    *,
    steps: int = 500,
    batch_size: int = 4096,
    samples_per_ray: int | None = None,
    learning_rate: float = 5e-2,
    optimize_pose: bool = True,
    pose_parameters: Sequence[str] = POSE_PARAMETERS,
    pose_warmup_steps: int | None = None,
    pose_learning_rate: float = 0.1,
    tilt_axis_init: str | float | None = None,
    pixel_footprint: bool = False,
    coarse_to_fine_steps: int | None = None,
    tv_weight: float = 0.0,
    loss: str = "smooth_l1",
    smooth_l1_beta: float = 0.02,
    thickness_px: int | None = None,
    field_config: FieldConfig | None = None,
    sampling: str = "auto",
    device: str | torch.device = "auto",
    mixed_precision: bool = True,
    seed: int = 0,
    preview_every: int = 100,
    log_every: int = 10,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    n_threads: int | None = None,
    distributed: bool | None = None,
    monitor: Callable[[np.ndarray], dict[str, float]] | None = None,
    monitor_every: int = 0,
) -> ProgressGen[INRResult]:
    """Fit an INR to a tilt series, optionally refining the poses, as a progress generator.

    Parameters
    ----------
    ts
        Tilt series with tilt angles (degrees). Its ``shifts_px`` (``(dy, dx)``, px) and
        ``tilt_axis_angle_deg`` (degrees from image Y, within 45 degrees) are the initial poses.
    steps
        Optimisation steps (each one mini-batch of pixels per process).
    batch_size
        Detector pixels (rays) per step and process.
    samples_per_ray
        Samples along each ray inside the box (default: the longest side of the volume).
    learning_rate
        Adam learning rate of the field (feature grids and MLP); cosine-decayed to 5 %.
    optimize_pose
        Refine the poses jointly with the field after the warm-up.
    pose_parameters
        Which poses to refine: any of ``"shifts"`` (per-tilt ``(dy, dx)``), ``"tilt_angles"``
        (per-tilt offsets) and ``"tilt_axis"`` (global in-plane rotation).
    pose_warmup_steps
        Steps with frozen poses at the start (default: 10 % of ``steps``).
    pose_learning_rate
        Adam learning rate of the shifts (px per step) and the tilt-axis angle (degrees per
        step); tilt-angle offsets use :data:`ANGLE_LR_FACTOR` times it. Cosine-decayed from the
        end of the warm-up.
    tilt_axis_init
        Starting tilt-axis angle (degrees from image Y, IMOD convention): ``None`` or
        ``"recorded"``: ``ts.tilt_axis_angle_deg``; ``"estimate"``: measured from the frames by
        common lines (:func:`napari_tiltgen.align.axis.estimate_tilt_axis_angle`,
        searched +-12 degrees around the recorded value; about 0.1 degree accurate on 64 px
        frames); a number: that angle. The INR refinement then starts from it. Gradient
        refinement alone recovers large axis errors slowly (see ``docs/inr.md``), so
        ``"estimate"`` is advised when the axis is not known to within a degree.
    pixel_footprint
        Cast each ray through a random point of its detector pixel (uniform over the pixel's
        square) instead of its centre: the fit then models pixels that integrate over their
        area. Off by default: on the 20 px phantom it pulled a refined tilt axis further
        from the truth (4.45 instead of 4.93 degrees for a true 5, see ``docs/inr.md``).
    coarse_to_fine_steps
        Finer feature levels fade in over this many steps (coarse-to-fine, which keeps the field
        from absorbing pose errors before the poses have moved, as in BARF). Default: all steps
        with pose refinement, 25 % of them without.
    tv_weight
        Weight of a total-variation penalty on the normalised density (0: none).
    loss
        ``"smooth_l1"`` (default, robust to shot noise) or ``"mse"``.
    smooth_l1_beta
        Transition point of the smooth-L1 loss, as a fraction of the data's scale (99.9th
        percentile of ``|data|``).
    thickness_px
        Volume thickness ``nz`` along the beam, px (default: frame width ``nx``).
    field_config
        Network architecture (:class:`FieldConfig`).
    sampling
        ``"auto"``, ``"direct"`` or ``"voxel"`` (see :data:`SAMPLING`).
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    mixed_precision
        bf16 autocast of the network on CUDA (ignored on the CPU).
    seed
        Seed of the initial weights and of every random draw; on the CPU the same seed gives
        the same result.
    preview_every
        Yield the central z-slice of the current volume every this many steps (0: never).
    log_every
        Yield the mean loss of the last steps in ``values["loss"]`` every this many steps.
    checkpoint_path, checkpoint_every
        Write the fit state to this file every ``checkpoint_every`` steps and at the end
        (``torch.save`` of state dicts, read back with ``weights_only=True``).
    resume
        Continue from ``checkpoint_path`` if it exists (settings and data must match). Without
        ``resume`` an existing checkpoint file is an error, never silently replaced.
    n_threads
        CPU threads for torch during the fit (default: torch's setting).
    distributed
        Data-parallel over an initialised ``torch.distributed`` process group (``None``: when
        one is initialised). Launch with ``torchrun ... -m napari_tiltgen.cli fit-inr --ddp``.
    monitor, monitor_every
        Every ``monitor_every`` steps the current volume ``(nz, ny, nx)`` (density units) is
        passed to ``monitor``, whose scalars are added to that step's ``values`` (e.g. SSIM
        against a simulated ground truth, to measure convergence).

    Yields
    ------
    Progress
        Every step; ``values["loss"]`` every ``log_every`` steps and ``preview`` (central z-slice,
        density units) every ``preview_every`` steps.

    Returns
    -------
    INRResult
        Volume, aligned tilt series, poses and loss history.
    """
    t_start = time.perf_counter()
    data, angles = ts.checked_for_projection("the INR fit")
    _, ny, nx = data.shape
    steps = int(steps)
    if steps < 1:
        raise TiltgenError(f"the number of steps must be at least 1; got {steps}.")
    if int(batch_size) < 1:
        raise TiltgenError(f"the batch size must be at least 1 pixel; got {batch_size}.")
    if learning_rate <= 0 or pose_learning_rate < 0:
        raise TiltgenError("learning rates must be positive.")
    if loss not in ("smooth_l1", "mse"):
        raise TiltgenError(f"unknown loss {loss!r}; choose smooth_l1 or mse.")
    unknown = set(pose_parameters) - set(POSE_PARAMETERS)
    if unknown:
        raise TiltgenError(
            f"unknown pose parameters {sorted(unknown)}; choose from {', '.join(POSE_PARAMETERS)}."
        )
    if tilt_axis_init is None or tilt_axis_init == "recorded":
        axis_init, axis_source = float(ts.tilt_axis_angle_deg), "recorded"
    elif tilt_axis_init == "estimate":
        from napari_tiltgen.align.axis import estimate_tilt_axis_angle

        axis_init = float(estimate_tilt_axis_angle(ts))
        axis_source = "estimate_tilt_axis_angle (common lines)"
    else:
        try:
            axis_init = float(tilt_axis_init)
        except (TypeError, ValueError):
            axis_init = float("nan")
        if not math.isfinite(axis_init):
            raise TiltgenError(
                f"tilt_axis_init must be 'recorded', 'estimate' or an angle in "
                f"degrees; got {tilt_axis_init!r}."
            )
        axis_source = "given"
    if abs(((axis_init + 90.0) % 180.0) - 90.0) > 45.0:
        raise TiltgenError(
            f"the starting tilt axis ({axis_init:.1f} deg from image Y) is near "
            "horizontal; the INR fit needs it within 45 degrees of y."
        )
    if sampling not in SAMPLING:
        raise TiltgenError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLING)}.")
    nz = int(thickness_px) if thickness_px else nx
    if nz < 1:
        raise TiltgenError(f"thickness must be at least 1 pixel; got {thickness_px}.")
    vol_shape = (nz, ny, nx)
    n_samples = int(samples_per_ray) if samples_per_ray else max(nz, nx)
    if n_samples < 1:
        raise TiltgenError(f"samples per ray must be at least 1; got {samples_per_ray}.")
    warmup = steps // 10 if pose_warmup_steps is None else max(0, int(pose_warmup_steps))
    trainable_pose = frozenset(pose_parameters) if optimize_pose else frozenset()
    if coarse_to_fine_steps is None:
        c2f = steps if trainable_pose else steps // 4
    else:
        c2f = max(0, int(coarse_to_fine_steps))

    import torch.distributed as dist

    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise TiltgenError(
            "distributed=True needs an initialised torch.distributed process "
            "group (launch with torchrun and use the CLI's --ddp)."
        )
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    dev = resolve_device(device, distributed=bool(distributed))
    if sampling == "auto":
        # a refined tilt axis needs direct queries: the voxel grid's trilinear interpolation
        # favours rays through voxel centres (axis 0) and pulls the axis back (docs/inr.md)
        sampling = (
            "voxel"
            if dev.type == "cpu"
            and nz * ny * nx <= _VOXEL_AUTO_MAX
            and "tilt_axis" not in trainable_pose
            else "direct"
        )
    amp = bool(mixed_precision) and dev.type == "cuda"

    scale = float(np.percentile(np.abs(data), 99.9))
    if not scale > 0:
        raise TiltgenError(
            "the tilt series is all zeros; there is nothing to fit.", ts.provenance.get("source")
        )
    params: dict[str, Any] = {
        "steps": steps,
        "batch_size": int(batch_size),
        "samples_per_ray": n_samples,
        "learning_rate": float(learning_rate),
        "optimize_pose": bool(optimize_pose),
        "pose_parameters": sorted(trainable_pose),
        "pose_warmup_steps": warmup,
        "pose_learning_rate": float(pose_learning_rate),
        "coarse_to_fine_steps": c2f,
        "pixel_footprint": bool(pixel_footprint),
        "tilt_axis_init_deg": round(axis_init, 6),
        "tilt_axis_init": axis_source,
        "tv_weight": float(tv_weight),
        "loss": loss,
        "smooth_l1_beta": float(smooth_l1_beta),
        "thickness_px": nz,
        "field": (field_config or FieldConfig()).to_dict(),
        "sampling": sampling,
        "seed": int(seed),
        "checkpoint_every": int(checkpoint_every),
        "preview_every": int(preview_every),
        "log_every": int(log_every),
        "n_threads": n_threads,
    }
    fingerprint = _fingerprint(data, params, world)

    ckpt_path = Path(checkpoint_path) if checkpoint_path else None
    ckpt: dict[str, Any] | None = None
    if ckpt_path is not None and ckpt_path.exists():
        if not resume:
            raise TiltgenError(
                "a checkpoint already exists here; resume from it (resume=True, "
                "--resume) or choose another file.",
                ckpt_path,
            )
        ckpt = load_checkpoint(ckpt_path)
        diff = _fingerprint_mismatch(ckpt["fingerprint"], fingerprint)
        if diff:
            raise TiltgenError(
                "this checkpoint belongs to another fit; it differs in "
                + "; ".join(diff[:4])
                + ". Use the same data and settings, or a "
                "new checkpoint file.",
                ckpt_path,
            )

    with num_threads(n_threads), flush_denormals():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            field_ = DensityField(
                vol_shape, field_config, density_scale=1.0 / max(0.25 * max(nz, nx), 1.0)
            )
        poses = PoseModel(angles, ts.shifts_px, axis_init)
        geometry = Geometry(vol_shape, angles, ts.shifts_px, 0.0, nx, axis_init)
        model = _RayModel(field_, poses, geometry, n_samples, sampling).to(dev)
        grid_params = list(field_.grids.parameters())
        opt = torch.optim.Adam(
            [
                {"params": grid_params, "lr": learning_rate, "name": "grids"},
                {"params": list(field_.mlp.parameters()), "lr": learning_rate, "name": "mlp"},
                {
                    "params": [poses.d_shifts, poses.d_axis],
                    "lr": pose_learning_rate,
                    "name": "shifts_axis",
                },
                {
                    "params": [poses.d_angles],
                    "lr": pose_learning_rate * ANGLE_LR_FACTOR,
                    "name": "tilt_angles",
                },
            ]
        )
        history = torch.zeros(steps, dtype=torch.float32)
        start = 0
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            history = ckpt["loss_history"].to(torch.float32).clone()
            start = int(ckpt["step"])
            yield Progress(start / steps, f"resumed from {ckpt_path.name} at step {start}")
        runner: nn.Module = model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )

        target = torch.from_numpy(data / scale).to(dev).reshape(-1)
        hist_dev = history.to(dev)
        n_pixels = target.numel()
        batch = int(batch_size)
        gen = torch.Generator(device=dev)
        if ckpt is None:
            _match_initial_density(model, target, (ny, nx), batch, seed, dev)
        base_lrs = [
            learning_rate,
            learning_rate,
            pose_learning_rate,
            pose_learning_rate * ANGLE_LR_FACTOR,
        ]
        beta = float(smooth_l1_beta)
        all_levels = torch.ones(field_.n_levels, device=dev)

        def save(step_done: int) -> None:
            if ckpt_path is None or rank != 0:
                return
            _atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "step": step_done,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": opt.state_dict(),
                    "loss_history": hist_dev.detach().cpu(),
                    "fingerprint": fingerprint,
                },
                ckpt_path,
            )

        k = start
        while k < steps:
            pose_on = bool(trainable_pose) and k >= warmup
            trainable = trainable_pose if pose_on else frozenset()
            lw = (
                coarse_to_fine_weights(field_.n_levels, (k + 1) / c2f).to(dev)
                if k < c2f
                else all_levels
            )
            f = _lr_factor(k, steps)
            pose_f = _lr_factor(k - warmup, steps - warmup) if pose_on else 0.0
            for group, base, fac in zip(opt.param_groups, base_lrs, (f, f, pose_f, pose_f)):
                group["lr"] = base * fac
            gen.manual_seed(_step_seed(seed, rank, k))
            idx = torch.randint(0, n_pixels, (batch,), device=dev, generator=gen)
            jitter = torch.rand((batch, n_samples), device=dev, generator=gen)
            offset = (
                torch.rand((batch, 2), device=dev, generator=gen) - 0.5 if pixel_footprint else None
            )
            tv_pts = None
            if tv_weight > 0:
                tv_pts = torch.rand((batch // 4 + 1, 3), device=dev, generator=gen) * 2 - 1
            tilt, row, col = _pixel_index(idx, ny, nx)
            try:
                pred, tv = runner(tilt, row, col, jitter, lw, trainable, tv_pts, amp, offset)
                y = target[idx]
                if loss == "smooth_l1":
                    data_loss = F.smooth_l1_loss(pred, y, beta=beta)
                else:
                    data_loss = F.mse_loss(pred, y)
                total = data_loss + tv_weight * tv
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
            except torch.cuda.OutOfMemoryError:
                if batch <= 256:
                    raise TiltgenError(
                        "out of GPU memory even with 256 rays per step; use "
                        "device 'cpu', bin the tilt series or fewer samples per "
                        "ray."
                    ) from None
                torch.cuda.empty_cache()
                batch //= 2
                yield Progress(k / steps, f"GPU out of memory: batch reduced to {batch} rays")
                continue
            hist_dev[k] = data_loss.detach()
            k += 1
            values: dict[str, float] = {}
            msg = f"INR step {k}/{steps}"
            if k % max(1, int(log_every)) == 0 or k == steps:
                lo = max(start, k - max(1, int(log_every)))
                values = {"loss": float(hist_dev[lo:k].mean()), "step": float(k)}
                if pose_on and "tilt_axis" in trainable:
                    values["tilt_axis_deg"] = float(poses.current(trainable)[2].detach())
                msg += f": loss {values['loss']:.4g}" + (
                    "" if pose_on or not trainable_pose else " (poses frozen)"
                )
            preview = None
            if preview_every and (k % int(preview_every) == 0 or k == steps) and rank == 0:
                preview = _central_slice(model, scale, lw)
            if (
                monitor is not None
                and monitor_every
                and (k % int(monitor_every) == 0 or k == steps)
            ):
                values = {
                    **values,
                    **monitor(_render(field_, vol_shape, scale, dev)),
                    "step": float(k),
                }
            if ckpt_path is not None and checkpoint_every and k % int(checkpoint_every) == 0:
                save(k)
            yield Progress(k / steps, msg, preview=preview, values=values)

        if ckpt_path is not None and (not checkpoint_every or steps % int(checkpoint_every)):
            save(steps)
        history_np = hist_dev.detach().cpu().numpy().astype(np.float64)
        if distributed and world > 1:
            h = hist_dev.detach().clone()
            dist.all_reduce(h)
            history_np = (h / world).cpu().numpy().astype(np.float64)
        vol = _render(field_, vol_shape, scale, dev)

    fitted = poses.as_numpy()
    pose_dict: dict[str, Any] = {
        **fitted,
        "initial_shifts_px": np.asarray(ts.shifts_px, dtype=np.float64).copy(),
        "initial_tilt_angles_deg": np.asarray(angles, dtype=np.float64).copy(),
        "initial_tilt_axis_angle_deg": axis_init,
        "recorded_tilt_axis_angle_deg": float(ts.tilt_axis_angle_deg),
    }
    seconds = round(time.perf_counter() - t_start, 3)
    history_entry = {"step": "fit_inr", **{k_: v for k_, v in params.items() if k_ != "field"}}
    prov_in = ts.provenance
    hist = copy.deepcopy(prov_in.get("history", []))
    hist.append(history_entry)
    provenance = {
        "method": "inr",
        "parameters": params,
        "device": str(dev),
        "seconds": seconds,
        "input": prov_in.get("source"),
        "history": hist,
        "poses": {
            k_: (v.tolist() if isinstance(v, np.ndarray) else v) for k_, v in pose_dict.items()
        },
        "final_loss": float(np.mean(history_np[-max(1, min(50, steps)) :])),
    }
    volume = Volume(vol, voxel_size_A=ts.pixel_size_A, provenance=provenance)
    new_angles = np.clip(fitted["tilt_angles_deg"], -90.0, 90.0)
    ts_prov = copy.deepcopy(prov_in)
    ts_prov.setdefault("history", []).append(
        {
            "step": "fit_inr poses",
            "optimize_pose": bool(optimize_pose),
            "pose_parameters": sorted(trainable_pose),
        }
    )
    if axis_source != "recorded":
        ts_prov["tilt_axis_source"] = f"{axis_source}: {axis_init:.3f} deg"
    if optimize_pose:
        ts_prov["tilt_axis_source"] = (
            "INR pose fit"
            if axis_source == "recorded"
            else f"INR pose fit from {axis_source} ({axis_init:.3f} deg)"
        )
        ts_prov["angles_source"] = f"INR pose fit (from {prov_in.get('angles_source', '?')})"
    aligned = replace(
        ts,
        tilt_angles=new_angles,
        shifts_px=fitted["shifts_px"],
        tilt_axis_angle_deg=fitted["tilt_axis_angle_deg"],
        provenance=ts_prov,
    )
    return INRResult(
        volume=volume,
        tilt_series_aligned=aligned,
        poses=pose_dict,
        loss_history=history_np,
        seconds=seconds,
        extra={"device": str(dev), "sampling": sampling, "world_size": world},
    )


def fit_inr(
    ts: TiltSeries,
    *,
    show: bool = True,
    callback: Callable[[Progress], Any] | None = None,
    **kwargs: Any,
) -> INRResult:
    """:func:`fit_inr_iter` run to completion (tqdm bar on stderr when ``show``).

    Accepts every keyword of :func:`fit_inr_iter`.

    Example
    -------
    >>> from napari_tiltgen.simulate.phantoms import sphere_phantom
    >>> ts, truth = sphere_phantom(size=16, tilt_step=10.0)
    >>> res = fit_inr(ts, steps=20, batch_size=256, show=False)
    >>> res.volume.shape
    (16, 16, 16)
    """
    return run(fit_inr_iter(ts, **kwargs), show=show, callback=callback, desc="INR")
