"""The "Tomography" panel: every step of the work in one dock, as tabs.

Load -> Align -> Reconstruct -> Enhance (Interpolate, Inpaint, INR fit, Time-resolved fit) ->
Compare -> Simulate. One dock instead of a column of nine: each step's widget is built the first
time its tab is shown and sits in a scroll area, so the napari window with the panel open fits a
1366 x 768 screen. Tilt series stay in the napari window; volumes open in their own window (see
:mod:`napari_tiltgen.gui.views`), which the button at the top brings forward.

A step whose widget is not installed (the Align step in a build without it) shows a tab saying so
instead of failing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QSize
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from napari_tiltgen.gui.views import _unwrap, workspace

if TYPE_CHECKING:
    import napari

#: (tab title, [(page title, "module:Class"), ...]); a tab with several pages gets inner tabs.
STEPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Load", [("Tilt series", "napari_tiltgen.gui.tilt_series:TiltSeriesWidget")]),
    ("Align", [("Align", "napari_tiltgen.gui.align:AlignWidget")]),
    ("Reconstruct", [("Reconstruct", "napari_tiltgen.gui.reconstruct:ReconstructWidget")]),
    ("Enhance", [
        ("Interpolate", "napari_tiltgen.gui.interpolate:InterpolateWidget"),
        ("Inpaint", "napari_tiltgen.gui.inpaint:InpaintWidget"),
        ("INR fit", "napari_tiltgen.gui.inr:INRWidget"),
        ("Time-resolved fit", "napari_tiltgen.gui.dip:DIPWidget"),
    ]),
    ("Compare", [("Compare", "napari_tiltgen.gui.compare:CompareWidget")]),
    ("Simulate", [("Simulate", "napari_tiltgen.gui.simulate:SimulateWidget")]),
]

#: The widget display names of napari.yaml (and of the Workflow widget) -> page titles.
PAGE_OF_DISPLAY_NAME = {"Tilt series": "Tilt series", "Align": "Align",
                        "Reconstruct": "Reconstruct", "Interpolate": "Interpolate",
                        "Inpaint": "Inpaint", "INR fit": "INR fit",
                        "Time-resolved fit": "Time-resolved fit", "Compare": "Compare",
                        "Simulate": "Simulate"}

#: Widest the panel asks for (px); the canvas keeps the rest of a 1366 px screen.
PANEL_WIDTH = 400

_PANELS: dict[int, Any] = {}


def _load_class(spec: str) -> Any:
    """The widget class named by ``"module:Class"``, or ``None`` when the module is missing."""
    module, cls = spec.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise
    return getattr(mod, cls, None)


def panel_of(viewer: Any) -> TomographyPanel | None:
    """The Tomography panel docked in ``viewer``, if any."""
    viewer = _unwrap(viewer)
    p = _PANELS.get(id(viewer))
    if p is not None and _unwrap(p.viewer) is viewer:
        try:
            p.isVisible()
        except RuntimeError:  # Qt object deleted
            return None
        return p
    return None


class _HeightForWidth(QObject):
    """Keeps a word-wrapped label as tall as its text needs at its current width.

    Scroll areas do not pass height-for-width on to their contents, so without this a wrapped
    label keeps the height of its unwrapped text and its last lines are cut off.
    """

    def eventFilter(self, obj: Any, event: Any) -> bool:  # Qt API
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Show, QEvent.Type.Paint):
            try:
                need = obj.heightForWidth(obj.width())
            except (AttributeError, RuntimeError):
                return False
            if need > 0 and obj.minimumHeight() != need:
                obj.setMinimumHeight(need)
        return False


_HEIGHT_FOR_WIDTH = _HeightForWidth()


def compact(root: Any, min_chars: int = 14) -> None:
    """Let a step's widget fit the panel's width without hiding text that can wrap.

    Drop-down boxes size to ``min_chars`` characters instead of their longest entry (the list
    still shows every entry in full when opened, and the chosen one is the box's tooltip); long
    labels wrap instead of widening the panel; a long "Action: detail" button keeps "Action" and
    shows the detail as its tooltip.
    """
    from qtpy.QtWidgets import QComboBox, QHeaderView, QLabel, QPushButton, QTableView

    for box in root.findChildren(QComboBox):
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        box.setMinimumContentsLength(min_chars)

        def _tip(_i: int = 0, box: Any = box) -> None:
            box.setToolTip(box.currentText())

        box.currentIndexChanged.connect(_tip)
        _tip()
    for button in root.findChildren(QPushButton):
        text = button.text()
        if ":" in text and button.sizeHint().width() > 240:  # "Action: detail" -> "Action"
            button.setToolTip(text if not button.toolTip() else f"{text}\n{button.toolTip()}")
            button.setText(text.split(":", 1)[0])
    for table in root.findChildren(QTableView):  # columns as wide as their text (QA table)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    for label in root.findChildren(QLabel):
        if label.objectName() == "tiltgen_fixed_text":  # laid out by its widget
            continue
        text = label.text()
        widest = max((label.fontMetrics().horizontalAdvance(t) for t in text.split("\n")),
                     default=0)
        if text and not label.wordWrap() and widest > 260:
            label.setWordWrap(True)
        if label.wordWrap():
            label.setMinimumWidth(1)  # a wrapping label never sets the panel's width
            label.installEventFilter(_HEIGHT_FOR_WIDTH)  # ... and is always tall enough


def _page_frame() -> tuple[Any, Any]:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    inner = QWidget()
    lay = QVBoxLayout(inner)
    lay.setContentsMargins(2, 2, 2, 2)
    area.setWidget(inner)
    return area, lay


def _tab_widget() -> Any:
    from qtpy.QtWidgets import QTabWidget

    tabs = QTabWidget()
    tabs.setUsesScrollButtons(True)
    tabs.setDocumentMode(True)
    tabs.setElideMode(__import__("qtpy.QtCore", fromlist=["Qt"]).Qt.TextElideMode.ElideNone)
    return tabs


class TomographyPanel(QWidget):
    """Tabs for the steps of the work; each step's widget is built when first shown."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace(napari_viewer)
        self.pages: dict[str, dict[str, Any]] = {}  # page title -> {layout, spec, widget}
        self._tab_of_page: dict[str, tuple[int, Any, int]] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        head = QHBoxLayout()
        self.hint = QLabel("Tilt series here; volumes in their own window.")
        self.hint.setWordWrap(True)
        self.show_volumes_button = QPushButton("Volumes window")
        self.show_volumes_button.setToolTip("Show the window that holds the volumes "
                                            "(reconstructions, ground truth, results)")
        self.show_volumes_button.clicked.connect(self.workspace.show_volumes)
        head.addWidget(self.hint, 1)
        head.addWidget(self.show_volumes_button, 0)
        outer.addLayout(head)
        self.tabs = _tab_widget()
        outer.addWidget(self.tabs, 1)
        for t, (title, pages) in enumerate(STEPS):
            if len(pages) == 1:
                area, lay = _page_frame()
                self.tabs.addTab(area, title)
                self._register(pages[0], lay, (t, None, -1))
            else:
                inner = _tab_widget()
                for k, page in enumerate(pages):
                    area, lay = _page_frame()
                    inner.addTab(area, page[0])
                    self._register(page, lay, (t, inner, k))
                inner.currentChanged.connect(lambda _i, inner=inner: self._build_current())
                self.tabs.addTab(inner, title)
        self.tabs.currentChanged.connect(lambda _i: self._build_current())
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.setMinimumWidth(300)
        _PANELS[id(_unwrap(napari_viewer))] = self
        self._build_current()

    # ------------------------------------------------------------ pages
    def _register(self, page: tuple[str, str], layout: Any, where: tuple) -> None:
        self.pages[page[0]] = {"layout": layout, "spec": page[1], "widget": None}
        self._tab_of_page[page[0]] = where

    def _build_current(self) -> None:
        w = self.tabs.currentWidget()
        for name, (t, inner, k) in self._tab_of_page.items():
            if self.tabs.widget(t) is not w:
                continue
            if inner is None or inner.currentIndex() == k:
                self.step_widget(name)

    def step_widget(self, page: str) -> Any:
        """The widget of ``page`` (e.g. "Reconstruct"), built on first use.

        Returns the magicgui/Qt widget, or ``None`` for a step that is not installed.
        """
        entry = self.pages[page]
        if entry["widget"] is None:
            cls = _load_class(entry["spec"])
            lay = entry["layout"]
            if cls is None:
                note = QLabel(f"The {page} step is not installed in this version of "
                              "napari-tiltgen.")
                note.setWordWrap(True)
                lay.addWidget(note)
                lay.addStretch(1)
                entry["widget"] = False
            else:
                widget = cls(self.viewer)
                native = getattr(widget, "native", widget)
                native.setMaximumWidth(16777215)
                compact(native)
                lay.addWidget(native)
                lay.addStretch(1)
                entry["widget"] = widget
        return entry["widget"] or None

    def show_step(self, page: str) -> Any:
        """Switch to the tab of ``page`` (a page title or a widget display name)."""
        page = PAGE_OF_DISPLAY_NAME.get(page, page)
        t, inner, k = self._tab_of_page[page]
        self.tabs.setCurrentIndex(t)
        if inner is not None:
            inner.setCurrentIndex(k)
        return self.step_widget(page)

    def current_page(self) -> str:
        w = self.tabs.currentWidget()
        for name, (t, inner, k) in self._tab_of_page.items():
            if self.tabs.widget(t) is w and (inner is None or inner.currentIndex() == k):
                return name
        return ""  # pragma: no cover

    def sizeHint(self) -> QSize:
        return QSize(PANEL_WIDTH, 560)

    def minimumSizeHint(self) -> QSize:
        return QSize(300, 240)



def open_panel(viewer: Any, page: str | None = None) -> Any:
    """Dock the Tomography panel in ``viewer`` (once) and show ``page``; returns the panel."""
    panel = panel_of(viewer)
    if panel is None:
        _, panel = viewer.window.add_plugin_dock_widget("napari-tiltgen", "Tomography")
    if page is not None:
        panel.show_step(page)
    return panel


__all__ = ["PANEL_WIDTH", "STEPS", "TomographyPanel", "compact", "open_panel", "panel_of"]
