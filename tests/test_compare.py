"""Comparison API (no Qt) and the Compare widget in a real viewer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import file_state
from scipy.ndimage import gaussian_filter

from napari_tiltgen import TiltgenError, Volume, read_volume
from napari_tiltgen.evaluate.compare import compare, plot_comparison
from napari_tiltgen.simulate import sphere_phantom


@pytest.fixture(scope="module")
def volumes() -> dict[str, Volume]:
    _, truth = sphere_phantom(size=32, tilt_step=10.0, seed=3)
    rng = np.random.default_rng(0)
    noisy = truth.data + rng.normal(0, 0.05, truth.shape).astype(np.float32)
    blurred = gaussian_filter(truth.data, 2.0)
    mk = lambda d, m: Volume(d, voxel_size_A=2.0, provenance={"method": m})
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
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
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


def test_half_set_fsc_is_computed_from_even_and_odd_tilts() -> None:
    """The half-set column is filled: the series' even and odd tilts, remade with WBP."""
    from napari_tiltgen.recon.api import reconstruct
    ts, truth = sphere_phantom(size=32, tilt_range=(-60, 60), tilt_step=3.0, n_spheres=8,
                               seed=4, dose_e_per_A2=50.0)
    full = reconstruct(ts, "wbp", show=False)
    r = compare(truth, {"WBP": full}, tilt_series=ts,
                half_set={"WBP": {"method": "wbp", **full.provenance["parameters"]}})
    row = r.rows[0]
    assert set(r.half_fsc) == {"WBP"}
    assert 2 * 2.0 <= row["half_fsc_0.143_A"] < 32 * 2.0  # Nyquist .. box, in Å
    assert "-" not in r.table_rows()[1][5]  # the half-set column shows a number
    with pytest.raises(TiltgenError, match="tilt series"):
        compare(truth, {"WBP": full}, half_set={"WBP": {"method": "wbp"}})


def test_export_names_drop_the_file_extension() -> None:
    from napari_tiltgen.evaluate.compare import export_stem

    assert export_stem("sirt.mrc") == "sirt"
    assert export_stem("tomo.rec") == "tomo"
    assert export_stem("phantom tilt series SIRT 100") == "phantom_tilt_series_SIRT_100"
    assert export_stem("a/b.MRC") == "a_b"
    assert export_stem("...") == "volume"


def test_comparison_figure_fills_every_panel_with_scale_bars(volumes) -> None:
    from napari_tiltgen.evaluate.compare import nice_scale_bar_A

    r = compare(volumes["truth"], {"noisy": volumes["noisy"], "blurred": volumes["blurred"]},
                reference_name="ground truth")
    fig = plot_comparison(r)
    empty = [ax for ax in fig.axes if ax.axison and not (ax.images or ax.lines or ax.tables)]
    assert not empty
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    titles = [ax.get_title() for ax in fig.axes]
    # 3 volumes x (xy, xz, difference) images, each with a scale bar (32 px x 2 Å = 6.4 nm)
    assert sum(t == "1 nm" for t in texts) == 9
    assert any("noisy" in t and "PSNR" in t and "dB" in t for t in titles)
    assert any(ax.tables for ax in fig.axes)  # the metric numbers
    assert nice_scale_bar_A(64.0) == 10.0 and nice_scale_bar_A(300.0) == 50.0


@pytest.mark.gui
def test_compare_widget(make_napari_viewer, qtbot, volumes, tmp_path: Path) -> None:
    from napari_tiltgen.gui.views import workspace

    viewer = make_napari_viewer()
    for name, v in volumes.items():
        viewer.add_layer(_layer(v, name))
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Compare")
    vv = workspace(viewer).volumes  # volumes live in the volumes window
    assert len(viewer.layers) == 0 and len(vv.layers) == 3
    w.reference.value = vv.layers["truth"]
    w.candidates.value = [vv.layers["noisy"], vv.layers["blurred"]]
    assert "noisy: noise" in w.provenance.value

    w.show_side_by_side()
    from napari_tiltgen.gui.compare import _grid

    assert _grid(vv).enabled and vv.dims.ndisplay == 2
    names = [l.name for l in vv.layers]
    assert names[:3] == ["truth", "noisy", "blurred"]  # the grid's first cell is the reference
    assert all(vv.layers[n].name_overlay.visible for n in names[:3])  # labelled cells

    w.add_differences()
    diff = vv.layers["noisy - truth"].data
    np.testing.assert_allclose(diff, volumes["noisy"].data - volumes["truth"].data, atol=1e-6)
    assert vv.layers["noisy - truth"].name_overlay.visible

    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=5000):
        w._on_run()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)
    assert w._table.columnCount() == 2
    shown = float(w.metric_value("PSNR (dB)", "noisy"))
    assert shown == pytest.approx(w.report.rows[0]["psnr_db"], abs=0.01)
    assert float(w.metric_value("SSIM", "blurred")) == pytest.approx(w.report.rows[1]["ssim"],
                                                                     abs=1e-3)

    w.export_dir.value = tmp_path
    vv.layers["noisy"].name = "noisy.mrc"  # a volume opened from a file keeps its name
    written = w.export_all()
    assert {p.name for p in written} == {"metrics.csv", "metrics.json", "comparison.png",
                                         "noisy.mrc", "blurred.mrc"}
    np.testing.assert_array_equal(read_volume(tmp_path / "noisy.mrc").data,
                                  volumes["noisy"].data)


def _layer(v: Volume, name: str):
    from napari.layers import Layer

    return Layer.create(*v.to_layer_data(name=name))


def test_demo_verdicts_say_which_enhancement_beat_sirt() -> None:
    from napari_tiltgen.workflows.demo import verdict_text, verdicts

    rows = [{"name": "SIRT", "psnr_db": 30.0, "ssim": 0.80},
            {"name": "SIRT inpainted", "psnr_db": 31.0, "ssim": 0.82},
            {"name": "SIRT jittered", "psnr_db": 28.0, "ssim": 0.70},
            {"name": "INR", "psnr_db": 27.0, "ssim": 0.72}]
    v = verdicts(rows, {"mean_ssim_dip": 0.6, "mean_ssim_static_sirt": 0.7})
    assert [(x["name"], x["verdict"]) for x in v] == [
        ("SIRT inpainted", "beat SIRT"), ("INR", "mixed (one of PSNR, SSIM better)"),
        ("time-resolved DIP", "did not beat SIRT")]
    text = verdict_text(v)
    assert "SIRT inpainted: BEAT SIRT" in text and "DID NOT BEAT SIRT" in text
