"""The Reconstruct dock widget in a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_error

from napari_tiltgen.gui.views import volume_view
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.simulate.phantoms import sphere_phantom

pytestmark = pytest.mark.gui



def _viewer_with_series(make_napari_viewer, size: int = 32, tilt_step: float = 4.0):
    from napari.layers import Layer

    viewer = make_napari_viewer()
    ts, truth = sphere_phantom(size=size, tilt_step=tilt_step)
    viewer.add_layer(Layer.create(*ts.to_layer_data(name="series")))
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Reconstruct")
    return viewer, w, truth


def test_sirt_adds_volume_layer_with_preview(make_napari_viewer, qtbot) -> None:
    viewer, w, truth = _viewer_with_series(make_napari_viewer)
    assert w.layer.value is viewer.layers["series"]
    w.method.value = "sirt"
    w.iterations.value = 20
    w.preview_every.value = 5
    w.preview_interval_s = 0.0  # draw every preview
    assert w.iterations.enabled and not w.filter.enabled
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)
    layer = volume_view(viewer).layers["series SIRT 20"]  # volumes have their own view
    vol = Volume.from_layer(layer)
    assert vol.shape == (32, 32, 32) and vol.voxel_size_A == pytest.approx(2.0)
    assert vol.provenance["method"] == "sirt"
    assert vol.provenance["parameters"]["iterations"] == 20
    assert rel_error(vol.data, truth.data) < 0.35  # measured 0.28
    assert w.last_preview.shape == (32, 32)  # central z-slice (ny, nx)
    np.testing.assert_allclose(w.last_preview, vol.data[16], rtol=1e-5, atol=1e-6)
    assert not w.preview.native.pixmap().isNull()
    assert w.progress.value == 1000 and w.status.value == "done"
    assert w.note.value.startswith("series SIRT 20: SIRT on cpu (torch) in")


def test_cancel_stops_the_reconstruction(make_napari_viewer, qtbot) -> None:
    viewer, w, _ = _viewer_with_series(make_napari_viewer, size=48, tilt_step=2.0)
    w.method.value = "sirt"
    w.iterations.value = 100_000
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000):
        w.run_button.native.click()
    worker = w.worker
    qtbot.waitUntil(lambda: w.progress.value >= 1, timeout=10000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        w.cancel_button.native.click()
    assert w.status.value == "cancelled"
    assert w.progress.value < 100  # stopped far before the end (1000 = done)
    assert [layer.name for layer in viewer.layers] == ["series"]  # no result layer
    assert w.run_button.enabled


def test_wbp_with_filter_and_errors_are_notified(make_napari_viewer, qtbot,
                                                 monkeypatch) -> None:
    from napari_tiltgen.gui._base import WorkerWidget

    shown: list[str] = []
    monkeypatch.setattr(WorkerWidget, "show_error", lambda self, m: shown.append(m))
    viewer, w, _truth = _viewer_with_series(make_napari_viewer)
    w.method.value = "wbp"
    w.filter.value = "hann"
    w.thickness.value = 20
    assert w.filter.enabled and not w.iterations.enabled
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=30000)
    vol = Volume.from_layer(volume_view(viewer).layers["series WBP"])
    assert vol.shape == (20, 32, 32)
    assert vol.provenance["parameters"]["filter"] == "hann"
    # a layer without angles: the user is told what to do, nothing crashes
    layer = viewer.layers["series"]
    ts = TiltSeries.from_layer(layer)
    meta = dict(layer.metadata)
    meta["tiltgen"] = {**meta["tiltgen"], "tilt_angles": None}
    layer.metadata = meta
    assert TiltSeries.from_layer(layer).tilt_angles is None and ts.tilt_angles is not None
    w.layer.value = layer
    w.method.value = "sirt"
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000, raising=False):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    assert len(shown) == 1 and "tilt angles of this series are unknown" in shown[0]
