"""Two views, one workspace: tilt series in the napari window, volumes in a window of their own.

A tilt series (tilts x y x, angles on the first axis) and a volume (z x y x, Å on every axis) cannot
share napari's sliders: napari lines layers up by axis position, so a 41-tilt series and a 243-px
volume got one "z" slider with 243 steps, the reconstruction looked blank (the slider sat beyond its
extent), 3-D rotated about a point outside the volume and "Inconsistent units across layers"
popped up (pixel vs Å on the first axis). IMOD shows them in separate windows; so do we.

A :class:`Workspace` belongs to one napari viewer (the *tilt-series view*):

* every volume layer added to that viewer (by a widget, a sample, or a script) is moved at once to
  a second napari viewer, the *volumes view* (its own window, own sliders, own 3-D camera), which
  is centred on the new volume and shows its middle slice;
* plain layers added next to a tilt series in its frame geometry (QA frames, markers) take the tilt
  series' units, so napari never mixes "pixel" and "Å" on one axis;
* a text overlay in the tilt-series view shows the angle of the frame on screen while scrolling;
* layer pickers list the layers of both views (:func:`workspace_layers`).

The volumes view closes with the tilt-series view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from napari_tiltgen.io.model import METADATA_KEY

if TYPE_CHECKING:
    import napari

#: Layer kinds that live in the volumes view.
VOLUME_VIEW_KINDS = ("volume", "difference", "volume_series")

_WORKSPACES: dict[int, Workspace] = {}


def _kind(layer: Any) -> str | None:
    meta = getattr(layer, "metadata", {}) or {}
    return (meta.get(METADATA_KEY) or {}).get("kind")


def text_overlay(viewer: Any) -> Any:
    """The viewer's canvas text overlay (``viewer.canvas.overlays["text"]`` in napari >= 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and "text" in overlays:
        return overlays["text"]
    return viewer.text_overlay  # pragma: no cover - older napari


def _qt_window(viewer: Any) -> Any:
    window = getattr(viewer, "window", None)
    return getattr(window, "_qt_window", None)


class Workspace:
    """The tilt-series view (a napari viewer) and its volumes view (a second napari viewer)."""

    #: Emitted when the layers of either view change (added, removed, reordered).
    changed = Signal()

    def __init__(self, viewer: napari.Viewer):
        self.main = viewer
        self._volumes: Any = None
        self._closing = False
        self._angle_text = ""
        ev = viewer.layers.events
        # Volumes must never enter the tilt-series view, not even for one draw: napari's canvas
        # redraws (and warns about mixed units) inside the list's insert, before any "inserted"
        # handler could move them. So the layer list's insert sends them to the volumes view.
        self._insert = viewer.layers.insert
        viewer.layers.insert = self._insert_into_main
        ev.inserted.connect(self._on_main_inserted, position="last")
        for e in (ev.removed, ev.reordered):
            e.connect(self._emit_changed, position="last")
        viewer.dims.events.current_step.connect(self.update_angle_label)
        viewer.dims.events.ndisplay.connect(self.update_angle_label)
        viewer.layers.selection.events.active.connect(self.update_angle_label)
        self._filter = self._install_close_hook(viewer, self._on_main_closed)
        for layer in list(viewer.layers):  # volumes already there (e.g. opened before docking)
            self._route(layer)
        self.update_angle_label()

    # ---------------------------------------------------------------- the volumes view
    @property
    def volumes(self) -> napari.Viewer:
        """The volumes view, created (and shown, if the tilt-series view is) on first use."""
        if self._volumes is None:
            import napari

            win = _qt_window(self.main)
            show = bool(win is not None and win.isVisible())
            v = napari.Viewer(title="Volumes - napari-tiltgen", show=show)
            self._volumes = v
            _WORKSPACES[id(v)] = self
            ev = v.layers.events
            for e in (ev.inserted, ev.removed, ev.reordered):
                e.connect(self._emit_changed, position="last")
            self._vol_filter = self._install_close_hook(v, self._on_volumes_closed)
            if show and win is not None:  # side by side with the tilt-series window
                geo = win.geometry()
                vwin = _qt_window(v)
                vwin.resize(max(480, geo.width() // 2), geo.height())
                vwin.move(geo.x() + geo.width() // 2, geo.y())
        return self._volumes

    @property
    def has_volumes_view(self) -> bool:
        return self._volumes is not None

    def add_volume(self, layer: Any) -> Any:
        """Add a volume layer to the volumes view, centred and on its middle slice."""
        v = self.volumes
        v.add_layer(layer)
        self.focus(layer)
        return layer

    def focus(self, layer: Any) -> None:
        """Centre the volumes view on ``layer``: camera, sliders (middle slice) and 3-D pivot."""
        v = self.volumes
        v.reset_view()
        ext = np.asarray(layer.extent.world, dtype=float)
        centre = (ext[0] + ext[1]) / 2.0
        offset = v.dims.ndim - len(centre)
        for i, c in enumerate(centre):
            v.dims.set_point(offset + i, float(c))
        cam = v.scene.camera if hasattr(v, "scene") else v.camera
        if v.dims.ndisplay == 3:
            cam.center = tuple(float(c) for c in centre[-3:])
        else:
            shown = [d - offset for d in v.dims.displayed if d - offset >= 0]
            cam.center = tuple(float(centre[d]) for d in shown)
        if layer in v.layers:
            v.layers.selection.active = layer
        win = _qt_window(v)
        if win is not None and win.isVisible():
            win.raise_()

    def show_volumes(self) -> None:
        """Show (and raise) the volumes window."""
        v = self.volumes
        win = _qt_window(v)
        if win is not None:
            v.show()
            win.raise_()

    # ---------------------------------------------------------------- routing
    def _insert_into_main(self, index: int, value: Any) -> None:
        if not self._closing and self._belongs_to_volumes(value):
            self.add_volume(value)
            return
        self._insert(index, value)

    def _belongs_to_volumes(self, layer: Any) -> bool:
        """A volume, or a plain 3-D image that cannot share the tilt series' axes and units.

        A plain image drawn in a tilt series' frame geometry (only a scale, same pixel size)
        takes the series' units and stays; one whose units differ from the series' on any axis
        (e.g. Å on all three, as a reconstruction opened by another reader) is a volume.
        """
        if _kind(layer) in VOLUME_VIEW_KINDS:
            return True
        self._adopt_units(layer)
        if _kind(layer) is not None or getattr(layer, "ndim", 0) != 3:
            return False
        if getattr(layer, "rgb", False) or type(layer).__name__ != "Image":
            return False
        series = [lay for lay in self.main.layers if _kind(lay) == "tilt_series"]
        if not series:
            return False
        ref = tuple(str(u) for u in series[-1].units)
        try:
            units = tuple(str(u) for u in layer.units)
        except AttributeError:  # pragma: no cover - older napari
            return False
        return units != ref

    def _on_main_inserted(self, event: Any) -> None:
        self._emit_changed()
        self.update_angle_label()

    def _route(self, layer: Any) -> None:
        """Move a layer that is already in the tilt-series view where it belongs."""
        if self._belongs_to_volumes(layer):
            self.main.layers.remove(layer)
            self.add_volume(layer)

    def _adopt_units(self, layer: Any) -> None:
        """Give a plain layer in a tilt series' frame geometry the tilt series' units."""
        series = [lay for lay in self.main.layers if _kind(lay) == "tilt_series"
                  and lay is not layer]
        if not series or _kind(layer) == "tilt_series":
            return
        try:
            units = [str(u) for u in layer.units]
        except AttributeError:  # pragma: no cover - older napari
            return
        if any(u != "pixel" for u in units):
            return
        ref = series[-1]
        ref_units = tuple(str(u) for u in ref.units)
        if all(u == "pixel" for u in ref_units):
            return
        n = min(layer.ndim, ref.ndim)
        if np.allclose(np.asarray(layer.scale)[-n:], np.asarray(ref.scale)[-n:], rtol=1e-6):
            layer.units = (("pixel",) * (layer.ndim - n)) + ref_units[-n:]

    def _emit_changed(self, *_: Any) -> None:
        if not self._closing:
            self.changed.emit()

    # ---------------------------------------------------------------- tilt angle on screen
    def current_tilt_layer(self) -> Any:
        """The tilt-series layer whose angle is shown: the active one, else the top visible one."""
        active = self.main.layers.selection.active
        if active is not None and _kind(active) == "tilt_series":
            return active
        for layer in reversed(list(self.main.layers)):
            if _kind(layer) == "tilt_series" and layer.visible:
                return layer
        return None

    def angle_label(self) -> str:
        """"<layer>: tilt i/n  +12.0°" for the frame on screen, or "" when there is none."""
        layer = self.current_tilt_layer()
        if layer is None or self.main.dims.ndisplay != 2 or layer.ndim != 3:
            return ""
        meta = layer.metadata.get(METADATA_KEY) or {}
        angles = meta.get("tilt_angles")
        n = layer.data.shape[0]
        axis = self.main.dims.ndim - 3
        if axis in self.main.dims.displayed:
            return ""
        i = int(round(float(layer.world_to_data(self.main.dims.point)[0])))
        i = min(max(i, 0), n - 1)
        if angles is None or len(angles) != n:
            return f"{layer.name}: tilt {i + 1}/{n}, angle unknown"
        return f"{layer.name}: tilt {i + 1}/{n}  {float(angles[i]):+.1f}°"

    def update_angle_label(self, *_: Any) -> None:
        if self._closing:
            return
        active = self.main.layers.selection.active
        if active is not None and "interpolation" in (active.metadata or {}):
            return  # the Interpolate widget labels its own frames (real / predicted)
        if active is not None and _kind(active) not in (None, "tilt_series"):
            return  # e.g. a 4-D time series: the Time-resolved fit widget labels it
        overlay = text_overlay(self.main)
        text = self.angle_label()
        if text:
            overlay.text = text
            overlay.visible = True
            if hasattr(overlay, "font_size"):
                overlay.font_size = 12
        elif overlay.text == self._angle_text and self._angle_text:
            overlay.visible = False
            overlay.text = ""
        self._angle_text = text

    # ---------------------------------------------------------------- closing
    @staticmethod
    def _install_close_hook(viewer: Any, callback: Any) -> Any:
        from qtpy.QtCore import QEvent, QObject

        win = _qt_window(viewer)
        if win is None:
            return None

        class _CloseFilter(QObject):
            def eventFilter(self, obj: Any, event: Any) -> bool:
                if event.type() == QEvent.Type.Close:
                    callback()
                return False

        f = _CloseFilter(win)
        win.installEventFilter(f)
        return f

    def _on_volumes_closed(self) -> None:
        v, self._volumes = self._volumes, None
        if v is not None:
            _WORKSPACES.pop(id(v), None)
        self._emit_changed()

    def _on_main_closed(self) -> None:
        self._closing = True
        self.main.layers.__dict__.pop("insert", None)  # napari's own insert again
        _WORKSPACES.pop(id(self.main), None)
        v, self._volumes = self._volumes, None
        if v is not None:
            _WORKSPACES.pop(id(v), None)
            try:
                v.close()
            except RuntimeError:  # pragma: no cover - Qt object already gone
                pass

    def close(self) -> None:
        """Close the volumes view and stop routing (the tilt-series view stays)."""
        self._on_main_closed()


def _unwrap(viewer: Any) -> Any:
    """The viewer itself (napari hands dock widgets a ``PublicOnlyProxy`` of it)."""
    return getattr(viewer, "__wrapped__", viewer)


def workspace(viewer: napari.Viewer) -> Workspace:
    """The workspace of ``viewer`` (either of its two views), created on first use."""
    viewer = _unwrap(viewer)
    ws = _WORKSPACES.get(id(viewer))
    if ws is not None and (ws.main is viewer or ws._volumes is viewer):
        return ws
    ws = Workspace(viewer)
    _WORKSPACES[id(viewer)] = ws
    return ws


def workspace_layers(viewer: napari.Viewer) -> list:
    """Layers of both views of ``viewer``'s workspace (tilt-series view first)."""
    viewer = _unwrap(viewer)
    ws = _WORKSPACES.get(id(viewer))
    if ws is None or not (ws.main is viewer or ws._volumes is viewer):
        return list(viewer.layers)
    out = list(ws.main.layers)
    if ws._volumes is not None:
        out += list(ws._volumes.layers)
    return out


def volume_view(viewer: napari.Viewer) -> napari.Viewer:
    """The viewer volumes are shown in (the volumes view of ``viewer``'s workspace)."""
    return workspace(viewer).volumes


__all__ = ["VOLUME_VIEW_KINDS", "Workspace", "text_overlay", "volume_view", "workspace",
           "workspace_layers"]
