"""Differentiable acquisition geometry: per-tilt poses and the rays they define.

The rays these poses define are cast by :class:`napari_tiltgen.physics.rays.RayProjector` (the
package's differentiable-pose ray projector; geometry and boundary are documented there), which
takes :meth:`PoseModel.current` as its poses. Shifts
``(dy, dx)`` live in the recorded frame (the ``TiltSeries`` convention), the tilt axis angle is
IMOD's (counter-clockwise from image Y).

Gauge
-----
Some pose changes are indistinguishable from moving or turning the object (see
:mod:`napari_tiltgen.align.alignment`): ``dx`` changes of the form ``a cos(theta) + b sin(theta)``
(moving it in ``x, z``), a common ``dy`` change (moving it along ``y``) and a common tilt-angle
change (turning it about ``y``). The pose *updates* are projected onto the complement of these
patterns, so the object stays where the initial geometry put it and the fitted poses are unique.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["POSE_PARAMETERS", "PoseModel"]

POSE_PARAMETERS = ("shifts", "tilt_angles", "tilt_axis")


def _complement_projector(basis: np.ndarray) -> torch.Tensor:
    """``I - B B^+``: removes the components along the columns of ``basis`` ``(n, k)``."""
    n = basis.shape[0]
    p = np.eye(n) - basis @ np.linalg.pinv(basis)
    return torch.as_tensor(p, dtype=torch.float32)


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

    def current(
        self, trainable: frozenset[str] | set[str] = frozenset(POSE_PARAMETERS)
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
