"""Widgets and npe2 contributions in a real napari viewer (Qt under Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ANGLES, N, file_state, stack, write_plain_mrc

from napari_tiltgen.io.model import METADATA_KEY, TiltSeries

pytestmark = pytest.mark.gui


def dock(viewer, name: str):
    _widget, inner = viewer.window.add_plugin_dock_widget("napari-tiltgen", name)
    return inner


def test_reader_opens_imod_stack_with_angles(make_napari_viewer, imod_stack: Path) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(str(imod_stack), plugin="napari-tiltgen")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == (N, 16, 20)
    np.testing.assert_allclose(layer.scale, [1.0, 2.7, 2.7], rtol=1e-6)
    ts = TiltSeries.from_layer(layer)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES)
    assert layer.axis_labels == ("tilt", "y", "x")


def test_reader_bad_file_notifies_instead_of_crashing(make_napari_viewer, tmp_path: Path,
                                                      monkeypatch) -> None:
    from napari_tiltgen.gui import reader

    shown: list[str] = []
    monkeypatch.setattr(reader, "_notify_error", shown.append)
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"\0" * 10)
    before = file_state(bad)
    read_fn = reader.napari_get_reader(str(bad))
    assert read_fn is not None
    assert read_fn(str(bad)) == [(None,)]  # napari's "read, no layers": no second error
    assert len(shown) == 1 and "broken.mrc" in shown[0] and "shorter than an MRC header" in shown[0]
    assert len(viewer.layers) == 0
    assert file_state(bad) == before
    assert reader.napari_get_reader(str(tmp_path / "notes.txt")) is None


def test_sample_data_and_writer_round_trip(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-tiltgen", "phantom")
    # the tilt series stays; the ground-truth volume goes to the volumes window
    from napari_tiltgen.gui.views import workspace

    assert [l.name for l in viewer.layers] == ["phantom tilt series"]
    assert [l.name for l in workspace(viewer).volumes.layers] == ["phantom ground truth"]
    ts_layer = viewer.layers["phantom tilt series"]
    out = tmp_path / "saved.st"
    viewer.layers.selection = {ts_layer}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-tiltgen")
    assert written == [str(out)]
    assert out.with_suffix(".rawtlt").is_file()
    before = file_state(out)
    with pytest.raises(Exception, match="already exists"):  # napari re-raises our error
        viewer.layers.save(str(out), selected=True, plugin="napari-tiltgen")
    assert file_state(out) == before
    from napari_tiltgen import read_tilt_series

    back = read_tilt_series(out)
    np.testing.assert_allclose(back.tilt_angles, TiltSeries.from_layer(ts_layer).tilt_angles)
    np.testing.assert_array_equal(back.data, ts_layer.data)


def test_tilt_series_widget_sets_angles_and_geometry(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    p = write_plain_mrc(tmp_path / "bare.st", stack())  # no angles anywhere
    before = file_state(p)
    viewer.open(str(p), plugin="napari-tiltgen")
    w = dock(viewer, "Tilt series")
    assert w.layer.value is viewer.layers[0]
    assert "UNKNOWN" in w.info.value

    w.start.value, w.step.value = -45.0, 7.5
    w.apply_start_step.changed.emit(True)
    ts = TiltSeries.from_layer(viewer.layers[0])
    np.testing.assert_allclose(ts.tilt_angles, -45 + 7.5 * np.arange(N))
    shown = " ".join(w.info.value.split())  # the summary is wrapped to the panel's width
    assert "angles: -45.00 to 45.00 deg, step 7.50 deg (13)" in shown

    w.pixel_size.value, w.axis_angle.value = 3.1, 84.0
    w.apply_geometry.changed.emit(True)
    layer = viewer.layers[0]
    np.testing.assert_allclose(layer.scale, [1.0, 3.1, 3.1])
    assert layer.metadata[METADATA_KEY]["pixel_size_A"] == pytest.approx(3.1)
    assert layer.metadata[METADATA_KEY]["provenance"]["pixel_size_source"] == "user"

    w.make_vertical.changed.emit(True)
    assert layer.data.shape == (N, 20, 16)
    assert TiltSeries.from_layer(layer).tilt_axis_angle_deg == pytest.approx(-6.0)

    w.angle_text.value = ", ".join(str(a) for a in ANGLES[:5])  # wrong count
    w.apply_list.changed.emit(True)
    assert "5 tilt angles were given for 13 frames" in w.message.value
    np.testing.assert_allclose(TiltSeries.from_layer(layer).tilt_angles,
                               -45 + 7.5 * np.arange(N))  # unchanged
    assert file_state(p) == before  # editing the layer never touches the file


def test_screenshot_window_with_plugin_and_3d_volume(make_napari_viewer, tmp_path: Path,
                                                      qtbot) -> None:
    """The whole window, Tilt series widget docked, ground-truth volume rendered in 3-D."""
    import os

    from skimage.io import imsave

    from napari_tiltgen.gui.views import workspace

    main = make_napari_viewer(show=True)
    main.window._qt_window.resize(1400, 900)
    main.open_sample("napari-tiltgen", "phantom")
    dock(main, "Tilt series")
    viewer = workspace(main).volumes  # the volume is rendered in the volumes window
    viewer.window._qt_window.resize(1400, 900)
    vol = viewer.layers["phantom ground truth"]
    vol.visible = True
    vol.rendering = "mip"
    viewer.dims.ndisplay = 3
    viewer.scene.camera.angles = (15, 30, 60)
    viewer.reset_view()
    qtbot.wait(300)

    canvas = viewer.screenshot(canvas_only=True, flash=False)
    window = viewer.screenshot(canvas_only=False, flash=False)
    out_dir = Path(os.environ.get("TILTGEN_SCREENSHOT_DIR", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    imsave(out_dir / "window_tilt_series_3d.png", window, check_contrast=False)

    assert window.shape[0] >= 600 and window.shape[1] >= 1000
    grey = canvas[..., :3].astype(float).mean(axis=-1)
    lit = (grey > 40).mean()
    assert 0.01 < lit < 0.9, f"volume rendering covers {lit:.3f} of the canvas"
    assert window[..., :3].std() > 20  # widgets, text and the volume: not a blank window


def test_workflow_widget_opens_steps_and_tracks_layers(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    w = dock(viewer, "Workflow")
    assert {"Tilt series", "Compare"} <= set(w.buttons)
    assert w.status["tilt_series"].value == "no tilt series yet"
    viewer.open_sample("napari-tiltgen", "phantom")
    assert w.status["tilt_series"].value == "done: phantom tilt series"
    opened = w.open("Compare")
    assert type(opened).__name__ == "CompareWidget"
    assert "Tomography (napari-tiltgen)" in viewer.window.dock_widgets  # a tab, not a dock
    assert "Compare (napari-tiltgen)" not in viewer.window.dock_widgets
