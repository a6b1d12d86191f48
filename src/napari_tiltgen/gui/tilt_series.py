"""The "Tilt series" dock widget: see and correct angles, pixel size and tilt axis of a layer.

Shows, for the selected 3-D image layer, the tilt angles (range, step, count, missing wedge), the
pixel size in Å, the tilt-axis angle, and where each came from. The user can

* set the angles from a start and step, from a pasted list, or from an IMOD ``.rawtlt``/``.tlt``
  file;
* set the pixel size (Å) and the tilt-axis angle (degrees from image Y);
* turn the stack by 90 degrees so that a near-horizontal tilt axis becomes vertical.

Changes update the layer in place (metadata and scale); a plain 3-D layer (e.g. a stack opened
without angles) becomes a tilt-series layer. No file is ever written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    TextEdit,
)

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.gui._base import LayerPicker, layer_kind
from napari_tiltgen.io.metadata import read_angle_file
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries

if TYPE_CHECKING:
    import napari


#: Characters per line of the summary (monospace; fits the Tomography panel).
SUMMARY_WIDTH = 40

#: Decimals shown and typed for the pixel size (Å) and the tilt-axis angle (degrees).
PIXEL_SIZE_DECIMALS = 3
AXIS_DECIMALS = 2


def _edited(old: float | None, shown: float, decimals: int) -> float | None:
    """``shown`` if the user changed the box, else the stored ``old`` value, unrounded."""
    if old is not None and round(float(old), decimals) == round(float(shown), decimals):
        return old
    return float(shown)


def format_angles(angles: np.ndarray | None) -> str:
    if angles is None:
        return ""
    return ", ".join(f"{a:g}" for a in angles)


def parse_angles(text: str) -> np.ndarray:
    """Angles from text: numbers separated by commas, spaces or new lines (degrees)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError as exc:
        raise TiltgenError(f"the angle list is not a list of numbers ({exc}).") from None


def compact_summary(ts: TiltSeries) -> list[str]:
    """A few short lines for the widget: value, then where it came from."""
    p = ts.provenance
    n, ny, nx = ts.shape
    lines = [f"{n} tilts x {ny} x {nx} px ({p.get('file_dtype', 'float32')})"]
    if ts.tilt_angles is None:
        lines.append("angles: UNKNOWN - set start + step below")
    else:
        s = ts.angle_stats()
        lines.append(f"angles: {s['min']:.2f} to {s['max']:.2f} deg, step {s['step']:.2f} deg "
                     f"({s['count']}), wedge {s['missing_wedge_deg']:.1f} deg")
        lines.append(f"   from {p.get('angles_source', 'unknown')}")
    px = "unknown" if ts.pixel_size_A is None else f"{ts.pixel_size_A:.3f} Å"
    lines.append(f"pixel size: {px}")
    lines.append(f"   from {p.get('pixel_size_source') or 'unknown'}")
    lines.append(f"tilt axis: {ts.tilt_axis_angle_deg:.2f} deg from Y" if ts.tilt_axis_known
                 else "tilt axis: UNKNOWN (not recorded; estimate or set it)")  # tilt_axis_known
    lines.append(f"   from {p.get('tilt_axis_source', 'default (vertical)')}")
    return lines


class TiltSeriesWidget(Container):
    """Inspect and correct the geometry of a tilt-series layer."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.layer = LayerPicker(napari_viewer, label="layer")
        self.info = Label(value="")
        self.start = FloatSpinBox(value=-60.0, min=-90.0, max=90.0, step=0.5,
                                  label="start (deg)")
        self.step = FloatSpinBox(value=3.0, min=0.01, max=90.0, step=0.5, label="step (deg)")
        self.apply_start_step = PushButton(text="Set angles from start + step")
        self.angle_text = TextEdit(label="angles (deg)")
        self.apply_list = PushButton(text="Set angles from list")
        self.angle_file = FileEdit(label="angle file", mode="r",
                                   filter="Tilt angles (*.rawtlt *.tlt *.txt)")
        self.apply_file = PushButton(text="Load angles from file")
        self.pixel_size = FloatSpinBox(value=1.0, min=0.001, max=1e5, step=0.001,
                                       label="pixel size (Å)")
        self.pixel_size.native.setDecimals(PIXEL_SIZE_DECIMALS)
        self.pixel_size.native.setSingleStep(0.01)
        self.axis_angle = FloatSpinBox(value=0.0, min=-360.0, max=360.0, step=0.01,
                                       label="tilt axis (deg from Y)")
        self.axis_angle.native.setDecimals(AXIS_DECIMALS)
        self.axis_angle.native.setSingleStep(0.5)
        self.apply_geometry = PushButton(text="Set pixel size and tilt axis")
        self.make_vertical = PushButton(text="Rotate stack so the tilt axis is vertical")
        self.message = Label(value="")
        # the summary spans the whole width (above the form), so it is never squeezed into the
        # form's value column and cut off
        self.extend([
            Container(widgets=[self.layer], labels=True),
            self.info,
            Container(widgets=[
                self.start, self.step,
                self.apply_start_step, self.angle_text, self.apply_list,
                self.angle_file, self.apply_file,
                self.pixel_size, self.axis_angle, self.apply_geometry, self.make_vertical,
            ], labels=True),
            self.message,
        ])
        from qtpy.QtGui import QFontDatabase

        # the fixed-width font set as a font (not a style sheet), so its metrics size the label
        self.info.native.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.info.native.setObjectName("tiltgen_fixed_text")  # wrapped here, not by the panel
        self.angle_text.native.setMaximumHeight(72)
        self.message.native.setWordWrap(True)
        self.native.setMaximumWidth(520)
        self.layer.changed.connect(self.refresh)
        self.apply_start_step.changed.connect(lambda *_: self._guard(self.set_start_step))
        self.apply_list.changed.connect(lambda *_: self._guard(self.set_angle_list))
        self.apply_file.changed.connect(lambda *_: self._guard(self.load_angle_file))
        self.apply_geometry.changed.connect(lambda *_: self._guard(self.set_geometry))
        self.make_vertical.changed.connect(lambda *_: self._guard(self.rotate_vertical))
        self.refresh()

    # ---------------------------------------------------------------- reading the layer
    def current_layer(self) -> Any:
        layer = self.layer.value
        if layer is None:
            raise TiltgenError("open a tilt series first (File > Open, or a sample).")
        return layer

    def current_series(self) -> TiltSeries:
        """The selected layer as a TiltSeries (a plain layer gets default geometry)."""
        layer = self.current_layer()
        if layer_kind(layer) == "tilt_series":
            return TiltSeries.from_layer(layer)
        px = float(layer.scale[-1])
        prov = copy.deepcopy((layer.metadata.get(METADATA_KEY) or {}).get("provenance", {}))
        prov.setdefault("source", layer.source.path)
        return TiltSeries(data=np.asarray(layer.data), pixel_size_A=px if px != 1.0 else None,
                          provenance=prov)

    def refresh(self, *_: Any) -> None:
        """Show the selected layer's geometry."""
        layer = self.layer.value
        if layer is None:
            self.info.value = "No 3-D image layer. Open an .mrc/.st/.tif stack."
            return
        try:
            ts = self.current_series()
        except TiltgenError as exc:
            self.info.value = str(exc)
            return
        lines = compact_summary(ts)
        if layer_kind(layer) != "tilt_series":
            lines.insert(0, "Not marked as a tilt series yet: set its angles below.")
        # wrapped here at SUMMARY_WIDTH characters (monospace), so the label's height is known
        # exactly and nothing is cut off, in the panel as in a dock of its own
        import textwrap

        wrapped = [part for line in lines for part in textwrap.wrap(
            line, SUMMARY_WIDTH, subsequent_indent="     " if not line.startswith(" ") else
            line[:len(line) - len(line.lstrip())] + "  ") or [""]]
        self.info.value = "\n".join(wrapped)
        metrics = self.info.native.fontMetrics()
        self.info.native.setMinimumHeight(metrics.lineSpacing() * len(wrapped)
                                          + metrics.descent() + 12)
        self.info.native.setMinimumWidth(
            max(metrics.horizontalAdvance(line) for line in wrapped) + 8)
        self.angle_text.value = format_angles(ts.tilt_angles)
        if ts.tilt_angles is not None and ts.n_tilts > 1:
            self.start.value = float(ts.tilt_angles[0])
            self.step.value = max(0.01, abs(float(np.median(np.diff(ts.tilt_angles)))))
        self.pixel_size.value = ts.pixel_size_A or 1.0
        self.axis_angle.value = ts.tilt_axis_angle_deg

    # ---------------------------------------------------------------- actions
    def _guard(self, action: Any) -> None:
        from napari.utils.notifications import show_error

        from napari_tiltgen.gui._base import plain_words

        try:
            action()
        except TiltgenError as exc:
            text = plain_words(str(exc))
            self.message.value = text
            show_error(text)

    def _store(self, ts: TiltSeries, what: str) -> None:
        layer = self.current_layer()
        ts.provenance.setdefault("history", []).append({"step": "edit", "what": what})
        _, kwargs, _ = ts.to_layer_data()
        layer.metadata = {**dict(layer.metadata), METADATA_KEY: kwargs["metadata"][METADATA_KEY]}
        layer.scale = kwargs["scale"]
        layer.units = kwargs["units"]
        layer.axis_labels = kwargs["axis_labels"]
        self.message.value = f"{what}: layer {layer.name!r} updated."
        self.refresh()

    def set_start_step(self) -> None:
        ts = self.current_series()
        new = ts.with_angles(start=self.start.value, step=self.step.value,
                             source=f"user (start {self.start.value:g}, step {self.step.value:g})")
        self._store(new, "angles from start/step")

    def set_angle_list(self) -> None:
        ts = self.current_series()
        self._store(ts.with_angles(parse_angles(self.angle_text.value), source="user list"),
                    "angles from list")

    def load_angle_file(self) -> None:
        path = Path(self.angle_file.value)
        if not path.is_file():
            raise TiltgenError("choose an existing angle file (.rawtlt/.tlt).", path)
        ts = self.current_series()
        self._store(ts.with_angles(read_angle_file(path), source=f"user file ({path.name})"),
                    "angles from file")

    def set_geometry(self) -> None:
        from dataclasses import replace

        ts = self.current_series()
        prov = copy.deepcopy(ts.provenance)
        # A value the user did not change keeps its full precision: the boxes show it rounded
        # (0.001 Å, 0.01 deg), and writing the rounded number back would change the data's
        # geometry without anyone asking (0.2874 Å must not become 0.287 Å).
        px = _edited(ts.pixel_size_A, self.pixel_size.value, PIXEL_SIZE_DECIMALS)
        axis = _edited(ts.tilt_axis_angle_deg, self.axis_angle.value, AXIS_DECIMALS)
        if ts.pixel_size_A is None and self.pixel_size.value == 1.0:
            px = None  # the box's placeholder for "unknown", not a value the user typed
        if px != ts.pixel_size_A:
            prov["pixel_size_source"] = "user"
        if axis != ts.tilt_axis_angle_deg:
            prov["tilt_axis_source"] = "user"
        new = replace(ts, pixel_size_A=px, tilt_axis_angle_deg=axis, provenance=prov,
                      tilt_axis_known=ts.tilt_axis_known or axis != ts.tilt_axis_angle_deg)
        self._store(new, "pixel size / tilt axis")

    def rotate_vertical(self) -> None:
        layer = self.current_layer()
        ts = self.current_series()
        new = ts.with_vertical_tilt_axis()
        if new is ts:
            self.message.value = "The tilt axis is already within 45 degrees of vertical."
            return
        layer.data = new.data
        self._store(new, "rotated by 90 degrees")
