"""The "Compare" dock widget: reference vs enhanced volumes, side by side, with numbers.

Pick a reference (ground truth when simulated, else e.g. SIRT, or none) and one or more volumes
to judge. The widget

* shows them side by side in the volumes window's grid mode (one camera and one set of sliders
  for all, so views and slices stay linked), each cell labelled with its layer's name, in 2-D
  orthoslices or 3-D;
* adds difference maps (volume - reference) as layers;
* with a tilt series chosen, reconstructs its even and odd tilts separately with the recipe of
  each WBP/SIRT/SART/TV volume and fills the half-set FSC column (resolution without a
  reference);
* computes the metrics table (PSNR, SSIM, NRMSE vs the reference; FSC resolution; Chamfer / RMS
  surface distance after Otsu) in a background worker and draws FSC curves, line profiles and
  per-slice SSIM with matplotlib inside the widget;
* exports the table (CSV and JSON), the figure (PNG) and the volumes (MRC) to a folder, never
  replacing existing files.

The science is in :mod:`napari_tiltgen.evaluate.compare`; this file only gathers choices and shows results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, FileEdit, Label, PushButton, RadioButtons, Select

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.evaluate.compare import (
    ComparisonReport,
    compare_iter,
    export_stem,
    plot_comparison,
)
from napari_tiltgen.gui._base import LayerPicker, WorkerWidget, image_layers, layer_kind
from napari_tiltgen.io.model import TiltSeries, Volume

if TYPE_CHECKING:
    import napari

VOLUME_KINDS = ("volume", None)
#: Methods whose volumes can be remade from the even and the odd tilts for a half-set FSC.
HALF_SET_METHODS = ("wbp", "fbp", "sirt", "sart", "tv")


def _describe(layer: Any) -> str:
    prov = (layer.metadata.get("tiltgen") or {}).get("provenance", {})
    method = prov.get("method")
    params = prov.get("parameters") or {}
    shown = ", ".join(f"{k}={v}" for k, v in list(params.items())[:4])
    return f"{layer.name}: {method or 'unknown method'}" + (f" ({shown})" if shown else "")


def _common_limits(arrays: list[Any]) -> tuple[float, float]:
    """One grey scale for all volumes: the widest 0.05-99.95 percentile range among them.

    Percentiles rather than extremes, so that a few very bright voxels (atom centres of a
    ground truth, hot pixels) do not leave the reconstructions shown nearly black.
    """
    lo, hi = np.inf, -np.inf
    for a in arrays:
        a = np.asarray(a)
        sample = a.reshape(-1)[:: max(1, a.size // 2_000_000)]  # at most ~2 M voxels each
        p_lo, p_hi = np.percentile(sample, [0.05, 99.95])
        lo, hi = min(lo, float(p_lo)), max(hi, float(p_hi))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _grid(viewer: Any) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, else ``viewer.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


class CompareWidget(WorkerWidget):
    """Side-by-side comparison of a reference and enhanced volumes with a metrics table."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer, run_text="Compute metrics")
        self.reference = LayerPicker(napari_viewer, kinds=VOLUME_KINDS, label="reference",
                                     nullable=True)
        self.candidates = Select(label="compare", choices=self._candidate_choices)
        self.candidates.native.setMaximumHeight(110)
        self.half_source = LayerPicker(napari_viewer, kinds=("tilt_series",),
                                       label="half-set FSC from", nullable=True,
                                       tooltip="tilt series the WBP/SIRT volumes were made from:"
                                       " their even and odd tilts are reconstructed separately")
        self.half_source.value = None
        self.fit_scale = CheckBox(value=False, text="fit intensity scale to the reference")
        self.view_mode = RadioButtons(choices=["2D slices", "3D"], value="2D slices",
                                      orientation="horizontal", label="view")
        self.side_by_side = PushButton(text="Show side by side (grid, linked)")
        self.differences = PushButton(text="Add difference maps")
        self.export_dir = FileEdit(mode="d", label="export to")
        self.export = PushButton(text="Export table, figure and volumes")
        self.provenance = Label(value="")
        self.provenance.native.setWordWrap(True)
        for i, w in enumerate([self.reference, self.candidates, self.half_source, self.fit_scale,
                               self.view_mode, self.side_by_side, self.differences]):
            self.insert(i, w)
        self.extend([self.provenance, self.export_dir, self.export])
        self.report: ComparisonReport | None = None
        self._table = self._make_table()
        self._canvas, self._figure = self._make_canvas()
        self.native.layout().addWidget(self._table)
        self.native.layout().addWidget(self._canvas)
        from napari_tiltgen.gui.views import workspace

        self.workspace = workspace(napari_viewer)
        self.workspace.changed.connect(self._reset_candidates)
        self.side_by_side.changed.connect(lambda *_: self._guard(self.show_side_by_side))
        self.differences.changed.connect(lambda *_: self._guard(self.add_differences))
        self.export.changed.connect(lambda *_: self._guard(self.export_all))
        self.candidates.changed.connect(self._update_provenance)
        self.reference.changed.connect(self._update_provenance)

    # ---------------------------------------------------------------- choices
    def _reset_candidates(self, *_: Any) -> None:
        try:
            self.candidates.reset_choices()
        except RuntimeError:  # the dock was closed
            pass

    @property
    def volumes_viewer(self) -> Any:
        """The viewer the volumes are shown in (the volumes window)."""
        return self.workspace.volumes

    def _candidate_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self.viewer, VOLUME_KINDS)]

    def selected(self) -> list[Any]:
        ref = self.reference.value
        chosen = [layer for layer in self.candidates.value if layer is not ref]
        if not chosen:
            raise TiltgenError("select at least one volume to compare (other than the "
                               "reference).")
        return chosen

    def _update_provenance(self, *_: Any) -> None:
        layers = ([self.reference.value] if self.reference.value is not None else []) + [
            layer for layer in self.candidates.value]
        self.provenance.value = "\n".join(_describe(layer) for layer in layers)

    def _guard(self, action: Any) -> None:
        try:
            action()
        except TiltgenError as exc:
            self.show_error(str(exc))

    # ---------------------------------------------------------------- views
    def show_side_by_side(self) -> None:
        """Grid mode with the reference first, then the chosen volumes; others hidden."""
        chosen = self.selected()
        shown = ([self.reference.value] if self.reference.value is not None else []) + chosen
        v = self.volumes_viewer
        for layer in shown:  # volumes opened elsewhere join the volumes window
            if layer not in v.layers:
                for other in (self.viewer,):
                    if layer in other.layers:
                        other.layers.remove(layer)
                v.add_layer(layer)
        for layer in v.layers:
            on = any(layer is s for s in shown)
            layer.visible = on
            _label(layer, on)  # each grid cell says which volume it shows
        # napari's grid fills its cells in layer-list order (index 0 first, shown at the bottom
        # of the list): put the reference first, then the candidates in the order chosen
        for i, layer in enumerate(shown):
            v.layers.move(v.layers.index(layer), i)
        if shown:
            lo, hi = _common_limits([layer.data for layer in shown])
            for layer in shown:
                layer.contrast_limits = (lo, hi)  # same grey scale for a fair comparison
        grid = _grid(v)
        grid.enabled = True
        grid.stride = 1
        v.dims.ndisplay = 3 if self.view_mode.value == "3D" else 2
        if v.dims.ndisplay == 2:
            v.dims.order = (1, 0, 2)  # show xz: the plane that holds the missing wedge
        v.reset_view()
        if shown:
            self.workspace.focus(shown[0])

    def add_differences(self) -> None:
        ref = self.reference.value
        if ref is None:
            raise TiltgenError("choose a reference to compute difference maps.")
        from napari_tiltgen.evaluate.compare import difference

        v = self.volumes_viewer
        for layer in self.selected():
            d = difference(ref.data, layer.data)
            lim = float(abs(d).max()) or 1.0
            name = f"{layer.name} - {ref.name}"
            if name in v.layers:
                v.layers[name].data = d
                continue
            diff = v.add_image(d, name=name, colormap="twilight_shifted",
                               contrast_limits=(-lim, lim), scale=layer.scale,
                               units=layer.units, axis_labels=layer.axis_labels,
                               metadata={"tiltgen": {"kind": "difference"}})
            _label(diff, True)

    # ---------------------------------------------------------------- metrics
    def _on_run(self) -> None:
        ref = self.reference.value
        chosen = self.selected()
        ref_vol = Volume.from_layer(ref) if ref is not None else None
        cands = {layer.name: Volume.from_layer(layer) for layer in chosen}
        fit = self.fit_scale.value
        name = ref.name if ref is not None else "reference"
        ts, half_set = self._half_set_plan(chosen)
        self.start(lambda: compare_iter(ref_vol, cands, reference_name=name, fit_scale=fit,
                                        tilt_series=ts, half_set=half_set),
                   on_result=self.show_report)

    def _half_set_plan(self, chosen: list[Any]) -> tuple[Any, dict[str, dict[str, Any]]]:
        """The tilt series and, per WBP/SIRT/SART/TV volume, the recipe to remake its halves."""
        src = self.half_source.value
        if src is None:
            return None, {}
        ts = TiltSeries.from_layer(src)
        plan: dict[str, dict[str, Any]] = {}
        for layer in chosen:
            prov = (layer.metadata.get("tiltgen") or {}).get("provenance", {})
            method = str(prov.get("method", "")).lower()
            if method in HALF_SET_METHODS:
                params = dict(prov.get("parameters") or {})
                if prov.get("backend"):
                    params["backend"] = prov["backend"]
                plan[layer.name] = {"method": method, **params}
        if not plan:
            raise TiltgenError("none of the chosen volumes is a WBP/SIRT/SART/TV reconstruction "
                               "made here, so there is no recipe to remake them from half of "
                               "the tilts; clear 'half-set FSC from' or choose such a volume.")
        return ts, plan

    def show_report(self, report: ComparisonReport) -> None:
        """Fill the table and redraw the plots."""
        from qtpy.QtWidgets import QTableWidgetItem

        self.report = report
        rows = report.table_rows()  # transposed for a narrow dock: metrics down, volumes across
        names, table = rows[1:], rows[0]
        self._table.setRowCount(len(table) - 1)
        self._table.setColumnCount(len(names))
        self._table.setHorizontalHeaderLabels([r[0] for r in names])
        self._table.setVerticalHeaderLabels(table[1:])
        for j, row in enumerate(names):
            for i, cell in enumerate(row[1:]):
                self._table.setItem(i, j, QTableWidgetItem(cell))
        self._table.resizeColumnsToContents()
        self._table.setMinimumHeight(self._table.verticalHeader().length()
                                     + self._table.horizontalHeader().height() + 6)
        self._draw_plots(report)

    def _make_table(self) -> Any:
        from qtpy.QtWidgets import QAbstractItemView, QTableWidget

        t = QTableWidget(0, 0)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        return t

    def metric_value(self, metric_header: str, volume_name: str) -> str:
        """Text shown in the table for a metric (row header) and a volume (column header)."""
        t = self._table
        rows = [t.verticalHeaderItem(i).text() for i in range(t.rowCount())]
        cols = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
        return t.item(rows.index(metric_header), cols.index(volume_name)).text()

    def _make_canvas(self) -> tuple[Any, Any]:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 5.4), layout="constrained")
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumHeight(440)
        return canvas, fig

    def _draw_plots(self, report: ComparisonReport) -> None:
        fig = self._figure
        fig.clear()
        ax1, ax2, ax3 = fig.subplots(3, 1)  # stacked: readable in a narrow panel
        for name, c in report.fsc_curves.items():
            ax1.plot(c.frequency, c.fsc, label=name)
        for name, c in report.half_fsc.items():
            ax1.plot(c.frequency, c.fsc, ls="--", label=f"{name} (half sets)")
        ax1.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax1.axhline(0.143, color="grey", lw=0.8, ls=":")
        ax1.set_title("FSC (soft mask)", fontsize=10)
        ax1.set_xlabel("spatial frequency (1/Å)" if report.voxel_size_A else "1/px",
                       fontsize=9)
        if report.fsc_curves or report.half_fsc:
            ax1.legend(fontsize=8)
        # the curves were computed by the worker (compare_iter): nothing heavy on the GUI thread
        if report.reference_name in report.profiles:
            ax2.plot(report.profiles[report.reference_name], "k", lw=1.2,
                     label=report.reference_name)
        for name in report.candidates:
            if name in report.profiles:
                ax2.plot(report.profiles[name], label=name)
            if name in report.slice_ssim:
                ax3.plot(report.slice_ssim[name], label=name)
        ax2.set_title("profile along z (beam)", fontsize=10)
        ax3.set_title("per-slice SSIM vs reference", fontsize=10)
        ax3.set_xlabel("y slice", fontsize=9)
        for ax in (ax1, ax2, ax3):
            ax.tick_params(labelsize=8)
        ax2.legend(fontsize=8)
        self._canvas.draw_idle()

    # ---------------------------------------------------------------- export
    def export_all(self) -> list[Path]:
        """Write metrics.csv, metrics.json, comparison.png and one MRC per volume."""
        if self.report is None:
            raise TiltgenError("compute the metrics first.")
        folder = Path(self.export_dir.value)
        if not folder.is_dir():
            raise TiltgenError("choose an existing folder to export to.", folder)
        from napari_tiltgen.io.output import planned_outputs
        from napari_tiltgen.io.writers import file_contents

        report = self.report
        contents: dict = {  # every file checked first, then all written or none
            folder / "metrics.csv": lambda tmp: report.save_csv(tmp, overwrite=True),
            folder / "metrics.json": lambda tmp: report.save_json(tmp, overwrite=True),
            folder / "comparison.png": lambda tmp: _close(plot_comparison(report, tmp,
                                                                          overwrite=True)),
        }
        for layer in self.candidates.value:
            contents.update(file_contents(Volume.from_layer(layer),
                                          folder / f"{export_stem(layer.name)}.mrc"))
        names = list(contents)
        written = planned_outputs(names[0], names[1:]).commit(contents)
        self._set_status(f"exported {len(written)} files to {folder}")
        return written


def _label(layer: Any, on: bool) -> None:
    """Show or hide the layer's name in its grid cell (napari's layer-name overlay)."""
    overlay = getattr(layer, "name_overlay", None)
    if overlay is not None:
        overlay.visible = on
        if hasattr(overlay, "font_size"):
            overlay.font_size = 12


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


__all__ = ["CompareWidget", "layer_kind"]
