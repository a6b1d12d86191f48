"""The "Reconstruct" dock widget: WBP, SIRT, SART or TV reconstruction of a tilt-series layer.

Pick the tilt-series layer, the method and its settings, the engine (our torch projector, or ASTRA
/ tomopy where installed) and the device, and press **Reconstruct**. The work runs in a thread
worker with a progress bar, a live preview of the central z-slice every few iterations, and a
Cancel button that stops it between iterations. The result is added as a volume layer whose
metadata records the method and parameters (so the Compare and Workflow widgets know what made
it). Before reconstructing, the series is prepared (vacuum offset removed or bright field
converted to -log(I/I0); the tilt axis from the "tilt axis" box, the file, or estimated from the
data over 0-180 degrees, and the frames turned so that it runs along y) and, when its frames are
jittered and it carries no shifts, aligned (``align``: auto / yes / no); what was done is said
under the result. The science is in :mod:`napari_tiltgen.recon.api`,
:mod:`~napari_tiltgen.align.prepare` and :mod:`~napari_tiltgen.align.projection_matching`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, LineEdit, SpinBox

from napari_tiltgen.core.devices import available_devices
from napari_tiltgen.gui._base import LayerPicker, WorkerWidget
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.recon.api import reconstruct_iter, with_vertical_axis
from napari_tiltgen.recon.backends import available_backends
from napari_tiltgen.recon.names import METHODS
from napari_tiltgen.recon.wbp import FILTERS

if TYPE_CHECKING:
    import napari

_ITERATIVE = ("sirt", "sart", "tv")



class ReconstructWidget(WorkerWidget):
    """Reconstruct a tilt-series layer into a volume layer."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Reconstruct")
        self.layer = LayerPicker(napari_viewer, kinds=("tilt_series",), label="tilt series")
        self.method = ComboBox(label="method", value="sirt",
                               choices=[(f"{m.upper()}: {d}", m) for m, d in
                                        METHODS.items()])
        self.iterations = SpinBox(label="iterations", value=100, min=1, max=100_000,
                                  tooltip="SIRT/TV iterations, SART passes over all tilts")
        self.filter = ComboBox(label="filter", value="ramp", choices=list(FILTERS),
                               tooltip="WBP filter: the ramp times this window")
        self.subsets = SpinBox(label="SART subsets", value=8, min=1, max=1000)
        self.tv_weight = FloatSpinBox(label="TV weight", value=0.01, min=0.0, max=10.0,
                                      step=0.005, tooltip="higher: smoother (dimensionless)")
        backends = [b for b, ok in available_backends().items() if ok]
        self.backend = ComboBox(label="engine", value="torch", choices=backends,
                                tooltip="torch: this package's projector; astra/tomopy when "
                                "installed")
        self.device = ComboBox(label="device", value="auto", choices=available_devices())
        self.thickness = SpinBox(label="thickness (px)", value=0, min=0, max=100_000,
                                 tooltip="volume thickness along the beam; 0 = frame width")
        self.preview_every = SpinBox(label="preview every", value=5, min=0, max=10_000,
                                     tooltip="iterations between previews of the central "
                                     "z-slice (0: none)")
        self.prepare = CheckBox(text="prepare: vacuum offset / bright field, tilt axis",
                                value=True, tooltip="remove the vacuum offset (or -log for "
                                "bright field) and turn the frames so that the tilt axis runs "
                                "along y: from the box below, the file, or estimated (0-180 deg)")
        self.tilt_axis = LineEdit(label="tilt axis (deg)", value="",
                                  tooltip="empty: from the file, else estimated from the data; "
                                  "a number overrides (IMOD convention: counter-clockwise "
                                  "from the image Y axis)")
        self.align = ComboBox(label="align", value="auto", choices=["auto", "yes", "no"],
                              tooltip="auto: align a jittered stack that carries no shifts "
                              "(centre of mass / cross-correlation, projection matching)")
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        for i, w in enumerate([self.layer, self.method, self.iterations, self.filter,
                               self.subsets, self.tv_weight, self.backend, self.device,
                               self.thickness, self.preview_every, self.prepare,
                               self.tilt_axis, self.align, self.note]):
            self.insert(i, w)
        self.method.changed.connect(self._update_enabled)
        self._update_enabled()

    def _update_enabled(self, *_: Any) -> None:
        m = self.method.value
        self.iterations.enabled = m in _ITERATIVE
        self.preview_every.enabled = m in _ITERATIVE
        self.filter.enabled = m == "wbp"
        self.subsets.enabled = m == "sart"
        self.tv_weight.enabled = m == "tv"

    def parameters(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~napari_tiltgen.recon.api.reconstruct_iter`."""
        return {
            "method": self.method.value,
            "iterations": int(self.iterations.value),
            "backend": self.backend.value,
            "device": self.device.value,
            "filter": self.filter.value,
            "n_subsets": int(self.subsets.value),
            "tv_weight": float(self.tv_weight.value),
            "thickness_px": int(self.thickness.value) or None,
            "preview_every": int(self.preview_every.value),
        }

    def _on_run(self) -> None:
        from napari_tiltgen.core.errors import TiltgenError

        layer = self.layer.value
        if layer is None:
            raise TiltgenError("no tilt-series layer: open a tilt series (File > Open) or load "
                               "the sample phantom first.")
        ts, note = with_vertical_axis(TiltSeries.from_layer(layer))
        self.note.value = note or ""
        params = self.parameters()
        method = params.pop("method")
        name = f"{layer.name} {method.upper()}"
        if method in _ITERATIVE:
            name += f" {params['iterations']}"
        text = str(self.tilt_axis.value).strip()
        try:
            axis = float(text) if text else None
        except ValueError:
            raise TiltgenError(f"tilt axis: {text!r} is not a number of degrees (leave it "
                               "empty to take it from the file or estimate it).") from None
        prepare, align = bool(self.prepare.value), str(self.align.value)
        self.start(lambda: _prepared_reconstruction(ts, method, params, prepare, axis, align),
                   on_result=lambda vol: self._add_result(vol, name),
                   preview_name="central z-slice of the current estimate")

    def _add_result(self, vol: Volume, name: str) -> None:
        from napari.layers import Layer

        self.result_layer = self.viewer.add_layer(Layer.create(*vol.to_layer_data(name=name)))
        p = vol.provenance
        self.note.value = (f"{name}: {p['method'].upper()} on {p['device']} ({p['backend']}) in "
                           f"{p['seconds']:.1f} s")
        notes = p.get("preparation_notes") or []
        if notes:
            self.note.value += "\n" + "\n".join(notes)


def _prepared_reconstruction(ts: TiltSeries, method: str, params: dict[str, Any], prepare: bool,
                             tilt_axis: float | None, align: str):
    """Worker job: prepare (intensities, tilt axis), align if needed, reconstruct."""
    from napari_tiltgen.align.prepare import prepare_iter
    from napari_tiltgen.align.projection_matching import align_series_iter, needs_alignment

    notes: list[str] = []
    if prepare or tilt_axis is not None:
        ts, notes = yield from prepare_iter(ts, tilt_axis=tilt_axis,
                                            intensity="auto" if prepare else "none")
    if align != "no" and ts.n_tilts >= 4:
        yes, why = needs_alignment(ts) if align == "auto" else (True, "asked for")
        notes.append(f"alignment: {why}")
        if yes:
            ts, report = yield from align_series_iter(ts, prepare_first=False,
                                                      thickness_px=params.get("thickness_px"))
            notes.append(f"alignment: reprojection error {report.reprojection_error_before:.4f}"
                         f" -> {report.reprojection_error_after:.4f}")
    ts, note = with_vertical_axis(ts)
    if note:
        notes.append(note)
    vol = yield from reconstruct_iter(ts, method, **params)
    vol.provenance["preparation_notes"] = notes
    return vol
