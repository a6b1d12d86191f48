"""The "Time-resolved fit" dock widget: 4-D deep-image-prior reconstruction of a changing sample.

Pick a tilt-series layer, the number of steps and the temporal smoothness, and press **Fit**. The
fit (:func:`napari_tiltgen.fits.dip.fit_dip_iter`) runs in a background worker with a progress
bar, a live preview drawn inside the widget (central z-plane at the first, middle and last time,
side by side) and a Cancel button (a checkpoint, if chosen, is saved on cancel and can be
resumed). The result is one 4-D image layer ``(time, z, y, x)`` in the workspace's volumes view
(never beside the tilt series); as its time slider moves, the slider label, a text overlay on
that canvas and the widget's status say which time and tilt the volume belongs to, e.g.
``t = 812 s, tilt = +12.0 deg``.

The science is in :mod:`napari_tiltgen.fits.dip`; this file only gathers choices and shows
results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import QObject, Signal

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.fits.dip import DIPResult, acquisition_times, fit_dip_iter
from napari_tiltgen.gui._base import LayerPicker, WorkerWidget
from napari_tiltgen.gui.views import text_overlay, workspace
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries
from napari_tiltgen.io.volume_series import VolumeSeries

if TYPE_CHECKING:
    import napari

#: Where the acquisition times come from: label -> (use recorded times, order).
TIME_SOURCES: dict[str, tuple[bool, str | None]] = {
    "recorded (.mdoc), else angle order": (True, None),
    "uniform, angle order": (False, "angle"),
    "uniform, stack order": (False, "stack"),
}


class _Signals(QObject):
    """Qt signals of the widget (magicgui containers are not QObjects)."""

    #: Emitted after every run has ended (result shown, error reported or cancelled).
    finished = Signal()


def time_label(times_s: np.ndarray, angles: np.ndarray, index: int) -> str:
    """``"t = 812 s, tilt = +12.0 deg"`` for time point ``index``."""
    return f"t = {float(times_s[index]):.0f} s, tilt = {float(angles[index]):+.1f} deg"



class DIPWidget(WorkerWidget):
    """Time-resolved (4-D) DIP reconstruction of a tilt-series layer."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Fit")
        self.signals = _Signals()
        self.layer = LayerPicker(napari_viewer, kinds=("tilt_series",), label="tilt series")
        self.steps = SpinBox(value=1500, min=1, max=1_000_000, step=100, label="steps")
        self.smoothness = FloatSpinBox(value=0.1, min=0.0, max=1000.0, step=0.05,
                                       label="temporal smoothness")
        self.times = ComboBox(choices=list(TIME_SOURCES), label="acquisition times")
        self.frame_time = FloatSpinBox(value=1.0, min=0.001, max=1e6, step=1.0,
                                       label="s per frame (uniform)")
        self.every = SpinBox(value=1, min=1, max=10_000, label="volume every n frames",
                             tooltip="one output volume for every n-th tilt frame")
        self.components = SpinBox(value=8, min=1, max=64, label="components")
        self.warm_start = SpinBox(value=200, min=0, max=100_000, step=50,
                                  label="warm-start steps")
        self.device = ComboBox(choices=["auto", "cpu", "cuda"], value="auto", label="device")
        self.checkpoint = FileEdit(mode="w", label="checkpoint file",
                                   tooltip="optional: save the fit here to resume it later",
                                   filter="Checkpoints (*.pt)")
        self.resume = CheckBox(value=False, text="resume from checkpoint")
        self.info = Label(value="")
        self.info.native.setWordWrap(True)
        for i, w in enumerate([self.layer, self.times, self.frame_time, self.info, self.steps,
                               self.smoothness, self.components, self.warm_start, self.every,
                               self.device, self.checkpoint, self.resume]):
            self.insert(i, w)
        self.result: DIPResult | None = None
        self.result_layer: Any = None
        self._new_result = False
        self.layer.changed.connect(self._describe)
        self.times.changed.connect(self._describe)
        self.frame_time.changed.connect(self._describe)
        self._watched: Any = None  # the volumes view whose time slider is followed
        self._describe()

    # ---------------------------------------------------------------- parameters
    def _series(self) -> TiltSeries:
        layer = self.layer.value
        if layer is None:
            raise TiltgenError("open a tilt series with tilt angles first (File > Open, or the "
                               "Tilt series widget to set its angles).")
        return TiltSeries.from_layer(layer)

    def _times(self, ts: TiltSeries) -> np.ndarray:
        use_recorded, order = TIME_SOURCES[self.times.value]
        given = ts.acquisition_times_s if use_recorded else None
        ts_times = ts if use_recorded else TiltSeries(ts.data, ts.tilt_angles)
        return acquisition_times(ts_times, given, order=order,
                                 frame_time_s=float(self.frame_time.value))

    def _checkpoint_path(self) -> Path | None:
        value = self.checkpoint.value
        if value is None or str(value) in ("", "."):
            return None
        return Path(value)

    def _describe(self, *_: Any) -> None:
        try:
            ts = self._series()
            t = self._times(ts)
        except TiltgenError as exc:
            self.info.value = str(exc) if self.layer.value is not None else ""
            return
        src = "recorded" if (TIME_SOURCES[self.times.value][0]
                             and ts.acquisition_times_s is not None) else "uniform"
        self.info.value = (f"{ts.n_tilts} frames of {ts.shape[1]} x {ts.shape[2]} px, "
                           f"{t.min():g} to {t.max():g} s ({src} times)")

    # ---------------------------------------------------------------- run
    def _on_run(self) -> None:
        ts = self._series()
        times = self._times(ts)
        out_times = np.sort(times)[::int(self.every.value)]
        ckpt = self._checkpoint_path()
        if self.resume.value and ckpt is None:
            raise TiltgenError("choose the checkpoint file to resume from.")
        kwargs = dict(
            steps=int(self.steps.value), temporal_smoothness=float(self.smoothness.value),
            times_s=times, output_times_s=out_times, n_components=int(self.components.value),
            warm_start_steps=int(self.warm_start.value), device=str(self.device.value),
            checkpoint=ckpt, resume=bool(self.resume.value),
        )
        name = self.layer.value.name
        self.start(lambda: fit_dip_iter(ts, **kwargs),
                   on_result=lambda res: self._show_result(res, name),
                   preview_name="DIP preview: central z-plane at the first | middle | last time")

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._new_result:  # say which time the slider shows (after "done")
            self._new_result = False
            self._update_time_label()
        self.signals.finished.emit()

    # ---------------------------------------------------------------- result
    def _show_result(self, res: DIPResult, source_name: str) -> None:
        self.result = res
        self._new_result = True
        from napari.layers import Layer

        layer = Layer.create(*res.volume_series().to_layer_data(name=f"DIP 4-D ({source_name})"))
        view = self.volume_viewer()
        self.result_layer = workspace(self.viewer).add_volume(layer)  # centred in space
        view.dims.set_current_step(view.dims.ndim - layer.ndim, 0)  # from the first time
        if self._watched is not view:  # follow the time slider of the volumes view
            view.dims.events.current_step.connect(self._update_time_label)
            view.layers.events.inserted.connect(self._update_time_label)
            self._watched = view
        self._update_time_label()

    def volume_viewer(self) -> Any:
        """The viewer the 4-D result is shown in (the workspace's volumes view)."""
        return workspace(self.viewer).volumes

    def _time_layer(self) -> Any:
        """The selected 4-D result layer, else the top-most one, else ``None``."""
        def is_series(layer: Any) -> bool:
            return VolumeSeries.is_layer_metadata(getattr(layer, "metadata", {}))

        if self._watched is None:
            return None
        view = self._watched
        active = view.layers.selection.active
        if active is not None and is_series(active):
            return active
        for layer in reversed(list(view.layers)):
            if is_series(layer) and layer.visible:
                return layer
        return None

    def current_time_index(self) -> int | None:
        """Index of the time point the viewer's time slider shows (``None``: no result)."""
        layer = self._time_layer()
        if layer is None:
            return None
        dims = self._watched.dims
        axis = dims.ndim - layer.ndim
        step = dims.current_step[axis]
        n = layer.data.shape[0]
        return int(min(max(step, 0), n - 1))

    def _update_time_label(self, *_: Any) -> None:
        layer = self._time_layer()
        if layer is None:
            return
        overlay = text_overlay(self._watched)
        meta = layer.metadata[METADATA_KEY]
        i = self.current_time_index()
        text = time_label(np.asarray(meta["times_s"]), np.asarray(meta["tilt_angles"]), i)
        overlay.text = text
        overlay.visible = True
        dims = self._watched.dims
        axis = dims.ndim - layer.ndim
        labels = list(dims.axis_labels)
        short = text.replace("tilt = ", "")
        if labels[axis] != short:
            labels[axis] = short
            dims.axis_labels = labels
        if not self.running:
            self._set_status(f"{layer.name}: {text}")
