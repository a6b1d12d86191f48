"""INR reconstruction with joint pose refinement (fits/inr): physics, quality, poses, runs.

Every fit here is tiny (16-20^3 voxels, at most a few hundred steps of a few hundred rays) so the
whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_tiltgen.align.axis import rotate_tilt_axis_to_vertical
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.evaluate.metrics import nrmse, ssim
from napari_tiltgen.fits.inr import (
    PoseModel,
    fit_inr,
    fit_inr_iter,
    load_checkpoint,
)
from napari_tiltgen.io import read_volume, write_mrc
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.physics.rays import RayProjector, to_normalised
from napari_tiltgen.recon.api import reconstruct
from napari_tiltgen.simulate.phantoms import random_spheres, sphere_phantom

TINY = {"batch_size": 512, "preview_every": 0, "device": "cpu", "n_threads": 1}


@pytest.fixture(scope="module")
def phantom20():
    """20^3 sphere phantom, +-60 degrees every 6 degrees (21 tilts), exact projections."""
    return sphere_phantom(size=20, tilt_range=(-60.0, 60.0), tilt_step=6.0, seed=3)


def _smooth_volume(n: int = 24) -> torch.Tensor:
    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.random((n, n, n)), 2.0)
    v[:4], v[-4:], v[:, :4], v[:, -4:], v[:, :, :4], v[:, :, -4:] = 0, 0, 0, 0, 0, 0
    return torch.from_numpy(v.astype(np.float32))


def _integrate(vol: torch.Tensor, poses: PoseModel, n_tilts: int, n_samples: int = 96):
    """Ray integrals of ``vol`` through every detector pixel (the INR's rendering, on a grid)."""
    nz, ny, nx = vol.shape
    t, r, c = (torch.from_numpy(a.ravel()) for a in np.meshgrid(
        np.arange(n_tilts), np.arange(ny), np.arange(nx), indexing="ij"))
    shifts, angles, axis = poses.current(frozenset())
    geometry = Geometry((nz, ny, nx), angles.numpy(), shifts.numpy(), n_det=nx)
    rays = RayProjector(geometry, n_samples=n_samples).rays(t, r, c, poses=(shifts, angles, axis))
    q = to_normalised(rays.points, (nz, ny, nx))
    dens = F.grid_sample(vol[None, None], q.reshape(1, 1, 1, -1, 3), align_corners=True,
                         padding_mode="zeros").reshape(q.shape[:2])
    return (dens.sum(1) * rays.step).reshape(n_tilts, ny, nx).numpy()


# ----------------------------------------------------------------------------- physics
def test_rays_integrate_like_the_projector_with_shifts() -> None:
    """Same units and geometry as physics.projector (density x pixel length, +shift convention)."""
    vol = _smooth_volume()
    angles = np.array([-50.0, -20.0, 0.0, 35.0, 60.0])
    shifts = np.array([[0.5, -1.3], [0.0, 0.0], [1.2, 0.7], [-0.8, 2.1], [0.3, -0.4]])
    ref = Projector(vol.shape, angles, shifts).forward(vol).numpy()
    pred = _integrate(vol, PoseModel(angles, shifts, 0.0), angles.size)
    assert np.linalg.norm(pred - ref) / np.linalg.norm(ref) < 0.01


def test_tilt_axis_rotation_follows_the_imod_convention() -> None:
    """Frames whose axis is at +4 deg (undone by alignment.rotate_tilt_axis_to_vertical)."""
    vol = _smooth_volume()
    angles = np.array([-50.0, -20.0, 0.0, 35.0, 60.0])
    aligned = Projector(vol.shape, angles).forward(vol).numpy()
    recorded = np.stack([ndimage.rotate(f, -4.0, reshape=False, order=3) for f in aligned])
    undone = rotate_tilt_axis_to_vertical(TiltSeries(recorded, angles, tilt_axis_angle_deg=4.0))
    assert np.linalg.norm(undone.data - aligned) / np.linalg.norm(aligned) < 0.06

    def err(phi: float) -> float:
        pred = _integrate(vol, PoseModel(angles, np.zeros((5, 2)), phi), angles.size)
        return float(np.linalg.norm(pred - recorded) / np.linalg.norm(recorded))

    assert err(4.0) < 0.06
    assert err(-4.0) > 2.5 * err(4.0)


def test_gauge_patterns_are_removed_from_pose_updates() -> None:
    angles = np.linspace(-60, 60, 9)
    pm = PoseModel(angles, np.zeros((9, 2)), 0.0)
    t = np.deg2rad(angles)
    with torch.no_grad():
        pm.d_shifts[:, 1] = torch.as_tensor(2.0 * np.cos(t) - 1.5 * np.sin(t) + 0.7,
                                            dtype=torch.float32)
        pm.d_shifts[:, 0] = 3.0
        pm.d_angles[:] = 1.0
    shifts, ang, _ = (x.detach() for x in pm.current())
    # moving the object (a cos + b sin in dx, constant dy, constant angle) is not a pose change;
    # the part of a constant dx (tilt-axis offset) outside span(cos, sin) is
    expected_dx = pm.gauge_dx.numpy() @ np.full(9, 0.7)
    np.testing.assert_allclose(shifts[:, 0].numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(shifts[:, 1].numpy(), expected_dx, atol=1e-5)
    assert np.abs(expected_dx).max() > 0.1
    np.testing.assert_allclose(ang.numpy(), angles, atol=1e-5)


# ----------------------------------------------------------------------------- quality
@pytest.mark.slow
def test_inr_beats_backprojection_and_matches_sirt(phantom20) -> None:
    ts, truth = phantom20
    res = fit_inr(ts, steps=300, optimize_pose=False, seed=0, show=False, **TINY)
    sirt = reconstruct(ts, "sirt", iterations=100, show=False, device="cpu")
    wbp = reconstruct(ts, "wbp", show=False, device="cpu")
    q = {name: (ssim(truth.data, v.data), nrmse(truth.data, v.data))
         for name, v in (("inr", res.volume), ("sirt", sirt), ("wbp", wbp))}
    # measured (SSIM / NRMSE): inr 0.969 / 0.145, sirt 0.962 / 0.161, wbp 0.784 / 0.458
    assert q["inr"][0] > q["wbp"][0] + 0.15
    assert q["inr"][1] < 0.5 * q["wbp"][1]
    assert q["inr"][0] >= q["sirt"][0] - 0.01
    assert q["inr"][1] <= q["sirt"][1] + 0.02
    # same units as SIRT: total mass within 5 %
    assert abs(res.volume.data.sum() / truth.data.sum() - 1.0) < 0.05
    assert res.volume.shape == (20, 20, 20) and res.volume.voxel_size_A == ts.pixel_size_A
    assert res.loss_history.shape == (300,)
    assert res.loss_history[-20:].mean() < 0.1 * res.loss_history[:20].mean()


def test_thickness_sets_nz(phantom20) -> None:
    ts, _ = phantom20
    res = fit_inr(ts, steps=3, thickness_px=12, show=False, **TINY)
    assert res.volume.shape == (12, 20, 20)


# ----------------------------------------------------------------------------- poses
@pytest.mark.slow
def test_recovers_known_shifts(phantom20) -> None:
    ts, _ = phantom20
    true = np.zeros((ts.n_tilts, 2))
    true[4] = (0.0, 2.0)
    true[9] = (-1.5, 0.0)
    true[15] = (1.0, -1.5)
    frames = np.stack([ndimage.shift(f, s, order=3, mode="constant")
                       for f, s in zip(ts.data, true)])
    shifted = replace(ts, data=frames.astype(np.float32))
    res = fit_inr(shifted, steps=400, pose_parameters=("shifts",), pose_warmup_steps=50,
                  pose_learning_rate=0.05, seed=0, show=False, **TINY)
    got = res.poses["shifts_px"]
    # compare modulo the gauge (object translation): dy up to a constant, dx up to a cos + b sin
    t = np.deg2rad(ts.tilt_angles)
    basis = np.stack([np.cos(t), np.sin(t)], 1)

    def residual_dx(d: np.ndarray) -> np.ndarray:
        return d - basis @ np.linalg.lstsq(basis, d, rcond=None)[0]

    err_dy = (got[:, 0] - got[:, 0].mean()) - (true[:, 0] - true[:, 0].mean())
    err_dx = residual_dx(got[:, 1]) - residual_dx(true[:, 1])
    assert np.abs(err_dy).max() < 0.3
    assert np.abs(err_dx).max() < 0.3
    assert res.tilt_series_aligned.shifts_px.shape == (ts.n_tilts, 2)
    np.testing.assert_allclose(res.tilt_series_aligned.shifts_px, got)
    assert res.tilt_series_aligned.provenance["tilt_axis_source"] == "INR pose fit"


def _recorded_with_axis(size: int, seed: int, step: float, axis_deg: float) -> TiltSeries:
    """Exact sphere-phantom projections recorded with the tilt axis at ``axis_deg`` from y.

    Recorded pixels (2x2 sub-pixels) are mapped to the axis-aligned detector by Rot(-axis) and
    the spheres' line integrals evaluated there: no frame interpolation (``ndimage.rotate`` of
    the frames blurs them and biased the answer by a few tenths of a degree at this size).
    """
    ts, _ = sphere_phantom(size=size, tilt_range=(-60.0, 60.0), tilt_step=step, seed=seed)
    o = np.array([-0.25, 0.25])
    c = (np.arange(size) - (size - 1) / 2.0)
    vr, ur = np.meshgrid((c[:, None] + o).ravel(), (c[:, None] + o).ravel(), indexing="ij")
    p = np.deg2rad(axis_deg)
    u, v = ur * np.cos(p) + vr * np.sin(p), -ur * np.sin(p) + vr * np.cos(p)
    frames = np.zeros(ts.data.shape)
    for k, theta in enumerate(np.deg2rad(ts.tilt_angles)):
        img = np.zeros_like(u)
        for x, y, z, r, rho in random_spheres(size, 12, seed):
            u0 = x * np.cos(theta) + z * np.sin(theta)
            img += rho * 2.0 * np.sqrt(np.clip(r * r - (v - y) ** 2 - (u - u0) ** 2, 0, None))
        frames[k] = img.reshape(size, 2, size, 2).mean(axis=(1, 3))
    return replace(ts, data=frames.astype(np.float32))


def test_recorded_with_axis_helper_matches_phantom() -> None:
    ts, _ = sphere_phantom(size=12, tilt_range=(-60.0, 60.0), tilt_step=30.0, seed=3)
    np.testing.assert_allclose(_recorded_with_axis(12, 3, 30.0, 0.0).data, ts.data, atol=1e-5)


@pytest.mark.slow
def test_recovers_tilt_axis_rotation() -> None:
    """A 5 degree tilt-axis error (the issue's case): common-line start, INR refinement holds it.

    Measured on the 20 px phantom: estimate 4.890, after 150 refinement steps 4.906 (direct
    sampling). The voxel sampling mode pulled the same start back to 3.6 and is not used when
    the axis is refined; from a 0-degree start, 300 INR steps alone reach only 2.3 at this size
    (at 64^3 see docs/inr.md).
    """
    rec = _recorded_with_axis(20, 3, 6.0, 5.0)
    res = fit_inr(rec, steps=150, tilt_axis_init="estimate", seed=0, show=False, **TINY)
    assert res.extra["sampling"] == "direct"
    assert abs(res.poses["initial_tilt_axis_angle_deg"] - 5.0) < 0.3
    assert res.poses["recorded_tilt_axis_angle_deg"] == 0.0
    assert abs(res.poses["tilt_axis_angle_deg"] - 5.0) < 0.3
    aligned = res.tilt_series_aligned
    assert aligned.tilt_axis_angle_deg == pytest.approx(res.poses["tilt_axis_angle_deg"])
    assert "estimate_tilt_axis_angle" in aligned.provenance["tilt_axis_source"]
    assert res.volume.provenance["parameters"]["tilt_axis_init"].startswith("estimate")
    # a given start angle is used as is; a bad one is refused
    given = fit_inr(rec, steps=2, optimize_pose=False, tilt_axis_init=4.5, show=False, **TINY)
    assert given.poses["tilt_axis_angle_deg"] == pytest.approx(4.5)
    with pytest.raises(TiltgenError, match="tilt_axis_init"):
        fit_inr(rec, steps=2, tilt_axis_init="guess", show=False, **TINY)


def test_poses_stay_put_without_pose_optimisation(phantom20) -> None:
    ts, _ = phantom20
    ts = replace(ts, shifts_px=np.full((ts.n_tilts, 2), 0.25), tilt_axis_angle_deg=1.0)
    res = fit_inr(ts, steps=20, optimize_pose=False, show=False, **TINY)
    np.testing.assert_array_equal(res.poses["shifts_px"], ts.shifts_px)
    np.testing.assert_array_equal(res.poses["tilt_angles_deg"], ts.tilt_angles)
    assert res.poses["tilt_axis_angle_deg"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_same_seed_same_result_on_cpu(phantom20) -> None:
    ts, _ = phantom20
    kw = dict(steps=40, pose_warmup_steps=10, show=False, **TINY)
    a = fit_inr(ts, seed=5, **kw)
    b = fit_inr(ts, seed=5, **kw)
    c = fit_inr(ts, seed=6, **kw)
    np.testing.assert_array_equal(a.volume.data, b.volume.data)
    np.testing.assert_array_equal(a.poses["shifts_px"], b.poses["shifts_px"])
    np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert not np.array_equal(a.volume.data, c.volume.data)


@pytest.mark.slow
def test_checkpoint_resume_matches_uninterrupted_run(phantom20, tmp_path: Path) -> None:
    ts, _ = phantom20
    kw = dict(steps=40, pose_warmup_steps=10, seed=2, **TINY)
    whole = fit_inr(ts, show=False, **kw)
    ckpt = tmp_path / "fit.pt"
    gen = fit_inr_iter(ts, checkpoint_path=ckpt, checkpoint_every=15, **kw)
    for event in gen:  # "crash" after step 23: the last checkpoint is at step 15
        if event.fraction >= 23 / 40:
            break
    gen.close()
    assert load_checkpoint(ckpt)["step"] == 15
    with pytest.raises(TiltgenError, match="already exists"):
        fit_inr(ts, show=False, checkpoint_path=ckpt, checkpoint_every=15, **kw)
    resumed = fit_inr(ts, show=False, checkpoint_path=ckpt, checkpoint_every=15, resume=True,
                      **kw)
    np.testing.assert_array_equal(resumed.volume.data, whole.volume.data)
    np.testing.assert_array_equal(resumed.poses["shifts_px"], whole.poses["shifts_px"])
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)
    assert load_checkpoint(ckpt)["step"] == 40
    # another fit's settings cannot resume this checkpoint
    with pytest.raises(TiltgenError, match="belongs to another fit"):
        fit_inr(ts, show=False, checkpoint_path=ckpt, resume=True,
                **{**kw, "learning_rate": 0.02})
    # a file that is not a checkpoint (or a pickle) is refused without being executed
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(TiltgenError, match="not a napari-tiltgen INR checkpoint"):
        load_checkpoint(bad)


def test_progress_preview_and_close_stops(phantom20) -> None:
    ts, _ = phantom20
    gen = fit_inr_iter(ts, steps=1000, batch_size=256, preview_every=5, log_every=5,
                       device="cpu")
    events = []
    for event in gen:
        events.append(event)
        if len(events) == 12:
            break
    gen.close()  # what the widget's Cancel does: the generator stops at its current yield
    assert [e.fraction for e in events] == pytest.approx([(i + 1) / 1000 for i in range(12)])
    previews = [e.preview for e in events if e.preview is not None]
    assert len(previews) == 2 and previews[0].shape == (20, 20)
    assert all(np.isfinite(e.values["loss"]) for e in events if "loss" in e.values)
    with pytest.raises(StopIteration):
        next(gen)


def test_monitor_reports_metric(phantom20) -> None:
    ts, truth = phantom20
    seen = []
    fit_inr(ts, steps=20, monitor=lambda v: {"ssim": ssim(truth.data, v)},
            monitor_every=10, show=False, callback=lambda e: seen.append(e.values.get("ssim")),
            **TINY)
    vals = [v for v in seen if v is not None]
    assert len(vals) == 2 and all(-1 <= v <= 1 for v in vals)


def test_user_errors(phantom20, monkeypatch) -> None:
    ts, _ = phantom20
    with pytest.raises(TiltgenError, match="tilt angles of this series are unknown"):
        fit_inr(replace(ts, tilt_angles=None), steps=2, show=False, **TINY)
    bad = ts.data.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(TiltgenError, match="NaN"):
        fit_inr(replace(ts, data=bad), steps=2, show=False, **TINY)
    with pytest.raises(TiltgenError, match="near horizontal"):
        fit_inr(replace(ts, tilt_axis_angle_deg=88.0), steps=2, show=False, **TINY)
    with pytest.raises(TiltgenError, match="at least 1"):
        fit_inr(ts, steps=0, show=False, **TINY)
    with pytest.raises(TiltgenError, match="unknown pose parameters"):
        fit_inr(ts, steps=2, pose_parameters=("roll",), show=False, **TINY)
    with pytest.raises(TiltgenError, match="all zeros"):
        fit_inr(replace(ts, data=np.zeros_like(ts.data)), steps=2, show=False, **TINY)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where a GPU exists
    with pytest.raises(TiltgenError, match="no CUDA GPU"):
        fit_inr(ts, steps=2, show=False, **{**TINY, "device": "cuda"})


# ----------------------------------------------------------------------------- CLI and DDP
def test_cli_fit_inr_with_ddp_single_process(phantom20, tmp_path: Path) -> None:
    """``tiltgen fit-inr --ddp`` outside torchrun: a gloo process group of one on the CPU."""
    from napari_tiltgen.cli import main

    ts, _ = phantom20
    src = write_mrc(ts, tmp_path / "ts.mrc")
    out, poses = tmp_path / "vol.mrc", tmp_path / "poses.json"
    args = ["fit-inr", str(src), "--out", str(out), "--poses", str(poses), "--steps", "30",
            "--batch-size", "256", "--pose-warmup", "10", "--device", "cpu", "--quiet",
            "--seed", "1"]
    assert main([*args, "--ddp"]) == 0
    vol = read_volume(out)
    doc = json.loads(poses.read_text())
    assert vol.shape == (20, 20, 20)
    assert len(doc["shifts_px"]) == ts.n_tilts and "tilt_axis_angle_deg" in doc
    assert not torch.distributed.is_initialized()
    # with one process, DDP gives exactly the single-process result
    plain = fit_inr(ts, steps=30, batch_size=256, pose_warmup_steps=10, seed=1, device="cpu",
                    preview_every=0, show=False)
    np.testing.assert_allclose(vol.data, plain.volume.data, rtol=0, atol=1e-6)
    # outputs are never replaced silently
    assert main(args) == 2


@pytest.mark.slow
def test_sparse_atomic_cluster_does_not_collapse_to_zero() -> None:
    """A mostly empty box (atoms) must not drive the softplus field into its dead zone.

    Before the initial density was matched to the data's mean, the demo's 64 px cluster came
    back as an all-zero volume (NRMSE 1.0); this 32 px version did the same.
    """
    from napari_tiltgen.simulate.series import simulated_cluster_sample

    ts, truth = simulated_cluster_sample(0, size=32, tilt_range=(-60.0, 60.0), tilt_step=4.0,
                                         dose_e_per_A2=None)
    res = fit_inr(ts, steps=120, optimize_pose=False, seed=0, show=False, **TINY)
    sirt = reconstruct(ts, "sirt", iterations=50, show=False, device="cpu").data
    v = res.volume.data
    # measured: INR max 0.028, NRMSE 0.82, mass 0.43x SIRT's; SIRT NRMSE 1.15; collapsed: 0, 1.0
    assert float(v.max()) > 0.5 * float(truth.data.max())
    assert nrmse(truth.data, v) < min(0.9, nrmse(truth.data, sirt))
    assert v.sum() > 0.25 * sirt.sum()
