"""HAADF-STEM images of atomistic clusters: a fast incoherent model and abTEM multislice.

Geometry
--------
Both models follow :mod:`napari_tiltgen.physics.geometry` exactly. The cluster is turned about the
y axis: at tilt ``theta`` an atom at ``(x, y, z)`` (Å, relative to the rotation centre) lands on
the detector at ``u = x cos(theta) + z sin(theta)``, ``v = y``, and the beam runs along
``w = -x sin(theta) + z cos(theta)``. Frame ``(i, j)`` of a ``(ny, nx)`` image is the probe
position ``v = (i - (ny-1)/2) * pixel_size_A``, ``u = (j - (nx-1)/2) * pixel_size_A``: the images
are *point-sampled* at the pixel centres, as a STEM scan is.

Fast incoherent model
---------------------
For incoherent HAADF imaging the image is the object function convolved with the probe
intensity. Each atom is a Gaussian of width ``atom_sigma_A`` weighted by its HAADF cross-section
``sigma(Z) ~ Z**z_exponent`` (Å², calibrated against abTEM, see :func:`haadf_cross_section_A2`),
and the probe intensity ``|psi(r)|**2`` is computed for the same optics as abTEM's probe
(aperture, spherical aberration, defocus). The convolution is done exactly in Fourier space:
the structure factor ``S(k) = sum_a w_a exp(-2 pi i k . r_a)`` is one matrix product per batch of
tilts (the tilt axis is y, so the ``v`` phase factors are shared by all tilts), multiplied by the
optical transfer function of the probe intensity and the atom's Gaussian, and inverse-FFT-ed on a
grid fine enough for the probe band limit ``2 alpha / lambda``. Pixel values are therefore exact
point samples of ``sum_a w_a (P * G)(r - r_a)``, in units of the fraction of the incident beam
that reaches the detector (the same units as abTEM's :class:`~abtem.AnnularDetector`).

abTEM multislice ("accurate" mode)
----------------------------------
:func:`abtem_haadf_iter` runs abTEM frame by frame (and row-block by row-block inside a frame),
yielding :class:`~napari_tiltgen.core.progress.Progress` so that the GUI can show progress and cancel.
It is slow on a CPU: see ``docs/simulation.md`` for measured timings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress

__all__ = ["ATOM_SIGMA_A", "PRESETS", "Optics", "add_dose_noise", "electron_wavelength_A", "fast_haadf", "fast_haadf_iter", "haadf_cross_section_A2", "probe_fwhm_A", "probe_intensity", "probe_radius_A", "probe_wave_fourier", "tilt_positions", "with_optics"]


def electron_wavelength_A(energy_keV: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in keV."""
    m0c2 = 510.99895  # keV
    e = float(energy_keV)
    return 12.264259 / math.sqrt(e * 1e3 * (1.0 + e / (2.0 * m0c2)))  # h/sqrt(2 m e V (1+..))


@dataclass(frozen=True)
class Optics:
    """STEM probe and detector settings.

    Parameters
    ----------
    energy_keV
        Accelerating voltage, keV.
    convergence_mrad
        Probe convergence semi-angle (aperture), mrad.
    Cs_A
        Spherical aberration C3, Å (100 µm = 1e6 Å).
    defocus_A
        Defocus, Å (positive = underfocus, abTEM's ``defocus``; ``C10 = -defocus``).
    detector_inner_mrad, detector_outer_mrad
        Annular detector collection angles, mrad.
    name
        Preset name, for provenance.
    """

    energy_keV: float = 200.0
    convergence_mrad: float = 35.0
    Cs_A: float = 0.0
    defocus_A: float = 0.0
    detector_inner_mrad: float = 50.0
    detector_outer_mrad: float = 200.0
    name: str = "custom"

    def __post_init__(self) -> None:
        if not self.energy_keV > 0:
            raise TiltgenError(f"the beam energy must be positive (keV); got {self.energy_keV}.")
        if not 0 < self.convergence_mrad < 200:
            raise TiltgenError(
                f"convergence semi-angle must lie in (0, 200) mrad; got {self.convergence_mrad}.")
        if not 0 <= self.detector_inner_mrad < self.detector_outer_mrad:
            raise TiltgenError(
                f"detector angles must satisfy 0 <= inner < outer (mrad); got "
                f"{self.detector_inner_mrad} to {self.detector_outer_mrad}.")

    @property
    def wavelength_A(self) -> float:
        """Electron wavelength, Å."""
        return electron_wavelength_A(self.energy_keV)

    @property
    def intensity_cutoff_per_A(self) -> float:
        """Band limit of the probe intensity, ``2 alpha / lambda`` in 1/Å."""
        return 2e-3 * self.convergence_mrad / self.wavelength_A

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_any(cls, optics: Optics | str | dict[str, Any]) -> Optics:
        """An :class:`Optics` from itself, a preset name or a dict of fields."""
        if isinstance(optics, Optics):
            return optics
        if isinstance(optics, str):
            key = optics.strip().lower().replace("-", "_").replace(" ", "_")
            if key not in PRESETS:
                raise TiltgenError(f"unknown optics preset {optics!r}; choose one of "
                                   f"{', '.join(PRESETS)}.")
            return PRESETS[key]
        if isinstance(optics, dict):
            return cls(**optics)
        raise TiltgenError(f"optics must be a preset name, a dict or Optics; got {type(optics)}.")


PRESETS: dict[str, Optics] = {
    "non_aberrated": Optics(convergence_mrad=35.0, Cs_A=0.0, name="non_aberrated"),
    "aberrated": Optics(convergence_mrad=25.0, Cs_A=1.0e6, name="aberrated"),
}


def probe_wave_fourier(optics: Optics, kx: np.ndarray, ky: np.ndarray,
                       angular_step_mrad: float | None = None) -> np.ndarray:
    """Probe wave function in Fourier space, ``A(k) exp(-i chi(k))`` on the grid ``(ky, kx)``.

    ``chi = 2 pi / lambda (C10 alpha^2 / 2 + C30 alpha^4 / 4)`` with ``C10 = -defocus`` (abTEM's
    convention). The aperture edge is tapered over one angular grid step, as abTEM's soft
    aperture. Frequencies in 1/Å.
    """
    lam = optics.wavelength_A
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    alpha = lam * np.sqrt(k2)  # rad
    a_c = optics.convergence_mrad * 1e-3
    if angular_step_mrad is None:
        aperture = (alpha <= a_c).astype(np.float64)
    else:
        step = max(angular_step_mrad * 1e-3, 1e-9)
        aperture = np.clip((a_c - alpha) / step + 0.5, 0.0, 1.0)
    chi = 2 * np.pi / lam * (0.5 * (-optics.defocus_A) * alpha**2 + 0.25 * optics.Cs_A * alpha**4)
    return aperture * np.exp(-1j * chi)


def probe_intensity(optics: Optics | str, pixel_size_A: float, shape: tuple[int, int]
                    ) -> np.ndarray:
    """Probe intensity ``|psi(r)|^2`` on a periodic grid, centred, normalised to ``sum * px^2 = 1``.

    Parameters
    ----------
    optics
        Optics or preset name.
    pixel_size_A
        Grid spacing in Å; should be below ``lambda / (4 alpha)`` to sample the intensity.
    shape
        ``(ny, nx)`` grid points.

    Returns
    -------
    np.ndarray
        ``(ny, nx)`` float64 in 1/Å², peak at pixel ``(ny // 2, nx // 2)``.
    """
    optics = Optics.from_any(optics)
    ny, nx = shape
    ky = np.fft.fftfreq(ny, pixel_size_A)
    kx = np.fft.fftfreq(nx, pixel_size_A)
    step = optics.wavelength_A * 1e3 / (max(ny, nx) * pixel_size_A)
    psi = np.fft.ifft2(probe_wave_fourier(optics, kx, ky, step))
    inten = np.abs(np.fft.fftshift(psi)) ** 2
    return inten / (inten.sum() * pixel_size_A**2)


def probe_radius_A(optics: Optics | str, energy_fraction: float = 0.98) -> float:
    """Radius in Å of the disc holding ``energy_fraction`` of the probe intensity."""
    return _probe_radius_A(Optics.from_any(optics), float(energy_fraction))


@functools.lru_cache(maxsize=32)
def _probe_radius_A(optics: Optics, energy_fraction: float) -> float:
    h = optics.wavelength_A / (4e-3 * optics.convergence_mrad)
    extent = 4 * optics.Cs_A * (optics.convergence_mrad * 1e-3) ** 3 + 30 * h + 20.0
    n = int(min(2048, max(256, 2 ** math.ceil(math.log2(extent / h)))))
    p = probe_intensity(optics, h, (n, n))
    c = (np.arange(n) - n // 2) * h
    r = np.sqrt(c[:, None] ** 2 + c[None, :] ** 2).ravel()
    order = np.argsort(r)
    cum = np.cumsum(p.ravel()[order]) * h * h
    return float(r[order][min(np.searchsorted(cum, energy_fraction), r.size - 1)])


def probe_fwhm_A(optics: Optics | str) -> float:
    """Full width at half maximum of the probe intensity, Å (radial average)."""
    return _probe_fwhm_A(Optics.from_any(optics))


@functools.lru_cache(maxsize=32)
def _probe_fwhm_A(optics: Optics) -> float:
    h = optics.wavelength_A / (8e-3 * optics.convergence_mrad)
    n = 512
    p = probe_intensity(optics, h, (n, n))
    prof = p[n // 2, n // 2:]
    prof2 = p[n // 2:, n // 2]
    prof = 0.5 * (prof + prof2)
    below = np.flatnonzero(prof < 0.5 * prof[0])
    if below.size == 0:
        return float(n * h)
    i = below[0]
    # linear interpolation between i-1 and i
    f = (prof[i - 1] - 0.5 * prof[0]) / max(prof[i - 1] - prof[i], 1e-30)
    return float(2 * h * (i - 1 + f))


_SIGMA_AU_REF_A2 = 0.0282


_SCREEN_MRAD = 30.0


ATOM_SIGMA_A = 0.075


def haadf_cross_section_A2(atomic_numbers: Any, optics: Optics | str = "non_aberrated",
                           z_exponent: float = 1.7) -> np.ndarray:
    """Approximate HAADF cross-section of atoms, Å².

    ``sigma = sigma_Au * (Z / 79)**z_exponent * R(optics) / R(200 keV, 50-200 mrad)`` with the
    Au value calibrated against abTEM (0.0282 Å² at 200 keV, 50-200 mrad) and ``R`` a screened
    Rutherford factor ``lambda^2 gamma^2 [1/(t1^2 + t0^2) - 1/(t2^2 + t0^2)]`` (``t0`` = 30 mrad)
    for other energies and detector angles. abTEM itself gives an exponent of about 1.58 for this
    detector (no thermal diffuse scattering); 1.7 is the usual experimental value.
    """
    optics = Optics.from_any(optics)
    z = np.asarray(atomic_numbers, dtype=np.float64)

    def factor(energy_keV: float, t1: float, t2: float) -> float:
        lam = electron_wavelength_A(energy_keV)
        gamma = 1.0 + energy_keV / 510.99895
        s2 = _SCREEN_MRAD**2
        return lam**2 * gamma**2 * (1.0 / (t1**2 + s2) - 1.0 / (t2**2 + s2))

    scale = factor(optics.energy_keV, optics.detector_inner_mrad, optics.detector_outer_mrad) / \
        factor(200.0, 50.0, 200.0)
    return _SIGMA_AU_REF_A2 * (z / 79.0) ** float(z_exponent) * scale


def tilt_positions(positions: np.ndarray, theta_deg: Any) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Detector coordinates of atoms at the given tilts (Å), in the package's geometry.

    Parameters
    ----------
    positions
        ``(N, 3)`` atom positions ``(x, y, z)`` in Å relative to the rotation centre.
    theta_deg
        Tilt angle(s) in degrees, scalar or ``(T,)``.

    Returns
    -------
    u, v, w
        ``u = x cos + z sin`` (detector x), ``v = y`` (along the tilt axis) and the beam
        coordinate ``w = -x sin + z cos``; each ``(T, N)`` (or ``(N,)`` for a scalar angle).
    """
    pos = np.asarray(positions, dtype=np.float64)
    t = np.deg2rad(np.asarray(theta_deg, dtype=np.float64))
    c, s = np.cos(t)[..., None], np.sin(t)[..., None]
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    u = x * c + z * s
    w = -x * s + z * c
    v = np.broadcast_to(y, u.shape).copy()
    return u, v, w


def fast_haadf(positions: np.ndarray, weights: np.ndarray, tilt_angles: Sequence[float],
               shape: tuple[int, int], pixel_size_A: float,
               optics: Optics | str = "non_aberrated", **kwargs: Any) -> np.ndarray:
    """Fast incoherent HAADF tilt series; see :func:`fast_haadf_iter` for the parameters.

    Returns
    -------
    np.ndarray
        ``(n_tilts, ny, nx)`` float32: fraction of the incident beam scattered onto the detector.
    """
    from napari_tiltgen.core.progress import run

    return run(fast_haadf_iter(positions, weights, tilt_angles, shape, pixel_size_A, optics,
                               **kwargs), show=False)


def fast_haadf_iter(
    positions: np.ndarray,
    weights: np.ndarray,
    tilt_angles: Sequence[float],
    shape: tuple[int, int],
    pixel_size_A: float,
    optics: Optics | str = "non_aberrated",
    *,
    atom_sigma_A: float = ATOM_SIGMA_A,
    psf: str = "probe",
    gaussian_sigma_A: float | None = None,
    pad_A: float | None = None,
    device: str = "cpu",
    max_elements: int = 20_000_000,
    max_batch: int = 64,
) -> Generator[Progress, None, np.ndarray]:
    """Fast incoherent HAADF tilt series: Z-weighted atoms convolved with the probe intensity.

    A progress generator (one event per batch of tilts); :func:`fast_haadf` runs it.

    Parameters
    ----------
    positions
        ``(N, 3)`` atom positions ``(x, y, z)`` in Å relative to the tilt-rotation centre, or
        ``(n_tilts, N, 3)`` for a different set of atoms in each frame (pad with zero weights).
    weights
        ``(N,)`` (or ``(n_tilts, N)``) per-atom weights (HAADF cross-sections in Å², see
        :func:`haadf_cross_section_A2`).
    tilt_angles
        Tilt angles, degrees (rotation about y, :mod:`napari_tiltgen.physics.geometry`).
    shape
        Frame shape ``(ny, nx)`` in pixels; y is the tilt axis.
    pixel_size_A
        Scan step / pixel size, Å.
    optics
        Probe settings or preset name (``"non_aberrated"``, ``"aberrated"``).
    atom_sigma_A
        Gaussian width of each atom's HAADF object function, Å.
    psf
        ``"probe"`` (probe intensity of ``optics``) or ``"gaussian"`` (a Gaussian of
        ``gaussian_sigma_A``, used to check the ground truth).
    gaussian_sigma_A
        Width for ``psf="gaussian"``, Å.
    pad_A
        Zero margin around the field of view for the periodic convolution, Å (default: the
        probe's 99 % energy radius, at most twice the field of view).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (torch), or ``"numpy"`` (no torch import: what the
        sample data uses, since importing torch takes longer than a small series).
    max_elements
        Memory bound: tilts are processed in batches of at most this many complex numbers.
    max_batch
        At most this many tilts per batch (one progress event each).

    Returns
    -------
    np.ndarray
        ``(n_tilts, ny, nx)`` float32: fraction of the incident beam scattered onto the detector.
    """
    optics = Optics.from_any(optics)
    ny, nx = (int(shape[0]), int(shape[1]))
    px = float(pixel_size_A)
    angles = np.asarray(tilt_angles, dtype=np.float64).reshape(-1)
    pos3 = np.asarray(positions, dtype=np.float64)
    pos = pos3.reshape(-1, 3)
    w = np.asarray(weights, dtype=np.float64)
    out = np.zeros((angles.size, ny, nx), dtype=np.float32)
    if pos.shape[0] == 0 or angles.size == 0:
        return out
    if pos3.ndim == 3:  # one set of atoms per frame (dynamic phantoms)
        if pos3.shape[0] != angles.size or w.shape != pos3.shape[:2]:
            raise ValueError(f"per-frame positions {pos3.shape} and weights {w.shape} do not "
                             f"match {angles.size} tilts")
    else:
        w = w.reshape(-1)
        if w.shape[0] != pos.shape[0]:
            raise ValueError(f"{w.shape[0]} weights for {pos.shape[0]} atoms")

    if psf not in ("probe", "gaussian"):
        raise TiltgenError(f"psf must be 'probe' or 'gaussian'; got {psf!r}.")
    if psf == "gaussian" and (not gaussian_sigma_A or gaussian_sigma_A <= 0):
        raise TiltgenError("psf='gaussian' needs a positive gaussian_sigma_A (Å).")
    plan = _fast_plan(optics, ny, nx, px, float(atom_sigma_A), psf,
                      None if gaussian_sigma_A is None else float(gaussian_sigma_A),
                      None if pad_A is None else float(pad_A))
    os_, my, mx, iy, ix, ky, kx, transfer = plan

    # Coordinates relative to pixel (0, 0), where the periodic grid's origin sits.
    per_frame = pos3.ndim == 3
    if per_frame:
        c, sn = np.cos(np.deg2rad(angles))[:, None], np.sin(np.deg2rad(angles))[:, None]
        u = pos3[..., 0] * c + pos3[..., 2] * sn
        v = pos3[..., 1]
    else:
        u, v, _ = tilt_positions(pos, angles)
        v = pos[None, :, 1]
    u = u + 0.5 * (nx - 1) * px
    v = v + 0.5 * (ny - 1) * px
    n_atoms = u.shape[-1]
    per_tilt = max(n_atoms * max(kx.size, ky.size), ky.size * kx.size, my * (mx // 2 + 1))
    batch = int(max(1, min(angles.size, max_batch, max_elements // max(per_tilt, 1))))

    if device == "numpy":
        def v_phases_np(vv: np.ndarray, ww: np.ndarray) -> np.ndarray:  # (B, Ky, N), weighted
            ph = np.exp(-2j * np.pi * ky[None, :, None] * vv[:, None, :]).astype(np.complex64)
            return ph * ww[:, None, :].astype(np.float32)

        ev_np = None if per_frame else v_phases_np(v, w[None, :])
        tr = transfer.astype(np.complex64)
        for b0 in range(0, angles.size, batch):
            b1 = min(angles.size, b0 + batch)
            ev = v_phases_np(v[b0:b1], w[b0:b1]) if per_frame else ev_np
            eu = np.exp(-2j * np.pi * u[b0:b1, :, None] * kx[None, None, :]).astype(np.complex64)
            spec = np.zeros((b1 - b0, my, mx // 2 + 1), dtype=np.complex64)
            spec[:, iy[:, None], ix[None, :]] = np.matmul(ev, eu) * tr
            img = np.fft.irfft2(spec, s=(my, mx))
            out[b0:b1] = img[:, : ny * os_: os_, : nx * os_: os_]
            yield Progress(b1 / angles.size, f"fast HAADF: {b1}/{angles.size} tilts")
        return out

    import torch

    dev = resolve_device(device)
    cdtype = torch.complex64
    with torch.no_grad():
        kyt = torch.as_tensor(ky, dtype=torch.float32, device=dev)
        kxt = torch.as_tensor(kx, dtype=torch.float32, device=dev)
        iyt = torch.as_tensor(iy, device=dev)
        ixt = torch.as_tensor(ix, device=dev)
        tt = torch.as_tensor(transfer, dtype=cdtype, device=dev)

        def v_phases(vv: np.ndarray, ww: np.ndarray) -> Any:  # (B, Ky, N), weighted
            vt = torch.as_tensor(vv, dtype=torch.float32, device=dev)
            wt = torch.as_tensor(ww, dtype=torch.float32, device=dev)
            return torch.polar(wt[:, None, :].expand(-1, ky.size, -1).contiguous(),
                               -2 * np.pi * kyt[None, :, None] * vt[:, None, :]).to(cdtype)

        if not per_frame:
            ev_shared = v_phases(v, w[None, :])  # the tilt axis is y: shared by all tilts
        for b0 in range(0, angles.size, batch):
            b1 = min(angles.size, b0 + batch)
            ev = v_phases(v[b0:b1], w[b0:b1]) if per_frame else ev_shared
            ut = torch.as_tensor(u[b0:b1], dtype=torch.float32, device=dev)  # (B, N)
            eu = torch.polar(torch.ones_like(ut[..., None]).expand(-1, -1, kx.size),
                             -2 * np.pi * ut[..., None] * kxt[None, None, :]).to(cdtype)
            s = torch.matmul(ev, eu)  # (B, Ky, Kx)
            spec = torch.zeros((b1 - b0, my, mx // 2 + 1), dtype=cdtype, device=dev)
            spec[:, iyt[:, None], ixt[None, :]] = s * tt
            img = torch.fft.irfft2(spec, s=(my, mx))
            img = img[:, : ny * os_: os_, : nx * os_: os_]
            out[b0:b1] = img.float().cpu().numpy()
            yield Progress(b1 / angles.size, f"fast HAADF: {b1}/{angles.size} tilts")
    return out


@functools.lru_cache(maxsize=8)
def _fast_plan(optics: Optics, ny: int, nx: int, px: float, atom_sigma_A: float, psf: str,
               gaussian_sigma_A: float | None, pad_A: float | None) -> tuple:
    """Fine grid, kept frequencies and transfer function of the fast model (cached)."""
    # Band limit of the image and the fine grid that samples it.
    if psf == "probe":
        kc = optics.intensity_cutoff_per_A
    else:
        kc = 4.0 / (2 * np.pi * gaussian_sigma_A)  # exp(-8) of the Gaussian transfer
    if atom_sigma_A > 0:
        kc = min(kc, 4.5 / (2 * np.pi * atom_sigma_A))
    os_ = max(1, math.ceil(2.0 * kc * px - 1e-9))
    h = px / os_
    if pad_A is None:
        pad_A = probe_radius_A(optics, 0.99) if psf == "probe" else 4.0 * float(gaussian_sigma_A)
        pad_A = min(pad_A, 2.0 * px * max(ny, nx))
    pad = int(math.ceil(max(pad_A, 4 * atom_sigma_A, 2 * px) / px))
    my, mx = (ny + 2 * pad) * os_, (nx + 2 * pad) * os_
    ly, lx = my * h, mx * h

    # Frequencies kept: |k| <= kc on the fine periodic grid (rfft layout along x).
    ky_all = np.fft.fftfreq(my, h)
    kx_all = np.fft.rfftfreq(mx, h)
    iy = np.flatnonzero(np.abs(ky_all) <= kc)
    ix = np.flatnonzero(kx_all <= kc)
    ky, kx = ky_all[iy], kx_all[ix]

    # Transfer function of the PSF (and the atom Gaussian) at the kept frequencies.
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    if psf == "probe":
        step = optics.wavelength_A * 1e3 / max(ly, lx)
        psi = np.fft.ifft2(probe_wave_fourier(optics, np.fft.fftfreq(mx, h),
                                              np.fft.fftfreq(my, h), step))
        inten = np.abs(psi) ** 2
        otf = np.fft.fft2(inten / inten.sum())  # OTF(0) = 1
        transfer = otf[np.ix_(iy, ix)]
    else:
        transfer = np.exp(-2 * np.pi**2 * gaussian_sigma_A**2 * k2).astype(np.complex128)
    if atom_sigma_A > 0:
        transfer = transfer * np.exp(-2 * np.pi**2 * atom_sigma_A**2 * k2)
    transfer = transfer / (h * h)  # irfft2 divides by my*mx; image = sum(T S e^{ikr}) / (ly lx)
    return os_, my, mx, iy, ix, ky, kx, transfer


def add_dose_noise(images: np.ndarray, dose_e_per_A2: float, pixel_size_A: float,
                   rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Poisson (shot) noise for an electron dose per frame.

    Each pixel receives ``dose * pixel_size_A**2`` electrons; a fraction ``I`` (the image value)
    reaches the detector, so the detected count is ``Poisson(I * dose * px^2)``. The result is
    scaled back to fractions (``count / (dose * px^2)``) so noisy and clean images share units.

    Parameters
    ----------
    images
        Noise-free images, fraction of the beam (>= 0).
    dose_e_per_A2
        Dose per frame, e-/Å².
    pixel_size_A
        Pixel size, Å.
    rng
        Generator or seed.
    """
    if not np.isfinite(dose_e_per_A2) or dose_e_per_A2 <= 0:
        raise TiltgenError(f"the dose must be a positive number of e-/Å²; got {dose_e_per_A2}.")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_e = float(dose_e_per_A2) * float(pixel_size_A) ** 2
    lam = np.clip(np.asarray(images, dtype=np.float64), 0.0, None) * n_e
    return (rng.poisson(lam) / n_e).astype(np.float32)


def with_optics(optics: Optics | str, **changes: Any) -> Optics:
    """A copy of ``optics`` (or a preset) with some fields changed."""
    return replace(Optics.from_any(optics), **changes)
