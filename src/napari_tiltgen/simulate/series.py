"""Simulated HAADF-STEM tilt series of a cluster, with its ground-truth volume.

:func:`simulate_tilt_series` turns an :class:`ase.Atoms` cluster (e.g. from
:func:`~napari_tiltgen.simulate.clusters.build_cluster`) into a
:class:`~napari_tiltgen.io.model.TiltSeries` (fast incoherent model or abTEM multislice, optional
Poisson noise for a dose in e-/Å²) and a ground-truth :class:`~napari_tiltgen.io.model.Volume` on
the reconstruction grid ``(nz, ny, nx) = (nx, ny, nx)`` with the same pixel size.

Ground truth
------------
The volume holds each atom as a 3-D Gaussian of width ``gt_sigma_A`` weighted by the same HAADF
cross-section ``w`` (Å²) as the images, integrated over each voxel, in units chosen so that
**summing the volume along the beam gives the image**: ``vol = sum_a w_a B_z B_y B_x / px**2``
with ``B`` the voxel integrals of the unit 1-D Gaussians. The sum along z of the volume equals the
fast model's image for a Gaussian probe of width ``gt_sigma_A`` (pixel-averaged). By default the
width is the image width of one atom for the chosen optics (probe-core FWHM / 2.355 combined with
the atom width, at least half a pixel), so a forward projection of the ground truth at any tilt
matches the fast model's frame (r = 0.97-0.99 at 0.22 Å pixels, both presets; see
``docs/simulation.md``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.core.progress import scaled as _scaled
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.simulate.abtem_haadf import AbtemSettings, abtem_haadf_iter
from napari_tiltgen.simulate.clusters import cluster_diameter_A
from napari_tiltgen.simulate.haadf import (
    ATOM_SIGMA_A,
    PRESETS,
    Optics,
    add_dose_noise,
    fast_haadf_iter,
    haadf_cross_section_A2,
    probe_fwhm_A,
)

MODES = ("fast", "abtem")
FILL = 0.75
"""Share of the field of view the cluster's bounding sphere takes when the pixel size is automatic."""
MARGIN_A = 2.0


@dataclass
class SimulationResult:
    """Output of :func:`simulate_tilt_series`.

    Attributes
    ----------
    tilt_series
        The simulated series (noisy when a dose was given), angles in degrees, pixel size in Å.
    volume
        Ground-truth volume ``(nz, ny, nx)``, same voxel size.
    clean
        Noise-free stack ``(n_tilts, ny, nx)``.
    atoms
        The cluster (positions in Å about the rotation centre).
    """

    tilt_series: TiltSeries
    volume: Volume
    clean: np.ndarray
    atoms: Any


def tilt_angles_from_range(tilt_range: Sequence[float] = (-90.0, 90.0),
                           tilt_step: float = 1.0) -> np.ndarray:
    """Tilt angles in degrees from ``tilt_range = (first, last)`` and ``tilt_step`` (inclusive)."""
    lo, hi = float(tilt_range[0]), float(tilt_range[1])
    step = float(tilt_step)
    if not step > 0:
        raise TiltgenError(f"the tilt step must be positive (degrees); got {tilt_step}.")
    if hi < lo:
        raise TiltgenError(f"the tilt range must go from low to high; got {lo} to {hi} degrees.")
    if lo < -90 - 1e-9 or hi > 90 + 1e-9:
        raise TiltgenError(f"tilt angles must lie within [-90, 90] degrees; got {lo} to {hi}.")
    n = int(math.floor((hi - lo) / step + 1e-6)) + 1
    return lo + step * np.arange(n, dtype=np.float64)


def _shape2(size: int | Sequence[int]) -> tuple[int, int]:
    if np.ndim(size) == 0:
        ny = nx = int(size)
    else:
        ny, nx = (int(s) for s in size)
    if ny < 8 or nx < 8:
        raise TiltgenError(f"frames must be at least 8 x 8 pixels; got {ny} x {nx}.")
    if ny > 4096 or nx > 4096:
        raise TiltgenError(f"frames larger than 4096 pixels are not supported; got {ny} x {nx}.")
    return ny, nx


def auto_pixel_size_A(atoms: Any, size: int | Sequence[int], fill: float = FILL) -> float:
    """Pixel size (Å, 3 significant digits, rounded up) at which the cluster's bounding sphere
    plus a 2 Å margin spans ``fill`` of the smaller frame edge."""
    ny, nx = _shape2(size)
    d = cluster_diameter_A(atoms) + 2 * MARGIN_A
    px = d / (fill * min(ny, nx))
    digits = 2 - int(math.floor(math.log10(px)))
    return float(math.ceil(px * 10**digits) / 10**digits)


def effective_sigma_A(optics: Optics | str, atom_sigma_A: float = ATOM_SIGMA_A) -> float:
    """Gaussian width (Å) of an atom's image: the probe core (FWHM / 2.355) and the atom width."""
    s_probe = probe_fwhm_A(optics) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return float(math.hypot(s_probe, atom_sigma_A))


def default_gt_sigma_A(pixel_size_A: float, optics: Optics | str | None = None,
                       atom_sigma_A: float = ATOM_SIGMA_A) -> float:
    """Ground-truth atom width (Å): the image width of an atom for ``optics`` (default: the sharp
    35 mrad non-aberrated probe), at least half a pixel so the grid represents it."""
    s = effective_sigma_A(PRESETS["non_aberrated"] if optics is None else optics, atom_sigma_A)
    return float(max(s, 0.5 * pixel_size_A))


def resolve_gt_sigma_A(gt_sigma_A: float | str | None, pixel_size_A: float, optics: Optics,
                       atom_sigma_A: float = ATOM_SIGMA_A) -> float:
    """Ground-truth atom width in Å from a setting: ``None``/``"probe"`` (matched to ``optics``),
    ``"sharp"`` (matched to the 35 mrad non-aberrated probe) or a number of Å."""
    if gt_sigma_A is None or gt_sigma_A == "probe":
        return default_gt_sigma_A(pixel_size_A, optics, atom_sigma_A)
    if gt_sigma_A == "sharp":
        return default_gt_sigma_A(pixel_size_A, None, atom_sigma_A)
    try:
        s = float(gt_sigma_A)
    except (TypeError, ValueError):
        s = float("nan")
    if not s > 0:
        raise TiltgenError(f"gt_sigma_A must be 'probe', 'sharp' or a positive width in Å; got "
                           f"{gt_sigma_A!r}.")
    return s


def atoms_volume(atoms: Any, shape: tuple[int, int, int], pixel_size_A: float, sigma_A: float,
                 centre: bool = True) -> np.ndarray:
    """Ground truth of an ``ase.Atoms`` object: its atoms (centred on their mean position when
    ``centre``) as Gaussians of ``sigma_A`` weighted by their default HAADF cross-sections,
    :func:`ground_truth_volume` on ``shape`` voxels of ``pixel_size_A``. ``(nz, ny, nx)`` float32.
    """
    pos = np.asarray(atoms.get_positions(), np.float64)
    if centre:
        pos = pos - pos.mean(axis=0)
    w = haadf_cross_section_A2(np.asarray(atoms.get_atomic_numbers()))
    return ground_truth_volume(pos, w, shape, pixel_size_A, sigma_A)


def ground_truth_volume(
    positions: np.ndarray,
    weights: np.ndarray,
    shape: tuple[int, int, int],
    pixel_size_A: float,
    sigma_A: float,
) -> np.ndarray:
    """Ground-truth volume: voxel-integrated Gaussian atoms.

    Parameters
    ----------
    positions
        ``(N, 3)`` atom positions ``(x, y, z)``, Å, about the grid centre.
    weights
        ``(N,)`` HAADF cross-sections, Å².
    shape
        ``(nz, ny, nx)`` voxels.
    pixel_size_A
        Voxel size, Å.
    sigma_A
        Gaussian width of an atom, Å.

    Returns
    -------
    np.ndarray
        ``(nz, ny, nx)`` float32 in 1/Å² (cross-section per pixel area per voxel): its sum along
        z is the image, in fractions of the beam, for a Gaussian probe of width ``sigma_A``.
    """
    from scipy.special import erf

    nz, ny, nx = (int(s) for s in shape)
    px = float(pixel_size_A)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3) / px
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    s = max(float(sigma_A) / px, 1e-3)
    half = int(math.ceil(4.0 * s)) + 1
    width = 2 * half + 2
    offs = np.arange(width)

    def axis_weights(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = c + 0.5 * (n - 1)
        start = np.floor(idx).astype(np.int64) - half
        edges = start[:, None] + np.arange(width + 1)[None, :] - 0.5
        cdf = 0.5 * (1.0 + erf((edges - idx[:, None]) / (math.sqrt(2.0) * s)))
        b = np.diff(cdf, axis=1)
        ind = start[:, None] + offs[None, :]
        b[(ind < 0) | (ind >= n)] = 0.0
        return b, np.clip(ind, 0, n - 1)

    out = np.zeros(nz * ny * nx, dtype=np.float64)
    chunk = max(1, 4_000_000 // width**3)
    for a0 in range(0, w.size, chunk):
        sl = slice(a0, a0 + chunk)
        bx, ix = axis_weights(pos[sl, 0], nx)
        by, iy = axis_weights(pos[sl, 1], ny)
        bz, iz = axis_weights(pos[sl, 2], nz)
        vals = (w[sl, None, None, None] * bz[:, :, None, None] * by[:, None, :, None]
                * bx[:, None, None, :])
        flat = (iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :]
        out += np.bincount(flat.ravel(), weights=vals.ravel(), minlength=out.size)
    return (out / (px * px)).reshape(nz, ny, nx).astype(np.float32)


def check_fits(atoms: Any, shape: tuple[int, int], pixel_size_A: float,
               sigma_A: float = 0.0) -> None:
    """Raise :class:`TiltgenError` unless the cluster stays inside the frame at every tilt."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if pos.size == 0:
        raise TiltgenError("the cluster has no atoms.")
    r_xz = np.sqrt(pos[:, 0] ** 2 + pos[:, 2] ** 2).max()
    r_y = np.abs(pos[:, 1]).max()
    ny, nx = shape
    lim_x = (0.5 * (nx - 1) - 1) * pixel_size_A - 2.0 * sigma_A
    lim_y = (0.5 * (ny - 1) - 1) * pixel_size_A - 2.0 * sigma_A
    if r_xz > lim_x or r_y > lim_y:
        d = cluster_diameter_A(pos)
        need = 2 * max(r_xz, r_y) + 4 * sigma_A + 2 * pixel_size_A
        raise TiltgenError(
            f"the cluster (diameter {d:.1f} Å) does not fit in a {ny} x {nx} pixel frame at "
            f"{pixel_size_A:.4g} Å per pixel ({nx * pixel_size_A:.1f} Å wide) at every tilt; it "
            f"needs about {need:.1f} Å. Use more pixels, a larger pixel size (or leave it "
            "automatic), or a smaller cluster."
        )


def simulate_tilt_series_iter(
    atoms: Any,
    *,
    tilt_angles: Sequence[float] | None = None,
    tilt_range: Sequence[float] = (-90.0, 90.0),
    tilt_step: float = 1.0,
    size: int | Sequence[int] = 128,
    pixel_size_A: float | None = None,
    optics: Optics | str | dict = "non_aberrated",
    mode: str = "fast",
    dose_e_per_A2: float | None = None,
    seed: int = 0,
    z_exponent: float = 1.7,
    atom_sigma_A: float = ATOM_SIGMA_A,
    gt_sigma_A: float | str | None = None,
    abtem_settings: AbtemSettings | None = None,
    acquisition_times_s: Sequence[float] | None = None,
    device: str = "cpu",
) -> Generator[Progress, None, SimulationResult]:
    """Simulate a HAADF-STEM tilt series of a cluster and its ground truth (progress generator).

    Parameters
    ----------
    atoms
        :class:`ase.Atoms`, positions in Å about the tilt-rotation centre (``build_cluster``
        centres them).
    tilt_angles
        Tilt angles in degrees; default ``tilt_range`` / ``tilt_step``.
    tilt_range, tilt_step
        First and last tilt and increment, degrees (default -90 to +90 in 1 degree: 181 frames).
    size
        Frame edge (or ``(ny, nx)``) in pixels; the volume is ``(nx, ny, nx)``.
    pixel_size_A
        Pixel size, Å; ``None`` picks one so the cluster fills 75 % of the frame.
    optics
        ``"non_aberrated"`` (35 mrad), ``"aberrated"`` (25 mrad, Cs 100 µm), or :class:`Optics`.
    mode
        ``"fast"`` (incoherent model, about a second per series) or ``"abtem"`` (multislice,
        minutes per frame on a CPU).
    dose_e_per_A2
        Dose per frame in e-/Å² for Poisson noise; ``None``: noise-free.
    seed
        Seed of the noise.
    z_exponent
        Exponent of the Z-contrast weights ``Z**z_exponent`` (fast model and ground truth).
    atom_sigma_A
        Width of an atom's HAADF object function in the fast model, Å.
    gt_sigma_A
        Width of the ground-truth atoms, Å; ``None`` or ``"probe"``: the image width of an atom
        for ``optics`` (probe-core FWHM / 2.355 combined with ``atom_sigma_A``, at least half a
        pixel), so that forward projections of the ground truth match the frames;
        ``"sharp"``: the width for the 35 mrad non-aberrated probe whatever the optics.
    abtem_settings
        Sampling, slice thickness and margins of abTEM runs.
    acquisition_times_s
        Optional time of each frame, seconds (recorded in the series).
    device
        Device of the fast model: torch ``"cpu"``, ``"cuda"``, ``"auto"``, or ``"numpy"``.
    """
    optics = Optics.from_any(optics)
    if mode not in MODES:
        raise TiltgenError(f"unknown simulation mode {mode!r}; use 'fast' or 'abtem'.")
    angles = (tilt_angles_from_range(tilt_range, tilt_step) if tilt_angles is None
              else np.asarray(tilt_angles, dtype=np.float64).reshape(-1))
    if angles.size == 0:
        raise TiltgenError("no tilt angles to simulate.")
    if np.any(np.abs(angles) > 90 + 1e-9):
        raise TiltgenError("tilt angles must lie within [-90, 90] degrees.")
    ny, nx = _shape2(size)
    px = auto_pixel_size_A(atoms, (ny, nx)) if pixel_size_A is None else float(pixel_size_A)
    if not px > 0:
        raise TiltgenError(f"the pixel size must be positive (Å); got {pixel_size_A}.")
    s_gt = resolve_gt_sigma_A(gt_sigma_A, px, optics, atom_sigma_A)
    check_fits(atoms, (ny, nx), px, s_gt)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    numbers = np.asarray(atoms.numbers)
    weights = haadf_cross_section_A2(numbers, optics, z_exponent)

    yield Progress(0.0, f"simulating {angles.size} frames ({mode})")
    if mode == "fast":
        gen = fast_haadf_iter(pos, weights, angles, (ny, nx), px, optics,
                              atom_sigma_A=atom_sigma_A, device=device)
    else:
        gen = abtem_haadf_iter(pos, numbers, angles, (ny, nx), px, optics, abtem_settings)
    clean = yield from _scaled(gen, 0.0, 0.95)
    stack = clean
    if dose_e_per_A2 is not None:
        stack = add_dose_noise(clean, dose_e_per_A2, px, np.random.default_rng([int(seed), 1]))
    vol = ground_truth_volume(pos, weights, (nx, ny, nx), px, s_gt)
    yield Progress(1.0, "done")

    spec = atoms.info.get("tiltgen", {}) if hasattr(atoms, "info") else {}
    params = {
        "mode": mode,
        "optics": optics.to_dict(),
        "size": [ny, nx],
        "pixel_size_A": px,
        "dose_e_per_A2": dose_e_per_A2,
        "seed": int(seed),
        "z_exponent": float(z_exponent),
        "atom_sigma_A": float(atom_sigma_A),
        "gt_sigma_A": s_gt,
        "cluster": spec.get("spec"),
        "n_atoms": int(len(pos)),
        "formula": atoms.get_chemical_formula() if hasattr(atoms, "get_chemical_formula") else "",
    }
    if mode == "abtem":
        params["abtem"] = (abtem_settings or AbtemSettings()).to_dict()
    ts = TiltSeries(
        data=stack, tilt_angles=angles, pixel_size_A=px,
        acquisition_times_s=acquisition_times_s,
        provenance={"source": None, "method": f"HAADF simulation ({mode})", "parameters": params,
                    "angles_source": "simulation", "pixel_size_source": "simulation",
                    "tilt_axis_source": "simulation (y)"},
    )
    volume = Volume(data=vol, voxel_size_A=px,
                    provenance={"method": "ground truth", "parameters": params,
                                "pixel_size_source": "simulation"})
    return SimulationResult(tilt_series=ts, volume=volume, clean=clean, atoms=atoms)



def imaging_options(**kwargs: Any) -> dict[str, Any]:
    """The imaging keywords of :func:`simulate_tilt_series_iter` with their defaults, updated
    by ``kwargs`` (the one declaration other simulators share; an unknown name is a
    ``TypeError``, as in a call). ``acquisition_times_s`` is left to the caller."""
    sig = inspect.signature(simulate_tilt_series_iter)
    if "acquisition_times_s" in kwargs or "atoms" in kwargs:
        raise TypeError(f"unexpected keyword {'atoms' if 'atoms' in kwargs else 'acquisition_times_s'!r}")
    bound = sig.bind_partial(None, **kwargs)
    bound.apply_defaults()
    out = dict(bound.arguments)
    for k in ("atoms", "acquisition_times_s"):
        out.pop(k)
    return out


def simulate_tilt_series(atoms: Any, *, show_progress: bool = False,
                         **kwargs: Any) -> SimulationResult:
    """Run :func:`simulate_tilt_series_iter` to completion (same parameters).

    Examples
    --------
    >>> from napari_tiltgen.simulate import build_cluster, simulate_tilt_series
    >>> atoms = build_cluster("icosahedron", "Au", shells=3, seed=1)
    >>> res = simulate_tilt_series(atoms, size=64, tilt_step=5.0, dose_e_per_A2=2e4)
    >>> res.tilt_series.shape, res.volume.shape
    ((37, 64, 64), (64, 64, 64))
    """
    return run(simulate_tilt_series_iter(atoms, **kwargs), show=show_progress,
               desc="simulate")


def simulated_cluster_sample(seed: int = 0, *, size: int = 96,
                             tilt_range: Sequence[float] = (-70.0, 70.0),
                             tilt_step: float = 2.0,
                             dose_e_per_A2: float | None = 2e4,
                             device: str = "numpy") -> tuple[TiltSeries, Volume]:
    """A small, seeded simulated cluster tilt series and its ground truth (well under a second).

    A 4-shell Ag icosahedron with a 3-shell Au core (147 atoms, Au55@Ag92), random
    orientation from ``seed``, 35 mrad non-aberrated probe, fast model. Defaults: 96 x 96 pixel
    frames from -70 to +70 degrees in 2 degree steps (71 frames), 2e4 e-/Å² per frame.

    Parameters
    ----------
    seed
        Seed of the orientation and the noise.
    size
        Frame edge in pixels (pixel size automatic: the cluster fills 75 % of the frame).
    tilt_range, tilt_step
        First and last tilt and increment, degrees.
    dose_e_per_A2
        Dose per frame, e-/Å²; ``None``: noise-free.
    device
        Fast-model backend: ``"numpy"`` (default: no torch import, which would take longer than
        the simulation) or a torch device.
    """
    from napari_tiltgen.simulate.clusters import build_cluster

    atoms = build_cluster("icosahedron", "Ag", shells=4, variant="core_shell", element2="Au",
                          fraction=55 / 147, seed=seed)
    res = simulate_tilt_series(atoms, tilt_range=tuple(tilt_range), tilt_step=tilt_step,
                               size=size, optics="non_aberrated", dose_e_per_A2=dose_e_per_A2,
                               seed=seed, device=device)
    ts, vol = res.tilt_series, res.volume
    ts.provenance["method"] = "simulated cluster sample"
    return ts, vol
