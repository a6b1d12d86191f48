"""Compare a reference volume (ground truth or SIRT) with one or more enhanced volumes.

The science behind the Compare widget and ``tiltgen demo``: a metrics table (PSNR, SSIM, NRMSE
against a reference when there is one; FSC resolution, including from half-series, which needs
no reference; Chamfer / RMS surface distances after Otsu segmentation), difference volumes, line
profiles, per-slice SSIM, and a comparison figure (PNG) with orthoslices and plots. No Qt.

Example
-------
>>> report = compare(truth, {"SIRT": sirt_vol, "INR": inr_vol})          # doctest: +SKIP
>>> print(report.table_text())                                           # doctest: +SKIP
>>> report.save_csv("metrics.csv"); plot_comparison(report, "compare.png")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen import metrics
from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import Volume
from napari_tiltgen.progress import Progress, ProgressGen, run

#: Columns of the metrics table, in order: (key in the row dict, header, format).
COLUMNS: list[tuple[str, str, str]] = [
    ("name", "volume", "{}"),
    ("psnr_db", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("nrmse", "NRMSE", "{:.3f}"),
    ("fsc_resolution_0.5_A", "FSC0.5 vs ref (Å)", "{:.1f}"),
    ("half_fsc_0.143_A", "half-set FSC0.143 (Å)", "{:.1f}"),
    ("chamfer_A", "Chamfer (Å)", "{:.2f}"),
    ("rms_surface_A", "RMS surface (Å)", "{:.2f}"),
]


@dataclass
class ComparisonReport:
    """Metrics of each candidate volume, and the data needed to plot them.

    Attributes
    ----------
    reference_name
        Name of the reference (``None`` when there is none: only self-consistency numbers).
    rows
        One dict per candidate with the keys of :data:`COLUMNS` (``None`` where not available)
        plus everything :func:`napari_tiltgen.metrics.compare_volumes` returned.
    """

    reference_name: str | None
    reference: np.ndarray | None
    candidates: dict[str, np.ndarray]
    voxel_size_A: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    fsc_curves: dict[str, metrics.FSCResult] = field(default_factory=dict)
    half_fsc: dict[str, metrics.FSCResult] = field(default_factory=dict)

    # ------------------------------------------------------------------ export
    def table_rows(self) -> list[list[str]]:
        """Formatted table: header row, then one row per candidate."""
        out = [[h for _, h, _ in COLUMNS]]
        for row in self.rows:
            cells = []
            for key, _, fmt in COLUMNS:
                v = row.get(key)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append("-")
                else:
                    cells.append(fmt.format(v))
            out.append(cells)
        return out

    def table_text(self) -> str:
        """The table as aligned plain text (for the CLI and logs)."""
        rows = self.table_rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                           enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        ref = self.reference_name or "none (self-consistency only)"
        return f"reference: {ref}\n" + "\n".join(lines)

    def scalar_rows(self) -> list[dict[str, Any]]:
        """Rows with only JSON/CSV-friendly scalar values."""
        out = []
        for row in self.rows:
            out.append({k: _scalar(v) for k, v in row.items()
                        if isinstance(v, (int, float, str, type(None), np.generic))})
        return out

    def save_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        rows = self.scalar_rows()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        return _write_text(path, buf.getvalue(), overwrite)

    def save_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        doc = {"reference": self.reference_name, "voxel_size_A": self.voxel_size_A,
               "rows": self.scalar_rows(),
               "fsc_curves": {k: c.as_dict() for k, c in self.fsc_curves.items()},
               "half_set_fsc": {k: c.as_dict() for k, c in self.half_fsc.items()}}
        return _write_text(path, json.dumps(doc, indent=2), overwrite)


def compare_iter(reference: Volume | np.ndarray | None,
                 candidates: dict[str, Volume | np.ndarray], *,
                 reference_name: str = "reference", voxel_size_A: float | None = None,
                 fit_scale: bool = False,
                 half_maps: dict[str, tuple[Any, Any]] | None = None
                 ) -> ProgressGen[ComparisonReport]:
    """Generator twin of :func:`compare`: yields one progress event per candidate."""
    if not candidates:
        raise TiltgenError("choose at least one volume to compare.")
    vs = voxel_size_A
    if vs is None:
        for v in [reference, *candidates.values()]:
            if isinstance(v, Volume) and v.voxel_size_A:
                vs = v.voxel_size_A
                break
    ref = None if reference is None else _array(reference, reference_name)
    cands = {k: _array(v, k) for k, v in candidates.items()}
    for k, v in cands.items():
        if ref is not None and v.shape != ref.shape:
            raise TiltgenError(
                f"{k!r} has shape {v.shape} but the reference {reference_name!r} has {ref.shape};"
                " compare volumes reconstructed on the same grid.")
    report = ComparisonReport(reference_name if ref is not None else None, ref, cands, vs)
    for i, (name, vol) in enumerate(cands.items()):
        yield Progress(i / len(cands), f"metrics of {name}")
        row: dict[str, Any] = {"name": name}
        if ref is not None:
            m = metrics.compare_volumes(ref, vol, voxel_size_A=vs, fit_scale=fit_scale)
            report.fsc_curves[name] = m.pop("fsc_curve")
            row.update(m)
        if half_maps and name in half_maps:
            h1, h2 = (_array(h, name) for h in half_maps[name])
            curve = metrics.fsc(h1, h2, voxel_size_A=vs)
            report.half_fsc[name] = curve
            r = curve.resolution_0143
            row["half_fsc_0.143_A"] = r if vs else None
            row["half_fsc_0.143_px"] = r / vs if vs else r
        report.rows.append(row)
    yield Progress(1.0, "metrics done")
    return report


def compare(reference: Volume | np.ndarray | None, candidates: dict[str, Volume | np.ndarray],
            **kwargs: Any) -> ComparisonReport:
    """Compute the comparison table.

    Parameters
    ----------
    reference
        Ground truth or trusted reconstruction ``(nz, ny, nx)``, or ``None``.
    candidates
        Volumes to judge, by display name; same shape as the reference.
    reference_name
        Display name of the reference.
    voxel_size_A
        Voxel size in Å; default from the :class:`Volume` objects. Without one, distances and
        resolutions are reported in voxels only (the Å columns show "-").
    fit_scale
        Fit ``a * test + b`` to the reference before the intensity metrics (for outputs in
        arbitrary units).
    half_maps
        Optional ``{name: (half1, half2)}`` reconstructions from even/odd half-series, for the
        reference-free FSC resolution of that candidate (``half_fsc_0.143_A`` / ``_px``).
    """
    return run(compare_iter(reference, candidates, **kwargs), show=False)


def difference(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``test - reference`` as float32 (shapes must match)."""
    if reference.shape != test.shape:
        raise TiltgenError(f"shapes differ: {test.shape} vs {reference.shape}.")
    return (np.asarray(test, np.float32) - np.asarray(reference, np.float32))


def line_profile(volume: np.ndarray, axis: int = 2, center: tuple[int, int, int] | None = None
                 ) -> np.ndarray:
    """Values along ``axis`` through ``center`` (default: the volume centre)."""
    c = [s // 2 for s in volume.shape] if center is None else list(center)
    idx: list[Any] = list(c)
    idx[axis] = slice(None)
    return np.asarray(volume[tuple(idx)], dtype=np.float64)


def plot_comparison(report: ComparisonReport, path: str | os.PathLike | None = None, *,
                    overwrite: bool = False, dpi: int = 110):
    """Comparison figure: orthoslices (and differences) of each volume, FSC curves, profiles.

    Returns the matplotlib Figure; writes a PNG when ``path`` is given (no overwrite unless
    asked). Uses the non-interactive Agg canvas, so it works without a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vols: dict[str, np.ndarray] = {}
    if report.reference is not None:
        vols[report.reference_name or "reference"] = report.reference
    vols.update(report.candidates)
    n = len(vols)
    has_ref = report.reference is not None
    n_rows = 3 if has_ref else 2
    fig = Figure(figsize=(2.6 * max(n, 3), 2.5 * (n_rows + 1)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows + 1, max(n, 3))
    ref = report.reference
    palette = [f"C{i}" for i in range(10)]
    color = {name: palette[i % 10] for i, name in enumerate(vols)}
    lo = min(float(v.min()) for v in vols.values())
    hi = max(float(np.percentile(v, 99.9)) for v in vols.values())
    for j, (name, v) in enumerate(vols.items()):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(v[v.shape[0] // 2], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"{name}\nxy (z = {v.shape[0] // 2})", fontsize=9)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(v[:, v.shape[1] // 2, :], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title("xz (missing-wedge plane)", fontsize=9)
        ax.axis("off")
        if has_ref and j > 0:
            d = difference(ref, v)[:, v.shape[1] // 2, :]
            lim = float(np.abs(d).max()) or 1.0
            ax = fig.add_subplot(grid[2, j])
            ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"{name} - {report.reference_name}", fontsize=9)
            ax.axis("off")
    # plots row
    ax_fsc = fig.add_subplot(grid[n_rows, 0])
    unit = "1/Å" if report.voxel_size_A else "1/px"
    for name, c in report.fsc_curves.items():
        ax_fsc.plot(c.frequency, c.fsc, color=color[name], label=f"{name} vs reference")
    for name, c in report.half_fsc.items():
        ax_fsc.plot(c.frequency, c.fsc, color=color[name], ls="--", label=f"{name} half sets")
    ax_fsc.axhline(0.143, color="k", lw=0.6, ls=":")
    ax_fsc.axhline(0.5, color="k", lw=0.6, ls="--")
    ax_fsc.set_xlabel(f"spatial frequency ({unit})")
    ax_fsc.set_ylabel("FSC")
    ax_fsc.set_title("FSC", fontsize=9)
    if report.fsc_curves or report.half_fsc:
        ax_fsc.legend(fontsize=7)
    ax_prof = fig.add_subplot(grid[n_rows, 1])
    for name, v in vols.items():
        ax_prof.plot(line_profile(v, axis=0), color=color[name], label=name)
    ax_prof.set_xlabel("z (voxels, beam direction)")
    ax_prof.set_title("line profile through the centre", fontsize=9)
    ax_prof.legend(fontsize=7)
    ax_ssim = fig.add_subplot(grid[n_rows, 2])
    if has_ref:
        for name, v in report.candidates.items():
            ax_ssim.plot(metrics.ssim_per_slice(ref, v, axis=1), color=color[name], label=name)
        ax_ssim.set_xlabel("y slice (tilt axis)")
        ax_ssim.set_ylabel("SSIM")
        ax_ssim.legend(fontsize=7)
    ax_ssim.set_title("per-slice SSIM vs reference" if has_ref else "no reference", fontsize=9)
    if path is not None:
        from napari_tiltgen.io.output import write_file  # validated, atomic, exclusive

        write_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi), overwrite=overwrite)
    return fig


# ---------------------------------------------------------------------------- helpers
def _array(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v.data if isinstance(v, Volume) else v, dtype=np.float32)
    if a.ndim != 3:
        raise TiltgenError(f"{name!r} is not a 3-D volume (shape {a.shape}).")
    return a


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _write_text(path: str | os.PathLike, text: str, overwrite: bool) -> Path:
    from napari_tiltgen.io.output import write_text  # validated, atomic, exclusive

    return write_text(path, text, overwrite=overwrite)
