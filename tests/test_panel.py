"""The workspace a microscopist works in: two views, one Tomography panel, pickers, precision.

Real napari viewers (Qt under Xvfb). Run with
``xvfb-run -a -s "-screen 0 1920x1080x24" python3 -m pytest -p no:xvfb tests/test_panel.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume

pytestmark = pytest.mark.gui

UNIT_WARNING = "Inconsistent units"


@pytest.fixture
def notes():
    """Every napari notification message shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def grab(n):
        seen.append(str(n.message))

    notification_manager.notification_ready.connect(grab)
    yield seen
    notification_manager.notification_ready.disconnect(grab)


def series(n=21, size=32, px=0.287, start=-60.0, step=6.0) -> TiltSeries:
    rng = np.random.default_rng(0)
    return TiltSeries(data=rng.random((n, size, size), dtype=np.float32),
                      tilt_angles=start + step * np.arange(n), pixel_size_A=px)


def volume(size=48, vs=0.287) -> Volume:
    rng = np.random.default_rng(1)
    return Volume(data=rng.random((size, size, size), dtype=np.float32), voxel_size_A=vs,
                  provenance={"method": "sirt"})


def add(viewer, obj, name):
    data, kw, _ = obj.to_layer_data(name=name)
    return viewer.add_image(data, **kw)


def test_volume_added_next_to_tilt_series_gets_its_own_view(make_napari_viewer, qtbot,
                                                           notes) -> None:
    """The held-back check: sample, panel, a volume next to the tilt series."""
    from napari_tiltgen.gui.views import workspace

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-tiltgen", "phantom")
    viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    ws = workspace(viewer)
    # the sample's ground truth went to the volumes view; the tilt series stayed
    assert [layer.name for layer in viewer.layers] == ["phantom tilt series"]
    assert [layer.name for layer in ws.volumes.layers] == ["phantom ground truth"]

    vol = add(viewer, volume(size=100), "SIRT")  # a 100-px volume next to a 41-tilt series
    qtbot.wait(100)
    assert vol not in viewer.layers and vol in ws.volumes.layers
    # tilt slider: one step per tilt, nothing else mixed in
    r = viewer.dims.range[0]
    assert (r.start, r.stop, r.step) == (0.0, 40.0, 1.0)
    assert viewer.dims.axis_labels[0] == "tilt"
    # the volume view shows the new volume's middle slice, camera on its centre
    centre = (np.asarray(vol.extent.world[0]) + np.asarray(vol.extent.world[1])) / 2
    np.testing.assert_allclose(ws.volumes.dims.point, centre, atol=0.3)
    assert ws.volumes.dims.axis_labels == ("z", "y", "x")
    ws.volumes.dims.ndisplay = 3
    ws.focus(vol)
    np.testing.assert_allclose(ws.volumes.scene.camera.center, centre, atol=0.3)
    # the tilt angle is on screen and follows the slider
    viewer.dims.set_point(0, 0)
    assert ws.angle_label() == "phantom tilt series: tilt 1/41  -60.0°"
    viewer.dims.set_point(0, 25)
    from napari_tiltgen.gui.views import text_overlay

    overlay = text_overlay(viewer)
    assert overlay.visible and overlay.text.endswith("+15.0°")
    qtbot.wait(100)  # let both canvases draw
    assert not [m for m in notes if UNIT_WARNING in m], notes


def test_plain_layers_in_frame_geometry_take_the_series_units(make_napari_viewer, qtbot,
                                                             notes) -> None:
    """QA frames / markers added with only a scale get the tilt series' units: no warning."""
    viewer = make_napari_viewer(show=True)
    viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    ts = series()
    layer = add(viewer, ts, "series")
    qa = viewer.add_image(np.zeros((5, 32, 32), np.float32), scale=(1.0, 0.287, 0.287))
    qtbot.wait(100)
    assert [str(u) for u in qa.units] == ["pixel", "angstrom", "angstrom"]
    assert qa in viewer.layers and layer in viewer.layers
    assert not [m for m in notes if UNIT_WARNING in m], notes


def test_plain_volume_from_a_script_goes_to_the_volumes_window(make_napari_viewer, qtbot,
                                                               notes) -> None:
    """``viewer.add_image(vol, scale=..., units="angstrom")`` without our metadata: a volume."""
    from napari_tiltgen.gui.views import workspace

    viewer = make_napari_viewer(show=True)
    viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    add(viewer, series(), "series")
    vol = viewer.add_image(np.zeros((60, 60, 60), np.float32), scale=(0.287,) * 3,
                           units="angstrom", name="from a script")
    frames = viewer.add_image(np.zeros((21, 32, 32), np.float32), scale=(1.0, 0.287, 0.287),
                              name="QA frames")
    qtbot.wait(100)
    assert vol in workspace(viewer).volumes.layers and vol not in viewer.layers
    assert frames in viewer.layers  # frame geometry: stays with the tilt series
    assert viewer.dims.range[0].stop == 20.0
    assert not [m for m in notes if UNIT_WARNING in m], notes


def test_volumes_window_closes_with_the_main_window(make_napari_viewer) -> None:
    from napari_tiltgen.gui.views import workspace

    viewer = make_napari_viewer()
    ws = workspace(viewer)
    add(viewer, volume(16), "v")
    vols = ws.volumes
    assert len(vols.layers) == 1
    viewer.close()
    assert not hasattr(vols.window, "_qt_window")  # closed too


def test_panel_has_every_step_as_a_tab_and_fits_a_small_screen(make_napari_viewer,
                                                                qtbot) -> None:
    from napari_tiltgen.gui.panel import STEPS

    viewer = make_napari_viewer(show=True)
    win = viewer.window._qt_window
    win.resize(1366, 768)
    dock, panel = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    tabs = [panel.tabs.tabText(i) for i in range(panel.tabs.count())]
    assert tabs == [title for title, _ in STEPS]
    assert tabs == ["Load", "Align", "Reconstruct", "Enhance", "Compare", "Simulate"]
    assert type(panel.step_widget("Tilt series")).__name__ == "TiltSeriesWidget"
    for page in ("Reconstruct", "Compare", "Simulate", "Interpolate"):
        w = panel.show_step(page)
        assert w is not None and panel.current_page() == page
    # a step that is not installed: a tab that says so, no crash
    from napari_tiltgen.gui import panel as panel_mod

    align = panel.show_step("Align")
    try:
        import napari_tiltgen.gui.align  # noqa: F401

        assert align is not None
    except ModuleNotFoundError:
        assert align is None
    panel.pages["Missing"] = {"layout": panel.pages["Align"]["layout"],
                              "spec": "napari_tiltgen.gui.no_such_step:X", "widget": None}
    assert panel.step_widget("Missing") is None
    assert panel_mod._load_class("napari_tiltgen.gui.no_such_step:X") is None
    qtbot.wait(100)
    # the whole window, panel open, fits 1366 x 768 (less a task bar and title bar)
    hint = win.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 700, (hint.width(), hint.height())
    assert panel.minimumSizeHint().height() <= 400
    assert win.width() <= 1366 and win.height() <= 768
    # the canvas keeps the largest share of the width (napari's layer dock takes ~270 px)
    canvas = viewer.window._qt_viewer.canvas.native
    assert dock.width() <= 420
    assert canvas.width() >= 0.45 * win.width(), (canvas.width(), win.width())
    # only one dock: the panel
    assert list(viewer.window.dock_widgets) == ["Tomography (napari-tiltgen)"]


def test_workflow_buttons_switch_tabs_instead_of_docking(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, wf = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Workflow")
    opened = wf.open("Compare")
    assert type(opened).__name__ == "CompareWidget"
    opened = wf.open("Reconstruct")
    assert type(opened).__name__ == "ReconstructWidget"
    from napari_tiltgen.gui.panel import panel_of

    assert panel_of(viewer).current_page() == "Reconstruct"
    docks = set(viewer.window.dock_widgets)
    assert docks == {"Workflow (napari-tiltgen)", "Tomography (napari-tiltgen)"}


def test_pickers_keep_the_users_choice(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Reconstruct")
    a = add(viewer, series(), "real frames")
    b = add(viewer, series(), "other")
    assert w.layer.value is b  # nothing picked yet: follows the selection
    # the user picks "real frames" in the box
    w.layer.native.setCurrentIndex(w.layer.native.findText("real frames"))
    w.layer.native.activated.emit(w.layer.native.currentIndex())
    assert w.layer.value is a and w.layer.user_picked
    c = add(viewer, series(), "interpolated")  # a new result becomes napari's active layer
    assert viewer.layers.selection.active is c
    assert w.layer.value is a  # ... but the picker keeps the user's choice
    viewer.layers.selection.active = b
    assert w.layer.value is a
    viewer.layers.remove(a)  # the chosen layer is gone: follow the selection again
    assert not w.layer.user_picked
    viewer.layers.selection.active = c
    assert w.layer.value is c


def test_pixel_size_is_shown_to_0001_A_and_never_rounded_back(make_napari_viewer) -> None:
    """Changing only the tilt axis wrote 0.29 Å over 0.287 Å (2 decimals)."""
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tilt series")
    layer = add(viewer, series(px=0.287), "s")
    w.layer.value = layer
    assert w.pixel_size.native.text().startswith("0.287")
    assert "pixel size: 0.287 Å" in w.info.value
    w.axis_angle.value = 3.5
    w.apply_geometry.changed.emit(True)
    meta = layer.metadata[METADATA_KEY]
    assert meta["pixel_size_A"] == 0.287
    assert meta["tilt_axis_angle_deg"] == 3.5
    assert "pixel_size_source" not in meta["provenance"]  # still from the file
    # more digits than shown survive as well
    layer2 = add(viewer, series(px=0.28749), "t")
    w.layer.value = layer2
    w.axis_angle.value = -2.0
    w.apply_geometry.changed.emit(True)
    assert layer2.metadata[METADATA_KEY]["pixel_size_A"] == 0.28749
    np.testing.assert_allclose(layer2.scale[1:], [0.28749, 0.28749])
    # a typed value is taken to 0.001 Å
    w.pixel_size.value = 0.312
    w.apply_geometry.changed.emit(True)
    assert layer2.metadata[METADATA_KEY]["pixel_size_A"] == pytest.approx(0.312, abs=1e-9)
    assert layer2.metadata[METADATA_KEY]["provenance"]["pixel_size_source"] == "user"
