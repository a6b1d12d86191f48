"""Single-tilt-axis parallel-beam geometry: the one convention every module follows.

Coordinates are in pixels, measured from the centre of the grid:

* volume ``(nz, ny, nx)``: voxel ``(k, i, j)`` sits at ``z = k - (nz-1)/2``, ``y = i - (ny-1)/2``,
  ``x = j - (nx-1)/2``;
* tilt series ``(n_tilts, ny, nx_det)``: detector pixel ``(i, j)`` sits at ``v = i - (ny-1)/2``,
  ``u = j - (nx_det-1)/2``.

The tilt axis is the y axis. At tilt angle ``theta`` (degrees) the beam integrates along the
rotated z direction and a point ``(x, y, z)`` lands on the detector at::

    u = x * cos(theta) + z * sin(theta) + dx + axis_offset
    v = y + dy

where ``(dy, dx)`` is the per-tilt shift of that frame (``TiltSeries.shifts_px``) and
``axis_offset`` a constant shift of the tilt axis from the detector centre (pixels). At 0 degrees
the projection is the sum over z.

:class:`Geometry` bundles these numbers for every forward model of :mod:`napari_tiltgen.physics`;
:mod:`~napari_tiltgen.physics.shifts` is the one policy for moving frames by sub-pixel shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def detector_u(
    x: np.ndarray, z: np.ndarray, theta_deg: float, dx: float = 0.0, axis_offset: float = 0.0
) -> np.ndarray:
    """Detector coordinate ``u`` (pixels from the centre) of points ``(x, z)`` at ``theta_deg``."""
    t = np.deg2rad(theta_deg)
    return x * np.cos(t) + z * np.sin(t) + dx + axis_offset


def centered_coords(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``i - (n-1)/2`` for ``i = 0..n-1``."""
    return np.arange(n, dtype=np.float64) - (n - 1) / 2.0


def ordered_subsets(tilt_angles_deg: np.ndarray, n_subsets: int) -> list[np.ndarray]:
    """Tilt indices sorted by angle and dealt into ``n_subsets`` interleaved subsets.

    Every subset spans the whole tilt range (every ``n_subsets``-th tilt by angle); used by
    ordered-subset SART here and as ASTRA's projection order.
    """
    order = np.argsort(np.asarray(tilt_angles_deg), kind="stable")
    n = int(min(max(1, n_subsets), order.size))
    return [order[s::n] for s in range(n)]


def interleaved_order(tilt_angles_deg: np.ndarray, n_subsets: int = 8) -> np.ndarray:
    """All tilt indices, subset after subset of :func:`ordered_subsets` (per-tilt SART order)."""
    return np.concatenate(ordered_subsets(tilt_angles_deg, n_subsets))


@dataclass(frozen=True)
class Geometry:
    """The acquisition geometry every forward model of :mod:`napari_tiltgen.physics` takes.

    One object for the batched projector (:class:`~.projector.Projector`), the per-tilt
    operator of time-resolved fits (:class:`~.per_tilt.FrameProjector`) and the ray caster of
    neural fields (:class:`~.rays.RayProjector`), so that all three see the same tilts, shifts
    and boundaries.

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)``, voxels (voxel size = detector pixel size).
    tilt_angles_deg
        Tilt angle of each frame, degrees.
    shifts_px
        Per-tilt ``(dy, dx)``, pixels, shape ``(n_tilts, 2)``: the projection appears shifted by
        ``+shift`` in the recorded frame (``TiltSeries.shifts_px``). ``None``: zeros.
    axis_offset_px
        Offset of the tilt axis from the detector centre along ``u``, pixels.
    n_det
        Detector pixels along ``u`` (default ``nx``); detector rows equal ``ny``.
    tilt_axis_angle_deg
        In-plane angle of the tilt axis in the recorded frame, degrees counter-clockwise from
        image Y. The batched and per-tilt operators need it to be 0 (frames rotated so that the
        axis is vertical); the ray caster honours any value (it is a pose parameter of INR).
    """

    volume_shape: tuple[int, int, int]
    tilt_angles_deg: np.ndarray
    shifts_px: np.ndarray | None = None
    axis_offset_px: float = 0.0
    n_det: int | None = None
    tilt_axis_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"volume_shape must be 3 positive sizes; got {self.volume_shape}")
        angles = np.asarray(self.tilt_angles_deg, dtype=np.float64).reshape(-1)
        if angles.size == 0:
            raise ValueError("at least one tilt angle is needed")
        n = angles.size
        if self.shifts_px is None:
            shifts = np.zeros((n, 2), dtype=np.float64)
        else:
            shifts = np.asarray(self.shifts_px, dtype=np.float64)
            if shifts.shape != (n, 2):
                raise ValueError(
                    f"shifts_px must have shape ({n}, 2) as (dy, dx); got {shifts.shape}"
                )
        object.__setattr__(self, "volume_shape", shape)
        object.__setattr__(self, "tilt_angles_deg", angles)
        object.__setattr__(self, "shifts_px", shifts)
        object.__setattr__(self, "axis_offset_px", float(self.axis_offset_px))
        object.__setattr__(self, "n_det", int(self.n_det) if self.n_det else shape[2])
        object.__setattr__(self, "tilt_axis_angle_deg", float(self.tilt_axis_angle_deg))

    def key(self) -> tuple:
        """A hashable value equal for equal geometries (cache keys)."""
        return (
            self.volume_shape,
            self.tilt_angles_deg.tobytes(),
            self.shifts_px.tobytes(),  # type: ignore[union-attr]
            self.axis_offset_px,
            self.n_det,
            self.tilt_axis_angle_deg,
        )

    @property
    def n_tilts(self) -> int:
        return int(self.tilt_angles_deg.size)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(ny, n_det)``: the shape of one recorded frame."""
        return (self.volume_shape[1], int(self.n_det))  # type: ignore[arg-type]

    @property
    def u_shifts_px(self) -> np.ndarray:
        """Per-tilt detector offset along ``u``: ``dx + axis_offset``, pixels."""
        return self.shifts_px[:, 1] + self.axis_offset_px  # type: ignore[index]

    def subset(self, index: Any) -> Geometry:
        """The geometry of the tilts selected by ``index`` (an index array, slice or mask)."""
        idx = np.arange(self.n_tilts)[index]
        return replace(
            self, tilt_angles_deg=self.tilt_angles_deg[idx], shifts_px=self.shifts_px[idx]
        )  # type: ignore[index]

    @classmethod
    def from_tilt_series(
        cls, ts: Any, *, thickness_px: int | None = None, axis_offset_px: float = 0.0
    ) -> Geometry:
        """Geometry of a :class:`~napari_tiltgen.io.model.TiltSeries` (angles required)."""
        _, ny, nx = ts.data.shape
        return cls(
            (int(thickness_px) if thickness_px else nx, ny, nx),
            ts.require_angles(),
            ts.shifts_px,
            axis_offset_px,
            nx,
            ts.tilt_axis_angle_deg,
        )


def mirror_pairs(
    tilt_angles_deg: np.ndarray, u_shifts_px: np.ndarray, use_symmetry: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tilts ``+theta`` / ``-theta`` with the same ``u`` shift, whose operators mirror in z.

    Returns ``(stored, mirrored, partner)``: tilts whose operator is stored, tilts computed from
    a stored partner on the z-flipped volume, and for each mirrored tilt the position of its
    partner among the stored ones. All tilts are stored (no pairs) unless at least 3/4 of the
    stored ones have a partner (``use_symmetry=False``: never pair).
    """
    angles = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    u = np.asarray(u_shifts_px, dtype=np.float64).reshape(-1)
    n = angles.size
    everything = (np.arange(n), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not use_symmetry or n < 2:
        return everything
    free: dict[tuple[float, float], list[int]] = {}
    for i in range(n):
        free.setdefault((round(float(angles[i]), 9), round(float(u[i]), 9)), []).append(i)
    stored, mirrored, partner, taken = [], [], [], set()
    for i in range(n):
        if i in taken:
            continue
        taken.add(i)
        stored.append(i)
        theta = round(float(angles[i]), 9)
        if theta == 0.0:
            continue
        cands = [j for j in free.get((-theta, round(float(u[i]), 9)), []) if j not in taken]
        if cands:
            taken.add(cands[0])
            mirrored.append(cands[0])
            partner.append(len(stored) - 1)
    if len(mirrored) < 0.75 * len(stored):  # too few pairs to be worth the shuffling
        return everything
    return np.asarray(stored), np.asarray(mirrored), np.asarray(partner)
