"""One physics: the batched projector, the per-tilt operator, the ray projector and the shift
policy, all on one :class:`Geometry`, checked against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_tiltgen.physics.geometry import Geometry, interleaved_order, ordered_subsets
from napari_tiltgen.physics.operators import joseph_matrix
from napari_tiltgen.physics.per_tilt import FrameProjector
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.physics.rays import RayProjector
from napari_tiltgen.physics.shifts import (
    linear_taps,
    rotate_frames,
    shift_frames,
    unshift_frames,
)
from napari_tiltgen.recon import backends

ANGLES = np.array([-60.0, -50.0, -20.0, 0.0, 35.0, 60.0, 75.0])
SHIFTS = np.array(
    [[0.5, -1.3], [0.0, 0.0], [1.2, 0.7], [-0.8, 2.1], [0.3, -0.4], [0.0, 1.0], [-0.5, 0.25]]
)


def _smooth_volume(n: int = 24) -> torch.Tensor:
    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.random((n, n, n)), 2.0)
    v[:4], v[-4:], v[:, :4], v[:, -4:], v[:, :, :4], v[:, :, -4:] = 0, 0, 0, 0, 0, 0
    return torch.from_numpy(v.astype(np.float32))


# ---------------------------------------------------------------------------- geometry
def test_geometry_checks_and_round_trips_through_the_projector() -> None:
    g = Geometry((10, 8, 12), ANGLES, SHIFTS, axis_offset_px=0.5, n_det=14)
    assert g.n_tilts == 7 and g.frame_shape == (8, 14)
    np.testing.assert_allclose(g.u_shifts_px, SHIFTS[:, 1] + 0.5)
    p = Projector.from_geometry(g)
    assert p.projection_shape == (7, 8, 14)
    back = p.geometry
    np.testing.assert_array_equal(back.shifts_px, g.shifts_px)
    assert (back.volume_shape, back.n_det, back.axis_offset_px) == ((10, 8, 12), 14, 0.5)
    sub = g.subset([0, 3])
    np.testing.assert_array_equal(sub.tilt_angles_deg, [-60.0, 0.0])
    assert Geometry((4, 4, 6), [0.0]).n_det == 6
    np.testing.assert_array_equal(Geometry((4, 4, 6), [0.0, 5.0]).shifts_px, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shifts_px"):
        Geometry((4, 4, 4), [0.0, 1.0], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="tilt axis"):
        Projector.from_geometry(Geometry((4, 4, 4), [0.0], tilt_axis_angle_deg=3.0))


def test_ordered_subsets_span_the_tilt_range() -> None:
    angles = np.array([10.0, -30.0, 0.0, 30.0, -10.0, 20.0, -20.0])
    subsets = ordered_subsets(angles, 3)
    assert [angles[s].tolist() for s in subsets] == [
        [-30.0, 0.0, 30.0],
        [-20.0, 10.0],
        [-10.0, 20.0],
    ]
    np.testing.assert_array_equal(interleaved_order(angles, 3), np.concatenate(subsets))


# ---------------------------------------------------------------------------- operators
def test_per_tilt_operator_is_the_batched_projector_block_for_block() -> None:
    """DIP's block-diagonal operator uses the batched projector's own matrix elements."""
    g = Geometry((9, 5, 11), ANGLES, SHIFTS, axis_offset_px=0.7, n_det=13)
    batched = Projector.from_geometry(g, use_symmetry=False)
    batched._ensure_matrices()
    stacked = batched._matrix.to_dense().numpy()  # (n_tilts * n_det, nz * nx)
    frames = FrameProjector(g)
    for k in range(g.n_tilts):
        np.testing.assert_array_equal(frames.block(k).toarray(), stacked[k * 13 : (k + 1) * 13])
    # applied: frame k's slices projected at tilt k only equal the batched projection's frame k
    rng = np.random.default_rng(2)
    vols = torch.from_numpy(rng.random((g.n_tilts, 9, 5, 11), dtype=np.float32))
    images = vols.permute(2, 0, 1, 3)  # (ny slices, frames, nz, nx)
    out = frames(images, np.arange(g.n_tilts))  # (frames, ny, n_det)
    g0 = Geometry((9, 5, 11), ANGLES, np.stack([np.zeros(7), SHIFTS[:, 1]], 1), 0.7, 13)
    for k in range(g.n_tilts):
        ref = Projector.from_geometry(g0.subset([k])).forward(vols[k])[0]
        np.testing.assert_allclose(out[k].numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_joseph_matrix_weights_are_ray_lengths() -> None:
    """A slice of ones projects to the length of each ray inside the slice (pixels)."""
    m = joseph_matrix(0.0, 6, 8, 8)
    np.testing.assert_allclose(m @ np.ones(48), np.full(8, 6.0), rtol=1e-6)
    m = joseph_matrix(90.0, 6, 8, 6)
    np.testing.assert_allclose(m @ np.ones(48), np.full(6, 8.0), rtol=1e-5)


def test_ray_projector_agrees_with_the_joseph_projector() -> None:
    """INR's differentiable rays at zero pose error vs the batched projector, smooth volume.

    Measured (24^3 Gaussian-filtered noise, 7 tilts -60..75 deg, shifts up to 2.1 px): relative
    L2 difference 0.27-0.33 %, largest pixel difference 0.5-0.8 % of the peak, for 24-192
    samples per ray, with and without a 1.5 px axis offset.
    """
    vol = _smooth_volume()
    for offset in (0.0, 1.5):
        g = Geometry(tuple(vol.shape), ANGLES, SHIFTS, axis_offset_px=offset)
        ref = Projector.from_geometry(g).forward(vol).numpy()
        pred = RayProjector(g, n_samples=48).project_volume(vol).numpy()
        assert np.linalg.norm(pred - ref) / np.linalg.norm(ref) < 0.005
        assert np.abs(pred - ref).max() / np.abs(ref).max() < 0.012


def test_ray_projector_poses_are_differentiable() -> None:
    vol = _smooth_volume(16)
    g = Geometry(tuple(vol.shape), ANGLES[:3], SHIFTS[:3])
    rp = RayProjector(g, n_samples=16)
    shifts, angles, axis = rp.pose_tensors()
    shifts.requires_grad_(True)
    t, r, c = rp.all_pixels()
    from napari_tiltgen.physics.rays import sample_volume, to_normalised

    rays = rp.rays(t, r, c, poses=(shifts, angles, axis))
    rays.integrate(sample_volume(vol, to_normalised(rays.points, g.volume_shape))).sum().backward()
    assert shifts.grad is not None and torch.all(torch.isfinite(shifts.grad))
    # the total over all pixels hardly depends on dx (mass moves, it is not lost): small grad
    assert float(shifts.grad[:, 1].abs().max()) < 0.05 * float(vol.sum())


# ---------------------------------------------------------------------------- shift policy
def test_one_shift_policy_near_frame_edges() -> None:
    """Projector, back-ends (ASTRA/tomopy) and DIP see the same data at frame edges."""
    rng = np.random.default_rng(4)
    vol = torch.from_numpy(rng.random((6, 10, 8), dtype=np.float32))
    dy = np.array([0.3, -1.6, 2.0])
    angles = np.array([-30.0, 0.0, 40.0])
    shifted = Projector((6, 10, 8), angles, np.stack([dy, np.zeros(3)], 1)).forward(vol).numpy()
    plain = Projector((6, 10, 8), angles).forward(vol).numpy()
    # the projector's dy is the policy's shift, edge rows included
    np.testing.assert_allclose(shifted, shift_frames(plain, dy), rtol=1e-5, atol=1e-5)
    # ... which is SciPy's linear "grid-constant" shift (interpolated across the edge, zero out)
    ref = np.stack(
        [ndimage.shift(p, (d, 0.0), order=1, mode="grid-constant") for p, d in zip(plain, dy)]
    )
    np.testing.assert_allclose(shift_frames(plain, dy), ref, rtol=1e-5, atol=1e-5)
    assert abs(shifted[0, 0]).sum() > 0  # row 0 at dy = 0.3 keeps 70 % of volume row 0
    # the back-ends and DIP undo shifts with the same function
    dx = np.array([0.5, 0.0, -1.25])
    np.testing.assert_array_equal(
        backends.unshift(shifted, dy, dx), unshift_frames(shifted, dy, dx)
    )
    back = unshift_frames(shifted, dy)  # the integer shift of frame 2 is undone exactly
    np.testing.assert_allclose(back[2, :8], plain[2, :8], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(back[2, 8:], 0.0)  # rows that came from outside the frame
    # integer shifts are exact moves; no shift returns the input itself
    np.testing.assert_array_equal(shift_frames(plain[:1], [2.0])[0, 2:], plain[0, :-2])
    assert shift_frames(plain, np.zeros(3), None) is plain


def test_linear_taps_zero_outside() -> None:
    lo, hi, w_lo, w_hi = linear_taps(4, [0.25, -3.5])
    a = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(w_lo[0] * a[lo[0]] + w_hi[0] * a[hi[0]], [0.75, 1.75, 2.75, 3.75])
    np.testing.assert_allclose(w_lo[1] * a[lo[1]] + w_hi[1] * a[hi[1]], [4 * 0.5, 0, 0, 0])


def test_rotate_frames_is_the_spline_rotation_without_its_blur() -> None:
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.standard_normal((2, 48, 48)), (0, 1.2, 1.2))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    ours = rotate_frames(smooth, 5.0)
    spline = np.stack([ndimage.rotate(g, 5.0, reshape=False, order=3) for g in smooth])
    assert np.corrcoef(ours[inner].ravel(), spline[inner].ravel())[0, 1] > 0.999
    # on pixel-scale detail (noise) a spline rotation smooths, this one does not
    f = ndimage.gaussian_filter(rng.standard_normal((2, 48, 48)), (0, 0.5, 0.5))
    spline = np.stack([ndimage.rotate(g, 5.0, reshape=False, order=3) for g in f])
    kept = np.std(rotate_frames(f, 5.0)[inner]) / np.std(f[inner])
    assert kept > 0.97 and np.std(spline[inner]) / np.std(f[inner]) < 0.95
    back = rotate_frames(rotate_frames(f, 7.0), -7.0)
    back_spline = np.stack(
        [
            ndimage.rotate(
                ndimage.rotate(g, 7.0, reshape=False, order=3), -7.0, reshape=False, order=3
            )
            for g in f
        ]
    )

    def rel(a: np.ndarray) -> float:
        return float(np.linalg.norm((a - f)[inner]) / np.linalg.norm(f[inner]))

    assert rel(back) < 0.1 and rel(back) < 0.5 * rel(back_spline), (rel(back), rel(back_spline))
    # odd, non-square frames turn about the same centre ((n - 1) / 2) as ndimage.rotate
    odd = ndimage.gaussian_filter(rng.standard_normal((1, 47, 53)), (0, 2.0, 2.0))
    ours = rotate_frames(odd, 20.0)[0][10:-10, 10:-10]
    spline = ndimage.rotate(odd[0], 20.0, reshape=False, order=3)[10:-10, 10:-10]
    assert np.corrcoef(ours.ravel(), spline.ravel())[0, 1] > 0.999  # measured 0.99986


# ---------------------------------------------------------------------------- CUDA (gpu lane)
@pytest.mark.gpu
def test_forward_models_on_cuda_match_the_cpu() -> None:
    """Run where a CUDA device exists (``-m gpu``); CPU-only CI deselects this test."""
    assert torch.cuda.is_available(), "the gpu lane needs a CUDA device"
    dev = torch.device("cuda")
    vol = _smooth_volume(16)
    g = Geometry(tuple(vol.shape), ANGLES, SHIFTS, axis_offset_px=0.5)
    cpu = Projector.from_geometry(g).forward(vol)
    gpu = Projector.from_geometry(g, device=dev).forward(vol.to(dev)).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
    p = torch.rand(cpu.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        Projector.from_geometry(g, device=dev).adjoint(p.to(dev)).cpu(),
        Projector.from_geometry(g).adjoint(p),
        rtol=1e-4,
        atol=1e-4,
    )
    images = vol.permute(1, 0, 2)[:, None].expand(-1, 3, -1, -1).contiguous()  # (ny, 3, nz, nx)
    frames_cpu = FrameProjector(g.subset([0, 1, 2]))(images, [0, 1, 2])
    x = images.to(dev).requires_grad_(True)
    frames_gpu = FrameProjector(g.subset([0, 1, 2]), device=dev)(x, [0, 1, 2])
    torch.testing.assert_close(frames_gpu.detach().cpu(), frames_cpu, rtol=1e-4, atol=1e-4)
    frames_gpu.sum().backward()  # the transposed CUDA product
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    rays_cpu = RayProjector(g, n_samples=24).project_volume(vol)
    rays_gpu = RayProjector(g, n_samples=24).project_volume(vol.to(dev)).cpu()
    torch.testing.assert_close(rays_gpu, rays_cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_fits_run_on_cuda() -> None:
    """The INR and DIP fits on a CUDA device (bf16 autocast, torch CSR products) end to end."""
    assert torch.cuda.is_available(), "the gpu lane needs a CUDA device"
    from napari_tiltgen.fits.dip import fit_dip
    from napari_tiltgen.fits.inr import fit_inr
    from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom, sphere_phantom

    ts, _ = sphere_phantom(size=16, tilt_step=10.0)
    res = fit_inr(ts, steps=20, batch_size=1024, preview_every=0, device="cuda", show=False)
    assert res.extra["device"].startswith("cuda") and res.volume.shape == (16, 16, 16)
    assert np.all(np.isfinite(res.volume.data)) and np.isfinite(res.loss_history).all()
    ts4, _ = dynamic_sphere_phantom(size=16, n_tilts=12)
    dres = fit_dip(ts4, steps=10, warm_start_steps=5, sirt_iterations=5, device="cuda")
    assert dres.provenance["device"].startswith("cuda") and dres.volumes.shape == (12, 16, 16, 16)
    assert np.all(np.isfinite(dres.volumes)) and np.isfinite(dres.loss_history).all()
