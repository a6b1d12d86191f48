"""Batches on Dask distributed (workflows/batch.py, tiltgen batch): outputs, report, failures
isolated, resume."""

from __future__ import annotations

import csv
import json

import mrcfile
import numpy as np
import pytest
from distributed import Client

from napari_tiltgen.cli import main
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.writers import write
from napari_tiltgen.simulate.phantoms import sphere_phantom
from napari_tiltgen.workflows import run_batch
from napari_tiltgen.workflows.batch import output_paths


def _inputs(folder, sizes=(16, 20, 24)):
    paths = []
    for i, s in enumerate(sizes):
        ts, _ = sphere_phantom(size=s, tilt_step=10.0)
        p = folder / f"series{i}.mrc"
        write(ts, p)
        paths.append(p)
    bad = folder / "broken.mrc"
    bad.write_bytes(b"not an MRC file " * 8)
    return paths, bad


@pytest.fixture(scope="module")
def client():
    # in-process workers: fast; the process-based LocalCluster is tested below (slow)
    with Client(processes=False, n_workers=2, threads_per_worker=1,
                dashboard_address=":0") as c:
        yield c


def test_batch_outputs_report_failure_and_resume(tmp_path, client):
    good, bad = _inputs(tmp_path)
    out = tmp_path / "out"
    inputs = [good[0], bad, good[1], good[2]]
    rep = run_batch(inputs, out, method="sirt", iterations=4, intensity="none", client=client)
    assert [r["status"] for r in rep.rows] == ["done", "failed", "done", "done"]
    assert "broken.mrc" in rep.rows[1]["error"] and "MRC" in rep.rows[1]["error"]
    for p, s in zip(good, (16, 20, 24)):
        vol_path, marker = output_paths(p, out)
        with mrcfile.open(vol_path) as mrc:
            assert mrc.data.shape == (s, s, s) and float(mrc.data.max()) > 0
        assert json.loads(marker.read_text())["row"]["status"] == "done"
    with open(out / "batch_report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == ["done", "failed", "done", "done"]
    assert table[0]["shape"] == "16x16x16" and 0 < float(table[0]["sirt_residual"]) < 1
    assert float(table[2]["seconds"]) > 0
    meta = json.loads((out / "batch_report.json").read_text())
    assert meta["counts"] == {"done": 3, "skipped": 0, "failed": 1}

    before = {p: output_paths(p, out)[0].stat().st_mtime_ns for p in good}
    rep2 = run_batch(inputs, out, method="sirt", iterations=4, intensity="none", client=client)
    assert [r["status"] for r in rep2.rows] == ["skipped", "failed", "skipped", "skipped"]
    assert all(output_paths(p, out)[0].stat().st_mtime_ns == t for p, t in before.items())
    # other parameters: not skipped, and the existing output is not replaced without overwrite
    rep3 = run_batch(good[:1], out, method="sirt", iterations=5, intensity="none", client=client)
    assert rep3.rows[0]["status"] == "failed" and "exists" in rep3.rows[0]["error"]
    rep4 = run_batch(good[:1], out, method="sirt", iterations=5, intensity="none",
                     client=client, overwrite=True)
    assert rep4.rows[0]["status"] == "done"


def test_batch_steps_and_names_checked(tmp_path):
    good, _ = _inputs(tmp_path, sizes=(16,))
    with pytest.raises(TiltgenError, match="unknown batch step"):
        run_batch(good, tmp_path / "o", steps="reconstruct,denoise")
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "series0.mrc"
    twin.write_bytes(good[0].read_bytes())
    with pytest.raises(TiltgenError, match="both be written"):
        run_batch([good[0], twin], tmp_path / "o")


def test_batch_align_interpolate_wbp_steps(tmp_path, client):
    good, _ = _inputs(tmp_path, sizes=(16,))
    rep = run_batch(good, tmp_path / "o", steps="interpolate,reconstruct", method="wbp",
                    interpolate={"target_step_deg": 5.0, "method": "linear"}, intensity="none",
                    client=client)
    assert rep.rows[0]["status"] == "done", rep.rows[0]["error"]
    with mrcfile.open(rep.rows[0]["output"]) as mrc:
        assert mrc.data.shape == (16, 16, 16) and np.isfinite(mrc.data).all()


def test_batch_interpolate_only_turns_frames_without_blur(tmp_path):
    """A batch whose output is the tilt series turns its frames to a vertical axis
    band-limited, as ``tiltgen interpolate`` does: the frames keep their pixel-scale detail
    (a cubic spline keeps 96 % of it here)."""
    from scipy import ndimage

    from napari_tiltgen.io import TiltSeries
    from napari_tiltgen.workflows.batch import process_series

    rng = np.random.default_rng(5)
    frame = ndimage.gaussian_filter(rng.standard_normal((48, 48)), 0.6) + 10.0
    angles = [-8.0, -4.0, 0.0, 4.0, 8.0]
    src = tmp_path / "ts.mrc"
    write(TiltSeries(np.repeat(frame[None], 5, axis=0).astype(np.float32), tilt_angles=angles),
          src)
    mdoc = ["PixelSpacing = 1.0", "[T = SerialEM: Tilt axis angle = 7.0, binning = 1]", ""]
    for z, a in enumerate(angles):
        mdoc += [f"[ZValue = {z}]", f"TiltAngle = {a:.2f}", ""]
    src.with_name("ts.mrc.mdoc").write_text("\n".join(mdoc))
    (tmp_path / "o").mkdir()
    row = process_series(str(src), str(tmp_path / "o"), {
        "steps": ["interpolate"], "intensity": "none",
        "interpolate": {"target_step_deg": 2.0, "method": "linear"}})
    assert row["status"] == "done", row["error"]
    with mrcfile.open(row["output"]) as mrc:
        out = np.asarray(mrc.data, np.float64)
    assert out.shape == (9, 48, 48)
    inner = (slice(12, -12), slice(12, -12))  # a turn keeps the statistics of the texture
    kept = [float(np.std(f[inner]) / np.std(frame[inner])) for f in out]
    assert min(kept) > 0.98, kept  # measured 0.997 (cubic spline: 0.959)


@pytest.mark.slow
def test_cli_batch_local_cluster_two_workers(tmp_path, capsys):
    good, bad = _inputs(tmp_path)
    out = tmp_path / "out"
    args = ["batch", *map(str, [*good, bad]), "--out", str(out), "--iterations", "4",
            "--workers", "2", "--intensity", "none", "--quiet"]
    assert main(args) == 1  # one series failed
    err = capsys.readouterr().err
    assert "dashboard: http" in err and "broken.mrc: failed" in err
    assert sorted(p.name for p in out.glob("*.mrc")) == [f"series{i}.mrc" for i in range(3)]
    table = list(csv.DictReader((out / "batch_report.csv").read_text().splitlines()))
    assert [r["status"] for r in table] == ["done", "done", "done", "failed"]
    assert len({r["worker"] for r in table[:3]}) >= 1
    assert main(args) == 1
    table = list(csv.DictReader((out / "batch_report.csv").read_text().splitlines()))
    assert [r["status"] for r in table] == ["skipped", "skipped", "skipped", "failed"]
