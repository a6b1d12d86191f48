"""The "Interpolate" dock widget: insert frames into a tilt series, and leave-one-out QA.

Pick a tilt-series layer, how many frames to insert (a target step in degrees or a number of
frames per gap), the method and the device, then **Interpolate**. The default method, ``auto``,
fine-tunes a copy of the network on the layer's real frames for "adapt (s)" seconds, scores
pretrained, adapted and linear interpolation by leave-one-out on held-out real frames, and uses
the best (the adapted network is used when the QA says it helps; linear when no network beats
it); the QA table and the decision are shown in the QA panel. ``pretrained``, ``adapted``,
``linear`` and ``reprojection`` force a method. The result is a new tilt-series layer with the new angles; predicted frames are

* named in the layer's metadata (``metadata["interpolation"]["predicted_indices"]`` and the
  tilt-series provenance),
* marked by a points layer with a "PREDICTED" label that shows on exactly those frames, and
* announced in the viewer's text overlay while scrolling ("frame 12/61  +24.0 deg  PREDICTED").

**Leave-one-out QA** always runs on the *real* frames of the selected layer (frames an earlier
interpolation predicted are dropped): it adapts the network, then hides held-out real frames,
predicts them from their neighbours with pretrained, adapted and linear interpolation, shows the
three side by side (PSNR, SSIM, per gap) with the method it would choose, and adds real /
predicted / difference stacks of the chosen method as layers.

Out-of-range input (gap larger than the model was trained for) is refused with a notification
unless "allow out-of-range" is ticked; other warnings appear as notifications and in the status.
The science is in :mod:`napari_tiltgen.nets.interpolation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    Table,
)

from napari_tiltgen.gui._base import LayerPicker, WorkerWidget
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.adapt import DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS
from napari_tiltgen.nets.interpolation.api import (
    InterpolationResult,
    interpolate_series,
    real_frames,
)
from napari_tiltgen.nets.interpolation.frames import SERIES_METHODS
from napari_tiltgen.nets.interpolation.qa import LeaveOneOutResult
from napari_tiltgen.nets.interpolation.select import (
    QA_COLUMNS,
    Selection,
    adapt_and_select,
    qa_columns,
)

if TYPE_CHECKING:
    import napari

STEP_MODE = "target step (deg)"
COUNT_MODE = "frames per gap"


class InterpolateWidget(WorkerWidget):
    """Dock widget: interpolate frames into a tilt series; leave-one-out QA."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Interpolate")
        self.layer = LayerPicker(napari_viewer, kinds=("tilt_series",), label="tilt series")
        self.mode = ComboBox(choices=[STEP_MODE, COUNT_MODE], value=STEP_MODE, label="insert")
        self.target_step = FloatSpinBox(value=1.0, min=0.05, max=30.0, step=0.5,
                                        label="target step (deg)")
        self.frames_per_gap = SpinBox(value=1, min=1, max=50, label="frames per gap")
        self.method = ComboBox(choices=list(SERIES_METHODS), value="auto", label="method")
        self.adapt_seconds = FloatSpinBox(value=DEFAULT_ADAPT_SECONDS, min=1.0, max=3600.0,
                                          step=10.0, label="adapt (s)",
                                          tooltip="fine-tuning budget of auto / adapted, seconds "
                                          f"(at most {DEFAULT_ADAPT_STEPS} steps; auto's "
                                          "transfer check may fine-tune a second copy)")
        self.device = ComboBox(choices=["auto", "cpu", "cuda"], value="auto", label="device")
        self.allow_out_of_range = CheckBox(value=False, text="allow out-of-range (not advised)")
        self.symmetric = CheckBox(value=True, text="average 8 mirror/swap predictions",
                                  tooltip="networks: mean of the predictions of the mirrored "
                                  "and swapped input pair (0.0-0.3 dB better, 8x slower)")
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        self.qa_button = PushButton(text="Leave-one-out QA: pretrained / adapted / linear")
        self.qa_summary = Label(value="")
        self.qa_table = Table(value={"data": [], "index": [], "columns": QA_COLUMNS})
        self.qa_table.native.setMinimumHeight(120)
        for i, w in enumerate([self.layer, self.mode, self.target_step, self.frames_per_gap,
                               self.method, self.adapt_seconds, self.device, self.symmetric,
                               self.allow_out_of_range]):
            self.insert(i, w)
        self.extend([self.note, Container(widgets=[self.qa_button, self.qa_summary, self.qa_table],
                               label="QA")])
        self.mode.changed.connect(self._sync_mode)
        self.method.changed.connect(self._sync_mode)
        self.qa_button.changed.connect(lambda *_: self._safe(self.run_qa))
        self._sync_mode()
        self.result: InterpolationResult | None = None
        self.qa: LeaveOneOutResult | None = None
        self.selection: Selection | None = None
        self._marked: dict[str, dict[str, Any]] = {}
        napari_viewer.dims.events.current_step.connect(self._update_overlay)
        napari_viewer.layers.selection.events.active.connect(self._update_overlay)

    # ---------------------------------------------------------------- parameters
    def _sync_mode(self, *_: Any) -> None:
        step = self.mode.value == STEP_MODE
        self.target_step.visible = step
        self.frames_per_gap.visible = not step
        self.adapt_seconds.visible = self.method.value in ("auto", "adapted")
        self.symmetric.visible = self.method.value not in ("linear", "reprojection")

    def _safe(self, action: Any) -> None:
        from napari_tiltgen.core.errors import TiltgenError

        try:
            action()
        except TiltgenError as exc:
            self.show_error(str(exc))

    def current_series(self) -> TiltSeries:
        from napari_tiltgen.core.errors import TiltgenError

        layer = self.layer.value
        if layer is None:
            raise TiltgenError("open a tilt series first (no tilt-series layer is selected).")
        return TiltSeries.from_layer(layer)

    def _options(self) -> dict[str, Any]:
        opts = {"method": self.method.value, "device": self.device.value,
                "allow_out_of_range": bool(self.allow_out_of_range.value),
                "symmetric": bool(self.symmetric.value)}
        if self.method.value in ("auto", "adapted"):
            opts["adapt_seconds"] = float(self.adapt_seconds.value)
        return opts

    # ---------------------------------------------------------------- interpolate
    def _on_run(self) -> None:
        ts = self.current_series()
        ts.require_angles()
        name = self.layer.value.name
        count = self.mode.value == COUNT_MODE
        kw = {"frames_per_gap": int(self.frames_per_gap.value) if count else None,
              "target_step_deg": None if count else float(self.target_step.value),
              **self._options()}
        self.start(lambda: interpolate_series(ts, **kw),
                   on_result=lambda res: self._show_result(res, name))

    def _show_result(self, res: InterpolationResult, source_name: str) -> None:
        self.result = res
        name = f"{source_name} + {res.method} ({len(res.predicted_indices)} predicted)"
        data, kw, _ = res.tilt_series.to_layer_data(name=name)
        kw["metadata"]["interpolation"] = res.report()
        layer = self.viewer.add_image(data, **kw)
        self._marked[layer.name] = res.report()
        self._add_markers(layer, res)
        for w in res.warnings:
            self.show_warning(w)
        self.note.value = (f"inserted {len(res.predicted_indices)} frames ({res.method}); "
                           f"{res.tilt_series.n_tilts} in all"
                           + (f"; {len(res.warnings)} warning(s)" if res.warnings else ""))
        if res.selection is not None:
            self._show_selection(res.selection)
        self.viewer.layers.selection.active = layer
        self._update_overlay()

    def _add_markers(self, layer: Any, res: InterpolationResult) -> None:
        """A points layer with a "PREDICTED" label on each predicted frame (top-left corner)."""
        idx = res.predicted_indices
        if not idx:
            return
        ny = res.tilt_series.data.shape[1]
        pts = np.array([[i, 0.06 * ny, 0.06 * ny] for i in idx], dtype=float)
        angles = res.tilt_series.tilt_angles
        self.viewer.add_points(
            pts, name=f"{layer.name} [predicted frames]", size=max(2.0, 0.04 * ny),
            face_color="orange", border_color="orange", scale=layer.scale,
            properties={"label": [f"PREDICTED {angles[i]:+.1f}°" for i in idx]},
            text={"string": "{label}", "color": "orange", "anchor": "upper_left",
                  "translation": [0, 0.02 * ny, 0.03 * ny], "size": 10},
            metadata={"predicted_indices": idx},
        )

    def _update_overlay(self, *_: Any) -> None:
        layer = self.viewer.layers.selection.active
        report = self._marked.get(getattr(layer, "name", None)) if layer is not None else None
        overlay = self.text_overlay()
        if report is None:
            if overlay.text.startswith("frame "):
                overlay.visible = False
                overlay.text = ""
            return
        i = int(self.viewer.dims.current_step[0])
        n = report["n_frames"]
        i = min(max(i, 0), n - 1)
        angle = report["tilt_angles_deg"][i]
        tag = f"PREDICTED ({report['method']})" if i in report["predicted_indices"] else "real"
        overlay.text = f"frame {i + 1}/{n}  {angle:+.2f} deg  {tag}"
        overlay.color = "orange" if i in report["predicted_indices"] else "white"
        overlay.visible = True

    def text_overlay(self) -> Any:
        """The viewer's text overlay (napari >= 0.9: ``viewer.canvas.overlays["text"]``)."""
        canvas = getattr(self.viewer, "canvas", None)
        overlays = getattr(canvas, "overlays", None)
        if overlays is not None and "text" in overlays:
            return overlays["text"]
        return self.viewer.text_overlay  # pragma: no cover - older napari

    # ---------------------------------------------------------------- QA
    def qa_series(self) -> TiltSeries:
        """The real frames of the selected layer (predicted frames of an earlier interpolation
        are dropped: QA never scores invented frames)."""
        ts = real_frames(self.current_series())
        ts.require_angles()
        return ts

    def run_qa(self) -> None:
        """Adapt, then leave-one-out QA of pretrained / adapted / linear on the real frames."""
        ts = self.qa_series()
        name = self.layer.value.name
        requested = "adapted" if self.method.value == "adapted" else "auto"
        seconds = float(self.adapt_seconds.value)
        device = self.device.value
        symmetric = bool(self.symmetric.value)
        self.start(lambda: adapt_and_select(ts, requested=requested, seconds=seconds,
                                            device=device, symmetric=symmetric),
                   on_result=lambda sel: self._show_qa(sel, name, ts))

    def _show_selection(self, sel: Selection) -> None:
        """Fill the QA table (three methods side by side, then the ensembles with the SIRT
        reprojection where scored) and the decision line."""
        self.selection = sel
        cols = qa_columns()  # the same columns as `tiltgen interpolate --qa`'s table
        rows = [[_number(r.get(key, float("nan")), fmt) for _, key, fmt in cols]
                for r in sel.rows()]
        self.qa_table.value = {"data": rows, "index": [f"x{2 * r['k']} step" for r in sel.rows()],
                               "columns": QA_COLUMNS}
        self.qa_summary.value = sel.message + "".join(f"\n{n}" for n in sel.notes)

    def _show_qa(self, sel: Selection, source_name: str, ts: TiltSeries) -> None:
        self._show_selection(sel)
        k = min(sel.qa)
        qa = sel.qa[k][sel.method]
        self.qa = qa
        px = ts.pixel_size_A or 1.0
        common = {"scale": (1.0, px, px), "colormap": "gray",
                  "metadata": {"qa": qa.as_dict(), "selection": sel.as_dict()}}
        lo, hi = np.percentile(qa.real, (0.5, 99.5))
        self.viewer.add_image(qa.real, name=f"{source_name} QA real",
                              contrast_limits=(float(lo), float(hi) or 1.0), **common)
        self.viewer.add_image(qa.predicted, name=f"{source_name} QA predicted ({qa.method})",
                              contrast_limits=(float(lo), float(hi) or 1.0), **common)
        d = float(np.percentile(np.abs(qa.difference), 99.5)) or 1.0
        self.viewer.add_image(qa.difference, name=f"{source_name} QA difference",
                              contrast_limits=(-d, d), **{**common, "colormap": "PiYG"})

    def show_warning(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        show_warning(message)


def _number(v: float, fmt: str) -> float | int:
    """A QA table number rounded as the text table prints it (``fmt``: ``"d"`` or ``".Nf"``)."""
    return int(v) if fmt == "d" else round(float(v), int(fmt[1:-1]))
