"""The "Workflow" dock widget: the guided path load/simulate -> reconstruct -> enhance -> compare.

Each step is a button that opens the step's tab in the Tomography panel, with a line saying what is done so
far (which layers of that kind exist and which method and parameters made them, from the layers'
metadata). Only steps whose widgets are installed are listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, PushButton

from napari_tiltgen.gui._base import image_layers, layer_kind

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-tiltgen"

#: (step title, widget display names offered for it, what counts as done)
STEPS: list[tuple[str, list[str], str]] = [
    ("1. Load or simulate a tilt series", ["Tilt series", "Simulate"], "tilt_series"),
    ("2. Reconstruct (WBP / SIRT)", ["Reconstruct"], "conventional"),
    ("3. Enhance", ["Interpolate", "Inpaint", "INR fit", "Time-resolved fit"], "enhanced"),
    ("4. Compare", ["Compare"], "compared"),
]
CONVENTIONAL = {"wbp", "fbp", "sirt", "sart", "tv"}


def available_widgets() -> set[str]:
    """Display names of this plugin's widgets that are installed."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    return {w.display_name for w in pm.get_manifest(PLUGIN).contributions.widgets or []}


class WorkflowWidget(Container):
    """Guided workflow: one row per step with buttons that open the step's widgets."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        installed = available_widgets()
        self.status: dict[str, Label] = {}
        self.buttons: dict[str, PushButton] = {}
        for title, names, key in STEPS:
            names = [n for n in names if n in installed]
            if not names:
                continue
            self.append(Label(value=f"<b>{title}</b>"))
            row = []
            for n in names:
                b = PushButton(text=n)
                b.changed.connect(lambda *_, n=n: self.open(n))
                self.buttons[n] = b
                row.append(b)
            self.append(Container(widgets=row, layout="horizontal", labels=False))
            self.status[key] = Label(value="")
            self.status[key].native.setWordWrap(True)
            self.append(self.status[key])
        from napari_tiltgen.gui.views import workspace

        workspace(napari_viewer).changed.connect(self.refresh)  # both views' layers
        self.refresh()

    def open(self, name: str) -> Any:
        """Show the step ``name`` in the Tomography panel (docked once, then its tab switched).

        Returns the step's widget.
        """
        from napari_tiltgen.gui.panel import open_panel

        return open_panel(self.viewer, name).show_step(name)

    def refresh(self, *_: Any) -> None:
        """Say, for each step, which layers already exist and what made them."""
        try:
            self.native.isVisible()
        except RuntimeError:  # the dock was closed
            return
        series, conventional, enhanced = [], [], []
        for layer in image_layers(self.viewer):
            kind = layer_kind(layer)
            if kind == "tilt_series":
                series.append(layer.name)
            elif kind == "volume":
                prov = layer.metadata["tiltgen"].get("provenance", {})
                method = str(prov.get("method", "")).lower()
                if method in CONVENTIONAL:
                    conventional.append(f"{layer.name} ({method.upper()})")
                elif method and method != "ground truth":
                    enhanced.append(f"{layer.name} ({prov.get('method')})")
        text = {
            "tilt_series": series and "done: " + ", ".join(series) or "no tilt series yet",
            "conventional": conventional and "done: " + ", ".join(conventional)
            or "no WBP/SIRT volume yet",
            "enhanced": enhanced and "done: " + ", ".join(enhanced) or "no enhanced volume yet",
            "compared": "pick a reference and volumes in Compare",
        }
        for key, label in self.status.items():
            label.value = text[key]
