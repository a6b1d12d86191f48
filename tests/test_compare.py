"""Comparison API (no Qt) and the Compare widget in a real viewer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import file_state
from napari_tiltgen import TiltgenError, Volume, read_volume
from napari_tiltgen.compare import compare, plot_comparison
from napari_tiltgen.simulate import sphere_phantom


@pytest.fixture(scope="module")
def volumes() -> dict[str, Volume]:
    _, truth = sphere_phantom(size=32, tilt_step=10.0, seed=3)
    rng = np.random.default_rng(0)
    noisy = truth.data + rng.normal(0, 0.05, truth.shape).astype(np.float32)
    blurred = gaussian_filter(truth.data, 2.0)
    mk = lambda d, m: Volume(d, voxel_size_A=2.0, provenance={"method": m})  # noqa: E731
    return {"truth": truth, "noisy": mk(noisy, "noise"), "blurred": mk(blurred, "blur")}


def test_compare_ranks_and_exports(volumes, tmp_path: Path) -> None:
    r = compare(volumes["truth"], {"noisy": volumes["noisy"], "blurred": volumes["blurred"]},
                reference_name="ground truth")
    by = {row["name"]: row for row in r.rows}
    # mild noise keeps PSNR high; a 2-voxel blur loses more
    assert by["noisy"]["psnr_db"] > by["blurred"]["psnr_db"] + 3
    assert 0 < by["blurred"]["ssim"] < 1 and by["noisy"]["nrmse"] < 0.2
    assert by["noisy"]["chamfer_A"] < by["blurred"]["chamfer_A"]
    assert by["noisy"]["voxel_size_A"] == 2.0
    text = r.table_text()
    assert "PSNR (dB)" in text and "noisy" in text
    r.save_csv(tmp_path / "m.csv")
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [row["name"] for row in rows] == ["noisy", "blurred"]
    assert float(rows[0]["psnr_db"]) == pytest.approx(by["noisy"]["psnr_db"])
    doc = json.loads(r.save_json(tmp_path / "m.json").read_text())
    assert set(doc["fsc_curves"]) == {"noisy", "blurred"}
    fig = plot_comparison(r, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert len(fig.axes) >= 8
    before = file_state(tmp_path / "m.csv")
    with pytest.raises(TiltgenError, match="already exists"):
        r.save_csv(tmp_path / "m.csv")
    assert file_state(tmp_path / "m.csv") == before


def test_compare_shape_mismatch(volumes) -> None:
    with pytest.raises(TiltgenError, match="same grid"):
        compare(volumes["truth"], {"small": np.zeros((8, 8, 8))})


def test_half_maps_give_reference_free_resolution(volumes) -> None:
    rng = np.random.default_rng(1)
    t = volumes["truth"].data
    h = [t + rng.normal(0, s, t.shape).astype(np.float32) for s in (0.3, 0.3)]
    r = compare(None, {"noisy": volumes["noisy"]}, half_maps={"noisy": tuple(h)})
    row = r.rows[0]
    assert r.reference_name is None and "psnr_db" not in row
    assert 4.0 <= row["half_fsc_0.143_A"] < 40.0  # between Nyquist (2 x 2 Å) and the box


@pytest.mark.gui
def test_compare_widget(make_napari_viewer, qtbot, volumes, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    for name, v in volumes.items():
        viewer.add_layer(_layer(v, name))
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Compare")
    w.reference.value = viewer.layers["truth"]
    w.candidates.value = [viewer.layers["noisy"], viewer.layers["blurred"]]
    assert "noisy: noise" in w.provenance.value

    w.show_side_by_side()
    from napari_tiltgen.widgets.compare import _grid

    assert _grid(viewer).enabled and viewer.dims.ndisplay == 2
    names = [l.name for l in viewer.layers]
    assert names[:3] == ["truth", "noisy", "blurred"]  # the grid's first cell is the reference

    w.add_differences()
    diff = viewer.layers["noisy - truth"].data
    np.testing.assert_allclose(diff, volumes["noisy"].data - volumes["truth"].data, atol=1e-6)

    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=5000):
        w._on_run()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)
    assert w._table.columnCount() == 2
    shown = float(w.metric_value("PSNR (dB)", "noisy"))
    assert shown == pytest.approx(w.report.rows[0]["psnr_db"], abs=0.01)
    assert float(w.metric_value("SSIM", "blurred")) == pytest.approx(w.report.rows[1]["ssim"],
                                                                     abs=1e-3)

    w.export_dir.value = tmp_path
    written = w.export_all()
    assert {p.name for p in written} == {"metrics.csv", "metrics.json", "comparison.png",
                                         "noisy.mrc", "blurred.mrc"}
    np.testing.assert_array_equal(read_volume(tmp_path / "noisy.mrc").data,
                                  volumes["noisy"].data)


def _layer(v: Volume, name: str):
    from napari.layers import Layer

    return Layer.create(*v.to_layer_data(name=name))
