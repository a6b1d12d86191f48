"""Differentiable-pose ray projector: the forward model of neural-field fits (INR).

A neural field is a function of position, not a voxel grid, so its projections are ray
integrals: the ray through every recorded pixel is sampled at points, the density is read
there and summed times the step length, in the units of the batched projector (density x
pixel length). The poses (per-tilt shifts, tilt angles, in-plane tilt axis) enter as torch
tensors, so their gradients flow (joint alignment, Lim et al.).

Geometry (that of :mod:`~napari_tiltgen.physics.geometry`), all lengths in pixels from the
grid / frame centre, angles in degrees:

* a recorded pixel ``(row, col)`` sits at ``p_r = (u_r, v_r) = (col - (n_det-1)/2, row -
  (ny-1)/2)``;
* ``shifts[k] = (dy, dx)``: the projection appears shifted by ``+(dx, dy)`` in recorded frame
  ``k`` (shifts live in the recorded frame); the tilt-axis offset adds to ``dx``;
* the tilt axis runs along ``(x, y) = (-sin phi, cos phi)`` in the recorded frame
  (``phi = tilt_axis_angle_deg``, IMOD: counter-clockwise from image Y); a recorded pixel maps
  to ``(u, v) = Rot(-phi) (p_r - (dx + offset, dy))``;
* at tilt ``theta`` the ray through ``(u, v)`` is ``x = u cos(theta) - t sin(theta)``, ``y =
  v``, ``z = u sin(theta) + t cos(theta)``: every point of it lands on ``u``, since ``x cos +
  z sin = u`` (the projector's ``u = x cos(theta) + z sin(theta) + dx``).

Boundary: rays are clipped to the box ``|x| <= nx/2``, ``|z| <= nz/2`` (the voxels' outer
faces) and a ray with ``|v| > ny/2`` integrates to zero. :func:`sample_volume` reads a voxel
grid trilinearly with zero outside. Against the Joseph projector on a smooth volume inside the
box the two agree to about 1 % (``tests/test_physics.py`` states the measured numbers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tiltgen.physics.geometry import Geometry

__all__ = ["RayBatch", "RayProjector", "cast_rays", "sample_volume", "to_normalised"]


class RayBatch:
    """Sample points of a batch of rays.

    Attributes
    ----------
    points
        ``(B, S, 3)`` positions ``(x, y, z)`` in pixels from the grid centre.
    step
        ``(B,)`` distance between consecutive samples along each ray, pixels.
    """

    def __init__(self, points: torch.Tensor, step: torch.Tensor):
        self.points = points
        self.step = step

    def integrate(self, density: torch.Tensor) -> torch.Tensor:
        """Ray integrals ``(B,)`` of densities ``(B, S)`` read at :attr:`points`."""
        return density.sum(dim=1) * self.step


def cast_rays(
    tilt: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    *,
    shifts: torch.Tensor,
    angles: torch.Tensor,
    axis_deg: torch.Tensor,
    frame_shape: tuple[int, int],
    volume_shape: tuple[int, int, int],
    n_samples: int,
    jitter: torch.Tensor | None = None,
    pixel_offset: torch.Tensor | None = None,
    axis_offset_px: float = 0.0,
) -> RayBatch:
    """Sample points of the rays through recorded pixels ``(tilt, row, col)`` (each ``(B,)``).

    Parameters
    ----------
    shifts, angles, axis_deg
        Poses as tensors (differentiable): ``(n, 2)`` ``(dy, dx)`` px, ``(n,)`` degrees, ``()``
        degrees.
    frame_shape
        ``(ny, n_det)`` of a recorded frame.
    volume_shape
        ``(nz, ny, nx)`` of the reconstruction box.
    n_samples
        Samples per ray, evenly spaced: stratified with ``jitter`` in [0, 1) of shape
        ``(B, n_samples)``, else at the interval midpoints.
    pixel_offset
        ``(B, 2)`` ``(dv, du)``: a point of each pixel's footprint instead of its centre.
    axis_offset_px
        Tilt-axis offset from the detector centre, pixels (adds to ``dx``).

    Rays are clipped to the box (module notes); a ray that misses it, or whose ``y`` lies
    outside ``|y| <= ny/2``, gets step length 0 (it integrates to zero).
    """
    ny_f, nx_f = frame_shape
    nz, ny, nx = volume_shape
    dev = shifts.device
    u_r = col.to(torch.float32) - (nx_f - 1) / 2.0 - shifts[tilt, 1]
    if axis_offset_px:
        u_r = u_r - float(axis_offset_px)
    v_r = row.to(torch.float32) - (ny_f - 1) / 2.0 - shifts[tilt, 0]
    if pixel_offset is not None:  # a point of the pixel's footprint instead of its centre
        u_r = u_r + pixel_offset[:, 1]
        v_r = v_r + pixel_offset[:, 0]
    phi = torch.deg2rad(axis_deg)
    c_phi, s_phi = torch.cos(phi), torch.sin(phi)
    # Rot(-phi) applied to (u_r, v_r)
    u = u_r * c_phi + v_r * s_phi
    v = -u_r * s_phi + v_r * c_phi
    theta = torch.deg2rad(angles[tilt])
    c, s = torch.cos(theta), torch.sin(theta)
    # slab intersection of x = u c - t s, z = u s + t c with the box
    big = torch.full_like(u, 1e6)
    hx, hz = nx / 2.0, nz / 2.0
    tiny = 1e-9
    s_safe = torch.where(s.abs() < tiny, torch.full_like(s, tiny), s)
    c_safe = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
    # x-slab: |u c - t s| <= hx  -> t in [(u c - hx)/s, (u c + hx)/s] (ordered)
    tx1, tx2 = (u * c - hx) / s_safe, (u * c + hx) / s_safe
    tx_lo = torch.where(s.abs() < tiny, -big, torch.minimum(tx1, tx2))
    tx_hi = torch.where(s.abs() < tiny, big, torch.maximum(tx1, tx2))
    inside_x = (s.abs() >= tiny) | ((u * c).abs() <= hx)
    # z-slab: |u s + t c| <= hz -> t in [(-hz - u s)/c, (hz - u s)/c]
    tz1, tz2 = (-hz - u * s) / c_safe, (hz - u * s) / c_safe
    tz_lo = torch.where(c.abs() < tiny, -big, torch.minimum(tz1, tz2))
    tz_hi = torch.where(c.abs() < tiny, big, torch.maximum(tz1, tz2))
    inside_z = (c.abs() >= tiny) | ((u * s).abs() <= hz)
    t0 = torch.maximum(tx_lo, tz_lo)
    t1 = torch.minimum(tx_hi, tz_hi)
    length = torch.clamp(t1 - t0, min=0.0)
    valid = inside_x & inside_z & (v.abs() <= ny / 2.0)
    length = torch.where(valid, length, torch.zeros_like(length))
    step = length / n_samples
    k = torch.arange(n_samples, device=dev, dtype=torch.float32)[None, :]
    offs = k + (jitter if jitter is not None else 0.5)
    t = t0[:, None] + offs * step[:, None]  # (B, S)
    x = u[:, None] * c[:, None] - t * s[:, None]
    z = u[:, None] * s[:, None] + t * c[:, None]
    y = v[:, None].expand_as(x)
    return RayBatch(torch.stack([x, y, z], dim=-1), step)


def to_normalised(points: torch.Tensor, volume_shape: tuple[int, int, int]) -> torch.Tensor:
    """Pixel positions ``(..., 3)`` as ``(x, y, z)`` -> normalised ``[-1, 1]`` at voxel centres."""
    nz, ny, nx = volume_shape
    half = torch.tensor(
        [max((nx - 1) / 2.0, 0.5), max((ny - 1) / 2.0, 0.5), max((nz - 1) / 2.0, 0.5)],
        device=points.device,
        dtype=points.dtype,
    )
    return points / half


def sample_volume(volume: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` ``(nz, ny, nx)`` at normalised points ``q`` ``(B, S, 3)``.

    Zero outside the grid (interpolated towards zero beyond the outer voxel centres). Returns
    ``(B, S)``; differentiable in ``volume`` and ``q``.
    """
    return F.grid_sample(
        volume[None, None],
        q.reshape(1, 1, 1, -1, 3),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    ).reshape(q.shape[:2])


class RayProjector:
    """Ray integrals through recorded pixels in a :class:`~.geometry.Geometry`.

    The geometry's poses are the defaults; :meth:`rays` takes pose tensors instead (INR's
    learnable poses). :meth:`project_volume` projects a voxel grid through every pixel, the
    reference used to check this model against the batched projector.

    Parameters
    ----------
    geometry
        Volume shape, angles (degrees), shifts and offset (pixels), in-plane tilt axis.
    n_samples
        Samples per ray (default ``max(nz, nx)``).
    """

    def __init__(self, geometry: Geometry, *, n_samples: int | None = None):
        self.geometry = geometry
        nz, _, nx = geometry.volume_shape
        self.n_samples = int(n_samples) if n_samples else max(nz, nx)

    def pose_tensors(self, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The geometry's ``(shifts, angles, axis)`` as float32 tensors."""
        g = self.geometry
        return (
            torch.as_tensor(g.shifts_px, dtype=torch.float32, device=device),
            torch.as_tensor(g.tilt_angles_deg, dtype=torch.float32, device=device),
            torch.tensor(float(g.tilt_axis_angle_deg), device=device),
        )

    def rays(
        self,
        tilt: torch.Tensor,
        row: torch.Tensor,
        col: torch.Tensor,
        *,
        poses: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        jitter: torch.Tensor | None = None,
        pixel_offset: torch.Tensor | None = None,
    ) -> RayBatch:
        """Rays through pixels ``(tilt, row, col)`` with ``poses`` (default: the geometry's)."""
        shifts, angles, axis = poses if poses is not None else self.pose_tensors(tilt.device)
        g = self.geometry
        return cast_rays(
            tilt,
            row,
            col,
            shifts=shifts,
            angles=angles,
            axis_deg=axis,
            frame_shape=g.frame_shape,
            volume_shape=g.volume_shape,
            n_samples=self.n_samples,
            jitter=jitter,
            pixel_offset=pixel_offset,
            axis_offset_px=g.axis_offset_px,
        )

    def all_pixels(self, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(tilt, row, col)`` of every recorded pixel, flattened in stack order."""
        ny, n_det = self.geometry.frame_shape
        grids = np.meshgrid(
            np.arange(self.geometry.n_tilts), np.arange(ny), np.arange(n_det), indexing="ij"
        )
        return tuple(torch.from_numpy(a.ravel()).to(device) for a in grids)  # type: ignore

    def project_volume(self, volume: torch.Tensor, *, batch: int = 1 << 16) -> torch.Tensor:
        """Ray integrals of a voxel grid (trilinear) through every pixel: ``(n_tilts, ny, n_det)``."""
        volume = torch.as_tensor(volume, dtype=torch.float32)
        g = self.geometry
        if tuple(volume.shape) != g.volume_shape:
            raise ValueError(f"volume must have shape {g.volume_shape}; got {tuple(volume.shape)}")
        tilt, row, col = self.all_pixels(volume.device)
        out = []
        for i in range(0, tilt.numel(), batch):
            r = self.rays(tilt[i : i + batch], row[i : i + batch], col[i : i + batch])
            out.append(r.integrate(sample_volume(volume, to_normalised(r.points, g.volume_shape))))
        return torch.cat(out).reshape(g.n_tilts, *g.frame_shape)
