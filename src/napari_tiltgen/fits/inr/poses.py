"""Differentiable acquisition geometry: per-tilt poses and the rays they define.

Geometry (that of :mod:`napari_tiltgen.physics.geometry` and :mod:`napari_tiltgen.io.model`)
------------------------------------------------------------------------------------------------
All lengths in pixels from the grid / frame centre, angles in degrees.

* A recorded pixel ``(row, col)`` sits at ``p_r = (u_r, v_r) = (col - (nx-1)/2, row - (ny-1)/2)``.
* ``shifts_px[i] = (dy, dx)``: the projection appears shifted by ``+(dx, dy)`` in recorded frame
  ``i`` (the ``TiltSeries`` convention; shifts live in the recorded frame).
* ``tilt_axis_angle_deg = phi``: the tilt axis runs along ``(x, y) = (-sin phi, cos phi)`` in the
  recorded frame (IMOD: counter-clockwise from image Y, ``x`` = column, ``y`` = row index). The
  axis-aligned frame is the recorded one rotated by ``-phi`` (as
  :func:`napari_tiltgen.methods.alignment.rotate_tilt_axis_to_vertical` does), so a recorded pixel
  maps to ``(u, v) = Rot(-phi) (p_r - (dx, dy))``.
* At tilt ``theta`` the ray through ``(u, v)`` is ``x = u cos(theta) - t sin(theta)``,
  ``y = v``, ``z = u sin(theta) + t cos(theta)``: every point of it lands on ``u`` since
  ``x cos + z sin = u`` (the projector's ``u = x cos(theta) + z sin(theta) + dx``).

Gauge
-----
Some pose changes are indistinguishable from moving or turning the object (see
:mod:`napari_tiltgen.methods.alignment`): ``dx`` changes of the form ``a cos(theta) + b sin(theta)``
(moving it in ``x, z``), a common ``dy`` change (moving it along ``y``) and a common tilt-angle
change (turning it about ``y``). The pose *updates* are projected onto the complement of these
patterns, so the object stays where the initial geometry put it and the fitted poses are unique.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["PoseModel", "RayBatch"]

POSE_PARAMETERS = ("shifts", "tilt_angles", "tilt_axis")


def _complement_projector(basis: np.ndarray) -> torch.Tensor:
    """``I - B B^+``: removes the components along the columns of ``basis`` ``(n, k)``."""
    n = basis.shape[0]
    p = np.eye(n) - basis @ np.linalg.pinv(basis)
    return torch.as_tensor(p, dtype=torch.float32)


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


class PoseModel(nn.Module):
    """Per-tilt shifts and tilt-angle offsets and a global tilt-axis rotation, as parameters.

    The learnable tensors are *updates* to the initial geometry (zero at the start); the gauge
    patterns are removed from them (module docstring).

    Parameters
    ----------
    tilt_angles_deg
        Initial tilt angles, degrees, shape ``(n,)``.
    shifts_px
        Initial per-tilt ``(dy, dx)`` in pixels (recorded frame), shape ``(n, 2)``.
    tilt_axis_angle_deg
        Initial in-plane tilt-axis angle, degrees counter-clockwise from image Y.
    """

    def __init__(self, tilt_angles_deg: Any, shifts_px: Any, tilt_axis_angle_deg: float):
        super().__init__()
        angles = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
        n = angles.size
        shifts = np.asarray(shifts_px, dtype=np.float64).reshape(n, 2)
        self.register_buffer("angles0", torch.as_tensor(angles, dtype=torch.float32))
        self.register_buffer("shifts0", torch.as_tensor(shifts, dtype=torch.float32))
        self.register_buffer("axis0", torch.tensor(float(tilt_axis_angle_deg)))
        t = np.deg2rad(angles)
        ones = np.ones((n, 1))
        self.register_buffer("gauge_dx", _complement_projector(np.stack([np.cos(t), np.sin(t)], 1)))
        self.register_buffer("gauge_const", _complement_projector(ones))
        self.d_shifts = nn.Parameter(torch.zeros(n, 2))
        self.d_angles = nn.Parameter(torch.zeros(n))
        self.d_axis = nn.Parameter(torch.zeros(()))

    @property
    def n_tilts(self) -> int:
        return int(self.angles0.numel())

    def current(self, trainable: frozenset[str] | set[str] = frozenset(POSE_PARAMETERS)
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(shifts (n, 2) as (dy, dx) px, angles (n,) deg, axis () deg)`` with the updates.

        Updates of parameters not in ``trainable`` are left out entirely (so they get no
        gradient), those in it are included with their gauge patterns removed.
        """
        shifts, angles, axis = self.shifts0, self.angles0, self.axis0
        if "tilt_axis" in trainable:
            axis = axis + self.d_axis
        if "shifts" in trainable:
            # updates live in the axis-aligned frame (where the gauge patterns are simple) and
            # are turned into the recorded frame by Rot(phi)
            dy_a = self.gauge_const @ self.d_shifts[:, 0]
            dx_a = self.gauge_dx @ self.d_shifts[:, 1]
            phi = torch.deg2rad(axis)
            c, s = torch.cos(phi), torch.sin(phi)
            shifts = shifts + torch.stack([dx_a * s + dy_a * c, dx_a * c - dy_a * s], dim=1)
        if "tilt_angles" in trainable:
            angles = angles + self.gauge_const @ self.d_angles
        return shifts, angles, axis

    def rays(self, tilt: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
             frame_shape: tuple[int, int], volume_shape: tuple[int, int, int], n_samples: int,
             jitter: torch.Tensor | None, trainable: frozenset[str] | set[str],
             pixel_offset: torch.Tensor | None = None) -> RayBatch:
        """Sample points of the rays through recorded pixels ``(tilt, row, col)`` (each ``(B,)``).

        Rays are clipped to the reconstruction box ``|x| <= nx/2, |z| <= nz/2`` and sampled at
        ``n_samples`` evenly spaced points (stratified with ``jitter`` in [0, 1) of shape
        ``(B, n_samples)``, else at the interval midpoints). A ray that misses the box, or whose
        ``y`` lies outside ``|y| <= ny/2``, gets step length 0 (it integrates to zero).
        """
        ny_f, nx_f = frame_shape
        nz, ny, nx = volume_shape
        shifts, angles, axis = self.current(trainable)
        dev = shifts.device
        u_r = col.to(torch.float32) - (nx_f - 1) / 2.0 - shifts[tilt, 1]
        v_r = row.to(torch.float32) - (ny_f - 1) / 2.0 - shifts[tilt, 0]
        if pixel_offset is not None:  # a point of the pixel's footprint instead of its centre
            u_r = u_r + pixel_offset[:, 1]
            v_r = v_r + pixel_offset[:, 0]
        phi = torch.deg2rad(axis)
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

    def as_numpy(self) -> dict[str, Any]:
        """Fitted poses as plain numbers (all updates included)."""
        with torch.no_grad():
            shifts, angles, axis = self.current()
        a0 = self.angles0.double().cpu().numpy()
        a = angles.double().cpu().numpy()
        return {
            "shifts_px": shifts.double().cpu().numpy(),
            "tilt_angles_deg": a,
            "tilt_angle_offsets_deg": a - a0,
            "tilt_axis_angle_deg": float(axis),
        }


def to_normalised(points: torch.Tensor, volume_shape: tuple[int, int, int]) -> torch.Tensor:
    """Pixel positions ``(..., 3)`` as ``(x, y, z)`` -> the field's normalised coordinates."""
    nz, ny, nx = volume_shape
    half = torch.tensor([max((nx - 1) / 2.0, 0.5), max((ny - 1) / 2.0, 0.5),
                         max((nz - 1) / 2.0, 0.5)], device=points.device, dtype=points.dtype)
    return points / half

