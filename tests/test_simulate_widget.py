"""The Simulate dock widget in a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tiltgen.io.model import TiltSeries, Volume

pytestmark = pytest.mark.gui


def dock(viewer):
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Simulate")
    return w


def test_fast_mode_adds_series_and_ground_truth(make_napari_viewer, qtbot) -> None:
    import importlib

    for mod in ("ase.cluster", "torch"):  # imports are not what we time
        importlib.import_module(mod)

    viewer = make_napari_viewer()
    w = dock(viewer)
    w.structure.value = "cuboctahedron"
    w.element.value = "Pt"
    w.shells.value = 4
    # the default tilt scheme is a realistic holder: -70..70 degrees in 2-degree steps
    assert (w.tilt_start.value, w.tilt_end.value, w.tilt_step.value) == (-70.0, 70.0, 2.0)
    w.tilt_start.value, w.tilt_end.value, w.tilt_step.value = -90.0, 90.0, 1.0
    w.size.value = 128  # 181 frames of 128 x 128 px
    w.dose.value = 2e4
    w.seed.value = 5
    w.run_button.native.click()
    assert w.running
    qtbot.waitUntil(lambda: not w.running, timeout=120000)
    assert w.status.value == "done", w.status.value
    from napari_tiltgen.gui.views import workspace

    vv = workspace(viewer).volumes  # the ground truth goes to the volumes window
    names = [layer.name for layer in viewer.layers] + [layer.name for layer in vv.layers]
    assert names == ["cuboctahedron Pt147 (solid, 4 shells, 16.6 Å) (fast)",
                     "cuboctahedron Pt147 (solid, 4 shells, 16.6 Å) ground truth"]
    ts = TiltSeries.from_layer(viewer.layers[0])
    vol = Volume.from_layer(vv.layers[0])
    assert ts.shape == (181, 128, 128) and vol.shape == (128, 128, 128)
    np.testing.assert_allclose(ts.tilt_angles[[0, 90, -1]], [-90.0, 0.0, 90.0])
    assert ts.pixel_size_A == pytest.approx(vol.voxel_size_A)
    assert viewer.layers[0].scale[1] == pytest.approx(ts.pixel_size_A)
    assert ts.provenance["parameters"]["dose_e_per_A2"] == 2e4
    assert ts.provenance["parameters"]["optics"]["convergence_mrad"] == 35.0
    # a few seconds: measured 1-2 s wall on an idle 2-core machine; CPU time is asserted because
    # wall time depends on what else runs on the machine
    assert w.last_cpu_s is not None and w.last_cpu_s < 10.0
    assert "181 frames of 128 x 128 px" in w.note.value


def test_dynamic_phantom_gives_start_and_end_volumes(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    w = dock(viewer)
    w.dynamic.value = "growth"
    assert w.frame_time.enabled and not w.variant.enabled
    w.shells.value = 3
    w.size.value = 48
    w.tilt_start.value, w.tilt_end.value, w.tilt_step.value = -90.0, 90.0, 10.0
    w.run_button.native.click()
    assert w.running
    qtbot.waitUntil(lambda: not w.running, timeout=120000)
    ts = TiltSeries.from_layer(viewer.layers[0])
    assert ts.acquisition_times_s is not None and ts.acquisition_times_s.max() == 18 * 20.0
    from napari_tiltgen.gui.views import workspace

    vv = workspace(viewer).volumes
    v0 = vv.layers["growth Au (55 atoms) ground truth t=0"].data
    v1 = vv.layers["growth Au (55 atoms) ground truth t=end"].data
    assert v1.sum() > 2 * v0.sum()


def test_abtem_mode_shows_progress_and_cancels(make_napari_viewer, qtbot) -> None:
    from napari_tiltgen.simulate.abtem_haadf import AbtemSettings

    viewer = make_napari_viewer()
    w = dock(viewer)
    w.mode.value = "abtem"
    assert "minutes per frame" in w.note.value
    w.shells.value = 2  # Au13
    w.size.value = 16
    w.tilt_start.value, w.tilt_end.value, w.tilt_step.value = -60.0, 60.0, 10.0
    w.abtem_settings = AbtemSettings(rows_per_step=2, margin_A=3.0, slice_thickness_A=2.0)
    w.run_button.native.click()
    worker = w.worker
    # the first scan rows of the first frame arrive as progress with a preview of the frame
    qtbot.waitUntil(lambda: w.last_preview is not None, timeout=120000)
    assert w.last_preview.shape == (16, 16)
    assert "abTEM frame 1/13" in w.status.value
    with qtbot.waitSignal(worker.finished, timeout=120000):
        w.cancel_button.native.click()
    assert w.status.value == "cancelled"
    assert len(viewer.layers) == 0  # nothing half-done was added
    assert w.progress.value < 100  # stopped within the first of 13 frames (8 blocks each)
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_bad_settings_are_reported(make_napari_viewer, qtbot, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    w = dock(viewer)
    w.shells.value = 8
    w.size.value = 32
    w.pixel_size.value = 0.2
    w.tilt_step.value = 30.0
    w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=120000)
    assert shown and "does not fit" in shown[-1]
    assert w.status.value.startswith("the cluster")
    w.tilt_start.value, w.tilt_end.value = 30.0, -30.0
    w.run_button.native.click()
    assert "last tilt" in shown[-1] and not w.running
    assert len(viewer.layers) == 0
