"""Metrics against known answers: noise levels, FSC of known spectra, spheres of known radii."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.evaluate.fsc import fsc, fsc_half_series, half_bit_threshold, soft_mask
from napari_tiltgen.evaluate.metrics import compare_volumes, mse, nrmse, psnr, ssim, ssim_per_slice
from napari_tiltgen.evaluate.surfaces import (
    chamfer_distance,
    otsu_segment,
    surface_distances,
    surface_points,
)
from napari_tiltgen.io.model import Volume
from napari_tiltgen.simulate.phantoms import sphere_phantom, voxelize_spheres


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _ball(size: int, radius: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    return voxelize_spheres(np.array([[*centre, radius, 1.0]]), (size, size, size), supersample=4)


# --------------------------------------------------------------------------- pixel metrics
def test_mse_psnr_nrmse_known_noise_level():
    rng = _rng(1)
    ref = rng.uniform(0.0, 1.0, size=(128, 128))
    ref[0, 0], ref[0, 1] = 0.0, 1.0  # data range exactly 1
    sigma = 0.05
    noisy = ref + rng.normal(0.0, sigma, size=ref.shape)
    assert mse(ref, noisy) == pytest.approx(sigma**2, rel=0.03)
    # PSNR = 20 log10(range / sigma) = 26.02 dB
    assert psnr(ref, noisy) == pytest.approx(20 * math.log10(1 / sigma), abs=0.15)
    # an explicit data range of 2 adds 20 log10(2) = 6.02 dB
    gain = psnr(ref, noisy, data_range=2.0) - psnr(ref, noisy)
    assert gain == pytest.approx(6.0206, abs=1e-6)
    assert psnr(ref, ref) == math.inf
    # NRMSE = ||x - ref|| / ||ref||: exactly 0.1 for a 10 % gain error
    assert nrmse(ref, 1.1 * ref) == pytest.approx(0.1, rel=1e-12)
    assert nrmse(ref, np.zeros_like(ref)) == pytest.approx(1.0)


def test_metrics_accept_torch_and_volume():
    rng = _rng(2)
    ref = rng.normal(size=(12, 12, 12)).astype(np.float32)
    test = ref + 0.1
    assert mse(torch.from_numpy(ref), torch.from_numpy(test)) == pytest.approx(0.01, rel=1e-5)
    assert mse(Volume(ref), Volume(test)) == pytest.approx(0.01, rel=1e-5)


def test_ssim_2d_3d_known_values():
    rng = _rng(3)
    img = _ball(32, 9.0)[16]
    vol = _ball(32, 9.0)
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(vol, vol) == pytest.approx(1.0)
    # a texture and its negative (same local means): structure term -1, so SSIM close to -1
    tex = rng.uniform(0, 1, (64, 64))
    assert ssim(tex, 1.0 - tex) == pytest.approx(-1.0, abs=0.05)
    # agrees with scikit-image called with the documented settings
    from skimage.metrics import structural_similarity

    noisy = vol + rng.normal(0, 0.1, vol.shape)
    want = structural_similarity(vol.astype(float), noisy, data_range=float(vol.max() - vol.min()),
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(vol, noisy) == pytest.approx(want, rel=1e-9)
    # more noise, lower SSIM
    assert ssim(vol, vol + rng.normal(0, 0.3, vol.shape)) < ssim(vol, noisy) < 1.0
    # uniform 7-px window variant and per-slice variant
    assert 0.0 < ssim(vol, noisy, gaussian_weights=False) < 1.0
    per = ssim_per_slice(vol, noisy, axis=0)
    assert per.shape == (32,) and np.all(per <= 1.0)
    assert ssim_per_slice(vol, vol).mean() == pytest.approx(1.0)


def test_user_errors_raise_tiltgen_error():
    a = np.zeros((8, 8, 8))
    with pytest.raises(TiltgenError, match="shape"):
        mse(a, np.zeros((8, 8, 9)))
    b = a.copy()
    b[1, 2, 3] = np.nan
    with pytest.raises(TiltgenError, match="NaN"):
        psnr(np.ones_like(a), b)
    with pytest.raises(TiltgenError, match="constant"):
        psnr(a, a + 1)  # constant reference, no data range given
    with pytest.raises(TiltgenError, match="window"):
        ssim(np.random.rand(8, 8), np.random.rand(8, 8))
    with pytest.raises(TiltgenError, match="constant"):
        otsu_segment(a)
    with pytest.raises(TiltgenError, match="boundary"):
        surface_points(np.random.rand(8, 8, 8), threshold=5.0)
    with pytest.raises(TiltgenError):
        chamfer_distance(np.zeros((0, 3)), np.zeros((4, 3)))


# --------------------------------------------------------------------------- FSC
def test_half_bit_curve_limits():
    assert half_bit_threshold(1) == pytest.approx(1.0, abs=1e-4)
    assert half_bit_threshold(1e12) == pytest.approx(0.2071 / 1.2071, abs=1e-4)
    t = half_bit_threshold(np.array([10, 100, 1000, 10000]))
    assert np.all(np.diff(t) < 0)


def test_fsc_identical_and_independent_noise():
    rng = _rng(4)
    v = rng.normal(size=(32, 32, 32))
    res = fsc(v, v)
    assert np.allclose(res.fsc, 1.0)
    assert res.frequency[-1] == pytest.approx(0.5) and res.frequency_unit == "1/px"
    assert res.resolution_0143 == pytest.approx(2.0)  # never crosses: Nyquist, 2 px
    # shell counts add up to every Fourier voxel inside the Nyquist sphere
    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")))
    assert res.n_voxels.sum() == pytest.approx(np.count_nonzero(np.rint(k * 32) <= 16))

    noise = fsc(v, rng.normal(size=v.shape))
    c = noise.fsc[2:]
    assert abs(c.mean()) < 0.03
    # the spread of the FSC of independent noise is 1/sqrt(n_voxels / 2) per shell
    z = c * np.sqrt(noise.n_voxels[2:] / 2)
    assert 0.6 < z.std() < 1.5
    assert noise.resolution_0143 > 10.0  # no resolution at all (first shells)


def _filtered_pair(size: int, s: float, snr0: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two volumes = Gaussian-low-passed signal + independent white noise (known SNR(k))."""
    rng = _rng(seed)
    sig = rng.normal(size=(size,) * 3)
    k2 = sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(size)] * 3, indexing="ij"))
    h = np.exp(-k2 / (2 * s * s))
    sig = np.fft.ifftn(np.fft.fftn(sig) * h).real * np.sqrt(snr0)
    return sig + rng.normal(size=sig.shape), sig + rng.normal(size=sig.shape)


def test_fsc_resolution_of_known_lowpass_pair():
    # SNR(k) = snr0 exp(-k^2/s^2), so FSC(k) = SNR / (1 + SNR) and the crossing of FSC = T is at
    # k = s sqrt(ln(snr0 (1 - T) / T)).
    s, snr0 = 0.1, 100.0
    a, b = _filtered_pair(64, s, snr0, seed=5)
    res = fsc(a, b, voxel_size_A=2.0)
    k0143 = s * math.sqrt(math.log(snr0 * (1 - 0.143) / 0.143))  # 0.253 / px
    k05 = s * math.sqrt(math.log(snr0))  # 0.215 / px
    assert res.frequency_unit == "1/Å" and res.resolution_unit == "Å"
    assert res.resolution_0143 == pytest.approx(2.0 / k0143, rel=0.03)  # 7.9 Å
    assert res.resolution(0.5) == pytest.approx(2.0 / k05, rel=0.03)  # 9.3 Å
    # half-bit threshold (0.17..0.2 here) lies above 0.143: slightly coarser resolution
    assert res.resolution_0143 < res.resolution_half_bit < res.resolution(0.5)
    # and the FSC curve itself follows the model within the shell noise
    kpx = res.frequency * 2.0
    model = snr0 * np.exp(-(kpx**2) / s**2)
    model = model / (1 + model)
    sel = slice(3, 25)
    assert np.max(np.abs(res.fsc[sel] - model[sel])) < 0.06


def test_fsc_of_ideal_lowpass_copy():
    rng = _rng(6)
    v = rng.normal(size=(48, 48, 48))
    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(48)] * 3, indexing="ij")))
    cut = 12 / 48  # 0.25 / px -> 4 px
    lp = np.fft.ifftn(np.fft.fftn(v) * (k < cut - 0.5 / 48)).real
    res = fsc(v, lp)
    assert res.resolution_0143 == pytest.approx(4.0, abs=0.2)
    assert np.all(res.fsc[1:11] > 0.99)  # beyond the cut only round-off is left: ratio undefined
    # 2-D input is a Fourier ring correlation
    frc = fsc(v[0], v[0] + 0.0)
    assert np.allclose(frc.fsc, 1.0)
    assert fsc(Volume(v.astype(np.float32), voxel_size_A=3.0), v).voxel_size_A == 3.0


def test_fsc_half_series_even_odd_split():
    from skimage.transform import iradon

    ts, _ = sphere_phantom(size=32, tilt_range=(-60, 60), tilt_step=3.0, n_spheres=6, seed=2)
    noisy, _ = sphere_phantom(size=32, tilt_range=(-60, 60), tilt_step=3.0, n_spheres=6, seed=2,
                              dose_e_per_A2=5.0)
    seen: list[np.ndarray] = []

    def fbp(t):  # filtered back-projection per y slice, skimage's own geometry
        seen.append(t.tilt_angles.copy())
        vol = np.stack([iradon(t.data[:, i, :].T, theta=t.tilt_angles, filter_name="ramp",
                               circle=True) for i in range(t.shape[1])], axis=1)
        return Volume(vol, voxel_size_A=t.pixel_size_A)

    shuffled = ts.subset(_rng(7).permutation(ts.n_tilts))  # split must follow angle order
    res = fsc_half_series(shuffled, fbp)
    a = np.sort(ts.tilt_angles)
    assert np.array_equal(seen[0], a[0::2]) and np.array_equal(seen[1], a[1::2])
    assert res.voxel_size_A == 2.0 and res.frequency[-1] == pytest.approx(0.25)
    assert np.all(res.fsc[1:5] > 0.9)
    res_noisy = fsc_half_series(noisy, fbp)
    assert res_noisy.resolution_0143 > res.resolution_0143 + 1.0
    with pytest.raises(TiltgenError, match="at least 4"):
        fsc_half_series(ts.subset(slice(0, 3)), fbp)


# --------------------------------------------------------------------------- surfaces
def test_chamfer_of_point_sets():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 2.0]])
    # a->b: 2 and sqrt(5); b->a: 2
    assert chamfer_distance(a, b) == pytest.approx(0.5 * ((2 + math.sqrt(5)) / 2 + 2))
    assert chamfer_distance(a, a) == 0.0


@pytest.mark.parametrize("method, tol", [("marching_cubes", 0.1), ("voxels", 0.6)])
def test_surface_distances_of_concentric_spheres(method, tol):
    r1, r2 = 10.0, 12.5
    ref, test = _ball(40, r1), _ball(40, r2)
    d = surface_distances(ref, test, voxel_size_A=2.0, method=method)
    assert d["chamfer_px"] == pytest.approx(r2 - r1, abs=tol)
    assert d["rms_surface_px"] == pytest.approx(r2 - r1, abs=tol)
    assert d["hausdorff_px"] == pytest.approx(r2 - r1, abs=2 * tol + 0.3)
    assert d["chamfer_A"] == pytest.approx(2.0 * d["chamfer_px"])
    assert 0.4 < d["threshold_ref"] < 0.6
    if method == "marching_cubes":  # the iso-surface of a 10 px ball is 10 px from its centre
        r = np.linalg.norm(surface_points(ref, threshold=0.5) - 19.5, axis=1)
        assert r.mean() == pytest.approx(r1, abs=0.02) and r.std() < 0.1
        # Otsu's threshold of a ball is a little below 0.5: the surface sits ~0.07 px outside
        r = np.linalg.norm(surface_points(ref) - 19.5, axis=1)
        assert r.mean() == pytest.approx(r1, abs=0.1)


def test_surface_distances_of_shifted_sphere_and_scale_invariance():
    ref = _ball(40, 10.0)
    test = 7.0 * _ball(40, 10.0, centre=(0.0, 0.0, 3.0)) + 2.0  # other units, moved 3 px in x
    d = surface_distances(ref, test)
    # two spheres of radius R offset by s: from a point at polar angle phi on one to the other,
    # d = |sqrt(R^2 + s^2 - 2 R s cos(phi)) - R|; averaged over the sphere mean(d) = s / 2 and
    # rms(d) = s / sqrt(3) exactly; the largest distance is s.
    assert d["chamfer_px"] == pytest.approx(1.5, abs=0.1)
    assert d["rms_surface_px"] == pytest.approx(math.sqrt(3.0), abs=0.1)
    assert d["hausdorff_px"] == pytest.approx(3.0, abs=0.15)
    assert "chamfer_A" not in d
    with pytest.raises(TiltgenError, match="constant"):
        surface_distances(ref, np.zeros_like(ref))


def test_compare_volumes_keys_and_values():
    _, truth = sphere_phantom(size=32, n_spheres=5, seed=3)
    rng = _rng(8)
    test = Volume(truth.data + rng.normal(0, 0.05, truth.shape).astype(np.float32),
                  voxel_size_A=truth.voxel_size_A)
    out = compare_volumes(truth, test)
    for key in ("mse", "psnr_db", "nrmse", "ssim", "data_range", "fsc_resolution_0.5_px",
                "fsc_resolution_0.5_A", "fsc_resolution_0.143_px", "fsc_resolution_0.143_A",
                "chamfer_px", "chamfer_A", "rms_surface_px", "rms_surface_A", "hausdorff_px",
                "threshold_ref", "threshold_test", "voxel_size_A", "fsc_curve", "warnings"):
        assert key in out, key
    dr = float(truth.data.max() - truth.data.min())
    assert out["voxel_size_A"] == 2.0
    assert out["mse"] == pytest.approx(0.0025, rel=0.05)
    assert out["psnr_db"] == pytest.approx(20 * math.log10(dr / 0.05), abs=0.2)
    assert out["fsc_resolution_0.5_A"] == pytest.approx(2.0 * out["fsc_resolution_0.5_px"])
    assert out["chamfer_px"] < 0.3 and out["warnings"] == []
    # arbitrary units: fit_scale recovers the same numbers
    exact = compare_volumes(truth, 3.0 * truth.data - 1.0, fit_scale=True)
    assert exact["scale"] == pytest.approx(1 / 3, rel=1e-5)
    assert exact["offset"] == pytest.approx(1 / 3, rel=1e-4)
    assert exact["psnr_db"] > 80
    # the least-squares fit can only lower the MSE of the noisy copy
    scaled = compare_volumes(truth, 3.0 * test.data - 1.0, fit_scale=True)
    assert out["psnr_db"] <= scaled["psnr_db"] < out["psnr_db"] + 0.3
    # identical volumes
    same = compare_volumes(truth.data, truth.data)
    assert same["psnr_db"] == math.inf and same["chamfer_px"] == 0.0
    assert same["ssim"] == pytest.approx(1.0) and same["fsc_resolution_0.143_A"] is None
    # a test volume without an object: numbers still come, with a warning
    empty = compare_volumes(truth.data, np.zeros(truth.shape))
    assert math.isnan(empty["chamfer_px"]) and empty["warnings"]


# --------------------------------------------------------------------------- masked FSC
def _blobs(n: int, seed: int) -> np.ndarray:
    """Gaussian blobs (sigma 0.7-1.5 voxels) well inside an n^3 box: a compact object."""
    rng = _rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) - n / 2] * 3, indexing="ij")
    out = np.zeros((n, n, n))
    for _ in range(40):
        c = rng.uniform(-n / 5, n / 5, 3)
        s = rng.uniform(0.7, 1.5)
        out += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    return out


def test_soft_mask_covers_the_object_and_tapers_the_box():
    v = _blobs(40, seed=8)
    m = soft_mask(v)
    assert m.shape == v.shape and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    obj = v > 0.5 * v.max()
    assert m[obj].min() > 0.99  # the object is untouched
    assert m[0].max() == 0.0 and m[:, :, -1].max() == 0.0  # box faces at zero
    assert 0.02 < m.mean() < 0.6  # not the whole box
    assert np.array_equal(soft_mask(np.zeros((16, 16, 16)))[8, 8], soft_mask(
        np.ones((16, 16, 16)))[8, 8])  # no object: the box taper alone


def test_masked_fsc_of_band_limited_pair_is_monotone_and_cuts_at_the_band_edge():
    """A known band-limited copy (ideal low-pass at 12/48 per px = 4 px) with an offset and a
    little independent noise: the masked FSC stays high up to the cut, falls there, and does not
    climb back (the issue's curve fell to 0.35 and came back to 0.95)."""
    n, cut = 48, 12 / 48
    truth = _blobs(n, seed=9)
    k = np.sqrt(sum(f**2 for f in np.meshgrid(*[np.fft.fftfreq(n)] * 3, indexing="ij")))
    lp = np.fft.ifftn(np.fft.fftn(truth) * (k < cut)).real
    rng = _rng(10)
    a = lp + 0.5 + 0.01 * rng.normal(size=lp.shape)  # a background level both share
    b = truth + 0.5 + 0.01 * rng.normal(size=lp.shape)
    res = fsc(a, b, voxel_size_A=2.0, mask="auto")
    px = res.frequency * 2.0
    below = px < cut - 1.5 / n
    assert res.fsc[below].min() > 0.85  # inside the band
    # cutoff: 0.5 crossing within a shell and a half of the band edge (8 Å at 2 Å voxels)
    assert res.resolution(0.5) == pytest.approx(2.0 / cut, rel=0.08)
    # monotone enough: once below 0.5, it never comes back above 0.5
    first = int(np.flatnonzero(res.fsc < 0.5)[0])
    assert res.fsc[first:].max() < 0.5
    with pytest.raises(TiltgenError, match="mask"):
        fsc(a, b, mask=np.ones((4, 4, 4)))
    with pytest.raises(TiltgenError, match="unknown FSC mask"):
        fsc(a, b, mask="sphere")
