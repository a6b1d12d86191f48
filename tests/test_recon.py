"""Reconstruction algorithms, the TiltSeries-level API, the ASTRA backend and the CLI."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rel_error

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.io import read_volume, write_mrc
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.recon import backends
from napari_tiltgen.recon.api import (
    reconstruct,
    reconstruct_iter,
    run_with_oom_fallback,
    with_vertical_axis,
)
from napari_tiltgen.recon.names import BACKENDS, METHODS
from napari_tiltgen.recon.tv import _grad, _grad_adjoint
from napari_tiltgen.recon.wbp import FILTERS, angular_weights, filter_response
from napari_tiltgen.simulate.phantoms import sphere_phantom


def psnr(a: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(ref.max() ** 2 / np.mean((a - ref) ** 2)))


@pytest.fixture(scope="module")
def phantom():
    """32^3 sphere particle, +-60 degrees in 3 degree steps (41 tilts), noise-free."""
    return sphere_phantom(size=32, tilt_range=(-60.0, 60.0), tilt_step=3.0, seed=0)


@pytest.fixture(scope="module")
def sirt50(phantom):
    ts, _ = phantom
    return reconstruct(ts, "sirt", 50, show=False)


def test_angular_weights() -> None:
    full = np.arange(-90.0, 90.0, 2.0)
    assert angular_weights(full).sum() == pytest.approx(np.pi)
    w = angular_weights([30.0, -60.0, 0.0, 10.0])  # any order, uneven steps
    np.testing.assert_allclose(np.rad2deg(w), [20.0, 60.0, 35.0, 15.0])


def test_filters_are_ramps_with_windows() -> None:
    ramp, n_pad = filter_response(50, "ramp")
    assert n_pad == 128 and ramp.size == 65
    f = np.fft.rfftfreq(n_pad)
    assert ramp[0] == pytest.approx(0.0, abs=2e-3)  # no DC offset (band-limited ramp)
    np.testing.assert_allclose(ramp[8:], f[8:], rtol=0.05)  # |f| away from DC
    hann, _ = filter_response(50, "hann")
    assert hann[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TiltgenError, match="unknown filter"):
        filter_response(50, "gaussian")


def test_wbp_full_range_recovers_density() -> None:
    ts, truth = sphere_phantom(size=32, tilt_range=(-90.0, 87.0), tilt_step=3.0, seed=1)
    vol = reconstruct(ts, "wbp", filter="ramp", show=False)
    assert rel_error(vol.data, truth.data) < 0.13  # measured 0.10
    assert vol.data.mean() / truth.data.mean() == pytest.approx(1.0, abs=0.05)
    # a smoothing window trades resolution for noise: still the right scale
    hann = reconstruct(ts, "fbp", filter="hann", show=False)
    assert hann.data.mean() / truth.data.mean() == pytest.approx(1.0, abs=0.05)
    assert hann.provenance["parameters"]["filter"] == "hann"


def test_sirt_on_phantom(phantom, sirt50) -> None:
    ts, truth = phantom
    vol = sirt50
    assert vol.shape == (32, 32, 32)
    assert vol.voxel_size_A == ts.pixel_size_A
    assert vol.data.min() >= 0.0  # positivity
    assert rel_error(vol.data, truth.data) < 0.25  # measured 0.21 with a 60-degree missing wedge
    assert psnr(vol.data, truth.data) > 21.0  # measured 22.6
    wbp = reconstruct(ts, "wbp", show=False)
    assert rel_error(vol.data, truth.data) < 0.6 * rel_error(wbp.data, truth.data)
    p = vol.provenance
    # device "auto": CUDA where there is one, else the CPU
    assert p["method"] == "sirt" and p["backend"] == "torch"
    assert p["device"] == str(resolve_device("auto"))
    assert p["parameters"]["iterations"] == 50 and p["parameters"]["positivity"] is True
    assert p["history"][-1]["step"] == "reconstruct"


def test_sirt_residual_decreases_and_previews() -> None:
    ts, _ = sphere_phantom(size=24, tilt_step=6.0)
    events: list[Progress] = []
    reconstruct(ts, "sirt", 12, preview_every=5, show=False, callback=events.append)
    res = [e.values["residual"] for e in events]
    assert len(res) == 12 and all(b < a for a, b in itertools.pairwise(res))
    assert res[-1] < 0.15 * res[0]  # measured 0.12
    previews = [i for i, e in enumerate(events) if e.preview is not None]
    assert previews == [4, 9, 11]  # every 5 iterations and the last one
    assert events[4].preview.shape == (24, 24)  # central z-slice (ny, nx)
    assert events[-1].fraction == 1.0


def test_sart_converges_faster_than_sirt(phantom, sirt50) -> None:
    ts, truth = phantom
    sart = reconstruct(ts, "sart", 10, n_subsets=10, show=False)
    sirt10 = reconstruct(ts, "sirt", 10, show=False)
    assert rel_error(sart.data, truth.data) < 0.8 * rel_error(sirt10.data, truth.data)
    assert rel_error(sart.data, truth.data) < rel_error(sirt50.data, truth.data) + 0.01
    assert sart.provenance["parameters"]["n_subsets"] == 10


def test_tv_beats_sirt_on_noisy_data() -> None:
    ts, truth = sphere_phantom(size=32, tilt_step=3.0, dose_e_per_A2=50.0, seed=0)
    sirt = reconstruct(ts, "sirt", 60, show=False)
    tv = reconstruct(ts, "tv", 120, tv_weight=0.01, show=False)
    tv2d = reconstruct(ts, "tv", 120, tv_weight=0.01, tv_dims=2, show=False)
    e_sirt, e_tv = rel_error(sirt.data, truth.data), rel_error(tv.data, truth.data)
    assert e_tv < 0.8 * e_sirt, (e_tv, e_sirt)
    assert rel_error(tv2d.data, truth.data) < e_sirt
    assert tv.provenance["parameters"]["tv_weight"] == 0.01


def test_tv_gradient_adjoint() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((5, 6, 7), generator=g, dtype=torch.float64)
    for dims in ((0, 1, 2), (0, 2)):
        q = torch.rand((len(dims), 5, 6, 7), generator=g, dtype=torch.float64)
        lhs = float(torch.sum(_grad(x, dims) * q))
        rhs = float(torch.sum(x * _grad_adjoint(q, dims)))
        assert lhs == pytest.approx(rhs, rel=1e-12)


def test_shifts_are_used(phantom) -> None:
    """A series whose frames were moved by known shifts reconstructs as well once told so."""
    ts, truth = phantom
    rng = np.random.default_rng(0)
    shifts = np.round(rng.normal(scale=2.0, size=(ts.n_tilts, 2)))  # integer: exact moves
    moved = np.zeros_like(ts.data)
    for i, (dy, dx) in enumerate(shifts.astype(int)):
        moved[i] = np.roll(ts.data[i], (dy, dx), axis=(0, 1))
    bad = TiltSeries(moved, ts.tilt_angles, ts.pixel_size_A)
    good = TiltSeries(moved, ts.tilt_angles, ts.pixel_size_A, shifts_px=shifts)
    e_bad = rel_error(reconstruct(bad, "sirt", 30, show=False).data, truth.data)
    e_good = rel_error(reconstruct(good, "sirt", 30, show=False).data, truth.data)
    assert e_good < 0.3 < e_bad


def test_generator_close_stops_between_iterations() -> None:
    ts, _ = sphere_phantom(size=16, tilt_step=10.0)
    gen = reconstruct_iter(ts, "sirt", 1000)
    events = [next(gen) for _ in range(3)]
    assert events[-1].message == "SIRT iteration 3/1000"
    gen.close()
    assert gen.gi_frame is None  # finished: no more iterations run
    with pytest.raises(StopIteration):
        next(gen)


def test_user_errors(phantom, monkeypatch) -> None:
    ts, _ = phantom
    with pytest.raises(TiltgenError, match="unknown reconstruction method"):
        reconstruct(ts, "art", show=False)
    with pytest.raises(TiltgenError, match="at least 1"):
        reconstruct(ts, "sirt", 0, show=False)
    with pytest.raises(TiltgenError, match="angles of this series are unknown"):
        reconstruct(TiltSeries(ts.data), show=False)
    nan = ts.data.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(TiltgenError, match="NaN"):
        reconstruct(TiltSeries(nan, ts.tilt_angles), show=False)
    horizontal = TiltSeries(ts.data, ts.tilt_angles, tilt_axis_angle_deg=86.0)
    with pytest.raises(TiltgenError, match="near horizontal"):
        reconstruct(horizontal, show=False)
    turned, note = with_vertical_axis(horizontal)
    assert "turned by 90 deg" in note and abs(turned.tilt_axis_angle_deg) < 5
    with pytest.raises(TiltgenError, match="no 'tv' reconstruction"):
        reconstruct(ts, "tv", backend="astra", show=False)
    with pytest.raises(TiltgenError, match="conda-forge"):
        reconstruct(ts, "sirt", backend="tomopy", show=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also where a GPU exists
    with pytest.raises(TiltgenError, match="no CUDA GPU"):
        reconstruct(ts, "sirt", device="cuda", show=False)


def test_gpu_out_of_memory_falls_back() -> None:
    tried: list[tuple[str, int]] = []

    def make(dev: torch.device, chunk: int):
        tried.append((dev.type, chunk))
        if dev.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        yield Progress(1.0, "ok")
        return "result"

    events: list[Progress] = []
    gen = run_with_oom_fallback(make, torch.device("cuda"), chunk_bytes=64 << 20)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result, used = stop.value
            break
    assert result == "result" and used.type == "cpu"
    assert tried == [("cuda", 64 << 20), ("cuda", 8 << 20), ("cpu", 64 << 20)]
    assert [e.message for e in events[:2]] == [
        "CUDA out of memory; retrying with smaller chunks",
        "CUDA out of memory; retrying with the CPU",
    ]


# ---------------------------------------------------------------------------- ASTRA backend
def test_astra_projects_exactly_like_us() -> None:
    import astra
    rng = np.random.default_rng(1)
    nz, nx, n_det = 21, 26, 30
    img = rng.random((nz, nx)).astype(np.float32)
    angles = np.array([-70.0, -45.0, -10.0, 0.0, 30.0, 60.0])
    u_shift = rng.normal(scale=1.5, size=angles.size) + 0.7
    pg = backends.astra_proj_geom_2d(astra, angles, n_det, u_shift)
    pid = astra.create_projector("linear", pg, astra.create_vol_geom(nz, nx))
    sid, sino = astra.create_sino(img, pid)
    astra.data2d.delete(sid)
    astra.projector.delete(pid)
    shifts = np.stack([np.zeros_like(u_shift), u_shift], axis=1)
    ours = Projector((nz, 1, nx), angles, shifts, n_det=n_det).forward(
        torch.from_numpy(img[:, None, :]))[:, 0, :].numpy()
    assert rel_error(sino, ours) < 1e-4


def test_torch_and_astra_sirt_agree(phantom) -> None:
    ts, truth = phantom
    rng = np.random.default_rng(2)
    shifted = TiltSeries(ts.data, ts.tilt_angles, ts.pixel_size_A,
                         shifts_px=np.stack([np.zeros(ts.n_tilts),
                                             rng.normal(scale=0.5, size=ts.n_tilts)], axis=1))
    ours = reconstruct(shifted, "sirt", 30, axis_offset_px=0.4, show=False)
    theirs = reconstruct(shifted, "sirt", 30, axis_offset_px=0.4, backend="astra",
                               n_threads=2, device="cpu", show=False)  # ASTRA's CPU projector
    assert theirs.provenance["device"] == "astra-cpu-2d"
    assert rel_error(ours.data, theirs.data) < 1e-3  # same discretisation: measured ~3e-6
    # without relaxation/positivity defaults too, and SART/WBP with our geometry mapping
    r_ours = reconstruct(ts, "sirt", 10, relaxation=0.5, positivity=False, show=False)
    r_astra = reconstruct(ts, "sirt", 10, relaxation=0.5, positivity=False,
                                backend="astra", show=False)
    assert rel_error(r_ours.data, r_astra.data) < 1e-3
    sart = reconstruct(ts, "sart", 3, backend="astra", show=False)
    assert rel_error(sart.data, truth.data) < 0.25


def test_torch_and_astra_wbp_agree_on_full_range() -> None:
    ts, _truth = sphere_phantom(size=32, tilt_range=(-90.0, 87.0), tilt_step=3.0, seed=1)
    ours = reconstruct(ts, "wbp", filter="shepp-logan", show=False)
    theirs = reconstruct(ts, "wbp", filter="shepp-logan", backend="astra", show=False)
    assert rel_error(ours.data, theirs.data) < 0.05  # different backprojector interpolation


def test_astra_dy_shifts_are_undone_on_the_data(phantom) -> None:
    ts, _truth = phantom
    dy = np.where(np.arange(ts.n_tilts) % 2 == 0, 1.0, -2.0)  # integer dy: exact
    moved = ts.data.copy()
    for i in range(ts.n_tilts):
        moved[i] = np.roll(ts.data[i], int(dy[i]), axis=0)
    shifted = TiltSeries(moved, ts.tilt_angles, shifts_px=np.stack([dy, np.zeros_like(dy)], 1))
    ours = reconstruct(shifted, "sirt", 20, show=False)
    theirs = reconstruct(shifted, "sirt", 20, backend="astra", show=False)
    assert rel_error(ours.data, theirs.data) < 0.02


def test_orient_slices_finds_the_engine_orientation(phantom, sirt50) -> None:
    ts, _ = phantom
    vol = sirt50.data  # (nz, ny, nx) in our orientation
    slices = vol.transpose(1, 0, 2)  # (ny, z, x)
    engine = np.rot90(np.flip(slices, axis=1), k=1, axes=(1, 2))  # some other convention
    back, how = backends.orient_slices(np.ascontiguousarray(engine), ts.data, ts.tilt_angles,
                                       vol.shape)
    np.testing.assert_allclose(back, vol, atol=1e-6)
    assert how != "rot90 k=0"


# ---------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_reconstruct(tmp_path: Path, capsys) -> None:
    from napari_tiltgen.cli import main

    ts, truth = sphere_phantom(size=24, tilt_step=5.0)
    src = write_mrc(ts, tmp_path / "ph.st")
    out = tmp_path / "vol.mrc"
    args = ["reconstruct", str(src), "--out", str(out), "--method", "sirt", "--iterations", "30",
            "--threads", "1", "--device", "cpu"]
    r = subprocess.run([sys.executable, "-m", "napari_tiltgen.cli", *args], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "SIRT 30 iterations on cpu (torch)" in r.stdout
    vol = read_volume(out)
    assert vol.shape == (24, 24, 24) and vol.voxel_size_A == pytest.approx(2.0)
    assert rel_error(vol.data, truth.data) < 0.3
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    wbp = tmp_path / "wbp.mrc"
    assert main(["reconstruct", str(src), "--out", str(wbp), "--method", "wbp", "--filter",
                 "hamming", "--quiet", "--thickness", "12"]) == 0
    assert read_volume(wbp).shape == (12, 24, 24)
    assert main(["reconstruct", str(src), "--out", str(src), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "replace" in err and "input" in err  # the input is never written over


def test_cli_choices_match_the_engine() -> None:
    """The torch-free names the CLI offers are exactly the engine's methods, filters, backends."""

    from napari_tiltgen.recon import names as recon_names

    assert tuple(FILTERS) == recon_names.FILTER_NAMES
    assert METHODS is recon_names.METHODS and BACKENDS == recon_names.BACKENDS
