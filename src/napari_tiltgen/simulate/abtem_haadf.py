"""HAADF-STEM tilt series by abTEM multislice (optional; GPL-3): settings, sampling and the
tilt loop, on the geometry of :mod:`napari_tiltgen.physics.geometry` like the fast model.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.simulate.haadf import Optics, probe_radius_A, tilt_positions

__all__ = ["AbtemSettings", "abtem_haadf_iter", "abtem_sampling_A"]


@dataclass(frozen=True)
class AbtemSettings:
    """Numerical settings of the abTEM multislice runs.

    Parameters
    ----------
    sampling_A
        Potential / wave sampling, Å. ``None``: coarsest sampling whose antialiasing cutoff
        (2/3 of Nyquist) still reaches the detector's outer angle.
    slice_thickness_A
        Multislice slice thickness, Å.
    margin_A
        Vacuum around the scanned area and the cluster, Å (``None``: the probe's 98 % energy
        radius plus 2 Å, at least 4 Å).
    rows_per_step
        Scan rows computed between two progress events (cancel points).
    parametrization
        abTEM potential parametrisation (``"lobato"`` or ``"kirkland"``).
    """

    sampling_A: float | None = None
    slice_thickness_A: float = 1.0
    margin_A: float | None = None
    rows_per_step: int = 4
    parametrization: str = "lobato"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def abtem_sampling_A(optics: Optics) -> float:
    """Coarsest abTEM sampling (Å) whose antialias cutoff covers the outer detector angle."""
    return optics.wavelength_A / (3e-3 * optics.detector_outer_mrad) * 0.98


def abtem_haadf_iter(
    positions: np.ndarray,
    numbers: np.ndarray,
    tilt_angles: Sequence[float],
    shape: tuple[int, int],
    pixel_size_A: float,
    optics: Optics | str = "non_aberrated",
    settings: AbtemSettings | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """abTEM multislice HAADF tilt series, as a progress generator.

    One multislice scan per frame; within a frame the scan runs in blocks of
    ``settings.rows_per_step`` rows, and a :class:`~napari_tiltgen.core.progress.Progress` (with the
    partial frame as ``preview``) is yielded after each block, so that closing the generator
    (``worker.quit()`` in napari) stops the work within one block.

    Parameters are those of :func:`fast_haadf`, with ``numbers`` the atomic numbers.

    Returns
    -------
    np.ndarray
        ``(n_tilts, ny, nx)`` float32, fraction of the incident beam on the detector.
    """
    import abtem
    import ase

    optics = Optics.from_any(optics)
    settings = settings or AbtemSettings()
    ny, nx = (int(shape[0]), int(shape[1]))
    px = float(pixel_size_A)
    angles = np.asarray(tilt_angles, dtype=np.float64).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers, dtype=int).reshape(-1)
    sampling = settings.sampling_A or abtem_sampling_A(optics)
    cutoff = optics.wavelength_A / (3.0 * sampling) * 1e3
    if cutoff < optics.detector_outer_mrad * 0.97:
        raise TiltgenError(
            f"abTEM sampling {sampling:.3f} Å reaches only {cutoff:.0f} mrad, below the outer "
            f"detector angle {optics.detector_outer_mrad:.0f} mrad; use a sampling of at most "
            f"{abtem_sampling_A(optics):.3f} Å."
        )
    margin = settings.margin_A
    if margin is None:
        margin = max(4.0, min(probe_radius_A(optics), 20.0) + 2.0)
    out = np.zeros((angles.size, ny, nx), dtype=np.float32)
    rows = max(1, int(settings.rows_per_step))
    n_blocks = math.ceil(ny / rows)
    total = angles.size * n_blocks
    u_all, v_all, w_all = tilt_positions(pos, angles)
    half_fov = 0.5 * np.array([(nx - 1) * px, (ny - 1) * px])
    probe = abtem.Probe(energy=optics.energy_keV * 1e3, semiangle_cutoff=optics.convergence_mrad,
                        Cs=optics.Cs_A, defocus=optics.defocus_A)
    detector = abtem.AnnularDetector(inner=optics.detector_inner_mrad,
                                     outer=optics.detector_outer_mrad)
    done = 0
    for t in range(angles.size):
        u, v, w = u_all[t], v_all[t], w_all[t]
        ext_x = max(half_fov[0], np.abs(u).max() if u.size else 0.0) + margin
        ext_y = max(half_fov[1], np.abs(v).max() if v.size else 0.0) + margin
        cx, cy = ext_x, ext_y
        depth = (w.max() - w.min() if w.size else 0.0) + 4.0
        cell = (2 * ext_x, 2 * ext_y, depth)
        xyz = np.stack([u + cx, v + cy, (w - (w.min() if w.size else 0.0)) + 2.0], axis=1)
        atoms = ase.Atoms(numbers=numbers, positions=xyz, cell=cell, pbc=False)
        # FFT-friendly grid at (at most) the requested sampling: a size with a large prime
        # factor (e.g. 615 = 3 * 5 * 41) makes every FFT of the multislice many times slower.
        gpts = tuple(_fast_fft_len(math.ceil(c / sampling)) for c in cell[:2])
        potential = abtem.Potential(atoms, gpts=gpts,
                                    slice_thickness=settings.slice_thickness_A,
                                    projection="infinite",
                                    parametrization=settings.parametrization)
        potential = potential.build(lazy=False)
        x0, y0 = cx - half_fov[0], cy - half_fov[1]
        for b in range(n_blocks):
            r0, r1 = b * rows, min(ny, (b + 1) * rows)
            scan = abtem.GridScan(start=(x0, y0 + r0 * px), end=(x0 + nx * px, y0 + r1 * px),
                                  gpts=(nx, r1 - r0), endpoint=False)
            # FFTW_ESTIMATE: each block plans new FFTs, and measuring plans costs seconds
            with abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
                meas = probe.scan(potential, scan=scan, detectors=detector, lazy=True)
                arr = np.asarray(meas.compute(progress_bar=False).array)  # (nx, rows): [x, y]
            out[t, r0:r1, :] = arr.reshape(nx, r1 - r0).T
            done += 1
            yield Progress(done / total,
                           f"abTEM frame {t + 1}/{angles.size} ({angles[t]:+.1f} deg), "
                           f"rows {r1}/{ny}", preview=out[t])
    return out


def _fast_fft_len(n: int) -> int:
    """Smallest ``m >= n`` whose prime factors are 2, 3 and 5."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1
