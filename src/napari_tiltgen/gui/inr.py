"""The "INR fit" dock widget: self-supervised INR reconstruction with joint pose refinement.

Pick a tilt-series layer, the number of steps, the learning rate, whether to refine the poses
(after how many warm-up steps, and whether to start from a measured tilt-axis angle), and the
device. **Fit** runs
:func:`napari_tiltgen.fits.inr.fit_inr_iter` in a background worker: the progress bar and
status line follow the steps, a small loss curve is drawn in the widget, the central z-slice of
the current volume is shown live in the widget, and **Cancel** stops the fit at the next step. The
result is added as a volume layer whose metadata carries the fitted poses (and, with pose
refinement, the tilt series with the fitted geometry as a second layer).

The science is in :mod:`napari_tiltgen.fits.inr`; this file only gathers choices and shows
results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import QObject, Signal

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.fits.inr import INRResult, fit_inr_iter
from napari_tiltgen.gui._base import LayerPicker, WorkerWidget
from napari_tiltgen.io.model import TiltSeries

if TYPE_CHECKING:
    import napari


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and one entry per visible CUDA device."""
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


#: Choices of the "starting tilt axis" box -> ``tilt_axis_init`` of :func:`fit_inr_iter`.
AXIS_INIT_CHOICES = {"estimate": "estimate", "recorded": "recorded"}


class _Signals(QObject):
    """Qt signals of the widget (tests wait on ``finished``)."""

    finished = Signal()


class INRWidget(WorkerWidget):
    """Fit an implicit neural representation to a tilt series, refining its poses."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Fit")
        self.signals = _Signals()
        self.layer = LayerPicker(napari_viewer, kinds=("tilt_series",), label="tilt series")
        self.steps = SpinBox(value=500, min=1, max=1_000_000, step=100, label="steps")
        self.learning_rate = FloatSpinBox(value=0.05, min=1e-5, max=1.0, step=0.005,
                                          label="learning rate")
        self.optimize_pose = CheckBox(value=True, text="refine poses (shifts, angles, tilt axis)")
        self.warmup = SpinBox(value=50, min=0, max=1_000_000, step=50,
                              label="pose warm-up (steps)")
        self.axis_init = ComboBox(choices=list(AXIS_INIT_CHOICES), value="estimate",
                                  label="starting tilt axis")
        self.axis_init.tooltip = (
            "estimate: measure the tilt-axis angle from the frames (common lines, +-12 deg "
            "around the recorded value) before the fit; recorded: start from the layer's value")
        self.batch_size = SpinBox(value=4096, min=64, max=1 << 20, step=1024,
                                  label="rays per step")
        self.preview_every = SpinBox(value=50, min=0, max=100_000, step=10,
                                     label="preview every (steps)")
        self.device = ComboBox(choices=device_choices(), value="auto", label="device")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.add_aligned = CheckBox(value=True, text="add tilt series with fitted poses")
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        controls = [self.layer, self.steps, self.learning_rate, self.optimize_pose, self.warmup,
                    self.axis_init, self.batch_size, self.preview_every, self.device, self.seed,
                    self.add_aligned]
        for i, w in enumerate(controls):
            self.insert(i, w)
        self.append(Container(widgets=[self.summary], labels=False))
        self.optimize_pose.changed.connect(self._sync_enabled)
        self.losses: list[tuple[float, float]] = []
        self._canvas, self._figure, self._axes, self._line = self._make_plot()
        self.native.layout().addWidget(self._canvas)
        self.native.setMaximumWidth(520)
        self.last_result: INRResult | None = None
        self._sync_enabled()

    # ---------------------------------------------------------------- plot
    def _make_plot(self) -> tuple[Any, Any, Any, Any]:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 2.0), layout="constrained")
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumHeight(180)
        ax = fig.add_subplot(1, 1, 1)
        (line,) = ax.plot([], [], lw=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, 1)
        self._hint = ax.text(0.5, 0.5, "the loss curve appears here during a fit",
                             transform=ax.transAxes, ha="center", va="center", fontsize=7,
                             color="0.4")
        return canvas, fig, ax, line

    def _redraw_loss(self) -> None:
        self._hint.set_visible(not self.losses)
        if not self.losses:
            self._line.set_data([], [])
        else:
            x, y = zip(*self.losses)
            self._line.set_data(x, [max(v, 1e-12) for v in y])
            self._axes.set_autoscalex_on(True)  # set_xlim of the empty plot turned it off
            self._axes.relim()
            self._axes.autoscale_view()
        self._canvas.draw_idle()

    # ---------------------------------------------------------------- state
    def _sync_enabled(self, *_: Any) -> None:
        on = bool(self.optimize_pose.value)
        self.warmup.enabled = on
        self.axis_init.enabled = on
        self.add_aligned.enabled = on

    def current_series(self) -> TiltSeries:
        layer = self.layer.value
        if layer is None:
            raise TiltgenError("choose a tilt-series layer (open a stack and set its angles in "
                               "the Tilt series widget).")
        return TiltSeries.from_layer(layer)

    # ---------------------------------------------------------------- running
    def _on_run(self) -> None:
        ts = self.current_series()
        ts.require_angles()
        name = self.layer.value.name
        kwargs = dict(
            steps=int(self.steps.value), batch_size=int(self.batch_size.value),
            learning_rate=float(self.learning_rate.value),
            optimize_pose=bool(self.optimize_pose.value),
            pose_warmup_steps=int(self.warmup.value), device=str(self.device.value),
            tilt_axis_init=(AXIS_INIT_CHOICES[str(self.axis_init.value)]
                            if self.optimize_pose.value else "recorded"),
            seed=int(self.seed.value), preview_every=int(self.preview_every.value),
            log_every=max(1, min(10, int(self.steps.value) // 20 or 1)),
        )
        self.losses = []
        self._redraw_loss()
        self.summary.value = ""
        self.start(lambda: fit_inr_iter(ts, **kwargs),
                   on_result=lambda res: self._add_result(res, name),
                   preview_name="central z-slice of the current INR volume")

    def _on_progress(self, event: Progress) -> None:
        super()._on_progress(event)
        if isinstance(event, Progress) and "loss" in event.values:
            self.losses.append((event.values.get("step", len(self.losses)),
                                event.values["loss"]))
            self._redraw_loss()

    def _on_finished(self) -> None:
        super()._on_finished()
        self.signals.finished.emit()

    def _add_result(self, res: INRResult, name: str) -> None:
        self.last_result = res
        data, kwargs, _ = res.volume.to_layer_data(name=f"{name} INR")
        self.viewer.add_image(data, **kwargs)
        p = res.poses
        text = (f"INR: {res.loss_history.size} steps in {res.seconds:.1f} s on "
                f"{res.extra.get('device')}, final loss {res.volume.provenance['final_loss']:.3g}")
        if res.volume.provenance["parameters"]["optimize_pose"]:
            text += (f"; tilt axis {p['initial_tilt_axis_angle_deg']:.2f} -> "
                     f"{p['tilt_axis_angle_deg']:.2f} deg, max |angle offset| "
                     f"{abs(p['tilt_angle_offsets_deg']).max():.2f} deg")
            if self.add_aligned.value:
                d, kw, _ = res.tilt_series_aligned.to_layer_data(name=f"{name} (INR poses)")
                self.viewer.add_image(d, **kw)
        self.summary.value = text
