"""Sparse operators of the package's one discretisation: Joseph's ray-driven projection.

Every y-slice of the volume sees the same 2-D geometry (the tilt axis is y), so one tilt's map
from an ``(nz, nx)`` slice to a detector row is a small sparse matrix ``(n_det, nz * nx)``:
:func:`joseph_matrix`. The batched :class:`~napari_tiltgen.physics.projector.Projector` stacks
these blocks for all tilts; the per-tilt (block-diagonal) operator of the time-resolved fit
(:class:`~napari_tiltgen.physics.per_tilt.FrameProjector`) puts them on a diagonal. Both are
built from this one function, so their matrix elements are identical (a test checks it).

The forward model is Joseph's method: a ray is sampled once per voxel row along its main
direction with linear interpolation across it and weighted by the step length ``1 / max(|cos|,
|sin|)`` pixels (ASTRA's ``linear`` projector is the same). :func:`pixel_driven_triplets` is the
voxel-driven interpolation used by filtered backprojection (not an adjoint).

:class:`SparseMatmul` is the one autograd wrapper of a sparse product whose gradient is the
transposed product (SciPy on the CPU, torch CSR on other devices).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from napari_tiltgen.physics.geometry import centered_coords

__all__ = [
    "LinearMap",
    "SparseMatmul",
    "SparseOperator",
    "block_csr",
    "block_diagonal",
    "joseph_matrix",
    "joseph_triplets",
    "pixel_driven_triplets",
    "to_torch_csr",
]


def joseph_triplets(
    theta_deg: float, nz: int, nx: int, n_det: int, u_shift: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (detector bin), columns (``k * nx + j``) and weights of one tilt's ray-driven operator."""
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    u = centered_coords(n_det) - u_shift  # detector bin centres, shift removed
    along_z = abs(c) >= abs(s)
    # march along z (one sample per voxel row k, interpolate along x) when the ray is steeper
    # than 45 degrees, else along x (one sample per voxel column j, interpolate along z)
    n_major, n_minor, a, b = (nz, nx, s, c) if along_z else (nx, nz, c, s)
    pos = (u[:, None] - centered_coords(n_major)[None, :] * a) / b + (n_minor - 1) / 2.0
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64)
    major = np.broadcast_to(np.arange(n_major)[None, :], pos.shape)
    step = 1.0 / abs(b)
    if along_z:
        col_lo, col_hi = major * nx + lo, major * nx + lo + 1
    else:
        col_lo, col_hi = lo * nx + major, (lo + 1) * nx + major
    ok_lo, ok_hi = (lo >= 0) & (lo < n_minor), (lo + 1 >= 0) & (lo + 1 < n_minor)
    rows = np.broadcast_to(np.arange(n_det)[:, None], pos.shape)
    r = np.concatenate([rows[ok_lo], rows[ok_hi]])
    cidx = np.concatenate([col_lo[ok_lo], col_hi[ok_hi]])
    w = np.concatenate([(1.0 - frac)[ok_lo], frac[ok_hi]]) * step
    keep = w > 0
    return r[keep], cidx[keep], w[keep]


def pixel_driven_triplets(
    theta_deg: float, nz: int, nx: int, n_det: int, u_shift: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-driven linear interpolation of one detector row at every voxel's ``u`` (for FBP).

    Returns rows (voxel ``k * nx + j``), columns (detector bin) and weights.
    """
    t = math.radians(theta_deg)
    x = centered_coords(nx)[None, :]
    z = centered_coords(nz)[:, None]
    pos = x * math.cos(t) + z * math.sin(t) + u_shift + (n_det - 1) / 2.0
    lo = np.floor(pos)
    frac = (pos - lo).reshape(-1)
    lo = lo.astype(np.int64).reshape(-1)
    vox = np.arange(nz * nx)
    ok_lo, ok_hi = (lo >= 0) & (lo < n_det), (lo + 1 >= 0) & (lo + 1 < n_det)
    r = np.concatenate([vox[ok_lo], vox[ok_hi]])
    cidx = np.concatenate([lo[ok_lo], lo[ok_hi] + 1])
    w = np.concatenate([1.0 - frac[ok_lo], frac[ok_hi]])
    keep = w > 0
    return r[keep], cidx[keep], w[keep]


def block_csr(
    shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, dtype: np.dtype
) -> sp.csr_matrix:
    """CSR block with int32 indices when they fit (built per tilt, so it stays small)."""
    m = sp.csr_matrix((vals.astype(dtype), (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m


def to_torch_csr(m: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Torch CSR tensor sharing ``m``'s arrays when the dtypes allow (no copy on the CPU)."""
    m.sort_indices()
    idx = np.int32 if m.nnz < 2**31 - 1 and max(m.shape) < 2**31 - 1 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        out = torch.sparse_csr_tensor(
            torch.from_numpy(np.ascontiguousarray(m.indptr, dtype=idx)),
            torch.from_numpy(np.ascontiguousarray(m.indices, dtype=idx)),
            torch.from_numpy(np.ascontiguousarray(m.data)).to(dtype),
            size=m.shape,
        )
    return out.to(device)


def joseph_matrix(
    theta_deg: float, nz: int, nx: int, n_det: int, u_shift_px: float = 0.0, dtype: Any = np.float32
) -> sp.csr_matrix:
    """One tilt's operator ``(n_det, nz * nx)``: an ``(nz, nx)`` slice -> one detector row.

    Parameters
    ----------
    theta_deg
        Tilt angle, degrees.
    nz, nx
        Slice shape, voxels.
    n_det
        Detector pixels along ``u``.
    u_shift_px
        ``dx + axis_offset`` of this tilt, pixels (:attr:`Geometry.u_shifts_px
        <napari_tiltgen.physics.geometry.Geometry.u_shifts_px>`).
    dtype
        NumPy dtype of the weights.

    Returns
    -------
    scipy.sparse.csr_matrix
        Duplicates summed, column indices sorted.
    """
    r, c, w = joseph_triplets(float(theta_deg), int(nz), int(nx), int(n_det), float(u_shift_px))
    m = block_csr((int(n_det), int(nz) * int(nx)), r, c, w, np.dtype(dtype))
    m.sort_indices()
    return m


def block_diagonal(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """CSR matrix with ``blocks`` on its diagonal (all blocks of one shape), built directly."""
    rows, cols = blocks[0].shape
    indptr, data, indices = [np.zeros(1, np.int64)], [], []
    offset = 0
    for i, blk in enumerate(blocks):
        indptr.append(blk.indptr[1:].astype(np.int64) + offset)
        indices.append(blk.indices.astype(np.int64) + i * cols)
        data.append(blk.data)
        offset += blk.nnz
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
        shape=(len(blocks) * rows, len(blocks) * cols),
    )


class SparseOperator:
    """A sparse matrix applied to column blocks ``(n_cols, k)`` on one device.

    On the CPU the product runs in SciPy (torch's CPU CSR product was 5-8x slower for a few
    columns); elsewhere as torch CSR, with the transpose stored explicitly (torch's transposed
    product is slow).
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = matrix.shape
        if self.device.type == "cpu":
            self._m, self._mt = matrix, None
        else:
            self._m = to_torch_csr(matrix, dtype, self.device)
            self._mt = to_torch_csr(matrix.T.tocsr(), dtype, self.device)

    def apply(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``M x`` (or ``M^T x``) of a dense ``(n, k)`` tensor; not differentiable."""
        if self._mt is None:
            a = x.detach().cpu().numpy()
            out = (self._m.T @ a) if transpose else (self._m @ a)
            np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np_dtype))
        return torch.mm(self._mt if transpose else self._m, x)


class SparseMatmul(torch.autograd.Function):
    """``y = M x`` for a :class:`SparseOperator` ``M``; the gradient is ``M^T g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, op: SparseOperator) -> torch.Tensor:
        ctx.op = op
        return op.apply(x, transpose=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.op.apply(grad.contiguous(), transpose=True), None


class LinearMap(torch.autograd.Function):
    """``y = f(x)`` for a linear map ``f`` whose adjoint ``g`` is known: the gradient is ``g``.

    ``LinearMap.apply(x, f, g)``; the batched projector passes its forward and adjoint.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, f: Any, g: Any) -> torch.Tensor:
        ctx.adjoint = g
        return f(x.contiguous())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.adjoint(grad.contiguous()), None, None
