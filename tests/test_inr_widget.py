"""The "INR fit" dock widget with a real napari viewer (headless under Xvfb)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_tiltgen.gui._base import WorkerWidget
from napari_tiltgen.gui.inr import INRWidget
from napari_tiltgen.gui.views import volume_view
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume
from napari_tiltgen.simulate.phantoms import sphere_phantom

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_series(make_napari_viewer):
    viewer = make_napari_viewer()
    ts, _ = sphere_phantom(size=16, tilt_range=(-60.0, 60.0), tilt_step=10.0)
    data, kwargs, _ = ts.to_layer_data(name="phantom")
    viewer.add_image(data, **kwargs)
    return viewer, ts


def _small(w: INRWidget, steps: int) -> None:
    w.steps.value = steps
    w.batch_size.value = 256
    w.warmup.value = 10
    w.preview_every.value = 10
    w.device.value = "cpu"


def test_fit_adds_volume_with_poses_preview_and_loss_curve(viewer_with_series, qtbot) -> None:
    viewer, ts = viewer_with_series
    w = INRWidget(viewer)
    assert w.layer.value is viewer.layers["phantom"]
    assert w._hint.get_visible()  # empty plot says what will appear there
    _small(w, 40)
    with qtbot.waitSignal(w.signals.finished, timeout=120_000):
        w.run_button.native.click()
    assert w.status.value == "done"
    assert w.progress.value == 1000
    vol_layer = volume_view(viewer).layers["phantom INR"]  # volumes have their own view
    vol = Volume.from_layer(vol_layer)
    assert vol.shape == (16, 16, 16) and vol.voxel_size_A == ts.pixel_size_A
    poses = vol_layer.metadata[METADATA_KEY]["provenance"]["poses"]
    assert len(poses["shifts_px"]) == ts.n_tilts and "tilt_axis_angle_deg" in poses
    assert vol.provenance["method"] == "inr"
    aligned = TiltSeries.from_layer(viewer.layers["phantom (INR poses)"])
    np.testing.assert_allclose(aligned.shifts_px, poses["shifts_px"])
    assert w.last_preview is not None and w.last_preview.shape == (16, 16)  # central z-slice
    # loss curve: one point per logged step, drawn in the widget, and going down
    steps, losses = zip(*w.losses)
    assert steps[-1] == 40 and len(steps) >= 4
    assert losses[-1] < losses[0]
    assert len(w._line.get_xdata()) == len(steps)
    assert not w._hint.get_visible() and w._axes.get_xlim()[1] >= 40  # axis follows the steps
    assert "tilt axis" in w.summary.value
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_cancel_stops_the_fit(viewer_with_series, qtbot) -> None:
    viewer, _ = viewer_with_series
    w = INRWidget(viewer)
    _small(w, 1_000_000)
    w.run_button.native.click()
    qtbot.waitUntil(lambda: len(w.losses) >= 2, timeout=60_000)
    with qtbot.waitSignal(w.signals.finished, timeout=60_000):
        w.cancel_button.native.click()
    assert w.status.value == "cancelled"
    assert "phantom INR" not in viewer.layers
    assert w.losses[-1][0] < 1_000_000
    assert w.run_button.enabled


def test_series_without_angles_shows_error(viewer_with_series, qtbot, monkeypatch) -> None:
    viewer, ts = viewer_with_series
    shown: list[str] = []
    monkeypatch.setattr(WorkerWidget, "show_error", lambda self, m: shown.append(m))
    viewer.layers.clear()
    data, kwargs, _ = replace(ts, tilt_angles=None).to_layer_data(name="no angles")
    viewer.add_image(data, **kwargs)
    w = INRWidget(viewer)
    w.run_button.native.click()
    assert shown and "tilt angles of this series are unknown" in shown[0]
    assert not w.running
