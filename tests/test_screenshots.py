"""Screenshots of the real windows for the user guide (docs/guide.md), checked for content.

Every test here opens a shown viewer (hidden viewers render black), docks the Tomography panel,
saves PNGs and asserts that the window fits the screen size, that no label or button text in the
panel is cut off, and that the picture holds what the guide says it does. Regenerate the guide's
pictures with::

    TILTGEN_SCREENSHOT_DIR=docs/images xvfb-run -a -s "-screen 0 1920x1080x24" \
        python -m pytest -p no:xvfb -q tests/test_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pytestqt.exceptions import TimeoutError as QtWaitTimeout

pytestmark = pytest.mark.gui

#: panel page -> picture name stem in the guide
PAGES = {
    "Tilt series": "load",
    "Align": "align",
    "Reconstruct": "reconstruct",
    "Interpolate": "interpolate",
    "Inpaint": "inpaint",
    "INR fit": "inr",
    "Time-resolved fit": "dip",
    "Compare": "compare_panel",
    "Simulate": "simulate",
}


def _out_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("TILTGEN_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _save(viewer, path: Path) -> np.ndarray:
    from skimage.io import imsave

    window = viewer.screenshot(canvas_only=False, flash=False)
    imsave(path, window, check_contrast=False)
    return window


def _canvas_lit_fraction(viewer, level: float = 40) -> float:
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    grey = canvas[..., :3].astype(float).mean(axis=-1)
    return float((grey > level).mean())


def clipped_texts(root) -> list[str]:
    """Visible labels and buttons under ``root`` whose text does not fit their width."""
    from qtpy.QtWidgets import QAbstractButton, QLabel

    out = []
    for w in root.findChildren(QLabel) + root.findChildren(QAbstractButton):
        if not w.isVisible() or not w.text() or w.width() <= 1:
            continue
        if isinstance(w, QLabel) and w.pixmap() is not None and not w.pixmap().isNull():
            continue
        if isinstance(w, QLabel) and w.wordWrap():  # wrapped text: is it tall enough?
            need = w.heightForWidth(w.width())
            if w.height() + 1 < need:
                out.append(f"QLabel {w.text()[:40]!r}: {w.height()} < {need} px tall")
            continue
        text = w.text().replace("&", "")
        if "<" in text:  # rich text: not measurable this way
            continue
        if isinstance(w, QAbstractButton):  # the style's own text + margins + indicator
            if w.width() + 1 < w.sizeHint().width():
                out.append(f"{type(w).__name__} {text!r}: {w.width()} < {w.sizeHint().width()}")
            continue
        widest = max(w.fontMetrics().horizontalAdvance(line) for line in text.split("\n"))
        room = w.contentsRect().width()
        if widest > room + 1:
            out.append(f"{type(w).__name__} {text!r}: {widest} > {room} px")
    return out


@pytest.mark.parametrize("screen", [(1920, 1080), (1366, 768)])
def test_guide_panel_steps_fit_the_screen(make_napari_viewer, qtbot, tmp_path: Path,
                                          screen) -> None:
    """Each step of the Tomography panel next to the HAADF sample, at two screen sizes."""
    width, height = screen
    viewer = make_napari_viewer(show=True)
    win = viewer.window._qt_window
    win.resize(width, height - 40)  # less a task bar
    viewer.open_sample("napari-tiltgen", "haadf_nanoparticle")
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    viewer.dims.set_point(0, 23)  # the 0-degree frame of -69..69 in 3-degree steps
    out = _out_dir(tmp_path)
    suffix = "" if width == 1920 else "_1366"
    problems = {}
    for page, stem in PAGES.items():
        panel.show_step(page)
        qtbot.wait(150)
        window = _save(viewer, out / f"guide_{stem}{suffix}.png")
        assert win.width() <= width and win.height() <= height, (page, win.size())
        assert window[..., :3].std() > 20, page
        area = panel.tabs.currentWidget()
        if hasattr(area, "currentWidget"):  # inner tabs (Enhance)
            area = area.currentWidget()
        # the scroll bar follows the layout, which Qt settles asynchronously after the page
        # switch (under load 150 ms was not always enough): wait for it, then check
        try:
            qtbot.waitUntil(lambda a=area: not a.horizontalScrollBar().isVisible(), timeout=3000)
        except (AssertionError, QtWaitTimeout):  # waited long enough: checked below
            pass
        assert not area.horizontalScrollBar().isVisible(), f"{page}: wider than the panel"
        cut = clipped_texts(area.widget())
        if cut:
            problems[page] = cut
    assert not problems, problems
    # the tilt series shows its angle while scrolling
    from napari_tiltgen.gui.views import text_overlay

    assert text_overlay(viewer).text.endswith("+0.0°")
    assert 0.005 < _canvas_lit_fraction(viewer, 60) < 0.9  # the particle's projection
    assert list(viewer.window.dock_widgets) == ["Tomography (napari-tiltgen)"]


def test_guide_volumes_window(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The volumes window: the sample's ground truth in 3-D, centred, next to the tilt series."""
    from napari_tiltgen.gui.views import workspace

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 728)
    viewer.open_sample("napari-tiltgen", "haadf_nanoparticle")
    vv = workspace(viewer).volumes
    vv.window._qt_window.resize(1366, 728)
    vol = vv.layers["Au decahedron ground truth"]
    vol.rendering = "mip"
    vv.dims.ndisplay = 3
    vv.scene.camera.angles = (15, 30, 60)
    workspace(viewer).focus(vol)
    qtbot.wait(300)
    window = _save(vv, _out_dir(tmp_path) / "guide_volumes.png")
    centre = (np.asarray(vol.extent.world[0]) + np.asarray(vol.extent.world[1])) / 2
    np.testing.assert_allclose(vv.scene.camera.center, centre, atol=0.5)
    assert 0.01 < _canvas_lit_fraction(vv) < 0.9
    assert window[..., :3].std() > 20


@pytest.mark.slow
def test_guide_compare_sirt_vs_enhanced(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The comparison: ground truth | SIRT | inpainted SIRT side by side, labelled, with numbers.

    The grid is in the volumes window (each cell labelled with its volume's name), the metrics
    table and plots in the panel's Compare tab.
    """
    from napari.layers import Layer

    from napari_tiltgen.gui.compare import _grid
    from napari_tiltgen.gui.views import workspace
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.inpainting import inpaint
    from napari_tiltgen.recon.api import reconstruct

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1920, 1040)
    viewer.open_sample("napari-tiltgen", "phantom")
    ts = TiltSeries.from_layer(viewer.layers["phantom tilt series"])
    sirt = reconstruct(ts, "sirt", iterations=50, show=False, device="cpu")
    enhanced, _ = inpaint(sirt, device="cpu")
    viewer.add_layer(Layer.create(*sirt.to_layer_data(name="SIRT")))
    viewer.add_layer(Layer.create(*enhanced.to_layer_data(name="SIRT inpainted")))
    vv = workspace(viewer).volumes
    vv.window._qt_window.resize(1366, 728)

    _, panel = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    w = panel.show_step("Compare")
    w.reference.value = vv.layers["phantom ground truth"]
    w.candidates.value = [vv.layers["SIRT"], vv.layers["SIRT inpainted"]]
    w.show_side_by_side()
    with qtbot.waitSignal(w.progress.native.valueChanged, timeout=10000):
        w._on_run()
    qtbot.waitUntil(lambda: not w.running, timeout=180000)
    vv.dims.set_point(1, ts.data.shape[1] // 2 * vv.layers["SIRT"].scale[1])
    qtbot.wait(300)
    out = _out_dir(tmp_path)
    _save(viewer, out / "guide_compare_panel_result.png")
    window = _save(vv, out / "guide_compare.png")

    assert _grid(vv).enabled
    visible = [l.name for l in vv.layers if l.visible]
    assert {"phantom ground truth", "SIRT", "SIRT inpainted"} <= set(visible)
    assert all(vv.layers[n].name_overlay.visible for n in visible)  # labelled cells
    for vol in ("SIRT", "SIRT inpainted"):
        psnr = float(w.metric_value("PSNR (dB)", vol))
        assert 5.0 < psnr < 80.0
    row = {r["name"]: r for r in w.report.rows}
    assert float(w.metric_value("SSIM", "SIRT")) == pytest.approx(row["SIRT"]["ssim"], abs=1e-3)
    # table columns wide enough for their text
    t = w._table
    for j in range(t.columnCount()):
        head = t.horizontalHeaderItem(j).text()
        assert t.columnWidth(j) >= t.fontMetrics().horizontalAdvance(head), head
    # napari lays 3 layers out in a 2 x 2 grid: truth, SIRT and inpainted each light up a cell
    canvas = vv.screenshot(canvas_only=True, flash=False)[..., :3].astype(float).mean(-1)
    h, w_ = canvas.shape[0] // 2, canvas.shape[1] // 2
    cells = [canvas[:h, :w_], canvas[:h, w_:], canvas[h:, :w_]]
    lit = [float((c > 40).mean()) for c in cells]
    assert all(f > 0.001 for f in lit), lit
    assert window[..., :3].std() > 20
