"""Line integrals of frames perpendicular to a direction in the frame plane (a 2-D Radon
transform at one angle): the projection of each frame onto a candidate tilt axis, which the
common-lines tilt-axis estimate compares between tilts.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["axis_profiles"]


def axis_profiles(frames: np.ndarray, phi_deg: float, radius: float) -> np.ndarray:
    """Line integrals perpendicular to a candidate axis at ``phi_deg``: one profile per frame.

    Each (masked) frame is projected onto the axis direction ``(-sin phi, cos phi)`` with linear
    splatting into 1-px bins. For the true axis every profile is the same function (the
    projection of the object onto the tilt axis), up to a shift along the axis.
    """
    from scipy.sparse import csr_matrix

    n, ny, nx = frames.shape
    p = np.deg2rad(phi_deg)
    y, x = np.meshgrid(
        np.arange(ny) - (ny - 1) / 2.0, np.arange(nx) - (nx - 1) / 2.0, indexing="ij"
    )
    t = (-x * math.sin(p) + y * math.cos(p)).ravel() + radius + 1.0
    nb = int(2 * radius + 3)
    i0 = np.floor(t).astype(np.int64)
    fr = t - i0
    i0 = np.clip(i0, 0, nb - 1)  # only masked-out corner pixels (weight 0) are clipped
    cols = np.arange(t.size)
    m = csr_matrix(
        (
            np.concatenate([1 - fr, fr]),
            (np.concatenate([i0, i0 + 1]), np.concatenate([cols, cols])),
        ),
        shape=(nb + 1, t.size),
    )
    return np.asarray(m @ frames.reshape(n, -1).T).T[:, :nb]
