"""Small helpers shared by the reconstruction algorithms: data as a tensor on the projector's
device, a safe reciprocal for the SIRT/SART weights, previews, argument checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.physics.projector import (
    Projector,
)


def _preview(x: torch.Tensor) -> np.ndarray:
    """Central z-slice ``(ny, nx)`` of the current estimate, as numpy."""
    return x[x.shape[0] // 2].detach().float().cpu().numpy().copy()


def _safe_reciprocal(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 / t`` where ``t > eps * max(t)``, else 0 (rays or voxels that see nothing)."""
    thresh = eps * float(t.max()) if t.numel() else 0.0
    out = torch.zeros_like(t)
    mask = t > thresh
    out[mask] = 1.0 / t[mask]
    return out


def _as_data(projector: Projector, data: Any) -> torch.Tensor:
    """Data as a tensor on the projector's device; shares a writable float array (no copy)."""
    if isinstance(data, torch.Tensor):
        d = data
    else:
        a = np.asarray(data)
        d = torch.from_numpy(a) if a.flags.writeable and a.dtype.kind == "f" else \
            torch.tensor(a)
    if tuple(d.shape) != projector.projection_shape:
        raise ValueError(f"data must have shape {projector.projection_shape}; "
                         f"got {tuple(d.shape)}")
    return d.to(device=projector.device, dtype=projector.dtype).contiguous()


def _check_iterations(iterations: int) -> int:
    it = int(iterations)
    if it < 1:
        raise TiltgenError(f"the number of iterations must be at least 1; got {iterations}.")
    return it
