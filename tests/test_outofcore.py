"""Out-of-core WBP/SIRT (methods/outofcore.py): equal to the in-memory result, bounded memory."""

from __future__ import annotations

import dataclasses
import os
import tracemalloc

import mrcfile
import numpy as np
import pytest
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.output import stray_temporaries
from napari_tiltgen.recon.api import reconstruct
from napari_tiltgen.recon.outofcore import (
    operator_bytes,
    plan_slabs,
    reconstruct_to_file,
    row_bytes,
)
from napari_tiltgen.simulate.phantoms import sphere_phantom


@pytest.fixture(scope="module")
def series():
    ts, _ = sphere_phantom(size=24, tilt_step=6.0)
    return ts


def _budget(method, ts, rows):
    n, _, nx = ts.shape
    return rows * row_bytes(method, n, nx, nx) + operator_bytes(method, n, nx, nx)


@pytest.mark.parametrize("method", ["wbp", "sirt"])
def test_streamed_equals_in_memory(series, tmp_path, method):
    ref = reconstruct(series, method, 8, show=False, device="cpu").data
    out = tmp_path / f"{method}.mrc"
    res = reconstruct_to_file(series, out, method, 8, memory_budget=_budget(method, series, 3.5))
    assert len(res.slabs) == 8 and res.slab_rows == 3  # a tiny budget: many slabs
    vol = res.open()
    assert vol.shape == ref.shape
    assert np.abs(vol - ref).max() < 1e-5 * max(1.0, float(np.abs(ref).max()))
    with mrcfile.open(out, permissive=False) as mrc:  # a valid MRC with correct statistics
        assert mrc.validate() if hasattr(mrc, "validate") else True
        assert mrc.header.mode == 2 and mrc.header.ispg == 1
        assert mrc.header.dmax == pytest.approx(float(ref.max()), rel=1e-5)
        assert mrc.header.dmean == pytest.approx(float(ref.mean()), rel=1e-4, abs=1e-6)
        assert float(mrc.voxel_size.x) == pytest.approx(series.pixel_size_A)
    assert stray_temporaries(tmp_path) == []


def test_streamed_wbp_with_row_shifts_is_exact(series, tmp_path):
    n = series.shape[0]
    sh = np.stack([np.linspace(-1.5, 1.5, n), np.full(n, 0.3)], axis=1)
    ts = dataclasses.replace(series, shifts_px=sh)
    ref = reconstruct(ts, "wbp", show=False, device="cpu").data
    res = reconstruct_to_file(ts, tmp_path / "s.mrc", "wbp",
                              memory_budget=_budget("wbp", ts, 10))
    assert len(res.slabs) >= 3
    assert np.abs(res.open() - ref).max() < 1e-5 * float(np.abs(ref).max())


def test_peak_memory_bounded_by_budget_not_volume(tmp_path):
    ts, _ = sphere_phantom(size=48, tilt_step=15.0)
    # a tall stack (ny 192): per-slice temporaries (nz x nx) are small against the volume
    ts = dataclasses.replace(ts, data=np.tile(np.asarray(ts.data), (1, 4, 1)))
    vol_bytes = 4 * 48 * 192 * 48
    budget = _budget("wbp", ts, 12)  # too small for the FBP matrix: matrix-free
    tracemalloc.start()  # numpy-side allocations (torch's are bounded by the slab tensors)
    try:
        res = reconstruct_to_file(ts, tmp_path / "v.mrc", "wbp", memory_budget=budget)
        _, streamed_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(res.slabs) == 16 and res.slab_rows == 12
    assert res.provenance["parameters"]["backprojection"] == "matrix-free"
    assert streamed_peak < 0.3 * vol_bytes, (streamed_peak, vol_bytes)


def test_budget_too_small_and_bad_output_are_clear(series, tmp_path):
    with pytest.raises(TiltgenError, match="memory budget"):
        plan_slabs("sirt", 61, 1024, 1024, 256, 64 << 20)
    with pytest.raises(TiltgenError, match="MRC"):
        reconstruct_to_file(series, tmp_path / "v.tif", "wbp")
    out = tmp_path / "v.mrc"
    out.write_bytes(b"user data")
    with pytest.raises(TiltgenError):
        reconstruct_to_file(series, out, "wbp")
    assert out.read_bytes() == b"user data"


def test_cli_reconstruct_streams_when_over_budget(series, tmp_path, capsys):
    from napari_tiltgen.cli import main
    from napari_tiltgen.io.writers import write

    src = tmp_path / "in.mrc"
    write(series, src)
    common = [str(src), "--method", "wbp", "--align", "no", "--intensity", "none",
              "--tilt-axis", "0", "--quiet"]
    assert main(["reconstruct", *common, "--out", str(tmp_path / "a.mrc")]) == 0
    assert "out of core" not in capsys.readouterr().err
    assert main(["reconstruct", *common, "--out", str(tmp_path / "b.mrc"),
                 "--memory-budget", "0.0002"]) == 0
    out = capsys.readouterr()
    assert "above the memory budget" in out.err and "slabs" in out.out
    a, b = mrcfile.read(tmp_path / "a.mrc"), mrcfile.read(tmp_path / "b.mrc")
    assert np.abs(a - b).max() < 1e-5 * float(np.abs(a).max())
    assert main(["reconstruct", *common, "--method", "sirt", "--iterations", "3",
                 "--out", str(tmp_path / "c.mrc"), "--out-of-core", "yes",
                 "--memory-budget", "0.00001"]) == 2
    assert "too small" in capsys.readouterr().err
    assert not (tmp_path / "c.mrc").exists()


def test_default_threads_follow_the_free_cores(monkeypatch):
    import os

    from napari_tiltgen.core import devices as cpu
    from napari_tiltgen.physics.projector import suggested_threads

    monkeypatch.delenv("TILTGEN_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    busy = {"others": 0.0}
    monkeypatch.setattr(cpu, "_others_busy", lambda: busy["others"])
    assert cpu.free_cpu_cores() == 4  # idle
    busy["others"] = 2.2  # ~2 other busy processes
    assert cpu.free_cpu_cores() == 2
    busy["others"] = 12.0
    assert cpu.free_cpu_cores() == 1
    # without /proc/stat: the load average, this process counted as one task
    busy["others"] = None
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert cpu.free_cpu_cores() == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (3.2, 3.0, 3.0))
    assert cpu.free_cpu_cores() == 2
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # torch's default: all 4 cores
    assert suggested_threads((256, 256, 256), 61) == 2  # 2 cores busy elsewhere: 2 threads
    assert suggested_threads((8, 8, 8), 5) == 1  # small problems: one thread anyway
    busy["others"] = 0.3
    assert suggested_threads((256, 256, 256), 61) is None  # idle: torch's default, unchanged
    monkeypatch.setenv("TILTGEN_THREADS", "3")
    assert cpu.free_cpu_cores() == 3


def test_slabs_on_dask_workers_equal_in_memory(series, tmp_path):
    from distributed import Client

    ref = reconstruct(series, "sirt", 5, show=False, device="cpu").data
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as c:
        res = reconstruct_to_file(series, tmp_path / "d.mrc", "sirt", 5, client=c,
                                  memory_budget=_budget("sirt", series, 4))
    assert len(res.slabs) == 6
    assert np.abs(res.open() - ref).max() < 1e-5 * float(np.abs(ref).max())


def test_no_disk_space_is_refused_before_work(series, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(TiltgenError, match="disk space"):
        reconstruct_to_file(series, tmp_path / "v.mrc", "wbp")
    assert list(tmp_path.iterdir()) == []


def test_streamed_wbp_with_the_sparse_matrix_when_it_fits(series, tmp_path):
    from napari_tiltgen.recon.outofcore import wbp_uses_matrix

    n, _, nx = series.shape
    budget = 2.2 * operator_bytes("wbp", n, nx, nx, memory_budget=1e12)  # the matrix fits
    assert wbp_uses_matrix(n, nx, nx, budget) and not wbp_uses_matrix(n, nx, nx, budget / 3)
    ref = reconstruct(series, "wbp", show=False, device="cpu").data
    res = reconstruct_to_file(series, tmp_path / "m.mrc", "wbp", memory_budget=budget)
    assert res.provenance["parameters"]["backprojection"] == "sparse matrix"
    assert len(res.slabs) >= 2
    assert np.abs(res.open() - ref).max() < 1e-5 * float(np.abs(ref).max())


def test_other_processes_are_seen_and_this_one_is_not(monkeypatch):
    """A process spinning on one core counts as about one busy core (Linux /proc/stat)."""
    import subprocess
    import sys
    import time

    from napari_tiltgen.core import devices as cpu

    if cpu._cpu_jiffies() is None:
        pytest.fail("no /proc/stat on this machine (the CI machines are Linux)")
    cpu._OTHERS["t"] = -1e9
    quiet = cpu._others_busy()
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        cpu._OTHERS["t"] = -1e9
        busy = cpu._others_busy(window_s=0.3)
    finally:
        spin.kill()
        spin.wait()
    # one more busy core, unless other work already keeps every core busy (capped there)
    n = len(os.sched_getaffinity(0))
    assert busy >= min(quiet + 0.5, n - 0.25), (quiet, busy, n)


def test_matrix_free_backprojection_equals_the_sparse_operator():
    from napari_tiltgen.physics.backproject import voxel_backproject
    from napari_tiltgen.physics.projector import Projector

    rng = np.random.default_rng(3)
    angles = np.linspace(-70, 70, 15)
    shifts = rng.uniform(-2, 2, (15, 2))
    q = torch.from_numpy(rng.standard_normal((15, 11, 40)).astype(np.float32))
    w = rng.uniform(0.5, 1.5, 15)
    ref = Projector((24, 11, 36), angles, shifts, 1.5, 40).fbp_backproject(q, w)
    got = voxel_backproject(q, angles, 24, 36, weights=w, shifts_px=shifts, axis_offset_px=1.5)
    assert got.shape == ref.shape == (24, 11, 36)
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_release_pages_drops_a_read_only_map_from_resident_memory(tmp_path):
    from napari_tiltgen.io.lazy import LazyFrames, release_pages

    path = tmp_path / "s.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.ones((4, 256, 1024), np.int16))
    with mrcfile.mmap(path, mode="r") as m:
        lazy = LazyFrames(m.data)
        assert float(lazy[:, :, :].sum()) == 4 * 256 * 1024
        assert release_pages(lazy) and release_pages(m.data[1:3])
        assert float(lazy[2].sum()) == 256 * 1024  # readable again afterwards
    assert not release_pages(np.ones((2, 2)))  # plain arrays are left alone
    writable = np.memmap(tmp_path / "w.bin", dtype=np.float32, mode="w+", shape=(8,))
    assert not release_pages(writable)


def test_streamed_to_ome_zarr_equals_the_mrc_and_has_a_pyramid(tmp_path):
    import zarr

    from napari_tiltgen.io.ome_zarr import layer_data
    from napari_tiltgen.io.readers import read

    ts, _ = sphere_phantom(size=136, tilt_step=10.0)
    budget = _budget("wbp", ts, 24)
    mrc = reconstruct_to_file(ts, tmp_path / "v.mrc", "wbp", memory_budget=budget)
    zr = reconstruct_to_file(ts, tmp_path / "v.zarr", "wbp", memory_budget=budget)
    assert len(zr.slabs) >= 3
    ref = np.asarray(mrc.open())
    np.testing.assert_array_equal(np.asarray(zr.open()), ref)
    root = zarr.open_group(str(tmp_path / "v.zarr"), mode="r")
    ms = root.attrs["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [4.0, 4.0, 4.0]
    assert ms["axes"][0] == {"name": "z", "type": "space", "unit": "angstrom"}
    np.testing.assert_allclose(root["1"][10, 20, 30],
                               ref[20:22, 40:42, 60:62].mean(), rtol=1e-5, atol=1e-6)
    levels, kw, kind = layer_data(tmp_path / "v.zarr")
    assert kind == "image" and kw["multiscale"] and [lv.shape for lv in levels] == [
        (136, 136, 136), (68, 68, 68)] and kw["scale"] == [2.0, 2.0, 2.0]
    vol = read(tmp_path / "v.zarr")
    assert vol.voxel_size_A == 2.0 and np.array_equal(vol.data, ref)
    # exclusive unless overwrite; a folder that is not a Zarr store is never replaced
    with pytest.raises(TiltgenError, match="already exists"):
        reconstruct_to_file(ts, tmp_path / "v.zarr", "wbp", memory_budget=budget)
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(TiltgenError, match="not a Zarr store"):
        reconstruct_to_file(ts, tmp_path / "other.zarr", "wbp", memory_budget=budget,
                            overwrite=True)
    assert (tmp_path / "other.zarr" / "notes.txt").read_text() == "mine"
    reconstruct_to_file(ts, tmp_path / "v.zarr", "wbp", memory_budget=budget, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zarr", "v.mrc", "v.zarr"]


def test_cli_writes_ome_zarr_in_memory_and_streamed(tmp_path):
    from napari_tiltgen.cli import main
    from napari_tiltgen.io.readers import read
    from napari_tiltgen.io.writers import write

    ts, _ = sphere_phantom(size=40, tilt_step=10.0)
    src = write(ts, tmp_path / "ts.mrc")
    common = ["--method", "wbp", "--intensity", "none", "--tilt-axis", "0", "--align", "no",
              "--quiet"]
    assert main(["reconstruct", str(src), "--out", str(tmp_path / "a.zarr"), *common]) == 0
    assert main(["reconstruct", str(src), "--out", str(tmp_path / "b.zarr"), "--out-of-core",
                 "yes", *common]) == 0
    a, b = read(tmp_path / "a.zarr"), read(tmp_path / "b.zarr")
    assert a.shape == b.shape == (40, 40, 40)
    assert np.abs(a.data - b.data).max() < 1e-4 * np.abs(a.data).max()


def test_an_ngff_05_volume_from_another_writer_opens(tmp_path):
    import zarr

    from napari_tiltgen.io.ome_zarr import layer_data
    from napari_tiltgen.io.readers import read

    root = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    root.create_array("s0", shape=data.shape, dtype="float32")[...] = data
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [{"type": "scale",
                                                       "scale": [0.5, 0.5, 0.5]}]}]}]}
    vol = read(tmp_path / "other.zarr")
    assert vol.voxel_size_A == pytest.approx(5.0) and np.array_equal(vol.data, data)
    arr, kw, _ = layer_data(tmp_path / "other.zarr")
    assert not kw["multiscale"] and arr.shape == (4, 5, 6) and kw["scale"] == [5.0] * 3
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(TiltgenError, match="not a readable OME-Zarr"):
        read(tmp_path / "junk.zarr")
