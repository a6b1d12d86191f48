"""The "Inpaint" dock widget: fill the missing wedge of a volume (or a tilt series).

Pick a volume layer (or a tilt-series layer, which is reconstructed first), the method (the
pretrained network, or TV for comparison), the missing wedge (read from the data's tilt angles
when they are known) and the device, and press **Inpaint**. The work runs in a thread worker with
a progress bar, a live preview of the last inpainted slice and a Cancel button that stops it
between batches of slices. The result is added as a volume layer just above the input, with the
method and its parameters in its metadata. The science is in
:mod:`napari_tiltgen.nets.inpainting.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, SpinBox

from napari_tiltgen.core.devices import available_devices
from napari_tiltgen.gui._base import LayerPicker, WorkerWidget, layer_kind
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.nets.inpainting import api, consistency, scales

if TYPE_CHECKING:
    import napari



class InpaintWidget(WorkerWidget):
    """Inpaint the missing wedge of a volume or tilt-series layer."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Inpaint")
        self.layer = LayerPicker(napari_viewer, kinds=("volume", "tilt_series", None),
                                 label="volume or series")
        self.method = ComboBox(label="method", value="pretrained",
                               choices=[(f"{m}: {d}", m) for m, d in api.METHODS.items()])
        self.wedge = FloatSpinBox(label="missing wedge (deg)", value=0.0, min=0.0, max=179.0,
                                  step=1.0, tooltip="0: read it from the data's tilt angles")
        self.device = ComboBox(label="device", value="auto", choices=available_devices())
        self.batch_size = SpinBox(label="slices per batch", value=8, min=1, max=4096)
        self.consistency = ComboBox(
            label="data consistency", value="auto",
            choices=[("auto (fit noise-free data to convergence)", "auto"),
                     ("nearest consistent volume (noisy data)", "closest"),
                     ("SIRT iterations", "iterative")],
            tooltip="how the result is made to reproject no worse than SIRT at the measured "
            "angles: auto fits data that the forward model explains (noise-free, jitter-free) "
            "to convergence from the network's output and otherwise takes the volume nearest "
            "the network's that meets SIRT's error; or always that nearest volume; or SIRT "
            "iterations started from the network's output")
        self.refine = SpinBox(
            label="consistency iterations", value=consistency.REFINE_ITERATIONS, min=0, max=2000,
            tooltip="with SIRT iterations: at least this many from the network's output, and "
            "more (then a blend toward SIRT) until it reprojects no worse than SIRT")
        self.reference = SpinBox(
            label="reference SIRT", value=api.REFERENCE_SIRT_ITERATIONS, min=1, max=2000,
            tooltip="iterations of the SIRT whose reprojection error the result must meet "
            "(default 100, as Reconstruct's SIRT); fewer fit less noise and bind less "
            "(models/inpainting.md, 'What the bound costs')")
        self.scale = ComboBox(
            label="network scale", value="auto",
            choices=[("auto (bin large slices to the trained size)" if c == "auto" else
                      "full size" if c == "1" else f"{c} x {c} binned", c)
                     for c in scales.SCALE_CHOICES],
            tooltip="slices much larger than the network's training size (about 128 px) are "
            "binned for the network and its output upsampled; the data-consistency step then "
            "works at full resolution (models/inpainting.md, 'Slice size')")
        self.symmetric = CheckBox(
            value=True, text="average 4 mirrored predictions",
            tooltip="run the network on each slice as it is and mirrored in z, in x and in "
            "both, and average (4x the network's time; untick for one pass)")
        self.allow_out_of_range = CheckBox(
            value=False, text="allow wedges outside the trained range",
            tooltip="run (with a warning) instead of refusing")
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        for i, w in enumerate([self.layer, self.method, self.wedge, self.device,
                               self.batch_size, self.consistency, self.refine,
                               self.reference, self.scale, self.symmetric,
                               self.allow_out_of_range,
                               self.note]):
            self.insert(i, w)
        for w in (self.layer, self.wedge, self.method):
            w.changed.connect(self._describe)
        self._describe()

    def _source(self) -> TiltSeries | Volume:
        from napari_tiltgen.core.errors import TiltgenError

        layer = self.layer.value
        if layer is None:
            raise TiltgenError("no volume or tilt-series layer: open or reconstruct one first.")
        if layer_kind(layer) == "tilt_series":
            from napari_tiltgen.recon.api import with_vertical_axis

            ts, note = with_vertical_axis(TiltSeries.from_layer(layer))
            if note:
                self.note.value = note
            return ts
        return Volume.from_layer(layer)

    def _describe(self, *_: Any) -> None:
        """Say which wedge will be used for the chosen layer, and whether the model takes it."""
        from napari_tiltgen.core.errors import TiltgenError

        entered = float(self.wedge.value) or None
        try:
            src = self._source()
            if entered is not None and isinstance(src, Volume):
                src.provenance.pop("tilt_angles", None)  # as in _on_run
            wedge, _, how = api.missing_wedge_of(src, entered)
        except TiltgenError:
            self.note.value = ("no tilt angles known for this layer: enter the missing wedge"
                               if self.layer.value is not None else "")
            return
        text = f"missing wedge {wedge:.1f} deg (from the {how})"
        if self.method.value == "pretrained":
            try:
                info = api.model_info()  # the file's header only
            except TiltgenError as exc:
                text += f"; {exc}"
            else:
                lo, hi = api.trained_wedge_range(info)
                if not lo - 1e-6 <= wedge <= hi + 1e-6:
                    text += (f". Outside the model's trained range ({lo:g}-{hi:g} deg): it "
                             "will be refused unless you allow out-of-range wedges below")
        self.note.value = text

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~napari_tiltgen.nets.inpainting.api.inpaint_iter`."""
        return {
            "missing_wedge_deg": float(self.wedge.value) or None,
            "method": self.method.value,
            "device": self.device.value,
            "batch_size": int(self.batch_size.value),
            "refine_iterations": int(self.refine.value),
            "consistency": str(self.consistency.value),
            "reference_iterations": int(self.reference.value),
            "network_scale": str(self.scale.value),
            "symmetric": bool(self.symmetric.value),
            "allow_out_of_range": bool(self.allow_out_of_range.value),
        }

    def _on_run(self) -> None:
        layer = self.layer.value
        src = self._source()
        params = self.parameters()
        wedge = params.pop("missing_wedge_deg")
        if wedge is not None and isinstance(src, Volume):
            src.provenance.pop("tilt_angles", None)  # the user's wedge wins over old records
        name = f"{layer.name} inpainted ({params['method']})"
        holder = self._holder(layer)
        index = list(holder.layers).index(layer) + 1 if layer in holder.layers else None
        self.start(lambda: api.inpaint_iter(src, wedge, **params),
                   on_result=lambda res: self._add_result(res, name, index, holder),
                   preview_name="last inpainted slice (z, x)")

    def _holder(self, layer: Any) -> Any:
        """The view (tilt-series or volumes window) that shows ``layer``."""
        from napari_tiltgen.gui.views import workspace

        ws = workspace(self.viewer)
        if ws.has_volumes_view and layer in ws.volumes.layers:
            return ws.volumes
        return self.viewer

    def _add_result(self, result: tuple[Volume, list[str]], name: str, index: int | None,
                    holder: Any = None) -> None:
        from napari.layers import Layer
        from napari.utils.notifications import show_warning

        vol, notes = result
        layer = Layer.create(*vol.to_layer_data(name=name))
        holder = holder if holder is not None else self.viewer
        if index is None:  # a series in the tilt-series view: the volume goes to the volumes view
            holder.add_layer(layer)
        else:  # right above the input, in its view
            holder.layers.insert(min(index, len(holder.layers)), layer)
        self.result_layer = layer
        p = vol.provenance
        text = (f"{name}: wedge {p['parameters']['missing_wedge_deg']:.1f} deg on "
                f"{p.get('device', '?')} in {p.get('seconds', 0):.1f} s")
        dc = p.get("data_consistency")
        if dc:
            text += ". " + consistency.consistency_note(dc)
        for n in notes:
            show_warning(n)
        self.note.value = text + ("; " + " ".join(notes) if notes else "")
