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
"""

from __future__ import annotations

import numpy as np


def detector_u(x: np.ndarray, z: np.ndarray, theta_deg: float, dx: float = 0.0,
               axis_offset: float = 0.0) -> np.ndarray:
    """Detector coordinate ``u`` (pixels from the centre) of points ``(x, z)`` at ``theta_deg``."""
    t = np.deg2rad(theta_deg)
    return x * np.cos(t) + z * np.sin(t) + dx + axis_offset


def centered_coords(n: int) -> np.ndarray:
    """Pixel-centre coordinates ``i - (n-1)/2`` for ``i = 0..n-1``."""
    return np.arange(n, dtype=np.float64) - (n - 1) / 2.0
