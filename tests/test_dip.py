"""Time-resolved DIP fit: times, forward model, quality gain, determinism, checkpoints, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tiltgen.cli import main as cli_main
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.fits import dip
from napari_tiltgen.io import read_volume, write_mrc
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.geometry import Geometry
from napari_tiltgen.physics.per_tilt import FrameProjector
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.physics.shifts import unshift_frames
from napari_tiltgen.recon.api import reconstruct
from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom

#: Small but real settings: 16^3 voxels, 24 tilts (= time points).
SIZE, N_TILTS = 16, 24
FAST = {"warm_start_steps": 20, "sirt_iterations": 20, "preview_every": 0, "device": "cpu",
            "n_threads": 1, "slices_per_step": 8}


@pytest.fixture(scope="module")
def dynamic():
    """A particle that sinters, grows and changes density during a 24-tilt series."""
    return dynamic_sphere_phantom(size=SIZE, n_tilts=N_TILTS, total_time_s=2400.0)


def rmse_per_time(volumes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sqrt(((volumes - truth) ** 2).mean(axis=(1, 2, 3)))


# ---------------------------------------------------------------------------- acquisition times
def test_times_default_uniform_in_angle_order() -> None:
    ts = TiltSeries(np.ones((4, 8, 8)), tilt_angles=[30.0, -30.0, 0.0, 60.0])
    np.testing.assert_array_equal(dip.acquisition_times(ts), [2.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(dip.acquisition_times(ts, order="stack", frame_time_s=20.0),
                                  [0.0, 20.0, 40.0, 60.0])


def test_times_recorded_then_given(dynamic) -> None:
    ts, _ = dynamic
    np.testing.assert_array_equal(dip.acquisition_times(ts), ts.acquisition_times_s)
    given = np.arange(N_TILTS)[::-1] * 5.0  # the user's times win over the recorded ones
    np.testing.assert_array_equal(dip.acquisition_times(ts, given), given)


@pytest.mark.parametrize("kwargs, match", [
    ({"times_s": [0.0, 1.0, 2.0]}, "3 acquisition times were given for 4 frames"),
    ({"times_s": [0.0, 1.0, 1.0, 2.0]}, "same acquisition time"),
    ({"times_s": [0.0, np.nan, 1.0, 2.0]}, "NaN"),
    ({"times_s": [3.0, 2.0, 1.0, 0.0], "order": "angle"}, "do not increase"),
    ({"order": "reverse"}, "unknown acquisition order"),
    ({"frame_time_s": 0.0}, "positive number of seconds"),
])
def test_times_user_errors(kwargs, match) -> None:
    ts = TiltSeries(np.ones((4, 8, 8)), tilt_angles=[-30.0, 0.0, 30.0, 60.0])
    with pytest.raises(TiltgenError, match=match):
        dip.acquisition_times(ts, **kwargs)


def test_no_angles_is_a_user_error() -> None:
    ts = TiltSeries(np.ones((4, 8, 8)), acquisition_times_s=[0.0, 1.0, 2.0, 3.0])
    with pytest.raises(TiltgenError, match="needs the tilt angle of every frame"):
        dip.fit_dip(ts, steps=1)


def test_bad_settings_are_user_errors(dynamic, monkeypatch) -> None:
    ts, _ = dynamic
    with pytest.raises(TiltgenError, match="temporal_smoothness"):
        dip.fit_dip(ts, steps=1, temporal_smoothness=-1.0)
    with pytest.raises(TiltgenError, match="unknown device"):
        dip.fit_dip(ts, steps=1, device="gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TiltgenError, match="no CUDA GPU"):
        dip.fit_dip(ts, steps=1, device="cuda")
    with pytest.raises(TiltgenError, match="resume needs a checkpoint"):
        dip.fit_dip(ts, steps=1, resume=True)


# ---------------------------------------------------------------------------- forward model
def test_frame_projector_is_the_projector_per_frame() -> None:
    rng = np.random.default_rng(0)
    angles = np.array([-62.0, -20.0, 0.0, 35.0, 71.0])
    dx = np.array([0.0, 1.5, -2.25, 0.4, 3.0])
    shifts = np.stack([np.zeros(5), dx], axis=1)
    op = FrameProjector(Geometry((12, 1, 10), angles, shifts, axis_offset_px=0.7, n_det=11))
    images = torch.from_numpy(rng.random((6, 5, 12, 10), dtype=np.float32))  # 6 slices
    out = op(images, np.arange(5))
    for k in range(5):
        ref = Projector((12, 6, 10), [angles[k]], [[0.0, dx[k]]], 0.7, 11).forward(
            images[:, k].permute(1, 0, 2))[0]
        np.testing.assert_allclose(out[k].numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    # a subset of frames, and the adjoint via autograd: <P x, g> = <x, P^T g>
    x = images[:, :3].clone().requires_grad_(True)
    g = torch.from_numpy(rng.random((3, 6, 11), dtype=np.float32))
    (op(x, [4, 0, 2]) * g).sum().backward()
    lhs = float((op(images[:, :3], [4, 0, 2]) * g).sum())
    assert lhs == pytest.approx(float((images[:, :3] * x.grad).sum()), rel=1e-5)


def test_dy_shift_removed_from_data() -> None:
    """Rows moved by +dy in the data are read back from the slice they belong to."""
    data = np.random.default_rng(1).random((2, 10, 6)).astype(np.float32)
    shifted = np.roll(data, 2, axis=1)  # frame appears 2 rows lower: dy = +2
    back = unshift_frames(shifted, np.array([2.0, 2.0]))
    np.testing.assert_allclose(back[:, :8], data[:, :8])


# ---------------------------------------------------------------------------- the fit
@pytest.fixture(scope="module")
def fitted(dynamic):
    ts, _ = dynamic
    return dip.fit_dip(ts, steps=200, temporal_smoothness=0.1, seed=0,
                       **{**FAST, "slices_per_step": SIZE, "learning_rate": 0.01})


@pytest.mark.slow
def test_dip_beats_static_sirt_on_a_changing_particle(dynamic, fitted) -> None:
    ts, truth = dynamic
    res = fitted
    assert res.volumes.shape == (N_TILTS, SIZE, SIZE, SIZE)
    assert res.volumes.dtype == np.float32
    order = np.argsort(ts.acquisition_times_s)
    np.testing.assert_allclose(res.times_s, ts.acquisition_times_s[order])
    np.testing.assert_allclose(res.tilt_angles, ts.tilt_angles[order])
    truth = truth[order]
    static = reconstruct(ts, "sirt", 100, show=False, device="cpu").data
    err_static = rmse_per_time(np.repeat(static[None], N_TILTS, axis=0), truth).mean()
    err_dip = rmse_per_time(res.volumes, truth).mean()
    # measured: DIP 0.0874 vs static SIRT 0.1072 (0.815x; an oracle that knew the true mean
    # volume over time would score 0.085, a SIRT of each state from all tilts 0.067)
    assert err_dip < 0.88 * err_static, (err_dip, err_static)
    # the gain is in time: DIP's first and last volumes differ as the truth's do (measured:
    # mean |last - first| 0.0243 for DIP, 0.0410 in the truth, i.e. 0.59x)
    change_true = np.abs(truth[-1] - truth[0]).mean()
    change_dip = np.abs(res.volumes[-1] - res.volumes[0]).mean()
    assert change_dip > 0.3 * change_true, (change_dip, change_true)
    # the fit explains the data: loss fell well below its start (measured: to 0.025x)
    assert res.loss_history.size == 200
    assert res.loss_history[-20:].mean() < 0.6 * res.loss_history[:5].mean()
    assert res.label(0) == f"t = 0 s, tilt = {ts.tilt_angles[order][0]:+.1f} deg"


@pytest.mark.slow
def test_model_evaluates_any_time(fitted) -> None:
    model = fitted.model
    np.testing.assert_allclose(model.volumes_at(fitted.times_s[[3, 7]]),
                               fitted.volumes[[3, 7]], atol=1e-5)
    mid = model.volumes_at([0.5 * (fitted.times_s[3] + fitted.times_s[4])])[0]
    assert mid.shape == (SIZE, SIZE, SIZE)
    lo, hi = fitted.volumes[3], fitted.volumes[4]
    assert np.abs(mid - 0.5 * (lo + hi)).mean() < np.abs(hi - lo).mean() + 1e-6
    assert model.angles_at([fitted.times_s[5] + 1.0])[0] == fitted.tilt_angles[5]
    with pytest.raises(TiltgenError, match="cannot extrapolate"):
        model.volumes_at([fitted.times_s[-1] + 100.0])
    with pytest.raises(TiltgenError, match="GiB"):
        model.volumes_at(fitted.times_s, max_bytes=1000)


def test_same_seed_same_result_other_seed_differs(dynamic) -> None:
    ts, _ = dynamic
    a = dip.fit_dip(ts, steps=6, seed=3, **FAST)
    b = dip.fit_dip(ts, steps=6, seed=3, **FAST)
    c = dip.fit_dip(ts, steps=6, seed=4, **FAST)
    np.testing.assert_array_equal(a.volumes, b.volumes)
    np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert np.abs(a.volumes - c.volumes).max() > 1e-4


def test_checkpoint_resume_equals_uninterrupted_fit(dynamic, tmp_path: Path) -> None:
    ts, _ = dynamic
    straight = dip.fit_dip(ts, steps=12, seed=1, **FAST)
    ckpt = tmp_path / "fit.pt"
    first = dip.fit_dip(ts, steps=5, seed=1, checkpoint=ckpt, checkpoint_every=2, **FAST)
    assert first.loss_history.size == 5 and ckpt.exists()
    resumed = dip.fit_dip(ts, steps=12, seed=1, checkpoint=ckpt, resume=True, **FAST)
    assert resumed.static_sirt is None  # no warm start again
    np.testing.assert_allclose(resumed.loss_history, straight.loss_history, rtol=1e-4)
    np.testing.assert_allclose(resumed.volumes, straight.volumes, rtol=1e-3, atol=1e-4)
    # the fitted model can be loaded from the checkpoint alone
    model = dip.load_dip_model(ckpt)
    np.testing.assert_allclose(model.volumes_at(straight.times_s[:2]), straight.volumes[:2],
                               rtol=1e-3, atol=1e-4)
    # the checkpoint is not silently replaced, nor resumed with other settings or data
    with pytest.raises(TiltgenError, match="already exists"):
        dip.fit_dip(ts, steps=12, seed=1, checkpoint=ckpt, **FAST)
    with pytest.raises(TiltgenError, match="other data or other fit settings"):
        dip.fit_dip(ts, steps=12, seed=1, checkpoint=ckpt, resume=True, n_components=4, **FAST)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TiltgenError, match="cannot read this checkpoint"):
        dip.fit_dip(ts, steps=12, checkpoint=tmp_path / "junk.pt", resume=True, **FAST)


def test_cancel_stops_and_keeps_a_checkpoint(dynamic, tmp_path: Path) -> None:
    ts, _ = dynamic
    ckpt = tmp_path / "cancel.pt"
    gen = dip.fit_dip_iter(ts, steps=10_000, checkpoint=ckpt, checkpoint_every=10_000, **FAST)
    steps_seen = 0
    for event in gen:
        assert isinstance(event, Progress)
        if "step" in event.values:
            steps_seen = int(event.values["step"])
            if steps_seen == 3:
                break
    gen.close()  # what the napari worker does on Cancel
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3
    with pytest.raises(StopIteration):
        next(gen)
    res = dip.fit_dip(ts, steps=4, checkpoint=ckpt, resume=True, **FAST)
    assert res.loss_history.size == 4  # 3 before the cancel + 1 now


def test_progress_and_preview(dynamic) -> None:
    ts, _ = dynamic
    events: list[Progress] = []
    run(dip.fit_dip_iter(ts, steps=4, warm_start_steps=2, sirt_iterations=5, preview_every=2,
                         device="cpu", n_threads=1), show=False, callback=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    previews = [e.preview for e in events if e.preview is not None]
    assert len(previews) == 2 and previews[0].shape == (SIZE, 3 * SIZE)  # first|middle|last
    assert {"loss", "data", "smoothness", "step"} <= set(events[-3].values)


def test_sliding_window_sirt_baseline(dynamic) -> None:
    ts, _ = dynamic
    win = dip.sliding_window_sirt(ts, window=8, iterations=10, device="cpu",
                                  output_times_s=ts.acquisition_times_s[[0, 12]])
    assert win.shape == (2, SIZE, SIZE, SIZE)
    full = dip.sliding_window_sirt(ts, window=N_TILTS, iterations=10, device="cpu",
                                   output_times_s=[0.0])[0]
    static = reconstruct(ts, "sirt", 10, show=False, device="cpu").data
    np.testing.assert_allclose(full, static, rtol=1e-4, atol=1e-5)
    assert np.abs(win[0] - win[1]).max() > 0.1  # different windows, different volumes


# ---------------------------------------------------------------------------- CLI
def test_cli_fit_dip_writes_volumes_and_times(dynamic, tmp_path: Path, capsys) -> None:
    ts, _ = dynamic
    src = write_mrc(ts, tmp_path / "series.mrc")
    times = tmp_path / "times.txt"
    times.write_text("".join(f"{t:.1f}\n" for t in ts.acquisition_times_s))
    out = tmp_path / "run"
    ckpt = tmp_path / "cli.pt"
    args = ["fit-dip", str(src), "--out", str(out), "--steps", "3", "--warm-start-steps", "2",
            "--sirt-iterations", "5", "--times-file", str(times), "--every", "8",
            "--window", "6", "--device", "cpu", "--threads", "1", "--quiet",
            "--checkpoint", str(ckpt)]
    assert cli_main(args) == 0
    meta = json.loads((out / "dip_times.json").read_text())
    assert meta["times_s"] == pytest.approx(np.sort(ts.acquisition_times_s)[::8].tolist(), abs=0.06)
    assert meta["volumes"] == ["dip_t000.mrc", "dip_t001.mrc", "dip_t002.mrc"]
    assert len(meta["tilt_angles_deg"]) == 3 and meta["window_frames"] == 6
    vol = read_volume(out / "dip_t001.mrc")
    assert vol.shape == (SIZE, SIZE, SIZE) and vol.voxel_size_A == pytest.approx(2.0)
    assert (out / "static_sirt.mrc").exists() and (out / "window_sirt_t002.mrc").exists()
    assert "wrote 3 volumes" in capsys.readouterr().out
    # existing outputs are refused before any work; --overwrite + --resume continue the fit
    assert cli_main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(args + ["--overwrite", "--resume", "--steps", "4"]) == 0
    meta2 = json.loads((out / "dip_times.json").read_text())
    assert meta2["provenance"]["parameters"]["steps"] == 4
    # a file prefix instead of a folder
    assert cli_main(["fit-dip", str(src), "--out", str(tmp_path / "pre.mrc"), "--steps", "1",
                     "--warm-start-steps", "0", "--sirt-iterations", "2", "--every", "12",
                     "--device", "cpu", "--quiet"]) == 0
    assert (tmp_path / "pre_t001.mrc").exists() and (tmp_path / "pre_times.json").exists()
