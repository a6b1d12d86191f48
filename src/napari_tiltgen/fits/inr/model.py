"""INR fit: the result type, the ray model (field + poses) and checkpoint I/O.

Split from :mod:`napari_tiltgen.fits.inr.fit` (the optimisation loop). The ray model renders
recorded pixels through :mod:`napari_tiltgen.physics.rays`, the package's differentiable-pose
ray projector.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.fits.inr.field import DensityField, voxel_coordinates
from napari_tiltgen.fits.inr.poses import POSE_PARAMETERS, PoseModel
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.rays import RayProjector, sample_volume, to_normalised

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "INRResult", "load_checkpoint"]

CHECKPOINT_FORMAT = "napari-tiltgen INR checkpoint"
CHECKPOINT_VERSION = 1


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
    """Field + poses; ``forward`` maps recorded pixels to predicted (normalised) intensities.

    The rays are those of :class:`napari_tiltgen.physics.rays.RayProjector` on the fit's
    :class:`~napari_tiltgen.physics.geometry.Geometry`, with the pose model's current poses.
    """

    def __init__(
        self,
        field_: DensityField,
        poses: PoseModel,
        geometry: Geometry,
        n_samples: int,
        sampling: str,
    ):
        super().__init__()
        self.field = field_
        self.poses = poses
        self.projector = RayProjector(geometry, n_samples=n_samples)  # the package's ray model
        self.frame_shape = geometry.frame_shape
        self.volume_shape = geometry.volume_shape
        self.n_samples = n_samples
        self.sampling = sampling

    def forward(
        self,
        tilt: torch.Tensor,
        row: torch.Tensor,
        col: torch.Tensor,
        jitter: torch.Tensor | None,
        level_weights: torch.Tensor,
        trainable: frozenset[str],
        tv_points: torch.Tensor | None = None,
        amp: bool = False,
        pixel_offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted intensities ``(B,)`` and the TV value (0 without ``tv_points``)."""
        rays = self.projector.rays(
            tilt,
            row,
            col,
            poses=self.poses.current(trainable),
            jitter=jitter,
            pixel_offset=pixel_offset,
        )
        q = to_normalised(rays.points, self.volume_shape)
        tv = q.new_zeros(())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if self.sampling == "voxel":
                vol = self.field.decode_volume(level_weights=level_weights).float()
                dens = sample_volume(vol, q)
                if tv_points is not None:
                    tv = sum((vol.diff(dim=d).abs().mean() for d in range(3)), tv)
            else:
                dens = self.field(q, level_weights).float()
                if tv_points is not None:
                    nz, ny, nx = self.volume_shape
                    h = torch.tensor(
                        [2.0 / max(nx - 1, 1), 2.0 / max(ny - 1, 1), 2.0 / max(nz - 1, 1)],
                        device=q.device,
                    )
                    tv = self.field.tv(tv_points, h, level_weights).float()
        pred = rays.integrate(dens)
        if len(trainable) < len(POSE_PARAMETERS):
            # frozen poses stay in the graph with a zero gradient, so that DistributedDataParallel
            # sees every parameter used and needs no unused-parameter search
            pred = pred + 0.0 * sum(p.sum() for p in self.poses.parameters())
        return pred, tv


# ---------------------------------------------------------------------------- helpers


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, rank, step]).generate_state(1)[0])


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
        **{
            k: v
            for k, v in params.items()
            if k not in ("checkpoint_every", "preview_every", "log_every", "n_threads")
        },
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
        raise TiltgenError(
            f"cannot read this checkpoint ({type(exc).__name__}: {exc}).", path
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TiltgenError("this file is not a napari-tiltgen INR checkpoint.", path)
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise TiltgenError(
            "this checkpoint was written by a newer napari-tiltgen; update the "
            "package to resume it.",
            path,
        )
    return ckpt


def _fingerprint_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [
        f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
        for k in keys
        if saved.get(k) != now.get(k)
    ]


def _central_slice(model: _RayModel, scale: float, level_weights: torch.Tensor) -> np.ndarray:
    nz, ny, nx = model.volume_shape
    coords = voxel_coordinates((nz, ny, nx), device=level_weights.device)[nz // 2]
    with torch.no_grad():
        img = model.field(coords.reshape(-1, 3), level_weights).reshape(ny, nx)
    return (img.float().cpu().numpy() * scale).astype(np.float32)


def _render(
    field_: DensityField, shape: tuple[int, int, int], scale: float, device: torch.device
) -> np.ndarray:
    ones = torch.ones(field_.n_levels, device=device)
    with torch.no_grad():
        vol = field_.decode_volume(shape, level_weights=ones, chunk_voxels=1 << 18)
    return (vol.float().cpu().numpy() * scale).astype(np.float32)


def _pixel_index(
    idx: torch.Tensor, ny: int, nx: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat pixel indices of a ``(n_tilts, ny, nx)`` stack -> ``(tilt, row, col)``."""
    tilt = torch.div(idx, ny * nx, rounding_mode="floor")
    rem = idx - tilt * (ny * nx)
    row = torch.div(rem, nx, rounding_mode="floor")
    return tilt, row, rem - row * nx


def _match_initial_density(
    model: _RayModel,
    target: torch.Tensor,
    frame_shape: tuple[int, int],
    batch: int,
    seed: int,
    dev: torch.device,
) -> None:
    """Scale the constant initial density so that the mean prediction equals the data's mean.

    Measured on a seeded batch of rays through the initial poses (same on every rank). The
    factor is clipped to [1e-4, 10]: data with a negative or zero mean (background-subtracted
    frames) start from a small positive density.
    """
    ny, nx = frame_shape
    gen = torch.Generator(device=dev)
    gen.manual_seed(_step_seed(seed, 0, 2**32 - 1))  # a stream no step uses
    idx = torch.randint(0, target.numel(), (min(batch, target.numel()),), device=dev, generator=gen)
    ones = torch.ones(model.field.n_levels, device=dev)
    with torch.no_grad():
        pred, _ = model(*_pixel_index(idx, ny, nx), None, ones, frozenset())
    p0 = float(pred.mean())
    want = float(target.mean())
    if p0 > 0:
        model.field.scale_initial_density(min(max(want / p0, 1e-4), 10.0))
