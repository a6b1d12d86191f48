"""Tilt-frame interpolation: network, losses, baselines, checks, QA and the shipped weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import run
from napari_tiltgen.evaluate.metrics import psnr
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation import (
    DEFAULT_WEIGHTS,
    DENOISING_WEIGHTS,
    NetConfig,
    TiltInterpNet,
    census_loss,
    charbonnier,
    insertion_plan,
    interpolate_series,
    interpolation_loss,
    leave_one_out,
    load_model,
    load_pretrained,
    model_frames,
    save_model,
)

torch.set_num_threads(1)
TINY = NetConfig(channels=(4, 6, 8, 8), decoder_channels=(4, 6, 8, 8))


@pytest.fixture(scope="module")
def held_out() -> TiltSeries:
    """A held-out element (Ir, fcc octahedron) the model never saw, every degree over 41 tilts."""
    from napari_tiltgen.simulate.clusters import build_cluster
    from napari_tiltgen.simulate.series import simulate_tilt_series

    atoms = build_cluster("octahedron", "Ir", shells=4, seed=3)
    return simulate_tilt_series(atoms, tilt_range=(-20.0, 20.0), tilt_step=1.0, size=64,
                                optics="aberrated").tilt_series


# ---------------------------------------------------------------------------- network
def test_forward_shapes_and_linear_start() -> None:
    net = TiltInterpNet(TINY).eval()
    i0, i1 = torch.rand(3, 1, 32, 48), torch.rand(3, 1, 32, 48)
    t = torch.tensor([0.2, 0.5, 0.9])
    out = net(i0, i1, t, torch.tensor([2.0, 6.0, 12.0]))
    assert out["image"].shape == (3, 1, 32, 48)
    assert out["flow0"].shape == out["flow1"].shape == (3, 2, 32, 48)
    assert [f.shape[1] for f in out["features"]] == [8, 6, 4]  # 1/8, 1/4, 1/2
    # an untrained network is exactly linear interpolation (zero flows, residual; mask 1 - t)
    lin = (1 - t.view(-1, 1, 1, 1)) * i0 + t.view(-1, 1, 1, 1) * i1
    assert torch.allclose(out["image"], lin, atol=1e-5)


def test_model_frames_any_size_and_units() -> None:
    net = TiltInterpNet(TINY).eval()
    rng = np.random.default_rng(0)
    f0 = rng.random((37, 29)).astype(np.float32) * 1e-3 + 5.0
    f1 = rng.random((37, 29)).astype(np.float32) * 1e-3 + 5.0
    out = model_frames(net, f0, f1, [0.25, 0.5, 0.75], 6.0)
    assert out.shape == (3, 37, 29) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], 0.5 * (f0 + f1), atol=1e-5)  # units kept
    binned = model_frames(net, f0, f1, [0.5], 6.0, bin_factor=4)
    assert binned.shape == (1, 37, 29)


def test_conditioning_on_t_and_gap_changes_the_output() -> None:
    net, _ = load_pretrained()
    rng = np.random.default_rng(1)
    f0 = rng.random((32, 32)).astype(np.float32)
    f1 = np.roll(f0, 2, axis=1)
    a, b = model_frames(net, f0, f1, [0.25, 0.75], 6.0)
    assert np.abs(a - b).mean() > 0.05
    g4 = model_frames(net, f0, f1, [0.5], 4.0)
    g10 = model_frames(net, f0, f1, [0.5], 10.0)
    assert np.abs(g4 - g10).mean() > 1e-3


def test_symmetric_prediction_is_mirror_and_swap_equivariant() -> None:
    """The mean over the eight mirror/swap symmetries makes the prediction equivariant: the
    mirrored pair gives the mirrored frame, the swapped pair (t -> 1 - t) the same frame. One
    prediction alone is not (the trained network is not exactly symmetric)."""
    net, _ = load_pretrained()
    rng = np.random.default_rng(4)
    f0 = rng.random((40, 36)).astype(np.float32)
    f1 = np.roll(f0, 2, axis=1) + 0.1 * rng.random((40, 36)).astype(np.float32)
    for factor in (1, 2):
        kw = {"gap_deg": 6.0, "bin_factor": factor}
        sym = model_frames(net, f0, f1, [0.3], symmetric=True, **kw)[0]
        mirrored = model_frames(net, f0[:, ::-1], f1[:, ::-1], [0.3], symmetric=True, **kw)[0]
        upside = model_frames(net, f0[::-1], f1[::-1], [0.3], symmetric=True, **kw)[0]
        swapped = model_frames(net, f1, f0, [0.7], symmetric=True, **kw)[0]
        scale = float(np.abs(sym).mean())
        for other in (mirrored[:, ::-1], upside[::-1], swapped):
            assert np.abs(other - sym).max() < 1e-4 * scale
        one = model_frames(net, f0, f1, [0.3], symmetric=False, **kw)[0]
        one_swapped = model_frames(net, f1, f0, [0.7], symmetric=False, **kw)[0]
        assert np.abs(one - one_swapped).mean() > 1e-3 * scale
        assert np.abs(one - sym).mean() > 1e-3 * scale


# ---------------------------------------------------------------------------- losses
def test_loss_terms() -> None:
    x = torch.rand(2, 1, 32, 32)
    assert float(census_loss(x, x, 7)) == 0.0
    assert float(census_loss(x, x + 3.0, 7)) == pytest.approx(0.0, abs=1e-7)  # offset-invariant
    assert float(census_loss(x, torch.rand(2, 1, 32, 32), 7)) > 0.05
    assert float(charbonnier(torch.zeros(5))) == pytest.approx(1e-3)
    net = TiltInterpNet(TINY)
    out = net(x, torch.rand(2, 1, 32, 32), 0.5, 4.0)
    losses = interpolation_loss(out, torch.rand(2, 1, 32, 32), net.encode(x))
    assert set(losses) == {"total", "charbonnier", "census", "geometry"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


# ---------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip(tmp_path: Path) -> None:
    net = TiltInterpNet(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_model(tmp_path / "m.safetensors", net, {"trained_gap_deg": [2, 12]})
    assert path.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON
    back, info = load_model(path)
    assert info == {"trained_gap_deg": [2, 12]} and back.config == TINY
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x, x.flip(-1), 0.3, 5.0)["image"],
                           back(x, x.flip(-1), 0.3, 5.0)["image"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(TiltgenError, match="safetensors"):
        load_model(bad)


def test_shipped_weights_are_small_safetensors_with_a_card() -> None:
    for name, path in (("clean", DEFAULT_WEIGHTS), ("denoising", DENOISING_WEIGHTS)):
        assert path.is_file() and path.stat().st_size < 4_000_000
        card = path.with_suffix(".md").read_text()
        assert "tiltgen train-interpolation" in card and "interpolation_transfer.py" in card
        net, info = load_pretrained(name)
        assert info["trained_gap_deg"] == [2.0, 12.0]
        assert info["data"]["pixel_size_A"][0] > 0
        # the clean-data network has no noise input; the denoising one reads two noise planes
        assert net.config.noise_planes == (2 if name == "denoising" else 0)
        assert (f"--noise-planes {net.config.noise_planes}" in card) == (name == "denoising")


# ---------------------------------------------------------------------------- planning, baselines
def test_insertion_plan() -> None:
    assert insertion_plan([0.0, 3.0, 5.0], target_step_deg=1.0) == [(0, [1 / 3, 2 / 3]), (1, [0.5])]
    assert insertion_plan([0.0, 2.0], frames_per_gap=3) == [(0, [0.25, 0.5, 0.75])]
    with pytest.raises(TiltgenError, match="increase"):
        insertion_plan([0.0, 0.0, 1.0], frames_per_gap=1)
    with pytest.raises(TiltgenError, match="either"):
        insertion_plan([0.0, 1.0])


def test_one_model_inserts_several_frames_at_the_right_angles(held_out: TiltSeries) -> None:
    sparse = held_out.subset([0, 3, 9, 15])  # -20, -17, -11, -5 degrees
    res = run(interpolate_series(sparse, frames_per_gap=2), show=False)
    np.testing.assert_allclose(res.tilt_series.tilt_angles,
                               [-20, -19, -18, -17, -15, -13, -11, -9, -7, -5])
    assert res.predicted_indices == [1, 2, 4, 5, 7, 8]
    assert res.source_index.tolist() == [0, -1, -1, 1, -1, -1, 2, -1, -1, 3]
    np.testing.assert_array_equal(res.tilt_series.data[3], sparse.data[1])  # real frames kept
    rec = res.tilt_series.provenance["interpolation"]
    assert rec["predicted_indices"] == [1, 2, 4, 5, 7, 8] and rec["method"] == "pretrained"
    assert json.dumps(res.report())  # JSON-ready


def test_linear_baseline_is_exact_on_a_linear_ramp() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 16, 20)).astype(np.float32)
    angles = np.array([-10.0, -4.0, 0.0, 8.0])
    ts = TiltSeries(a[None] + angles[:, None, None] * b[None] * 0.1, tilt_angles=angles)
    res = run(interpolate_series(ts, target_step_deg=1.0, method="linear"), show=False)
    expect = a[None] + res.tilt_series.tilt_angles[:, None, None] * b[None] * 0.1
    assert res.tilt_series.n_tilts == 19
    np.testing.assert_allclose(res.tilt_series.data, expect, atol=1e-5)


def test_reprojection_baseline_on_a_phantom() -> None:
    from napari_tiltgen.simulate import sphere_phantom

    ts, _vol = sphere_phantom(size=32, tilt_range=(-60.0, 60.0), tilt_step=2.0)
    sparse = ts.subset(slice(None, None, 2))  # every 4 degrees
    hidden = np.arange(1, ts.n_tilts, 2)
    res = run(interpolate_series(sparse, frames_per_gap=1, method="reprojection",
                                 device="cpu", reprojection_iterations=30), show=False)
    np.testing.assert_allclose(res.tilt_series.tilt_angles, ts.tilt_angles)
    pred = res.tilt_series.data[res.predicted]
    reproj = np.mean([psnr(ts.data[h], p) for h, p in zip(hidden, pred)])
    mirrored = np.mean([psnr(ts.data[h], p[:, ::-1]) for h, p in zip(hidden, pred)])
    wrong_order = np.mean([psnr(ts.data[h], p) for h, p in zip(hidden, pred[::-1])])
    # measured: 37.6 dB; with the geometry mirrored 19.1 dB, angles reversed 21.7 dB
    assert reproj > 35.0
    assert reproj > max(mirrored, wrong_order) + 10.0


# ---------------------------------------------------------------------------- the shipped model
def test_shipped_model_beats_linear_on_held_out_clusters() -> None:
    """Three held-out fcc clusters (Ir, Yb, Xe), aberrated probe, -20..20 degrees every degree.

    Measured PSNR gain over linear interpolation (dB), gap 4 / gap 8, shipped stage-2 weights,
    as run by default (the mean of the eight mirror/swap predictions): Ir truncated octahedron
    1.05 / 1.37, Yb cuboctahedron 0.81 / 1.11, Xe octahedron 0.47 / 0.86; mean 0.78 / 1.11 (one
    prediction: 0.70 / 1.02, 0.64 / 1.00, 0.20 / 0.69, mean 0.51 / 0.90, which fails here;
    stage 1: 0.29 / 0.29). Asserted: the mean gain minus a 0.15 dB margin.
    """
    from napari_tiltgen.nets.interpolation.evaluate import frame_metrics, sparse_pairs
    from napari_tiltgen.nets.interpolation.frames import interpolate_at
    from napari_tiltgen.simulate.clusters import build_cluster
    from napari_tiltgen.simulate.series import simulate_tilt_series

    gains: dict[int, list[float]] = {4: [], 8: []}
    for structure, element, shells in [("truncated_octahedron", "Ir", 3),
                                       ("cuboctahedron", "Yb", 4), ("octahedron", "Xe", 5)]:
        atoms = build_cluster(structure, element, shells=shells, seed=3)
        ts = simulate_tilt_series(atoms, tilt_range=(-20.0, 20.0), tilt_step=1.0, size=64,
                                  optics="aberrated").tilt_series
        for gap, acc in gains.items():
            kept, pairs, hidden = sparse_pairs(ts.n_tilts, gap)
            sparse = ts.subset(kept)
            res = {}
            for m in ("pretrained", "linear"):
                pred, _, _ = run(interpolate_at(sparse, pairs, m, device="cpu"), show=False)
                res[m] = frame_metrics(ts.data[hidden], pred)["psnr"].mean()
            acc.append(res["pretrained"] - res["linear"])
    assert np.mean(gains[4]) > 0.78 - 0.15
    assert np.mean(gains[8]) > 1.11 - 0.15


# ---------------------------------------------------------------------------- refusals, QA
def test_refuses_gaps_larger_than_trained(held_out: TiltSeries) -> None:
    sparse = held_out.subset([0, 20, 40])  # 20 degree gaps
    with pytest.raises(TiltgenError, match="trained on gaps of 2-12 degrees"):
        run(interpolate_series(sparse, frames_per_gap=1), show=False)
    with pytest.warns(UserWarning, match="OUT OF RANGE"):
        res = run(interpolate_series(sparse, frames_per_gap=1, allow_out_of_range=True),
                  show=False)
    assert any("OUT OF RANGE" in w for w in res.warnings)
    # linear interpolation has no training range: no refusal
    run(interpolate_series(sparse, frames_per_gap=1, method="linear"), show=False)


def test_warns_on_pixel_size_far_off(held_out: TiltSeries) -> None:
    from dataclasses import replace

    far = replace(held_out.subset([0, 4, 8]), pixel_size_A=5.0)
    with pytest.warns(UserWarning, match="pixel size 5 Å is far"):
        run(interpolate_series(far, frames_per_gap=1), show=False)


def test_leave_one_out_qa(held_out: TiltSeries) -> None:
    ts = held_out.subset(slice(0, 13, 3))  # 5 frames every 3 degrees
    qa = run(leave_one_out(ts), show=False)
    assert qa.indices.tolist() == [1, 2, 3] and np.allclose(qa.gaps_deg, 6.0)
    assert qa.real.shape == qa.predicted.shape == (3, 64, 64)
    np.testing.assert_array_equal(qa.real, ts.data[1:4])
    assert np.all(qa.psnr > 44.0) and np.all(qa.ssim > 0.99)  # measured 47.4-49.2 dB, 0.999
    assert "mean" in qa.table() and math.isfinite(qa.as_dict()["mean_psnr_db"])
    # linear leave-one-out on frames that change linearly with angle is exact
    rng = np.random.default_rng(4)
    a, b = rng.random((2, 16, 16)).astype(np.float32)
    angles = np.array([-9.0, -6.0, -2.0, 1.0, 5.0])
    ramp = TiltSeries(a[None] + 0.05 * angles[:, None, None] * b[None], tilt_angles=angles)
    lin = run(leave_one_out(ramp, "linear"), show=False)
    np.testing.assert_allclose(lin.predicted, lin.real, atol=1e-5)
    np.testing.assert_allclose(lin.gaps_deg, [7.0, 7.0, 7.0])


def test_noise_level_measures_white_noise_and_ignores_smooth_structure() -> None:
    from napari_tiltgen.nets.interpolation.network import noise_level

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    disk = (((yy - 64) ** 2 + (xx - 60) ** 2) < 40**2).float()[None, None]
    ramp = (0.3 * xx / 128 + 0.1 * yy / 128)[None, None]  # planes: no response at all
    clean = noise_level(disk + ramp, disk + ramp)
    assert float(clean[0, 0]) < 1e-6 and 0.0 < float(clean[0, 1]) < 0.02  # edges raise the mean
    for sigma in (0.01, 0.05):
        a = disk + ramp + sigma * torch.randn(disk.shape, generator=g)
        b = disk + ramp + sigma * torch.randn(disk.shape, generator=g)
        est = noise_level(a, b)[0]
        assert float(est[0]) == pytest.approx(sigma, rel=0.1)
        # the mean response adds (at most) the edges' share to the noise
        assert 0.9 * sigma < float(est[1]) < sigma + float(clean[0, 1])


def test_noise_planes_start_as_the_plain_network_and_survive_save_and_load(tmp_path) -> None:
    from napari_tiltgen.nets.interpolation.network import TiltInterpNet, load_model, save_model

    torch.manual_seed(0)
    net = TiltInterpNet(TINY)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    nc = net.with_noise_planes()
    assert nc.config.noise_planes == 2 and net.config.noise_planes == 0
    i0, i1 = torch.rand(2, 3, 1, 32, 48)
    t, gap = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([3.0, 6.0, 9.0])
    assert torch.allclose(nc(i0, i1, t, gap)["image"], net(i0, i1, t, gap)["image"], atol=1e-6)
    # the planes are inputs: once their weights are not zero, the pair's noise level matters
    with torch.no_grad():
        for dec in nc.decoders:
            dec.body[0][0].weight[:, -2:].normal_(0.0, 0.5)
    noisy0, noisy1 = i0 + 0.3 * torch.randn_like(i0), i1 + 0.3 * torch.randn_like(i1)
    planes = nc.noise_planes(noisy0, noisy1)
    assert planes.shape == (3, 2) and float(planes.min()) > 1.0
    assert not torch.allclose(nc(i0, i1, t, gap)["image"], net(i0, i1, t, gap)["image"],
                              atol=1e-4)
    save_model(tmp_path / "nc.safetensors", nc)
    back, _ = load_model(tmp_path / "nc.safetensors")
    assert back.config == nc.config
    assert torch.allclose(back(noisy0, noisy1, t, gap)["image"],
                          nc.eval()(noisy0, noisy1, t, gap)["image"], atol=1e-6)
    with pytest.raises(ValueError, match="noise_planes"):
        NetConfig(noise_planes=1)
