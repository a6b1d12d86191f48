"""The "Interpolate" dock widget: interpolation with marked frames, refusal, QA panel with
pretrained / adapted / linear side by side, auto method, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Layer

from napari_tiltgen.gui.interpolate import COUNT_MODE, QA_COLUMNS, InterpolateWidget
from napari_tiltgen.io.model import TiltSeries

pytestmark = pytest.mark.gui


def _series(step: float = 3.0, half_range: float = 12.0) -> TiltSeries:
    from napari_tiltgen.simulate.clusters import build_cluster
    from napari_tiltgen.simulate.series import simulate_tilt_series

    atoms = build_cluster("cuboctahedron", "Al", shells=3, seed=2)
    return simulate_tilt_series(atoms, tilt_range=(-half_range, half_range), tilt_step=step,
                                size=48).tilt_series


def _run(w: InterpolateWidget, qtbot, button=None) -> None:
    button = button or w.run_button
    with qtbot.waitSignal(button.native.clicked, timeout=5000):
        button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)


def _widget(make_viewer, name: str, adapt_seconds: float, half_range: float = 12.0):
    """A viewer holding the test series (9 frames; 13 with ``half_range`` 18: ``auto`` fine-tunes
    only from 12) as layer ``name`` and the widget on the CPU."""
    viewer = make_viewer()
    ts = _series(half_range=half_range)
    viewer.add_layer(Layer.create(*ts.to_layer_data(name=name)))
    w = InterpolateWidget(viewer)
    w.device.value = "cpu"
    w.adapt_seconds.value = adapt_seconds
    return viewer, ts, w


def test_interpolate_marks_predicted_frames(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    ts = _series()
    viewer.add_layer(Layer.create(*ts.to_layer_data(name="sparse")))
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Interpolate")
    assert isinstance(w, InterpolateWidget)
    assert w.layer.value.name == "sparse"
    # adaptation on by default: method auto, its time budget shown
    assert w.method.value == "auto" and not w.adapt_seconds.native.isHidden()
    w.method.value = "pretrained"
    assert w.adapt_seconds.native.isHidden()
    # the networks average 8 mirror/swap predictions unless unticked (hidden for linear)
    assert w.symmetric.value and not w.symmetric.native.isHidden()
    w.method.value = "linear"
    assert w.symmetric.native.isHidden()
    w.method.value = "pretrained"
    w.symmetric.value = False
    w.mode.value = COUNT_MODE
    w.frames_per_gap.value = 2
    w.device.value = "cpu"
    _run(w, qtbot)
    assert w.status.value == "done"
    assert w.note.value.startswith("inserted 16 frames (pretrained); 25 in all")
    layer = viewer.layers["sparse + pretrained (16 predicted)"]
    assert layer.data.shape == (25, 48, 48)
    rep = layer.metadata["interpolation"]
    assert rep["predicted_indices"] == [i for i in range(25) if i % 3]
    out = TiltSeries.from_layer(layer)  # still a tilt series with the new angles
    np.testing.assert_allclose(out.tilt_angles, np.arange(-12.0, 12.5, 1.0))
    assert out.provenance["interpolation"]["n_inserted"] == 16
    assert out.provenance["interpolation"]["symmetric"] is False  # as the box said
    markers = viewer.layers["sparse + pretrained (16 predicted) [predicted frames]"]
    assert markers.data[:, 0].tolist() == rep["predicted_indices"]
    assert markers.properties["label"][0] == "PREDICTED -11.0°"
    # the text overlay follows the slider: predicted vs real frames
    viewer.layers.selection.active = layer
    overlay = w.text_overlay()
    viewer.dims.set_current_step(0, 1)
    assert overlay.visible and overlay.text == "frame 2/25  -11.00 deg  PREDICTED (pretrained)"
    viewer.dims.set_current_step(0, 3)
    assert overlay.text == "frame 4/25  -9.00 deg  real"
    viewer.layers.selection.active = viewer.layers["sparse"]
    # the interpolation text is only shown for interpolated layers (another overlay may show
    # the tilt of plain series)
    assert not (overlay.visible and overlay.text.startswith("frame "))


def test_gap_too_large_is_refused_with_a_notification(make_napari_viewer, qtbot,
                                                      monkeypatch) -> None:
    viewer = make_napari_viewer()
    ts = _series(step=12.0)  # -12, 0, 12: gaps of 12 degrees are fine; 24 is not
    sparse = ts.subset([0, 2])
    viewer.add_layer(Layer.create(*sparse.to_layer_data(name="very sparse")))
    w = InterpolateWidget(viewer)
    errors: list[str] = []
    monkeypatch.setattr(w, "show_error", errors.append)
    w.device.value = "cpu"
    w.method.value = "pretrained"
    _run(w, qtbot)
    assert errors and "trained on gaps of 2-12 degrees" in errors[0]
    assert len(viewer.layers) == 1  # nothing invented
    w.method.value = "linear"
    _run(w, qtbot)
    assert [layer.name for layer in viewer.layers][1:] == [
        "very sparse + linear (23 predicted)", "very sparse + linear (23 predicted) [predicted frames]"]


@pytest.mark.slow
def test_leave_one_out_panel_shows_three_methods_on_real_frames(make_napari_viewer, qtbot
                                                                  ) -> None:
    viewer, ts, w = _widget(make_napari_viewer, "real", 1.0, 18.0)  # 13 frames every 3 deg
    _run(w, qtbot, w.qa_button)
    assert w.status.value == "done"
    sel = w.selection
    assert sel is not None and sel.method in ("pretrained", "adapted", "linear",
                                              "pretrained+reprojection", "adapted+reprojection")
    table = w.qa_table.value
    assert list(table["columns"]) == QA_COLUMNS
    assert len(table["data"]) == len(sel.rows()) >= 1
    row = table["data"][0]
    assert row[0] == 6.0  # twice the 3-degree step
    assert all(np.isfinite(v) for v in row[2:5])  # PSNR pretrained, adapted, linear
    assert all(0 < v <= 1 for v in row[5:8])
    # the ensembles with the reprojection, scored at twice the step like the rest
    assert row[8] == pytest.approx(round(float(np.mean(sel.qa[1]["pretrained+reprojection"].psnr)),
                                         2))
    assert w.qa_summary.value.startswith(sel.message)
    chosen = sel.method
    names = [layer.name for layer in viewer.layers]
    assert names[1:] == ["real QA real", f"real QA predicted ({chosen})", "real QA difference"]
    held = sel.qa[1][chosen].indices
    np.testing.assert_array_equal(viewer.layers["real QA real"].data, ts.data[held])
    diff = viewer.layers["real QA difference"].data
    np.testing.assert_allclose(diff, viewer.layers[f"real QA predicted ({chosen})"].data
                               - ts.data[held], atol=1e-6)


@pytest.mark.slow
def test_auto_interpolation_then_qa_uses_only_the_real_frames(make_napari_viewer, qtbot
                                                              ) -> None:
    viewer, ts, w = _widget(make_napari_viewer, "sparse", 1.0)
    w.mode.value = COUNT_MODE
    w.frames_per_gap.value = 1
    _run(w, qtbot)
    assert w.status.value == "done"
    res = w.result
    assert res.selection is not None and res.method == res.selection.method
    assert w.note.value.startswith(f"inserted 8 frames ({res.method}); 17 in all")
    assert len(w.qa_table.value["data"]) >= 1
    assert w.qa_summary.value.startswith(res.selection.message)
    # QA on the interpolated layer runs on its 9 real frames, never on predicted ones
    layer = viewer.layers[f"sparse + {res.method} (8 predicted)"]
    w.layer.value = layer
    np.testing.assert_array_equal(w.qa_series().data, ts.data)


def test_cancel_stops_the_adaptation(make_napari_viewer, qtbot) -> None:
    viewer, _, w = _widget(make_napari_viewer, "real", 600.0, 18.0)
    w.qa_button.native.click()
    qtbot.waitUntil(lambda: w.status.value.startswith("adapting: step"), timeout=60000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=20000)
    assert w.status.value == "cancelled"
    assert len(viewer.layers) == 1 and w.selection is None
