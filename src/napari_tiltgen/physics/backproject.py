"""Matrix-free voxel-driven backprojection (the FBP backprojection without a stored operator).

:meth:`~napari_tiltgen.physics.projector.Projector.fbp_backproject` stores the voxel-driven
interpolation of every tilt as one sparse matrix: ``2 * nz * nx * n_tilts`` non-zeros, 254 MB for
61 tilts of 1024-px frames and a 256-px thick volume, and twice that while it is built. The
out-of-core WBP (:mod:`napari_tiltgen.recon.outofcore`) computes the same sums tilt by tilt
instead (:func:`voxel_backproject`): each voxel takes the linearly interpolated detector value
at its ``u = x cos(theta) + z sin(theta) + dx + axis_offset`` (the convention of
:func:`~napari_tiltgen.physics.operators.pixel_driven_triplets`), so the temporary memory is a
few slab-sized arrays whatever the number of tilts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from napari_tiltgen.physics.geometry import centered_coords
from napari_tiltgen.physics.shifts import apply_taps_adjoint, linear_taps

__all__ = ["voxel_backproject"]


def voxel_backproject(
    projections: torch.Tensor,
    tilt_angles_deg: Any,
    nz: int,
    nx: int,
    *,
    weights: Any = None,
    shifts_px: Any = None,
    axis_offset_px: float = 0.0,
) -> torch.Tensor:
    """Voxel-driven backprojection of ``(n_tilts, rows, n_det)`` into ``(nz, rows, nx)``.

    Equal (to float32 rounding) to ``Projector((nz, rows, nx), angles, shifts, offset,
    n_det).fbp_backproject(projections, weights)``, without building its sparse matrix.

    Parameters
    ----------
    projections
        Detector rows of every tilt (e.g. filtered projections), any float tensor.
    tilt_angles_deg
        Tilt angles, degrees.
    nz, nx
        Volume thickness and width, voxels.
    weights
        Per-tilt factors (e.g. angular intervals in radians); ``None``: 1.
    shifts_px
        Per-tilt ``(dy, dx)`` shifts, pixels; ``dy`` is applied as the adjoint row shift over
        the ``rows`` given (zero outside them), ``dx`` moves ``u``.
    axis_offset_px
        Tilt-axis offset from the detector centre along x, pixels.
    """
    n_t, rows, n_det = (int(s) for s in projections.shape)
    angles = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    if angles.size != n_t:
        raise ValueError(f"{angles.size} tilt angles for {n_t} projections")
    shifts = (
        np.zeros((n_t, 2))
        if shifts_px is None
        else np.asarray(shifts_px, dtype=np.float64).reshape(n_t, 2)
    )
    p = projections
    if weights is not None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64), dtype=p.dtype, device=p.device)
        p = p * w[:, None, None]
    if np.any(shifts[:, 0]):
        taps = linear_taps(rows, shifts[:, 0])
        taps_t = tuple(
            torch.as_tensor(a, device=p.device, dtype=torch.int64 if i < 2 else p.dtype)
            for i, a in enumerate(taps)
        )
        p = apply_taps_adjoint(taps_t, p)
    x = centered_coords(nx)[None, :]
    z = centered_coords(nz)[:, None]
    out = torch.zeros((nz * nx, rows), dtype=p.dtype, device=p.device)
    for t in range(n_t):
        th = math.radians(angles[t])
        pos = (
            x * math.cos(th) + z * math.sin(th) + shifts[t, 1] + axis_offset_px + (n_det - 1) / 2.0
        ).reshape(-1)
        lo = np.floor(pos)
        frac = pos - lo
        lo = lo.astype(np.int64)
        col = p[t].t()  # (n_det, rows)
        for idx, wgt in ((lo, 1.0 - frac), (lo + 1, frac)):
            # every voxel takes one tap: a dense gather, out-of-detector taps weighted 0
            w = np.where((idx >= 0) & (idx < n_det), wgt, 0.0)
            if not w.any():
                continue
            taps = torch.as_tensor(np.clip(idx, 0, n_det - 1), device=p.device)
            w_t = torch.as_tensor(w, dtype=p.dtype, device=p.device)
            out.addcmul_(col.index_select(0, taps), w_t[:, None])
    return out.view(nz, nx, rows).permute(0, 2, 1)
