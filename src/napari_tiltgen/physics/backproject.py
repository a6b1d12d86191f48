"""Matrix-free voxel-driven backprojection (the FBP backprojection without a stored operator).

:meth:`~napari_tiltgen.physics.projector.Projector.fbp_backproject` stores the voxel-driven
interpolation of every tilt as one sparse matrix: ``2 * nz * nx * n_tilts`` non-zeros, 254 MB for
61 tilts of 1024-px frames and a 256-px thick volume, and twice that while it is built. The
out-of-core WBP (:mod:`napari_tiltgen.recon.outofcore`) computes the same sums tilt by tilt
instead (:func:`voxel_backproject`, one ``grid_sample`` per tilt and few rows): each voxel takes the linearly interpolated detector value
at its ``u = x cos(theta) + z sin(theta) + dx + axis_offset`` (the convention of
:func:`~napari_tiltgen.physics.operators.pixel_driven_triplets`), so the temporary memory is a
few slab-sized arrays whatever the number of tilts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tiltgen.physics.geometry import centered_coords
from napari_tiltgen.physics.shifts import apply_taps_adjoint, linear_taps

__all__ = ["voxel_backproject"]

# rows interpolated per grid_sample call: its CPU kernel walks every channel per output voxel, so
# a few rows at a time stay in cache (8 rows: 4.7x faster than one gather per tap, 61 tilts of
# 1024 px into 256 x 1024 slices, one thread)
_ROW_CHUNK = 8


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
    out = torch.zeros((rows, nz, nx), dtype=p.dtype, device=p.device)
    scale = 2.0 / max(n_det - 1, 1)
    for t in range(n_t):
        th = math.radians(angles[t])
        pos = x * math.cos(th) + z * math.sin(th) + shifts[t, 1] + axis_offset_px + (n_det - 1) / 2.0
        # detector position as grid_sample's [-1, 1] (align_corners: -1 is pixel 0), computed in
        # float64; zero padding weights out-of-detector taps 0 like the sparse operator
        gx = torch.as_tensor(pos * scale - 1.0, dtype=p.dtype, device=p.device)
        grid = torch.stack((gx, torch.zeros_like(gx)), dim=-1)[None]
        for r0 in range(0, rows, _ROW_CHUNK):
            src = p[t, r0 : r0 + _ROW_CHUNK][None, :, None, :]
            out[r0 : r0 + _ROW_CHUNK] += F.grid_sample(
                src, grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )[0]
    return out.permute(1, 0, 2)
