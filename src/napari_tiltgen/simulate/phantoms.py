"""Analytic phantoms: unions of uniform spheres, projected exactly.

A sphere of radius ``r`` and density ``rho`` projects to ``rho * 2 * sqrt(r^2 - d^2)`` where ``d``
is the distance from the projected centre, so tilt series of sphere phantoms are exact line
integrals in the geometry of :mod:`napari_tiltgen.physics.geometry` (no projector involved). That
makes them a reference for testing projectors as well as quick sample data.
"""

from __future__ import annotations

import numpy as np

from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.physics.geometry import centered_coords, detector_u


def random_spheres(size: int, n_spheres: int = 12, seed: int = 0) -> np.ndarray:
    """Random "nanoparticle" made of overlapping spheres inside a cube of ``size`` pixels.

    Returns an array ``(n, 5)`` of ``(x, y, z, radius, density)`` in pixels (centred coordinates)
    and relative density. The first sphere is a large core; the rest are satellites, some
    denser (heavier element), some lighter.
    """
    rng = np.random.default_rng(seed)
    s = size / 2.0
    spheres = [(0.0, 0.0, 0.0, 0.28 * size, 1.0)]
    for _ in range(n_spheres - 1):
        r = rng.uniform(0.05, 0.13) * size
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        dist = rng.uniform(0.2, 0.3) * size
        x, y, z = direction * dist
        rho = rng.choice([0.6, 1.0, 1.6])
        spheres.append((x, y, z, min(r, s - dist - 1.0 if s - dist > 2 else r), rho))
    return np.asarray(spheres, dtype=np.float64)


def project_spheres(spheres: np.ndarray, tilt_angles: np.ndarray, shape: tuple[int, int],
                    supersample: int = 2) -> np.ndarray:
    """Exact parallel-beam projections ``(n_tilts, ny, nx)`` of a union of spheres.

    Overlapping spheres add up (densities are additive), matching :func:`voxelize_spheres`.
    Each detector pixel is averaged over ``supersample x supersample`` sub-pixels.
    """
    ny, nx = shape
    o = (np.arange(supersample) + 0.5) / supersample - 0.5
    v = (centered_coords(ny)[:, None] + o[None, :]).reshape(-1)
    u = (centered_coords(nx)[:, None] + o[None, :]).reshape(-1)
    out = np.zeros((len(tilt_angles), ny, nx), dtype=np.float64)
    for t, theta in enumerate(np.asarray(tilt_angles, dtype=np.float64)):
        img = np.zeros((v.size, u.size))
        for x, y, z, r, rho in spheres:
            u0 = detector_u(x, z, theta)
            d2 = (v[:, None] - y) ** 2 + (u[None, :] - u0) ** 2
            img += rho * 2.0 * np.sqrt(np.clip(r * r - d2, 0.0, None))
        out[t] = img.reshape(ny, supersample, nx, supersample).mean(axis=(1, 3))
    return out.astype(np.float32)


def voxelize_spheres(spheres: np.ndarray, shape: tuple[int, int, int],
                     supersample: int = 2) -> np.ndarray:
    """Ground-truth volume ``(nz, ny, nx)`` of the same spheres (sub-voxel averaged)."""
    nz, ny, nx = shape
    o = (np.arange(supersample) + 0.5) / supersample - 0.5
    out = np.zeros(shape, dtype=np.float64)
    for oz in o:
        z = centered_coords(nz)[:, None, None] + oz
        for oy in o:
            y = centered_coords(ny)[None, :, None] + oy
            for ox in o:
                x = centered_coords(nx)[None, None, :] + ox
                for cx, cy, cz, r, rho in spheres:
                    out += rho * (((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) <= r * r)
    return (out / supersample**3).astype(np.float32)


def sphere_phantom(
    size: int = 64,
    tilt_range: tuple[float, float] = (-60.0, 60.0),
    tilt_step: float = 3.0,
    pixel_size_A: float = 2.0,
    n_spheres: int = 12,
    dose_e_per_A2: float | None = None,
    seed: int = 0,
) -> tuple[TiltSeries, Volume]:
    """A small synthetic tilt series with its ground-truth volume.

    Parameters
    ----------
    size
        Edge of the cubic volume and of the square frames, pixels.
    tilt_range
        First and last tilt angle, degrees.
    tilt_step
        Tilt increment, degrees.
    pixel_size_A
        Pixel size, Å.
    n_spheres
        Number of spheres in the particle.
    dose_e_per_A2
        If given, Poisson noise for this electron dose per frame (e-/Å^2): the projection is
        scaled to expected counts per pixel, sampled, and scaled back.
    seed
        Seed of the particle shape and the noise.

    Returns
    -------
    (TiltSeries, Volume)
        Projections in units of density x pixel length; volume in density units.
    """
    spheres = random_spheres(size, n_spheres, seed)
    lo, hi = tilt_range
    angles = np.arange(lo, hi + tilt_step / 2.0, tilt_step, dtype=np.float64)
    stack = project_spheres(spheres, angles, (size, size))
    if dose_e_per_A2 is not None:
        rng = np.random.default_rng(seed + 1)
        counts_per_px = dose_e_per_A2 * pixel_size_A**2
        scale = counts_per_px / max(float(stack.max()), 1e-12)
        stack = (rng.poisson(stack * scale) / scale).astype(np.float32)
    params = {"size": size, "tilt_range": list(tilt_range), "tilt_step": tilt_step,
              "n_spheres": n_spheres, "dose_e_per_A2": dose_e_per_A2, "seed": seed}
    ts = TiltSeries(
        data=stack,
        tilt_angles=angles,
        pixel_size_A=pixel_size_A,
        provenance={"source": None, "method": "sphere phantom", "parameters": params,
                    "angles_source": "simulation", "pixel_size_source": "simulation",
                    "tilt_axis_source": "simulation (y)"},
    )
    vol = Volume(
        data=voxelize_spheres(spheres, (size, size, size)),
        voxel_size_A=pixel_size_A,
        provenance={"method": "ground truth", "parameters": params},
    )
    return ts, vol


def dynamic_spheres(size: int, t: float) -> np.ndarray:
    """Sphere parameters ``(n, 5)`` of a changing particle at normalised time ``t`` in [0, 1].

    Three things happen during the series, each a typical in-situ process:

    * sintering: two particles (left, right) move together and a neck grows between them;
    * growth: a satellite on top grows from 4 % to 12 % of the box;
    * composition: the lower particle's density rises from 0.6 to 1.6 (alloying with a heavier
      element).
    """
    t = float(np.clip(t, 0.0, 1.0))
    gap = (0.22 - 0.08 * t) * size
    r_big = 0.16 * size
    neck = 0.02 * size + 0.06 * size * t
    return np.asarray([
        (-gap, 0.0, 0.0, r_big, 1.0),
        (gap, 0.0, 0.0, r_big, 1.0),
        (0.0, 0.0, 0.0, neck, 1.0),
        (0.0, -0.3 * size, 0.05 * size, (0.04 + 0.08 * t) * size, 1.0),
        (0.05 * size, 0.28 * size, -0.05 * size, 0.09 * size, 0.6 + 1.0 * t),
    ])


def dynamic_sphere_phantom(
    size: int = 64,
    n_tilts: int = 100,
    tilt_range: tuple[float, float] = (-70.0, 70.0),
    total_time_s: float = 3600.0,
    scheme: str = "sequential",
) -> tuple[TiltSeries, np.ndarray]:
    """A time-resolved series of a changing particle, one state per tilt, with ground truth.

    Parameters
    ----------
    size
        Volume edge and frame size, pixels.
    n_tilts
        Number of tilts (= time points).
    tilt_range
        First and last tilt angle, degrees.
    total_time_s
        Duration of the acquisition, seconds; tilts are recorded at uniform intervals.
    scheme
        ``"sequential"`` (low to high angle) or ``"dose-symmetric"`` (0, +step, -step, ...)
        acquisition order; frames are stored sorted by angle either way, with their times.

    Returns
    -------
    (TiltSeries, ndarray)
        The series (with ``acquisition_times_s``) and the ground-truth volumes
        ``(n_tilts, nz, ny, nx)``, volume ``k`` being the state when frame ``k`` was recorded.
    """
    angles = np.linspace(tilt_range[0], tilt_range[1], n_tilts)
    if scheme == "sequential":
        order = np.arange(n_tilts)
    elif scheme == "dose-symmetric":
        order = np.argsort(np.abs(angles - angles[np.argmin(np.abs(angles))]), kind="stable")
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    rank = np.empty(n_tilts, dtype=np.int64)
    rank[order] = np.arange(n_tilts)  # acquisition rank of each frame
    times = rank * total_time_s / max(n_tilts - 1, 1)
    frames = np.empty((n_tilts, size, size), dtype=np.float32)
    truth = np.empty((n_tilts, size, size, size), dtype=np.float32)
    for k in range(n_tilts):
        spheres = dynamic_spheres(size, times[k] / total_time_s)
        frames[k] = project_spheres(spheres, angles[k:k + 1], (size, size))[0]
        truth[k] = voxelize_spheres(spheres, (size, size, size), supersample=1)
    ts = TiltSeries(
        data=frames, tilt_angles=angles, pixel_size_A=2.0, acquisition_times_s=times,
        provenance={"method": "dynamic sphere phantom", "angles_source": "simulation",
                    "pixel_size_source": "simulation", "tilt_axis_source": "simulation (y)",
                    "parameters": {"size": size, "n_tilts": n_tilts, "scheme": scheme,
                                   "total_time_s": total_time_s}},
    )
    return ts, truth
