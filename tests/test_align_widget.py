"""The "Align" dock widget with a real napari viewer (headless under Xvfb): a raw-like layer
(vacuum offset, jitter, tilt axis at 30 degrees not recorded) is prepared and aligned in place,
the shifts are plotted, the reprojection error is reported, and Undo restores the layer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_tiltgen.io.model import METADATA_KEY, TiltSeries
from napari_tiltgen.simulate.phantoms import project_spheres, random_spheres

pytestmark = pytest.mark.gui

ANGLES = np.arange(-60.0, 60.1, 6.0)


def _raw_layer(viewer):
    from napari.layers import Layer

    rng = np.random.default_rng(7)
    proj = project_spheres(random_spheres(20, 8, 7), ANGLES, (64, 64), supersample=1)
    frames = [ndimage.rotate(ndimage.shift(f, rng.uniform(-3, 3, 2), order=1), -30.0,
                             reshape=False, order=1)[16:48, 16:48] for f in proj]
    d = np.clip(np.array(frames), 0, None)
    d = (rng.poisson(d * 600.0 / d.max()) - 31900.0).astype(np.float32)
    ts = TiltSeries(d, tilt_angles=ANGLES, pixel_size_A=2.0,
                    provenance={"source": None,
                                "tilt_axis_source": "not recorded in the file (unknown)"})
    if hasattr(ts, "tilt_axis_known"):
        ts.tilt_axis_known = False
    layer = viewer.add_layer(Layer.create(*ts.to_layer_data(name="raw")))
    return layer, ts


def test_align_widget_aligns_plots_reports_and_undoes(make_napari_viewer, qtbot) -> None:
    from napari_tiltgen.gui.align import AlignWidget

    viewer = make_napari_viewer()
    layer, _ts = _raw_layer(viewer)
    before_data = np.array(layer.data)
    before_meta = dict(layer.metadata[METADATA_KEY])
    w = AlignWidget(viewer)
    assert w.layer.value is layer and not w.undo_button.enabled
    assert not w.axis_angle.enabled  # enabled only when the value is to be used
    w.rounds.value = 1
    w.iterations.value = 8
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=20_000):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=240_000)
    assert w.status.value == "done", w.status.value
    aligned = TiltSeries.from_layer(layer)
    assert aligned.tilt_axis_angle_deg == 0.0
    assert "estimated from the data" in aligned.provenance["tilt_axis_source"]
    est = aligned.provenance["tilt_axis_estimate"]["angle_deg"]
    assert est == pytest.approx(30.0, abs=1.0)
    assert abs(float(np.median(layer.data[:, :2]))) < 2.0  # vacuum offset removed
    assert np.abs(aligned.shifts_px).max() > 0.5  # shifts found and stored in the metadata
    rep = w.last_report
    assert rep.reprojection_error_after < rep.reprojection_error_before
    assert "reprojection error" in w.summary.value
    lines = w._axes.get_lines()
    assert len(lines) == 2 and len(lines[0].get_xdata()) == ANGLES.size  # dx and dy per tilt
    assert w.undo_button.enabled
    # Undo: the layer is as it was
    w.undo_button.native.click()
    np.testing.assert_array_equal(layer.data, before_data)
    assert layer.metadata[METADATA_KEY] == before_meta
    assert not w.undo_button.enabled and "undone" in w.summary.value


def test_align_widget_is_in_the_manifest_and_errors_are_shown(make_napari_viewer, qtbot,
                                                              monkeypatch) -> None:
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Align")
    shown: list[str] = []
    monkeypatch.setattr(w, "show_error", lambda m: shown.append(m))
    w.run_button.native.click()  # no layer
    assert shown and "no tilt-series layer" in shown[0]
