"""Parallel-beam single-tilt-axis projector in torch: forward projection and its exact adjoint.

This is the one forward model of the package: SIRT, SART, TV, INR and DIP all project through it,
so their results are measured against the same physics. The geometry is the convention of
:mod:`napari_tiltgen.physics.geometry` (tilt axis = y, ``u = x cos(theta) + z sin(theta) + dx +
axis_offset``, ``v = y + dy``, all in pixels from the grid centre).

Discretisation
--------------
Joseph's ray-driven method (:mod:`~napari_tiltgen.physics.operators`): one sparse CSR block per
tilt maps an ``(nz, nx)`` slice to a detector row; the blocks of all tilts are stacked into
``A`` ``(n_tilts * n_det, nz * nx)`` and applied to a chunk of y-slices at once (one column per
slice). The adjoint uses the explicitly transposed matrix, so ``<A x, y> = <x, A^T y>`` holds to
rounding error. For symmetric tilt schemes only half of ``A`` is stored (see :class:`Projector`).

Sub-pixel ``dy`` shifts follow :mod:`~napari_tiltgen.physics.shifts` (2-tap linear interpolation
along the detector rows, zero outside, after the slice projections; its transpose in the
adjoint); ``dx`` and the tilt-axis offset enter the operator itself.

:func:`forward_project` and :func:`back_project` are differentiable (autograd calls the adjoint
for the gradient), work on any torch device (operators are built on the CPU once, then moved) and
process the slices in chunks whose size bounds the temporary memory.

Example
-------
>>> import torch
>>> vol = torch.zeros(8, 4, 8); vol[4, :, 6] = 1.0
>>> proj = forward_project(vol, [-30.0, 0.0, 30.0])
>>> tuple(proj.shape)
(3, 4, 8)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from napari_tiltgen.core.devices import free_cpu_cores, resolve_device
from napari_tiltgen.physics.geometry import Geometry, mirror_pairs
from napari_tiltgen.physics.operators import (
    LinearMap,
    block_csr,
    joseph_triplets,
    pixel_driven_triplets,
    to_torch_csr,
)
from napari_tiltgen.physics.shifts import apply_taps, apply_taps_adjoint, linear_taps

__all__ = [
    "Projector",
    "back_project",
    "forward_project",
    "get_projector",
    "suggested_threads",
]

#: Default bound (bytes) on the temporary arrays of one chunk of slices. Small chunks keep the
#: operand of the sparse product in cache (measured fastest at 32-64 slices of 256^2 on a Xeon).
DEFAULT_CHUNK_BYTES = 32 << 20
#: Chunks are also kept below this fraction of the volume + projections (at least
#: :data:`MIN_CHUNK_BYTES`): the sparse product's temporaries are a few times the chunk, and on
#: a 150^3 volume 32 MB chunks made SIRT's peak memory 7x (volume + data) against 3x at 3 MB,
#: which was also faster (5.7 s against 7.2 s for 100 iterations, 2 threads).
CHUNK_FRACTION = 1 / 6
MIN_CHUNK_BYTES = 2 << 20


def suggested_threads(volume_shape: Sequence[int], n_tilts: int) -> int | None:
    """CPU threads for one projection: 1 below 3e7 multiply-adds (start-up and barriers cost
    more than they save); else ``None`` (torch's default, one per core) on idle cores, or
    :func:`free_cpu_cores` when others are busy (OpenMP spinning on shared cores made SIRT
    4.6x slower with 2 threads than with 1)."""
    nz, ny, nx = (int(s) for s in volume_shape)
    if 2 * n_tilts * nx * max(nz, nx) * ny < 30_000_000:
        return 1
    free = free_cpu_cores()
    return None if free >= torch.get_num_threads() else free


# ---------------------------------------------------------------------------- operator building
# ---------------------------------------------------------------------------- the projector
class Projector:
    """Forward projector ``A`` and its adjoint ``A^T`` for one fixed geometry.

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)`` of the volume, voxels. The voxel size equals the detector pixel size.
    tilt_angles_deg
        Tilt angle of each projection, degrees (any order, any spacing).
    shifts_px
        Per-tilt ``(dy, dx)`` in pixels, shape ``(n_tilts, 2)``: the projection of the volume
        appears shifted by ``+shift`` on the detector. ``None`` means no shifts.
    axis_offset_px
        Offset of the tilt axis from the detector centre along x (u), pixels.
    n_det
        Number of detector pixels along x (u); default ``nx``. Detector rows along y equal ``ny``.
    device
        Torch device of the operator and of the tensors it takes (``"auto"``: CUDA if available).
    dtype
        ``torch.float32`` (default) or ``torch.float64``; inputs are cast to it.
    max_chunk_bytes
        Bound on the temporary memory of one chunk of y-slices, bytes. Chunks are further
        kept below :data:`CHUNK_FRACTION` of the volume + projection bytes (at least
        :data:`MIN_CHUNK_BYTES`).

    Notes
    -----
    The projection of a volume in density units is in density x pixel-length units (a line
    integral with unit voxel length). Memory of the operator: about ``2 * n_tilts * n_det *
    max(nz, nx)`` non-zeros (8 bytes each in float32 with int32 indices), stored twice (the
    operator and its transpose). Building it for 77 tilts of 256^2 slices takes about a second.

    Symmetric tilt schemes store half of it: the tilt ``-theta`` with the same ``dx + offset``
    as ``theta`` sees the volume mirrored in z (``A(-theta) x = A(theta) flip_z(x)`` exactly), so
    when at least 3/4 of the stored tilts have such a partner (e.g. -60..60 degrees in equal
    steps, before alignment shifts), only one of each pair is stored and the other is computed
    from the mirrored volume, at the same number of operations (``use_symmetry=False`` turns
    this off).
    """

    def __init__(
        self,
        volume_shape: Sequence[int],
        tilt_angles_deg: Any,
        shifts_px: Any = None,
        axis_offset_px: float = 0.0,
        n_det: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        use_symmetry: bool = True,
    ):
        g = Geometry(volume_shape, tilt_angles_deg, shifts_px, axis_offset_px, n_det)  # checks
        self.volume_shape, self.tilt_angles_deg = g.volume_shape, g.tilt_angles_deg
        self.n_tilts, self.shifts_px, self.axis_offset_px = g.n_tilts, g.shifts_px, g.axis_offset_px
        self.n_det = int(g.n_det)  # type: ignore[arg-type]
        self.device = resolve_device(device)
        self.dtype = dtype
        self.max_chunk_bytes = int(max_chunk_bytes)
        self._lock = threading.Lock()
        self._matrix: torch.Tensor | None = None
        self._matrix_t: torch.Tensor | None = None
        self._fbp_matrix: torch.Tensor | None = None
        self._row_shift = self._build_row_shift()
        self.use_symmetry = bool(use_symmetry)
        self._stored, self._mirrored, self._partner = mirror_pairs(
            self.tilt_angles_deg, self.shifts_px[:, 1] + self.axis_offset_px, self.use_symmetry
        )
        self._plain = self._mirrored.size == 0  # all tilts stored in order: no index shuffling
        self._stored_t, self._mirrored_t, self._partner_t = (
            torch.as_tensor(a, dtype=torch.int64, device=self.device)
            for a in (self._stored, self._mirrored, self._partner)
        )

    # ------------------------------------------------------------------ public shapes
    @property
    def projection_shape(self) -> tuple[int, int, int]:
        """``(n_tilts, ny, n_det)``."""
        return (self.n_tilts, self.volume_shape[1], self.n_det)

    def __repr__(self) -> str:
        return (
            f"Projector(volume_shape={self.volume_shape}, n_tilts={self.n_tilts}, "
            f"n_det={self.n_det}, device={self.device}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ operators
    def _u_shift(self, i: int) -> float:
        return float(self.shifts_px[i, 1]) + self.axis_offset_px

    def _np_dtype(self) -> np.dtype:
        return np.dtype(np.float64 if self.dtype == torch.float64 else np.float32)

    def _ensure_matrices(self) -> None:
        with self._lock:
            if self._matrix is not None:
                return
            nz, _, nx = self.volume_shape
            blocks = []
            for i in self._stored:
                r, c, w = joseph_triplets(
                    self.tilt_angles_deg[i], nz, nx, self.n_det, self._u_shift(i)
                )
                blocks.append(block_csr((self.n_det, nz * nx), r, c, w, self._np_dtype()))
            m = sp.vstack(blocks, format="csr")
            del blocks
            self._matrix = to_torch_csr(m, self.dtype, self.device)
            m = m.T.tocsr()  # the transpose, stored explicitly: torch's transposed product is slow
            self._matrix_t = to_torch_csr(m, self.dtype, self.device)

    def _ensure_fbp_matrix(self) -> None:
        with self._lock:
            if self._fbp_matrix is not None:
                return
            nz, _, nx = self.volume_shape
            blocks = []
            for i, theta in enumerate(self.tilt_angles_deg):
                r, c, w = pixel_driven_triplets(theta, nz, nx, self.n_det, self._u_shift(i))
                blocks.append(block_csr((nz * nx, self.n_det), r, c, w, self._np_dtype()))
            self._fbp_matrix = to_torch_csr(
                sp.hstack(blocks, format="csr"), self.dtype, self.device
            )

    def _build_row_shift(self) -> tuple[torch.Tensor, ...] | None:
        """Detector row ``i`` reads volume row ``i - dy``: the shift policy of :mod:`.shifts`."""
        dy = self.shifts_px[:, 0]
        if not np.any(dy):
            return None
        lo, hi, w_lo, w_hi = linear_taps(self.volume_shape[1], dy)

        def t(a: np.ndarray, dt: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dt, device=self.device)

        return (t(lo, torch.int64), t(hi, torch.int64), t(w_lo, self.dtype), t(w_hi, self.dtype))

    @classmethod
    def from_geometry(cls, geometry: Geometry, **kwargs: Any) -> Projector:
        """The projector of a :class:`~.geometry.Geometry` (its in-plane tilt axis must be 0).

        ``kwargs``: ``device``, ``dtype``, ``max_chunk_bytes``, ``use_symmetry``.
        """
        if geometry.tilt_axis_angle_deg != 0.0:
            raise ValueError(
                "the batched projector needs the tilt axis along y "
                f"(got {geometry.tilt_axis_angle_deg} deg); rotate the frames "
                "first or use the ray projector"
            )
        return cls(
            geometry.volume_shape,
            geometry.tilt_angles_deg,
            geometry.shifts_px,
            geometry.axis_offset_px,
            geometry.n_det,
            **kwargs,
        )

    @property
    def geometry(self) -> Geometry:
        """This projector's :class:`~.geometry.Geometry`."""
        return Geometry(
            self.volume_shape, self.tilt_angles_deg, self.shifts_px, self.axis_offset_px, self.n_det
        )

    def to(self, device: str | torch.device) -> Projector:
        """A copy of this projector on ``device`` (operators are moved, not rebuilt)."""
        device = resolve_device(device)
        if device == self.device:
            return self
        new = Projector(
            self.volume_shape,
            self.tilt_angles_deg,
            self.shifts_px,
            self.axis_offset_px,
            self.n_det,
            device,
            self.dtype,
            self.max_chunk_bytes,
            self.use_symmetry,
        )
        for name in ("_matrix", "_matrix_t", "_fbp_matrix"):
            m = getattr(self, name)
            if m is not None:
                setattr(new, name, m.to(device))
        return new

    def subset(self, index: Any) -> Projector:
        """Projector for the tilts selected by ``index`` (e.g. an ordered subset for SART)."""
        idx = np.arange(self.n_tilts)[index]
        return Projector(
            self.volume_shape,
            self.tilt_angles_deg[idx],
            self.shifts_px[idx],
            self.axis_offset_px,
            self.n_det,
            self.device,
            self.dtype,
            self.max_chunk_bytes,
            self.use_symmetry,
        )

    def memory_bytes(self) -> int:
        """Bytes held by the operators built so far."""
        total = 0
        for m in (self._matrix, self._matrix_t, self._fbp_matrix):
            if m is not None:
                total += sum(
                    t.numel() * t.element_size()
                    for t in (m.crow_indices(), m.col_indices(), m.values())
                )
        return total

    # ------------------------------------------------------------------ chunking
    @property
    def has_row_shifts(self) -> bool:
        """True when some tilt has a ``dy`` shift, which couples neighbouring y-slices."""
        return self._row_shift is not None

    def chunks(self) -> list[tuple[int, int]]:
        """``(y0, y1)`` ranges of y-slices processed together (bounded by ``max_chunk_bytes``)."""
        nz, ny, nx = self.volume_shape
        itemsize = torch.finfo(self.dtype).bits // 8
        slice_bytes = (nz * nx + self.n_tilts * self.n_det) * itemsize  # volume + projections
        per_slice = 2 * slice_bytes
        relative = max(MIN_CHUNK_BYTES, int(slice_bytes * ny * CHUNK_FRACTION))
        step = max(1, min(ny, min(self.max_chunk_bytes, relative) // max(per_slice, 1)))
        return [(y0, min(ny, y0 + step)) for y0 in range(0, ny, step)]

    def _check(self, t: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
        if tuple(t.shape) != shape:
            raise ValueError(f"{what} must have shape {shape}; got {tuple(t.shape)}")
        return t.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ slice-level maps
    def forward_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """The 2-D operator on a chunk of y-slices ``(nz, yc, nx)`` -> ``(n_tilts, yc, n_det)``.

        Ignores ``dy`` shifts (they couple slices); :meth:`forward` applies them. Algorithms that
        work chunk by chunk to save memory (SIRT) use this when :attr:`has_row_shifts` is false.
        """
        self._ensure_matrices()
        nz, yc, nx = slices.shape
        n_s = self._stored.size
        cols = slices.permute(0, 2, 1).reshape(nz * nx, yc)
        res = torch.mm(self._matrix, cols).view(n_s, self.n_det, yc)  # stored tilts
        if self._plain:
            return res.permute(0, 2, 1)
        out = torch.empty((self.n_tilts, self.n_det, yc), dtype=res.dtype, device=res.device)
        out.index_copy_(0, self._stored_t, res)
        del res
        cols = cols.view(nz, nx * yc).flip(0).view(nz * nx, yc)  # mirrored in z (old one freed)
        res = torch.mm(self._matrix, cols).view(n_s, self.n_det, yc)
        out.index_copy_(0, self._mirrored_t, res.index_select(0, self._partner_t))
        return out.permute(0, 2, 1)

    def adjoint_slices(self, projections: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`forward_slices`: ``(n_tilts, yc, n_det)`` -> ``(nz, yc, nx)``."""
        self._ensure_matrices()
        if self._plain:
            return self._back_slices(self._matrix_t, projections)
        nz, _, nx = self.volume_shape
        n_s, yc = self._stored.size, projections.shape[1]

        def back(p: torch.Tensor) -> torch.Tensor:  # (n_s, yc, n_det) -> (nz, nx, yc)
            cols = p.permute(0, 2, 1).reshape(n_s * self.n_det, yc)
            return torch.mm(self._matrix_t, cols).view(nz, nx, yc)

        out = back(projections.index_select(0, self._stored_t))
        partners = torch.zeros(
            (n_s, yc, self.n_det), dtype=projections.dtype, device=projections.device
        )
        partners.index_copy_(0, self._partner_t, projections.index_select(0, self._mirrored_t))
        reverse = torch.arange(nz - 1, -1, -1, device=out.device)
        out.index_add_(0, reverse, back(partners))  # adds the z-mirrored part without a copy
        return out.permute(0, 2, 1)

    def _back_slices(self, matrix: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
        nz, _, nx = self.volume_shape
        yc = projections.shape[1]
        cols = projections.permute(0, 2, 1).reshape(self.n_tilts * self.n_det, yc)
        res = torch.mm(matrix, cols)  # (nz * nx, yc)
        return res.view(nz, nx, yc).permute(0, 2, 1)

    # ------------------------------------------------------------------ raw (no autograd) maps
    def _forward(self, volume: torch.Tensor) -> torch.Tensor:
        _, ny, _ = self.volume_shape
        out = torch.empty((self.n_tilts, ny, self.n_det), dtype=self.dtype, device=self.device)
        for y0, y1 in self.chunks():
            out[:, y0:y1, :] = self.forward_slices(volume[:, y0:y1, :])
        if self._row_shift is not None:
            out = apply_taps(self._row_shift, out)
        return out

    def _adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        self._ensure_matrices()
        if self._row_shift is not None:
            projections = apply_taps_adjoint(self._row_shift, projections)
        return self._apply_back(self.adjoint_slices, projections)

    def _apply_back(self, back: Any, projections: torch.Tensor) -> torch.Tensor:
        """Apply the slice-level map ``back`` chunk by chunk: projections -> volume."""
        out = torch.empty(self.volume_shape, dtype=self.dtype, device=self.device)
        for y0, y1 in self.chunks():
            out[:, y0:y1, :] = back(projections[:, y0:y1, :])
        return out

    # ------------------------------------------------------------------ public maps
    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project ``volume`` ``(nz, ny, nx)`` to ``(n_tilts, ny, n_det)`` (differentiable)."""
        volume = self._check(torch.as_tensor(volume), self.volume_shape, "volume")
        if volume.requires_grad:
            return LinearMap.apply(volume, self._forward, self._adjoint)
        return self._forward(volume.contiguous())

    __call__ = forward

    def adjoint(self, projections: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``A^T``: ``(n_tilts, ny, n_det)`` -> ``(nz, ny, nx)`` (differentiable)."""
        projections = self._check(
            torch.as_tensor(projections), self.projection_shape, "projections"
        )
        if projections.requires_grad:
            return LinearMap.apply(projections, self._adjoint, self._forward)
        return self._adjoint(projections.contiguous())

    def fbp_backproject(
        self, projections: torch.Tensor, weights: Sequence[float] | np.ndarray | None = None
    ) -> torch.Tensor:
        """Voxel-driven backprojection for filtered backprojection (not the adjoint).

        Each voxel takes the linearly interpolated detector value at its own ``u`` (and ``v``) in
        every tilt, times that tilt's weight (e.g. its angular interval in radians). Unlike
        :meth:`adjoint` this has no ray-sampling weights, which is what FBP's inversion formula
        needs. Not differentiable.
        """
        projections = self._check(
            torch.as_tensor(projections), self.projection_shape, "projections"
        )
        self._ensure_fbp_matrix()
        if weights is not None:
            w = torch.as_tensor(
                np.asarray(weights, dtype=np.float64), dtype=self.dtype, device=self.device
            )
            projections = projections * w[:, None, None]
        if self._row_shift is not None:
            projections = apply_taps_adjoint(self._row_shift, projections)
        return self._apply_back(lambda p: self._back_slices(self._fbp_matrix, p), projections)

    def row_sums(self) -> torch.Tensor:
        """``A 1``: the length of each ray inside the volume, pixels.

        Shape ``(n_tilts, 1, n_det)`` (the same for every detector row) unless there are ``dy``
        shifts, then ``(n_tilts, ny, n_det)``; either broadcasts against the projections.
        """
        nz, _ny, nx = self.volume_shape
        if self._row_shift is None:
            return self.forward_slices(
                torch.ones((nz, 1, nx), dtype=self.dtype, device=self.device)
            ).contiguous()
        return self._forward(torch.ones(self.volume_shape, dtype=self.dtype, device=self.device))

    def column_sums(self) -> torch.Tensor:
        """``A^T 1``: total ray weight through each voxel.

        Shape ``(nz, 1, nx)`` unless there are ``dy`` shifts, then ``(nz, ny, nx)``; either
        broadcasts against the volume.
        """
        if self._row_shift is None:
            ones = torch.ones((self.n_tilts, 1, self.n_det), dtype=self.dtype, device=self.device)
            return self.adjoint_slices(ones).contiguous()
        return self._adjoint(
            torch.ones(self.projection_shape, dtype=self.dtype, device=self.device)
        )

    def norm_estimate(self, iterations: int = 20, seed: int = 0) -> float:
        """Largest singular value of ``A`` by power iteration (an estimate from below)."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.rand(self.volume_shape, generator=g, dtype=self.dtype).to(self.device)
        x /= torch.linalg.vector_norm(x)
        s = 0.0
        for _ in range(iterations):
            y = self._adjoint(self._forward(x))
            s = float(torch.linalg.vector_norm(y))
            if s == 0.0:
                return 0.0
            x = y / s
        return math.sqrt(s)


# ---------------------------------------------------------------------------- functional API
_CACHE: OrderedDict[tuple, Projector] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def get_projector(
    geometry: Geometry, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Projector:
    """A :class:`Projector` for ``geometry``, reused from a small cache (last 4 geometries)."""
    g, dev = geometry, resolve_device(device)
    key = (g.key(), str(dev), dtype)
    with _CACHE_LOCK:
        proj = _CACHE.get(key)
        if proj is not None:
            _CACHE.move_to_end(key)
            return proj
    proj = Projector.from_geometry(g, device=dev, dtype=dtype)
    with _CACHE_LOCK:
        _CACHE[key] = proj
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return proj


def forward_project(
    volume: torch.Tensor,
    tilt_angles_deg: Any,
    shifts_px: Any = None,
    axis_offset_px: float = 0.0,
    n_det: int | None = None,
) -> torch.Tensor:
    """Parallel-beam projections of a volume, in the geometry of :mod:`~.geometry`.

    Parameters
    ----------
    volume
        Tensor ``(nz, ny, nx)`` (float32 or float64, any device); y is the tilt axis. A numpy
        array is accepted too.
    tilt_angles_deg
        Tilt angles, degrees, length ``n_tilts``.
    shifts_px
        Per-tilt ``(dy, dx)`` shifts in pixels, shape ``(n_tilts, 2)``, or ``None``.
    axis_offset_px
        Tilt-axis offset from the detector centre along x, pixels.
    n_det
        Detector width in pixels (default ``nx``).

    Returns
    -------
    torch.Tensor
        ``(n_tilts, ny, n_det)`` line integrals (density x pixel length) on the volume's device
        and dtype; differentiable with respect to ``volume``.
    """
    volume = torch.as_tensor(volume)
    dtype = volume.dtype if volume.dtype in (torch.float32, torch.float64) else torch.float32
    g = Geometry(tuple(volume.shape), tilt_angles_deg, shifts_px, axis_offset_px, n_det)
    proj = get_projector(g, volume.device, dtype)
    return proj.forward(volume)


def back_project(
    projections: torch.Tensor,
    tilt_angles_deg: Any,
    volume_shape: Sequence[int],
    shifts_px: Any = None,
    axis_offset_px: float = 0.0,
) -> torch.Tensor:
    """Exact adjoint of :func:`forward_project` (unfiltered backprojection).

    Parameters
    ----------
    projections
        Tensor ``(n_tilts, ny, n_det)``.
    tilt_angles_deg, shifts_px, axis_offset_px
        As for :func:`forward_project` (degrees, pixels, pixels).
    volume_shape
        ``(nz, ny, nx)`` of the volume.

    Returns
    -------
    torch.Tensor
        ``(nz, ny, nx)`` with ``<forward_project(x), p> == <x, back_project(p)>``; differentiable.
    """
    projections = torch.as_tensor(projections)
    dtype = (
        projections.dtype if projections.dtype in (torch.float32, torch.float64) else torch.float32
    )
    g = Geometry(
        volume_shape, tilt_angles_deg, shifts_px, axis_offset_px, int(projections.shape[-1])
    )
    proj = get_projector(g, projections.device, dtype)
    return proj.adjoint(projections)
