"""Shape primitives of the object families (:mod:`.families`): voxel grids, random rotations,
signed distances of spheres, ellipsoids, capsules and convex polyhedra, soft occupancy, smooth
random fields, placement inside the cylinder every tilt sees, and small particles added at
given sites. Distances and sizes in voxels; volumes ``(z, y, x)`` with y the tilt axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["add_particles", "capsule_sd", "ellipsoid_sd", "grid", "place", "polyhedron_sd",
           "px_particles", "rot", "smooth_noise", "soft", "sphere_sd", "unit"]


def grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable voxel-centre coordinates ``(z, y, x)`` in voxels from the centre."""
    c = np.arange(size, dtype=np.float32) - 0.5 * (size - 1)
    return c[:, None, None], c[None, :, None], c[None, None, :]


def rot(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3x3 rotation (acting on (z, y, x) vectors)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]], dtype=np.float32)


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return (v / np.linalg.norm(v)).astype(np.float32)


def soft(sd: np.ndarray, width: float) -> np.ndarray:
    """Occupancy from a signed distance (negative inside), anti-aliased over ``width`` voxels."""
    return (0.5 - 0.5 * np.tanh(sd / max(width, 1e-3))).astype(np.float32)


def sphere_sd(z, y, x, c, r):
    return np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) - r


def ellipsoid_sd(z, y, x, c, radii, rot):
    """Approximate signed distance of a rotated ellipsoid (voxels)."""
    dz, dy, dx = z - c[0], y - c[1], x - c[2]
    u = [rot[i, 0] * dz + rot[i, 1] * dy + rot[i, 2] * dx for i in range(3)]
    q = np.sqrt(sum((u[i] / radii[i]) ** 2 for i in range(3)))
    return (q - 1.0) * float(min(radii))


def capsule_sd(z, y, x, p0, p1, r):
    """Signed distance to a sphero-cylinder between points ``p0``, ``p1`` (voxels)."""
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    dd = float(d @ d) + 1e-9
    h = np.clip(((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / dd, 0.0, 1.0)
    return np.sqrt((z - p0[0] - h * d[0]) ** 2 + (y - p0[1] - h * d[1]) ** 2
                   + (x - p0[2] - h * d[2]) ** 2) - r


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth random field with correlation length ``scale`` voxels, zero mean, unit std.

    Made on a coarse grid and up-sampled (cheap for 128^3-256^3)."""
    from scipy.ndimage import zoom

    f = max(1.0, scale / 2.0)
    small = tuple(max(4, int(math.ceil(s / f)) + 2) for s in shape)
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=small).astype(np.float32), 1.0)
    out = zoom(n, [s / m for s, m in zip(shape, small)], order=1)[tuple(slice(0, s) for s in shape)]
    out = out - out.mean()
    return (out / (out.std() + 1e-6)).astype(np.float32)


def px_particles(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(math.log(1.0), math.log(100.0))))


def place(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """Random centre (z, y, x) keeping an object of ``radius`` inside the cylinder seen at every
    tilt (distance from the y axis below ``size / 2``)."""
    lim = max(0.0, 0.46 * size - radius)
    while True:
        zx = rng.uniform(-lim, lim, 2)
        if float(np.hypot(*zx)) <= lim:
            break
    y = rng.uniform(-lim, lim)
    return np.array([zx[0], y, zx[1]], np.float32)


def polyhedron_sd(z, y, x, c, r, n_planes, rng):
    sd = None
    # regular-ish shapes (cube, octahedron) or random facets
    kind = rng.integers(3)
    turn = rot(rng)
    if kind == 0:
        normals = np.eye(3, dtype=np.float32)
        normals = np.concatenate([normals, -normals])
    elif kind == 1:
        normals = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)],
                           np.float32) / math.sqrt(3)
    else:
        normals = np.stack([unit(rng) for _ in range(n_planes)])
    normals = normals @ turn.T
    aniso = rng.uniform(0.7, 1.0, len(normals))
    for nrm, a in zip(normals, aniso):
        plane = (z - c[0]) * nrm[0] + (y - c[1]) * nrm[1] + (x - c[2]) * nrm[2] - r * a
        sd = plane if sd is None else np.maximum(sd, plane)
    return sd


def add_particles(vol: np.ndarray, zyx: tuple[np.ndarray, ...], sites: np.ndarray,
                   rng: np.random.Generator, radius: tuple[float, float], p_faceted: float,
                   aspect: float, density: float,
                   shift: Callable[[np.ndarray, np.ndarray, float], None] | None = None
                   ) -> None:
    """Small faceted (probability ``p_faceted``) or ellipsoidal particles at voxel ``sites``
    of ``vol`` (in place, by maximum): radius ``radius`` x size + 0.7 px, ellipsoid axes up to
    ``aspect`` x it, density ``density``-1; ``shift(centre, site, radius)`` may move a centre."""
    z, y, x = zyx
    size = vol.shape[0]
    for p in sites:
        pr = float(rng.uniform(*radius) * size + 0.7)
        pc = p.astype(np.float32) - 0.5 * (size - 1)
        if shift is not None:
            shift(pc, p, pr)
        lo = np.maximum(np.floor(pc - 1.8 * pr - 3).astype(int) + size // 2, 0)
        hi = np.minimum(np.ceil(pc + 1.8 * pr + 3).astype(int) + size // 2 + 1, size)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = z[sl[0]], y[:, sl[1]], x[:, :, sl[2]]
        if rng.random() < p_faceted:
            psd = polyhedron_sd(zz, yy, xx, pc, pr, int(rng.integers(6, 12)), rng)
        else:
            psd = ellipsoid_sd(zz, yy, xx, pc, pr * rng.uniform(0.6, aspect, 3), rot(rng))
        occ = soft(psd, rng.uniform(0.3, 0.8)) * float(rng.uniform(density, 1.0))
        vol[sl] = np.maximum(vol[sl], occ)
