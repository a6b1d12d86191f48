"""The "Time-resolved fit" dock widget with a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tiltgen.gui import dip as dip_widget
from napari_tiltgen.gui._base import WorkerWidget
from napari_tiltgen.gui.dip import DIPWidget, time_label
from napari_tiltgen.gui.views import text_overlay
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom

pytestmark = pytest.mark.gui

SIZE, N_TILTS = 16, 20


@pytest.fixture(scope="module")
def series() -> TiltSeries:
    ts, _ = dynamic_sphere_phantom(size=SIZE, n_tilts=N_TILTS, total_time_s=1900.0)
    return ts


def make_widget(make_napari_viewer, ts: TiltSeries) -> tuple:
    viewer = make_napari_viewer()
    data, kwargs, _ = ts.to_layer_data(name="dynamic")
    viewer.add_image(data, **kwargs)
    w = DIPWidget(viewer)
    viewer.window.add_dock_widget(w, name="Time-resolved fit")
    w.layer.value = viewer.layers["dynamic"]
    w.warm_start.value = 5
    w.device.value = "cpu"
    return viewer, w


def test_fit_adds_4d_layer_with_time_and_tilt_labels(make_napari_viewer, qtbot,
                                                     series: TiltSeries, monkeypatch) -> None:
    viewer, w = make_widget(make_napari_viewer, series)
    assert "20 frames of 16 x 16 px, 0 to 1900 s (recorded times)" == w.info.value
    w.steps.value = 6
    w.every.value = 2
    # keep the test fast: fewer SIRT iterations for the warm start
    real = dip_widget.fit_dip_iter
    monkeypatch.setattr(dip_widget, "fit_dip_iter",
                        lambda ts, **kw: real(ts, sirt_iterations=5, preview_every=3,
                                              n_threads=1, **kw))
    with qtbot.waitSignal(w.signals.finished, timeout=120_000):
        w.run_button.native.click()
    assert w.status.value.startswith("DIP 4-D (dynamic): t = 0 s, tilt = -70.0 deg")
    # the 4-D result is in the volumes view, never beside the tilt series
    assert [lay.name for lay in viewer.layers] == ["dynamic"]
    vview = w.volume_viewer()
    assert vview is not viewer
    layer = vview.layers["DIP 4-D (dynamic)"]
    assert layer.data.shape == (N_TILTS // 2, SIZE, SIZE, SIZE)
    assert tuple(layer.axis_labels) == ("time", "z", "y", "x")
    assert np.allclose(layer.scale[1:], 2.0)  # voxel size in Å from the series
    # the live preview is drawn inside the widget: central z-plane, first | middle | last time
    assert w.last_preview is not None and w.last_preview.shape == (SIZE, 3 * SIZE)
    assert not any(layer.name.startswith("DIP preview") for layer in viewer.layers)
    # moving the time slider updates the overlay, the slider label and the status
    res = w.result
    vview.dims.set_current_step(0, 7)
    expected = time_label(res.times_s, res.tilt_angles, 7)
    assert expected == f"t = {series.acquisition_times_s[14]:.0f} s, tilt = " \
                       f"{series.tilt_angles[14]:+.1f} deg"
    overlay = text_overlay(vview)
    assert overlay is vview.canvas.overlays.text
    assert overlay.visible and overlay.text == expected
    assert vview.dims.axis_labels[0] == expected.replace("tilt = ", "")
    assert w.status.value.endswith(expected)
    assert w.run_button.enabled


def test_cancel_stops_the_fit_and_saves_a_checkpoint(make_napari_viewer, qtbot,
                                                     series: TiltSeries, tmp_path: Path) -> None:
    viewer, w = make_widget(make_napari_viewer, series)
    w.steps.value = 1_000_000
    ckpt = tmp_path / "gui.pt"
    w.checkpoint.value = ckpt
    w._on_run()
    qtbot.waitUntil(lambda: w.status.value.startswith("DIP step 3"), timeout=120_000)
    with qtbot.waitSignal(w.signals.finished, timeout=60_000):
        w.cancel_button.native.click()
    assert w.status.value == "cancelled"
    assert not any(layer.name.startswith("DIP 4-D") for layer in viewer.layers)
    state = torch.load(ckpt, weights_only=True)
    assert 3 <= state["step"] < 1_000_000
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_user_errors_are_notifications(make_napari_viewer, qtbot, series: TiltSeries,
                                       monkeypatch) -> None:
    viewer, w = make_widget(make_napari_viewer, series)
    shown: list[str] = []
    monkeypatch.setattr(WorkerWidget, "show_error", lambda self, m: shown.append(m))
    w.times.value = "uniform, angle order"
    w.resume.value = True  # resume without a checkpoint file
    w.run_button.native.click()
    assert shown and "checkpoint file to resume from" in shown[-1]
    assert not w.running
    # a series whose frames repeat a time: refused with the reason, nothing runs
    ts = TiltSeries(series.data, series.tilt_angles,
                    acquisition_times_s=np.zeros(N_TILTS), pixel_size_A=2.0)
    data, kwargs, _ = ts.to_layer_data(name="bad times")
    viewer.add_image(data, **kwargs)
    w.layer.value = viewer.layers["bad times"]
    w.times.value = "recorded (.mdoc), else angle order"
    w.resume.value = False
    assert "same acquisition time" in w.info.value
    w.run_button.native.click()
    assert "same acquisition time" in shown[-1] and not w.running
