"""Self-supervised INR reconstruction with joint pose refinement (Lim et al., quantEM).

The volume is a :class:`~napari_tiltgen.methods.inr.field.DensityField`. Each step draws a random
mini-batch of recorded pixels, casts the ray of every pixel through the reconstruction box with
the current poses (:class:`~napari_tiltgen.methods.inr.poses.PoseModel`), integrates the density
along it (sum of samples x step length: density x pixel length, the units of the projector in
:mod:`napari_tiltgen.physics.projector`, so INR and SIRT are fitted to the same numbers) and
minimises the smooth-L1 distance to the recorded intensities. The field and, after a warm-up,
the poses (per-tilt shifts, tilt-angle offsets, the global tilt-axis rotation) are updated
together by Adam.

The fit is a progress generator (:mod:`napari_tiltgen.progress`): napari runs it in a worker with
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.methods._torch import flush_denormals, num_threads
from napari_tiltgen.methods.inr.field import (
    DensityField,
    FieldConfig,
    coarse_to_fine_weights,
    voxel_coordinates,
)
from napari_tiltgen.methods.inr.poses import POSE_PARAMETERS, PoseModel, to_normalised
from napari_tiltgen.progress import Progress, ProgressGen, run

__all__ = ["CHECKPOINT_FORMAT", "INRResult", "SAMPLING", "fit_inr", "fit_inr_iter",
           "load_checkpoint"]

CHECKPOINT_FORMAT = "napari-tiltgen INR checkpoint"
CHECKPOINT_VERSION = 1

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


# ---------------------------------------------------------------------------- result
@dataclass
class INRResult:
    """What :func:`fit_inr` returns.

    Attributes
    ----------
    volume
        Reconstruction ``(nz, ny, nx)`` in density units (same units as SIRT on the same data),
        voxel size = pixel size (Å); ``provenance["poses"]`` holds the fitted poses.
    tilt_series_aligned
        The input series (same pixels) with the fitted geometry: ``tilt_angles`` (degrees),
        ``shifts_px`` (``(dy, dx)``, px, recorded frame) and ``tilt_axis_angle_deg``.
    poses
        ``shifts_px`` ``(n, 2)``, ``tilt_angles_deg`` ``(n,)``, ``tilt_angle_offsets_deg``
        ``(n,)``, ``tilt_axis_angle_deg`` and the ``initial_*`` values, as numpy / floats.
    loss_history
        Loss of every step (normalised smooth-L1 units), shape ``(steps,)``.
    seconds
        Wall time of the fit (this run, not counting a resumed checkpoint's earlier time).
    """

    volume: Volume
    tilt_series_aligned: TiltSeries
    poses: dict[str, Any]
    loss_history: np.ndarray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def poses_json(self) -> dict[str, Any]:
        """The poses as JSON-ready lists and floats."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.poses.items()}


# ---------------------------------------------------------------------------- the model
class _RayModel(nn.Module):
    """Field + poses; ``forward`` maps recorded pixels to predicted (normalised) intensities."""

    def __init__(self, field_: DensityField, poses: PoseModel, frame_shape: tuple[int, int],
                 volume_shape: tuple[int, int, int], n_samples: int, sampling: str):
        super().__init__()
        self.field = field_
        self.poses = poses
        self.frame_shape = frame_shape
        self.volume_shape = volume_shape
        self.n_samples = n_samples
        self.sampling = sampling

    def forward(self, tilt: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                jitter: torch.Tensor | None, level_weights: torch.Tensor,
                trainable: frozenset[str], tv_points: torch.Tensor | None = None,
                amp: bool = False, pixel_offset: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted intensities ``(B,)`` and the TV value (0 without ``tv_points``)."""
        rays = self.poses.rays(tilt, row, col, self.frame_shape, self.volume_shape,
                               self.n_samples, jitter, trainable, pixel_offset)
        q = to_normalised(rays.points, self.volume_shape)
        tv = q.new_zeros(())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if self.sampling == "voxel":
                vol = self.field.decode_volume(level_weights=level_weights).float()
                dens = F.grid_sample(vol[None, None], q.reshape(1, 1, 1, -1, 3), mode="bilinear",
                                     padding_mode="zeros", align_corners=True).reshape(q.shape[:2])
                if tv_points is not None:
                    tv = sum((vol.diff(dim=d).abs().mean() for d in range(3)), tv)
            else:
                dens = self.field(q, level_weights).float()
                if tv_points is not None:
                    nz, ny, nx = self.volume_shape
                    h = torch.tensor([2.0 / max(nx - 1, 1), 2.0 / max(ny - 1, 1),
                                      2.0 / max(nz - 1, 1)], device=q.device)
                    tv = self.field.tv(tv_points, h, level_weights).float()
        pred = dens.sum(dim=1) * rays.step
        if len(trainable) < len(POSE_PARAMETERS):
            # frozen poses stay in the graph with a zero gradient, so that DistributedDataParallel
            # sees every parameter used and needs no unused-parameter search
            pred = pred + 0.0 * sum(p.sum() for p in self.poses.parameters())
        return pred, tv


# ---------------------------------------------------------------------------- helpers
def _resolve_device(device: str | torch.device, distributed: bool) -> torch.device:
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device() if distributed else 0)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise TiltgenError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiltgenError("device 'cuda' was asked for but no CUDA GPU is available; use "
                           "device 'auto' or 'cpu'.")
    return dev


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, rank, step]).generate_state(1)[0])


def _checked(ts: TiltSeries) -> tuple[np.ndarray, np.ndarray]:
    angles = ts.require_angles()
    where = ts.provenance.get("source")
    axis = ((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
    if abs(axis) > 45.0:
        raise TiltgenError(
            f"the tilt axis is at {ts.tilt_axis_angle_deg:.1f} deg from the image Y axis (near "
            "horizontal); the INR fit needs it within 45 degrees of y. Rotate the stack first "
            "(Tilt series widget: 'Rotate stack so the tilt axis is vertical', or "
            "TiltSeries.with_vertical_tilt_axis()).", where)
    data = np.asarray(ts.data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; fix or crop them "
                           "before fitting.", where)
    return data, angles


def _lr_factor(step: int, total: int, floor: float = 0.05) -> float:
    """Cosine decay from 1 to ``floor`` over ``total`` steps."""
    x = min(max(step / max(total, 1), 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * x))


def _fingerprint(data: np.ndarray, params: dict[str, Any], world_size: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: data, geometry and fit settings."""
    d = data.astype(np.float64)
    return {
        "data_shape": list(data.shape),
        "data_sum": float(np.round(d.sum(), 3)),
        "data_sumsq": float(np.round((d * d).sum(), 3)),
        "world_size": int(world_size),
        **{k: v for k, v in params.items() if k not in ("checkpoint_every", "preview_every",
                                                        "log_every", "n_threads")},
    }


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an INR checkpoint safely (``torch.load(weights_only=True)``: no code is run).

    Raises :class:`TiltgenError` when the file is not an INR checkpoint of this package.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise TiltgenError(f"cannot read this checkpoint ({type(exc).__name__}: {exc}).",
                           path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TiltgenError("this file is not a napari-tiltgen INR checkpoint.", path)
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise TiltgenError("this checkpoint was written by a newer napari-tiltgen; update the "
                           "package to resume it.", path)
    return ckpt


def _fingerprint_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in keys
            if saved.get(k) != now.get(k)]


def _central_slice(model: _RayModel, scale: float, level_weights: torch.Tensor) -> np.ndarray:
    nz, ny, nx = model.volume_shape
    coords = voxel_coordinates((nz, ny, nx), device=level_weights.device)[nz // 2]
    with torch.no_grad():
        img = model.field(coords.reshape(-1, 3), level_weights).reshape(ny, nx)
    return (img.float().cpu().numpy() * scale).astype(np.float32)


def _render(field_: DensityField, shape: tuple[int, int, int], scale: float,
            device: torch.device) -> np.ndarray:
    ones = torch.ones(field_.n_levels, device=device)
    with torch.no_grad():
        vol = field_.decode_volume(shape, level_weights=ones, chunk_voxels=1 << 18)
    return (vol.float().cpu().numpy() * scale).astype(np.float32)


def _pixel_index(idx: torch.Tensor, ny: int, nx: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat pixel indices of a ``(n_tilts, ny, nx)`` stack -> ``(tilt, row, col)``."""
    tilt = torch.div(idx, ny * nx, rounding_mode="floor")
    rem = idx - tilt * (ny * nx)
    row = torch.div(rem, nx, rounding_mode="floor")
    return tilt, row, rem - row * nx


def _match_initial_density(model: _RayModel, target: torch.Tensor, frame_shape: tuple[int, int],
                           batch: int, seed: int, dev: torch.device) -> None:
    """Scale the constant initial density so that the mean prediction equals the data's mean.

    Measured on a seeded batch of rays through the initial poses (same on every rank). The
    factor is clipped to [1e-4, 10]: data with a negative or zero mean (background-subtracted
    frames) start from a small positive density.
    """
    ny, nx = frame_shape
    gen = torch.Generator(device=dev)
    gen.manual_seed(_step_seed(seed, 0, 2**32 - 1))  # a stream no step uses
    idx = torch.randint(0, target.numel(), (min(batch, target.numel()),), device=dev,
                        generator=gen)
    ones = torch.ones(model.field.n_levels, device=dev)
    with torch.no_grad():
        pred, _ = model(*_pixel_index(idx, ny, nx), None, ones, frozenset())
    p0 = float(pred.mean())
    want = float(target.mean())
    if p0 > 0:
        model.field.scale_initial_density(min(max(want / p0, 1e-4), 10.0))


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
        common lines (:func:`napari_tiltgen.methods.alignment.estimate_tilt_axis_angle`,
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
    data, angles = _checked(ts)
    n_tilts, ny, nx = data.shape
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
        raise TiltgenError(f"unknown pose parameters {sorted(unknown)}; choose from "
                           f"{', '.join(POSE_PARAMETERS)}.")
    if tilt_axis_init is None or tilt_axis_init == "recorded":
        axis_init, axis_source = float(ts.tilt_axis_angle_deg), "recorded"
    elif tilt_axis_init == "estimate":
        from napari_tiltgen.methods.alignment import estimate_tilt_axis_angle

        axis_init = float(estimate_tilt_axis_angle(ts))
        axis_source = "estimate_tilt_axis_angle (common lines)"
    else:
        try:
            axis_init = float(tilt_axis_init)
        except (TypeError, ValueError):
            axis_init = float("nan")
        if not math.isfinite(axis_init):
            raise TiltgenError(f"tilt_axis_init must be 'recorded', 'estimate' or an angle in "
                               f"degrees; got {tilt_axis_init!r}.")
        axis_source = "given"
    if abs(((axis_init + 90.0) % 180.0) - 90.0) > 45.0:
        raise TiltgenError(f"the starting tilt axis ({axis_init:.1f} deg from image Y) is near "
                           "horizontal; the INR fit needs it within 45 degrees of y.")
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
        raise TiltgenError("distributed=True needs an initialised torch.distributed process "
                           "group (launch with torchrun and use the CLI's --ddp).")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    dev = _resolve_device(device, bool(distributed))
    if sampling == "auto":
        # a refined tilt axis needs direct queries: the voxel grid's trilinear interpolation
        # favours rays through voxel centres (axis 0) and pulls the axis back (docs/inr.md)
        sampling = ("voxel" if dev.type == "cpu" and nz * ny * nx <= _VOXEL_AUTO_MAX
                    and "tilt_axis" not in trainable_pose else "direct")
    amp = bool(mixed_precision) and dev.type == "cuda"

    scale = float(np.percentile(np.abs(data), 99.9))
    if not scale > 0:
        raise TiltgenError("the tilt series is all zeros; there is nothing to fit.",
                           ts.provenance.get("source"))
    params: dict[str, Any] = {
        "steps": steps, "batch_size": int(batch_size), "samples_per_ray": n_samples,
        "learning_rate": float(learning_rate), "optimize_pose": bool(optimize_pose),
        "pose_parameters": sorted(trainable_pose), "pose_warmup_steps": warmup,
        "pose_learning_rate": float(pose_learning_rate), "coarse_to_fine_steps": c2f,
        "pixel_footprint": bool(pixel_footprint), "tilt_axis_init_deg": round(axis_init, 6), "tilt_axis_init": axis_source,
        "tv_weight": float(tv_weight), "loss": loss, "smooth_l1_beta": float(smooth_l1_beta),
        "thickness_px": nz, "field": (field_config or FieldConfig()).to_dict(),
        "sampling": sampling, "seed": int(seed), "checkpoint_every": int(checkpoint_every),
        "preview_every": int(preview_every), "log_every": int(log_every),
        "n_threads": n_threads,
    }
    fingerprint = _fingerprint(data, params, world)

    ckpt_path = Path(checkpoint_path) if checkpoint_path else None
    ckpt: dict[str, Any] | None = None
    if ckpt_path is not None and ckpt_path.exists():
        if not resume:
            raise TiltgenError("a checkpoint already exists here; resume from it (resume=True, "
                               "--resume) or choose another file.", ckpt_path)
        ckpt = load_checkpoint(ckpt_path)
        diff = _fingerprint_mismatch(ckpt["fingerprint"], fingerprint)
        if diff:
            raise TiltgenError("this checkpoint belongs to another fit; it differs in "
                               + "; ".join(diff[:4]) + ". Use the same data and settings, or a "
                               "new checkpoint file.", ckpt_path)

    with num_threads(n_threads), flush_denormals():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            field_ = DensityField(vol_shape, field_config,
                                  density_scale=1.0 / max(0.25 * max(nz, nx), 1.0))
        poses = PoseModel(angles, ts.shifts_px, axis_init)
        model = _RayModel(field_, poses, (ny, nx), vol_shape, n_samples, sampling).to(dev)
        grid_params = list(field_.grids.parameters())
        opt = torch.optim.Adam([
            {"params": grid_params, "lr": learning_rate, "name": "grids"},
            {"params": list(field_.mlp.parameters()), "lr": learning_rate, "name": "mlp"},
            {"params": [poses.d_shifts, poses.d_axis], "lr": pose_learning_rate,
             "name": "shifts_axis"},
            {"params": [poses.d_angles], "lr": pose_learning_rate * ANGLE_LR_FACTOR,
             "name": "tilt_angles"},
        ])
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
                model, device_ids=[dev.index] if dev.type == "cuda" else None)

        target = torch.from_numpy(data / scale).to(dev).reshape(-1)
        hist_dev = history.to(dev)
        n_pixels = target.numel()
        batch = int(batch_size)
        gen = torch.Generator(device=dev)
        if ckpt is None:
            _match_initial_density(model, target, (ny, nx), batch, seed, dev)
        base_lrs = [learning_rate, learning_rate, pose_learning_rate,
                    pose_learning_rate * ANGLE_LR_FACTOR]
        beta = float(smooth_l1_beta)
        all_levels = torch.ones(field_.n_levels, device=dev)

        def save(step_done: int) -> None:
            if ckpt_path is None or rank != 0:
                return
            _atomic_save({
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step_done,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "loss_history": hist_dev.detach().cpu(),
                "fingerprint": fingerprint,
            }, ckpt_path)

        k = start
        while k < steps:
            pose_on = bool(trainable_pose) and k >= warmup
            trainable = trainable_pose if pose_on else frozenset()
            lw = (coarse_to_fine_weights(field_.n_levels, (k + 1) / c2f).to(dev) if k < c2f
                  else all_levels)
            f = _lr_factor(k, steps)
            pose_f = _lr_factor(k - warmup, steps - warmup) if pose_on else 0.0
            for group, base, fac in zip(opt.param_groups, base_lrs, (f, f, pose_f, pose_f)):
                group["lr"] = base * fac
            gen.manual_seed(_step_seed(seed, rank, k))
            idx = torch.randint(0, n_pixels, (batch,), device=dev, generator=gen)
            jitter = torch.rand((batch, n_samples), device=dev, generator=gen)
            offset = (torch.rand((batch, 2), device=dev, generator=gen) - 0.5
                      if pixel_footprint else None)
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
                    raise TiltgenError("out of GPU memory even with 256 rays per step; use "
                                       "device 'cpu', bin the tilt series or fewer samples per "
                                       "ray.") from None
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
                msg += f": loss {values['loss']:.4g}" + ("" if pose_on or not trainable_pose
                                                        else " (poses frozen)")
            preview = None
            if preview_every and (k % int(preview_every) == 0 or k == steps) and rank == 0:
                preview = _central_slice(model, scale, lw)
            if monitor is not None and monitor_every and (k % int(monitor_every) == 0
                                                         or k == steps):
                values = {**values, **monitor(_render(field_, vol_shape, scale, dev)),
                          "step": float(k)}
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
        "method": "inr", "parameters": params, "device": str(dev), "seconds": seconds,
        "input": prov_in.get("source"), "history": hist,
        "poses": {k_: (v.tolist() if isinstance(v, np.ndarray) else v)
                  for k_, v in pose_dict.items()},
        "final_loss": float(np.mean(history_np[-max(1, min(50, steps)):])),
    }
    volume = Volume(vol, voxel_size_A=ts.pixel_size_A, provenance=provenance)
    new_angles = np.clip(fitted["tilt_angles_deg"], -90.0, 90.0)
    ts_prov = copy.deepcopy(prov_in)
    ts_prov.setdefault("history", []).append(
        {"step": "fit_inr poses", "optimize_pose": bool(optimize_pose),
         "pose_parameters": sorted(trainable_pose)})
    if axis_source != "recorded":
        ts_prov["tilt_axis_source"] = f"{axis_source}: {axis_init:.3f} deg"
    if optimize_pose:
        ts_prov["tilt_axis_source"] = ("INR pose fit" if axis_source == "recorded" else
                                       f"INR pose fit from {axis_source} ({axis_init:.3f} deg)")
        ts_prov["angles_source"] = f"INR pose fit (from {prov_in.get('angles_source', '?')})"
    aligned = replace(ts, tilt_angles=new_angles, shifts_px=fitted["shifts_px"],
                      tilt_axis_angle_deg=fitted["tilt_axis_angle_deg"], provenance=ts_prov)
    return INRResult(volume=volume, tilt_series_aligned=aligned, poses=pose_dict,
                     loss_history=history_np, seconds=seconds,
                     extra={"device": str(dev), "sampling": sampling, "world_size": world})


def fit_inr(ts: TiltSeries, *, show: bool = True,
            callback: Callable[[Progress], Any] | None = None, **kwargs: Any) -> INRResult:
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
