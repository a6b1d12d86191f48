"""Per-tilt (block-diagonal) mode of the projector, for time-resolved fits.

In a time-resolved fit (:mod:`napari_tiltgen.fits.dip`) every frame sees the sample in its own
state: frame ``k``'s slice is projected at that frame's tilt only. The operator is
block-diagonal, one block per frame, and each block is the batched projector's own block for
that tilt (:func:`~napari_tiltgen.physics.operators.joseph_matrix`), so the two agree exactly.

``dy`` shifts couple neighbouring y-slices and are not part of a per-slice operator: fits that
work slice by slice take them out of the data with
:func:`~napari_tiltgen.physics.shifts.unshift_frames` (the projector's shift policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.operators import (
    SparseMatmul,
    SparseOperator,
    block_diagonal,
    joseph_matrix,
)

__all__ = ["FrameProjector"]


class FrameProjector:
    """Each frame's slice projected at that frame's tilt only: a block-diagonal operator.

    Frame ``k`` maps an ``(nz, nx)`` slice to one detector row ``(n_det,)`` with the operator of
    :class:`~napari_tiltgen.physics.projector.Projector` at angle ``theta_k`` (with the frame's
    ``dx`` shift and the tilt-axis offset). Applied to many slices at once (columns).

    Parameters
    ----------
    geometry
        The frames' geometry (angles in degrees, shifts and offset in pixels); its ``ny`` is
        not used (slices are independent) and its ``dy`` shifts are ignored (module notes).
    device
        Torch device of the inputs and outputs.
    """

    def __init__(self, geometry: Geometry, *, device: str | torch.device = "cpu"):
        if geometry.tilt_axis_angle_deg != 0.0:
            raise ValueError("the per-tilt projector needs the tilt axis along y")
        nz, _, nx = geometry.volume_shape
        self.geometry = geometry
        self.n_frames = geometry.n_tilts
        self.slice_shape = (nz, nx)
        self.n_det = int(geometry.n_det)  # type: ignore[arg-type]
        self.device = torch.device(device)
        # per-frame CSR pieces, to assemble block-diagonal operators of any subset of frames
        self._blocks = [
            joseph_matrix(a, nz, nx, self.n_det, u)
            for a, u in zip(geometry.tilt_angles_deg, geometry.u_shifts_px)
        ]
        self._cache: tuple[bytes, SparseOperator] | None = None

    def block(self, k: int) -> sp.csr_matrix:
        """Frame ``k``'s operator ``(n_det, nz * nx)`` (SciPy CSR, float32)."""
        return self._blocks[k]

    def _operator(self, frames: np.ndarray) -> SparseOperator:
        key = np.asarray(frames, dtype=np.int64).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        op = SparseOperator(block_diagonal([self._blocks[k] for k in frames]), self.device)
        self._cache = (key, op)
        return op

    def __call__(self, images: torch.Tensor, frames: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Project ``images`` ``(n_slices, n_sel, nz, nx)`` of the frames ``frames`` (``n_sel``).

        Returns ``(n_sel, n_slices, n_det)``; differentiable.
        """
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        b, f, nz, nx = images.shape
        if f != frames.size or (nz, nx) != self.slice_shape:
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not match {frames.size} "
                f"frames of {self.slice_shape} slices"
            )
        cols = images.permute(1, 2, 3, 0).reshape(f * nz * nx, b)
        out = SparseMatmul.apply(cols.contiguous(), self._operator(frames))
        return out.view(f, self.n_det, b).permute(0, 2, 1)
