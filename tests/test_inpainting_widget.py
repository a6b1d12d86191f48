"""The "Inpaint" dock widget: a volume and a tilt series inpainted in a worker, refusal, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from napari.layers import Layer

from napari_tiltgen.gui.inpaint import InpaintWidget
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.nets.inpainting import api
from napari_tiltgen.nets.inpainting.data import phantom_face, wedge_angles
from napari_tiltgen.nets.inpainting.network import GeneratorConfig, UNetPP, save_generator

pytestmark = pytest.mark.gui


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch) -> Path:
    """A tiny untrained generator (trained range 30-80 deg) used in place of the shipped one."""
    torch.manual_seed(0)
    path = save_generator(tmp_path / "tiny.safetensors", UNetPP(GeneratorConfig(width=2)),
                          {"trained_wedge_deg": [30.0, 80.0], "in_channels": ["wbp", "sirt"],
                           "sirt_iterations": 3, "train_size_px": 16})
    monkeypatch.setattr(api, "DEFAULT_WEIGHTS", path)
    return path


def _truth(n: int = 16, ny: int = 4) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([phantom_face(n, rng) for _ in range(ny)], axis=1)  # (nz, ny, nx)


def _series(wedge: float) -> TiltSeries:
    from napari_tiltgen.physics.projector import Projector

    truth = _truth()
    angles = wedge_angles(wedge, 5.0)
    sino = Projector(truth.shape, angles).forward(torch.from_numpy(truth)).numpy()
    return TiltSeries(sino, tilt_angles=angles, pixel_size_A=3.0)


def _run(w: InpaintWidget, qtbot) -> None:
    with qtbot.waitSignal(w.run_button.native.clicked, timeout=5000):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)


def test_inpaint_volume_layer_from_the_plugin_menu(make_napari_viewer, qtbot, tiny_model) -> None:
    viewer = make_napari_viewer()
    vol = Volume(_truth(), voxel_size_A=3.0, provenance={
        "method": "wbp", "tilt_angles": wedge_angles(60.0, 5.0).tolist()})
    viewer.add_layer(Layer.create(*vol.to_layer_data(name="rec")))
    viewer.add_image(np.zeros((2, 2)), name="other")  # a 2-D layer is not offered
    _, w = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Inpaint")
    assert isinstance(w, InpaintWidget)
    assert w.layer.value.name == "rec" and len(w.layer.choices) == 1
    assert "missing wedge 60.0 deg" in w.note.value
    w.device.value = "cpu"
    _run(w, qtbot)
    assert w.status.value == "done"
    from napari_tiltgen.gui.views import volume_view, workspace_layers

    names = [layer.name for layer in volume_view(viewer).layers]
    assert names == ["rec", "rec inpainted (pretrained)"]  # right above the input, volumes view
    assert workspace_layers(viewer)[0].name == "other"
    out = Volume.from_layer(volume_view(viewer).layers["rec inpainted (pretrained)"])
    assert out.shape == vol.shape and out.voxel_size_A == 3.0
    assert out.provenance["method"] == "inpainting"
    assert out.provenance["parameters"]["missing_wedge_deg"] == pytest.approx(60.0)
    assert w.last_preview is not None and w.last_preview.shape == (16, 16)
    # the data-consistency report is shown: SIRT's and the result's reprojection errors
    dc = out.provenance["data_consistency"]
    assert dc["final_error"] <= dc["sirt_error"] * (1 + 1e-4)
    assert f"SIRT {dc['sirt_error']:.4f}" in w.note.value
    assert f"final {dc['final_error']:.4f}" in w.note.value


def test_tilt_series_is_reconstructed_first(make_napari_viewer, qtbot, tiny_model) -> None:
    viewer = make_napari_viewer()
    ts = _series(50.0)
    viewer.add_layer(Layer.create(*ts.to_layer_data(name="series")))
    w = InpaintWidget(viewer)
    w.device.value = "cpu"
    assert w.consistency.value == "auto"
    w.consistency.value = "iterative"  # the user's choices reach the pipeline
    assert w.reference.value == 100
    w.reference.value = 30
    assert w.symmetric.value is True
    w.symmetric.value = False
    _run(w, qtbot)
    from napari_tiltgen.gui.views import volume_view

    out = Volume.from_layer(volume_view(viewer).layers["series inpainted (pretrained)"])
    assert out.provenance["data_consistency"]["method"] == "iterative"
    assert out.provenance["parameters"]["reference_iterations"] == 30
    assert out.provenance["parameters"]["symmetric"] is False
    assert out.provenance["data_consistency"]["sirt_iterations"] == 30
    assert out.shape == (16, 4, 16)
    assert out.provenance["parameters"]["input"] == "tilt series"
    assert out.provenance["parameters"]["missing_wedge_deg"] == pytest.approx(50.0)


def test_out_of_range_wedge_is_refused_then_allowed(make_napari_viewer, qtbot, tiny_model,
                                                    monkeypatch) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(_truth(), name="plain")  # no metadata: the wedge must be entered
    w = InpaintWidget(viewer)
    assert "enter the missing wedge" in w.note.value
    errors: list[str] = []
    monkeypatch.setattr(w, "show_error", errors.append)
    w.device.value = "cpu"
    _run(w, qtbot)
    assert errors and "missing wedge of this volume is unknown" in errors[-1]
    w.wedge.value = 90.0  # the note warns before the run
    assert "missing wedge 90.0 deg" in w.note.value and "trained range (30-80 deg)" in w.note.value
    _run(w, qtbot)
    assert "trained on wedges of 30-80 degrees" in errors[-1]
    from napari_tiltgen.gui.views import workspace_layers

    assert len(workspace_layers(viewer)) == 1  # nothing added
    w.allow_out_of_range.value = True
    _run(w, qtbot)
    assert len(workspace_layers(viewer)) == 2 and "may be wrong" in w.note.value


def test_cancel_stops_the_worker(make_napari_viewer, qtbot, tiny_model) -> None:
    viewer = make_napari_viewer()
    vol = Volume(np.tile(_truth(16, 1), (1, 1000, 1)), provenance={"missing_wedge_deg": 60.0})
    viewer.add_layer(Layer.create(*vol.to_layer_data(name="big")))
    w = InpaintWidget(viewer)
    w.device.value = "cpu"
    w.batch_size.value = 1
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000):
        w.run_button.native.click()
    worker = w.worker
    qtbot.waitUntil(lambda: w.progress.value > 410, timeout=60000)  # in the network phase
    with qtbot.waitSignal(worker.finished, timeout=20000):
        w.cancel_button.native.click()
    assert w.status.value == "cancelled"
    assert w.progress.value < 900  # stopped well before the end (1000 = done)
    from napari_tiltgen.gui.views import workspace_layers

    assert [layer.name for layer in workspace_layers(viewer)] == ["big"]  # no result layer
    assert w.run_button.enabled
