"""The shared worker plumbing of the dock widgets: progress, preview, cancel, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.gui._base import WorkerWidget

pytestmark = pytest.mark.gui


class Counter:
    def __init__(self) -> None:
        self.steps = 0
        self.closed = False

    def work(self, n: int, fail_at: int | None = None, delay: float = 0.0):
        try:
            for i in range(n):
                if fail_at is not None and i == fail_at:
                    raise TiltgenError("the wedge is too large for this model.")
                self.steps += 1
                time.sleep(delay)
                yield Progress((i + 1) / n, f"step {i + 1}/{n}",
                               preview=np.full((4, 5), i, np.float32))
            return self.steps
        finally:
            self.closed = True


class Dummy(WorkerWidget):
    def __init__(self, viewer, counter: Counter, **kw):
        super().__init__(viewer, run_text="Go")
        self.counter, self.kw, self.results = counter, kw, []

    def _on_run(self) -> None:
        self.start(lambda: self.counter.work(**self.kw), on_result=self.results.append)


def test_progress_preview_and_result(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    c = Counter()
    w = Dummy(viewer, c, n=5)
    with qtbot.waitSignal(w.run_button.native.clicked, timeout=1000):
        w.run_button.native.click()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    assert w.results == [5]
    assert w.progress.value == 1000
    assert w.status.value == "done"
    assert w.last_preview[0, 0] == 4  # last preview received
    assert not w.preview.native.pixmap().isNull()  # and drawn in the widget
    assert w.run_button.enabled and not w.cancel_button.enabled


def test_cancel_really_stops(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    c = Counter()
    w = Dummy(viewer, c, n=10_000, delay=0.01)
    w._on_run()
    worker = w.worker
    qtbot.waitUntil(lambda: c.steps >= 3, timeout=10000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        w.cancel_button.native.click()
    assert c.closed
    assert c.steps < 10_000
    assert w.results == []
    assert w.status.value == "cancelled"
    assert w.run_button.enabled


def test_error_is_shown_not_raised(make_napari_viewer, qtbot, monkeypatch) -> None:
    viewer = make_napari_viewer()
    shown: list[str] = []
    monkeypatch.setattr(WorkerWidget, "show_error", lambda self, m: shown.append(m))
    c = Counter()
    w = Dummy(viewer, c, n=10, fail_at=3)
    w._on_run()
    qtbot.waitUntil(lambda: not w.running, timeout=10000)
    assert shown == ["the wedge is too large for this model."]
    assert w.results == []
    assert w.status.value == "failed"


def test_run_drives_generator_without_qt() -> None:
    c = Counter()
    events: list[float] = []
    assert run(c.work(4), show=False, callback=lambda e: events.append(e.fraction)) == 4
    assert events == [0.25, 0.5, 0.75, 1.0]


def test_messages_use_the_widget_users_words() -> None:
    """API messages quote CLI flags; the widgets show the setting's name instead."""
    from napari_tiltgen.gui._base import plain_words

    msg = ("no tilt angles. Give the wedge in degrees (--wedge / missing_wedge_deg) or the tilt "
           "angles (--tilt-file / tilt_angles).")
    out = plain_words(msg)
    assert "--" not in out and "missing_wedge_deg" not in out
    assert "(the \u201cmissing wedge (deg)\u201d setting)" in out
    assert plain_words("use --method linear or pretrained.") == \
        "use the \u201cmethod\u201d setting linear or pretrained."
    assert plain_words("x (Override: allow_out_of_range / --allow-out-of-range.)") == \
        "x (Override: the \u201callow wedges outside the trained range\u201d setting.)"
    assert plain_words("3-5 min, a - b") == "3-5 min, a - b"  # nothing else touched
