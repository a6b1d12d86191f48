"""Shared plumbing for the dock widgets: layer pickers and background workers.

Widgets contain no science: they gather parameters, start a worker that runs an API generator
(see :mod:`napari_tiltgen.core.progress`) and turn results into layers.

:class:`WorkerWidget` gives every long-running widget the same behaviour:

* a **Run** button and a **Cancel** button that really stops the work (``worker.quit()`` makes the
  generator return at its next ``yield``; nothing is killed mid-write);
* a progress bar (0-100 %) and a status line fed by the yielded :class:`~napari_tiltgen.core.progress.Progress`
  events, plus a live preview image inside the widget for ``Progress.preview`` arrays (drawn as a
  Qt pixmap: a few milliseconds, so previews never stall the viewer — adding or refreshing a
  napari layer for every preview costs 50 ms to seconds with software OpenGL);
* errors shown as napari notifications (a :class:`~napari_tiltgen.core.errors.TiltgenError` as its plain
  message) instead of tracebacks; the widget is ready again afterwards.

Subclasses build their controls, then call :meth:`WorkerWidget.start` with a zero-argument
callable returning the generator, and a ``on_result`` callback run on the GUI thread.

Example::

    class MyWidget(WorkerWidget):
        def __init__(self, viewer):
            super().__init__(viewer, run_text="Reconstruct")
            self.iterations = SpinBox(value=50, label="iterations")
            self.insert(0, self.iterations)

        def _on_run(self):
            ts = TiltSeries.from_layer(self.layer.value)
            self.start(lambda: recon.reconstruct_iter(ts, iterations=self.iterations.value),
                       on_result=lambda vol: self.viewer.add_layer(...))
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton

from napari_tiltgen.core.errors import Cancelled, TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.io.model import METADATA_KEY

if TYPE_CHECKING:
    import napari


def layer_kind(layer: Any) -> str | None:
    """``"tilt_series"``, ``"volume"`` or ``None`` for a napari layer."""
    meta = getattr(layer, "metadata", {}) or {}
    return (meta.get(METADATA_KEY) or {}).get("kind")


def image_layers(viewer: napari.Viewer, kinds: tuple[str | None, ...] | None = None) -> list:
    """The viewer's 3-D grey-scale image layers, optionally only those of the given kinds."""
    from napari.layers import Image

    from napari_tiltgen.gui.views import workspace_layers

    out = []
    for layer in workspace_layers(viewer):  # the tilt-series view and the volumes view
        if not isinstance(layer, Image) or layer.ndim != 3 or layer.rgb:
            continue
        if kinds is not None and layer_kind(layer) not in kinds:
            continue
        out.append(layer)
    return out


class LayerPicker(ComboBox):
    """A combo box of the workspace's 3-D image layers, kept in sync with the layer lists.

    It follows napari's layer selection only until the user picks a layer in the box: from then
    on the user's choice stays (a new result layer or a click in the layer list does not change
    which layer the next action runs on), unless that layer is removed.

    Parameters
    ----------
    viewer
        The napari viewer.
    kinds
        Only layers of these kinds (``"tilt_series"``, ``"volume"``, ``None`` for plain layers);
        ``None`` means every 3-D image layer.
    """

    def __init__(self, viewer: napari.Viewer, kinds: tuple[str | None, ...] | None = None,
                 label: str = "layer", nullable: bool = False, **kwargs: Any):
        from napari_tiltgen.gui.views import workspace

        self._viewer = viewer
        self._kinds = kinds
        self.user_picked = False
        super().__init__(label=label, choices=self._choices, nullable=nullable, **kwargs)
        ws = workspace(viewer)  # volumes go to their own view; the picker lists both views
        ws.changed.connect(self._refresh)
        viewer.layers.selection.events.active.connect(self._follow_selection)
        self.native.activated.connect(self._on_user_pick)  # only user clicks emit "activated"

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self._viewer, self._kinds)]

    def _refresh(self, _event: Any = None) -> None:
        try:
            self.reset_choices()
        except RuntimeError:  # the Qt widget is gone (dock closed)
            return
        picked = getattr(self, "_picked", None)
        if picked is None or not any(picked is c for _, c in self._choices()):
            self.user_picked = False  # the picked layer was removed

    def _on_user_pick(self, *_: Any) -> None:
        self.user_picked = True
        self._picked = self.value

    def _follow_selection(self, event: Any) -> None:
        layer = event.value
        if self.user_picked or layer is None:
            return
        if any(layer is c for _, c in self._choices()):
            self.value = layer


_FLAG_PAIR = re.compile(r"(--[a-z][a-z0-9-]*)\s*/\s*[a-z_][a-z0-9_]*(?:=\w+)?"
                        r"|[a-z_][a-z0-9_]*(?:=\w+)?\s*/\s*(--[a-z][a-z0-9-]*)")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?:\s+(?:DEG|DIR|FILE|PATH|N))?")


def plain_words(message: str) -> str:
    """A message from the API in the widget user's words: CLI flags become setting names.

    ``"(--wedge / missing_wedge_deg)"`` -> ``"(the "wedge" setting)"``; ``"use --method
    linear"`` -> ``"use the "method" setting linear"``.
    """
    message = _FLAG_PAIR.sub(lambda m: m.group(1) or m.group(2), message)

    def name(m: re.Match) -> str:
        flag = m.group(1)
        return "the \u201c" + _SETTING_NAMES.get(flag, flag.replace("-", " ")) + "\u201d setting"

    return _FLAG.sub(name, message)


#: CLI flags whose widget setting has another name (the widget's label).
_SETTING_NAMES = {"wedge": "missing wedge (deg)", "tilt-file": "tilt angles",
                  "allow-out-of-range": "allow wedges outside the trained range",
                  "tilt-axis": "tilt axis (deg from Y)", "sirt-iterations": "iterations"}


@functools.cache
def warm_up_torch() -> None:
    """Run torch's first-use imports on the GUI thread, once, if torch is loaded.

    The first optimiser step imports ``torch._dynamo`` and friends lazily. Done inside a worker,
    that import holds the interpreter lock for up to ~0.8 s (measured on 2 cores) and freezes the
    GUI mid-fit; done here, when a widget is created, it costs the same once at docking time.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.sum().backward()
    opt.step()


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the Python thread ``thread_id`` at its next instruction."""
    import ctypes

    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                      ctypes.py_object(exc_type))
    if done > 1:  # more than one thread hit: undo (cannot happen with a valid id)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return done == 1


class WorkerWidget(Container):
    """Base class of dock widgets that run long work in a napari thread worker."""

    def __init__(self, viewer: napari.Viewer, run_text: str = "Run", **kwargs: Any):
        super().__init__(**kwargs)
        warm_up_torch()
        self.viewer = viewer
        self.worker: Any = None
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="ready")
        self.preview = Label(value="")
        self.preview.native.setMinimumHeight(0)
        self.last_preview: np.ndarray | None = None
        self._last_preview_time = 0.0
        self.preview_interval_s = 0.25
        self._buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                                  labels=False)
        self.extend([self._buttons, self.progress, self.status,
                     Container(widgets=[self.preview], labels=False)])
        self.run_button.changed.connect(self._safe_run)
        self.cancel_button.changed.connect(self.cancel)
        self._gen_holder: dict[str, Generator] = {}

    # ---------------------------------------------------------------- to override
    def _on_run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- worker plumbing
    def _safe_run(self, *_: Any) -> None:
        try:
            self._on_run()
        except TiltgenError as exc:
            self.show_error(str(exc))

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, make_gen: Callable[[], Generator[Progress, None, Any]],
              on_result: Callable[[Any], None], *, preview_name: str = "preview") -> Any:
        """Start ``make_gen()`` in a thread worker and wire progress, preview, cancel, errors.

        ``preview_name`` is the caption shown under live previews (e.g. "central slice").
        Returns the (started) worker; tests wait on its ``finished`` signal.
        """
        from napari.qt.threading import create_worker

        if self.running:
            self.show_error("a job is already running in this widget; cancel it first.")
            return None

        holder: dict[str, Generator] = {}

        def job() -> Generator[Progress, None, Any]:
            import threading

            # cancel() may interrupt this thread only while it runs the job's own code ("busy")
            holder["thread_id"] = threading.get_ident()
            holder["busy"] = True
            try:
                holder["gen"] = gen = make_gen()
                sent = None
                while True:
                    try:
                        event = gen.send(sent)
                    except StopIteration as stop:
                        return stop.value
                    holder["busy"] = False
                    sent = yield event
                    holder["busy"] = True
            finally:
                holder["busy"] = False

        # Errors are shown by _on_error; napari's own handler would raise them again.
        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        self._gen_holder = holder
        self.worker = worker
        self.preview.tooltip = preview_name
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_result)
        worker.returned.connect(lambda _r: self._set_status("done"))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._set_status("cancelled"))
        worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self._set_status("starting...")
        worker.start()
        return worker

    #: Seconds a cancelled job may run on before it is interrupted where it stands.
    cancel_grace_s = 0.2

    def cancel(self, *_: Any) -> None:
        """Stop the running job within a second, at any moment (set-up included).

        The worker is asked to stop at its next progress step (``worker.quit()``); a job still
        running ``cancel_grace_s`` later (a long set-up before its first progress step: model
        loading, SIRT initialisation) gets a :class:`~napari_tiltgen.core.errors.Cancelled` exception
        raised in its thread at the next Python instruction (repeated until it ends). Files are
        written only through :mod:`napari_tiltgen.io.output`, whose temporary files are removed
        on any exception, so nothing is left half-written.
        """
        if self.worker is None:
            return
        self._set_status("cancelling...")
        self._cancel_requested = True
        worker = self.worker
        worker.quit()
        from qtpy.QtCore import QTimer

        holder = self._gen_holder

        def interrupt() -> None:
            if self.worker is not worker or holder.get("finished"):
                return
            tid = holder.get("thread_id")
            if tid is not None and holder.get("busy"):
                _raise_in_thread(tid, Cancelled)
            QTimer.singleShot(int(self.cancel_grace_s * 1000), interrupt)

        QTimer.singleShot(int(self.cancel_grace_s * 1000), interrupt)

    def _on_progress(self, event: Progress) -> None:
        if not isinstance(event, Progress):
            return
        self.progress.value = int(round(1000 * min(max(event.fraction, 0.0), 1.0)))
        if event.message:
            self._set_status(event.message)
        if event.preview is not None:
            self._show_preview(np.asarray(event.preview))

    def _show_preview(self, image: np.ndarray, size_px: int = 220) -> None:
        """Draw a 2-D preview (1st-99th percentile grey scale) in the widget, at most 4x/s."""
        import time

        from qtpy.QtCore import Qt
        from qtpy.QtGui import QImage, QPixmap

        self.last_preview = image
        now = time.perf_counter()
        if image.ndim != 2 or now - self._last_preview_time < self.preview_interval_s:
            return
        self._last_preview_time = now
        lo, hi = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
        grey = np.clip((image - lo) / ((hi - lo) or 1.0) * 255.0, 0, 255).astype(np.uint8)
        grey = np.ascontiguousarray(grey)
        h, w = grey.shape
        qimg = QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
        pix = QPixmap.fromImage(qimg).scaled(size_px, size_px,
                                             Qt.AspectRatioMode.KeepAspectRatio)
        self.preview.native.setPixmap(pix)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or getattr(self, "_cancel_requested", False):
            self._set_status("cancelled")  # whatever the interrupted set-up raised
            return
        self._set_status("failed")
        if isinstance(exc, TiltgenError):
            self.show_error(str(exc))
        elif isinstance(exc, OSError):  # permission, full disk, ...: one plain line
            from napari_tiltgen.io.output import os_problem

            where = f"{exc.filename}: " if exc.filename else ""
            self.show_error(f"{where}{os_problem(exc)}.")
        elif isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
            self.show_error("out of memory: use smaller data (bin or crop the stack) or a "
                            "larger machine.")
        else:
            self.show_error(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        # After a cancel the generator is parked at a yield: close it now (it no longer runs in
        # the worker thread), so its ``finally`` blocks release files and memory at once.
        self._gen_holder["finished"] = True
        self._cancel_requested = False
        gen = self._gen_holder.pop("gen", None)
        if gen is not None:
            gen.close()
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def show_error(self, message: str) -> None:
        """Show ``message`` as a napari error notification and in the status line.

        Command-line spellings in it (``--wedge / missing_wedge_deg``) become the setting's name
        in words (:func:`plain_words`): the widget user never typed a flag.
        """
        from napari.utils.notifications import show_error

        message = plain_words(message)
        self.status.value = message if len(message) < 120 else message[:117] + "..."
        show_error(message)
