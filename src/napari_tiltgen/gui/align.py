"""The "Align" dock widget: prepare and align a tilt-series layer, reversibly.

Pick the tilt-series layer and press **Align**. In a thread worker (progress bar, Cancel) the
series is prepared (vacuum offset or bright-field ``-log``; the tilt axis from the box below,
the file, or estimated over 0-180 degrees; the frames turned so that it runs along y) and
aligned (centre of mass or cross-correlation, tilt-axis refinement, projection matching). The
layer then holds the prepared frames and the shifts in its metadata (the projector applies them;
the Reconstruct widget uses them), the plot shows the shifts per tilt, the summary the
reprojection error before and after. **Undo** restores the layer's data and metadata as they
were. The science is in :mod:`napari_tiltgen.align.projection_matching`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox

from napari_tiltgen.gui._base import LayerPicker, WorkerWidget
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries

if TYPE_CHECKING:
    import napari

AXIS_CHOICES = [("from the file, else estimated (0-180 deg)", "auto"),
                ("the value below", "given")]


class AlignWidget(WorkerWidget):
    """Prepare and align a tilt-series layer in place, with undo."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Align")
        self.layer = LayerPicker(napari_viewer, kinds=("tilt_series",), label="tilt series")
        self.axis_source = ComboBox(label="tilt axis", choices=AXIS_CHOICES, value="auto")
        self.axis_angle = FloatSpinBox(label="axis (deg)", value=0.0, min=-360.0, max=360.0,
                                       step=0.1, tooltip="degrees counter-clockwise from the "
                                       "image Y axis (IMOD convention)")
        self.intensity = ComboBox(label="intensity", value="auto",
                                  choices=["auto", "none", "haadf", "bf"],
                                  tooltip="auto: detect; haadf: subtract the vacuum level; bf: "
                                  "-log(I/I0); none: as recorded")
        self.normalise = CheckBox(text="normalise frames (common total)", value=False)
        self.coarse = ComboBox(label="coarse shifts", value="auto",
                               choices=["auto", "com", "xcorr", "none"],
                               tooltip="auto: centre of mass for one compact object, else "
                               "cross-correlation with cosine stretching")
        self.refine_axis = CheckBox(text="refine the tilt-axis angle (+-3 deg)", value=True)
        self.rounds = SpinBox(label="matching rounds", value=3, min=0, max=50,
                              tooltip="rounds of projection matching")
        self.iterations = SpinBox(label="SIRT iterations / round", value=20, min=1, max=1000)
        self.max_size = SpinBox(label="bin to (px)", value=64, min=16, max=1024,
                                tooltip="frames binned to at most this size for projection "
                                "matching")
        self.undo_button = PushButton(text="Undo", enabled=False)
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        for i, w in enumerate([self.layer, self.axis_source, self.axis_angle, self.intensity,
                               self.normalise, self.coarse, self.refine_axis, self.rounds,
                               self.iterations, self.max_size]):
            self.insert(i, w)
        self.append(Container(widgets=[self.undo_button], labels=False))
        self.append(self.summary)
        self._canvas, self._axes = self._make_plot()
        self.native.layout().addWidget(self._canvas)
        self.undo_button.changed.connect(self.undo)
        self.axis_source.changed.connect(self._sync)
        self._undo: tuple[Any, Any, dict[str, Any]] | None = None
        self.last_report: Any = None
        self._sync()

    # ---------------------------------------------------------------- plot
    def _make_plot(self) -> tuple[Any, Any]:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 2.0), layout="constrained")
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumHeight(170)
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlabel("tilt angle (deg)", fontsize=7)
        ax.set_ylabel("shift (px)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.text(0.5, 0.5, "the shifts per tilt appear here after an alignment",
                transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")
        return canvas, ax

    def plot_shifts(self, angles: np.ndarray | None, shifts: np.ndarray | None) -> None:
        ax = self._axes
        ax.clear()
        ax.set_xlabel("tilt angle (deg)", fontsize=7)
        ax.set_ylabel("shift (px)", fontsize=7)
        ax.tick_params(labelsize=7)
        if angles is None or shifts is None:
            ax.text(0.5, 0.5, "the shifts per tilt appear here after an alignment",
                    transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")
        else:
            order = np.argsort(angles)
            ax.plot(angles[order], shifts[order, 1], ".-", lw=1.0, ms=3, label="dx")
            ax.plot(angles[order], shifts[order, 0], ".-", lw=1.0, ms=3, label="dy")
            ax.legend(fontsize=7, loc="best")
        self._canvas.draw_idle()

    # ---------------------------------------------------------------- state
    def _sync(self, *_: Any) -> None:
        self.axis_angle.enabled = self.axis_source.value == "given"

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_tiltgen.align.projection_matching.align_series`."""
        return {
            "tilt_axis": float(self.axis_angle.value) if self.axis_source.value == "given"
            else None,
            "intensity": self.intensity.value,
            "normalise": bool(self.normalise.value),
            "coarse": self.coarse.value,
            "refine_axis": bool(self.refine_axis.value),
            "rounds": int(self.rounds.value),
            "iterations": int(self.iterations.value),
            "max_size": int(self.max_size.value),
        }

    def _on_run(self) -> None:
        from napari_tiltgen.align.projection_matching import align_series_iter
        from napari_tiltgen.core.errors import TiltgenError

        layer = self.layer.value
        if layer is None:
            raise TiltgenError("no tilt-series layer: open a tilt series (File > Open) or load "
                               "a sample first.")
        ts = TiltSeries.from_layer(layer)
        ts.require_angles()
        params = self.parameters()
        self.start(lambda: align_series_iter(ts, prepare_first=True, **params),
                   on_result=lambda res: self._apply(layer, *res))

    def _apply(self, layer: Any, aligned: TiltSeries, report: Any) -> None:
        self._undo = (layer, layer.data, copy.deepcopy(dict(layer.metadata)))
        meta = dict(layer.metadata)
        meta[METADATA_KEY] = aligned.to_metadata()
        layer.data = aligned.data
        layer.metadata = meta
        layer.refresh()
        self.undo_button.enabled = True
        self.last_report = report
        self.plot_shifts(aligned.tilt_angles, np.asarray(aligned.shifts_px))
        text = [(f"reprojection error {report.reprojection_error_before:.4f} -> "
                 f"{report.reprojection_error_after:.4f}")]
        text += report.notes + report.steps
        self.summary.value = "\n".join(text)

    def undo(self, *_: Any) -> None:
        """Put back the layer's data and metadata from before the last alignment."""
        if self._undo is None:
            return
        layer, data, meta = self._undo
        layer.data = data
        layer.metadata = meta
        layer.refresh()
        self._undo = None
        self.undo_button.enabled = False
        self.plot_shifts(None, None)
        self.summary.value = "alignment undone: the layer is as it was"
