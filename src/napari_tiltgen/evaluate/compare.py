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

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run, scaled
from napari_tiltgen.evaluate.fsc import FSCResult, fsc
from napari_tiltgen.evaluate.metrics import compare_volumes, ssim_per_slice
from napari_tiltgen.io.model import Volume

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
        plus everything :func:`napari_tiltgen.evaluate.metrics.compare_volumes` returned.
    """

    reference_name: str | None
    reference: np.ndarray | None
    candidates: dict[str, np.ndarray]
    voxel_size_A: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    fsc_curves: dict[str, FSCResult] = field(default_factory=dict)
    half_fsc: dict[str, FSCResult] = field(default_factory=dict)
    #: line profile along z through the centre of each candidate (and of the reference)
    profiles: dict[str, np.ndarray] = field(default_factory=dict)
    #: SSIM of each candidate against the reference per y slice
    slice_ssim: dict[str, np.ndarray] = field(default_factory=dict)

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
                 half_maps: dict[str, tuple[Any, Any]] | None = None,
                 tilt_series: Any = None,
                 half_set: dict[str, dict[str, Any]] | None = None,
                 ) -> ProgressGen[ComparisonReport]:
    """Generator twin of :func:`compare`: yields progress per candidate (and per half set)."""
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
    half_maps = dict(half_maps or {})
    todo = {k: v for k, v in (half_set or {}).items() if k in cands and k not in half_maps}
    if todo and tilt_series is None:
        raise TiltgenError("a half-set FSC needs the tilt series the volumes were made from.")
    # half sets first (the long part): 80 % of the bar when there are any
    share = 0.8 if todo else 0.0
    for i, (name, params) in enumerate(todo.items()):
        lo, hi = share * i / len(todo), share * (i + 1) / len(todo)
        halves = yield from scaled(half_set_reconstructions_iter(tilt_series, **params), lo, hi,
                                    f"{name}: ")
        half_maps[name] = halves
    for i, (name, vol) in enumerate(cands.items()):
        yield Progress(share + (1 - share) * i / len(cands), f"metrics of {name}")
        row: dict[str, Any] = {"name": name}
        if ref is not None:
            m = compare_volumes(ref, vol, voxel_size_A=vs, fit_scale=fit_scale)
            report.fsc_curves[name] = m.pop("fsc_curve")
            report.slice_ssim[name] = ssim_per_slice(ref, vol, axis=1)
            row.update(m)
        report.profiles[name] = line_profile(vol, axis=0)
        if half_maps and name in half_maps:
            h1, h2 = (_array(h, name) for h in half_maps[name])
            curve = fsc(h1, h2, voxel_size_A=vs, mask="auto")
            report.half_fsc[name] = curve
            r = curve.resolution_0143
            row["half_fsc_0.143_A"] = r if vs else None
            row["half_fsc_0.143_px"] = r / vs if vs else r
        report.rows.append(row)
    if ref is not None:
        report.profiles[reference_name] = line_profile(ref, axis=0)
    yield Progress(1.0, "metrics done")
    return report


def half_set_reconstructions_iter(ts: Any, method: str = "sirt", **params: Any
                                  ) -> ProgressGen[tuple[np.ndarray, np.ndarray]]:
    """Reconstruct the even and the odd tilts of ``ts`` separately (for a half-set FSC).

    Frames are taken in order of increasing angle; "even" is frames 0, 2, 4, ... and "odd" 1, 3,
    5, ... (as :func:`napari_tiltgen.evaluate.fsc.fsc_half_series`). ``method`` and ``params`` are
    those of :func:`napari_tiltgen.recon.api.reconstruct_iter` (use the ones the full
    volume was made with). Returns the two volumes as arrays.
    """
    from napari_tiltgen.recon.api import reconstruct_iter
    angles = ts.require_angles()
    if ts.n_tilts < 4:
        raise TiltgenError(f"a half-set FSC needs at least 4 tilts; this series has "
                           f"{ts.n_tilts}.")
    order = np.argsort(angles, kind="stable")
    keep = {k: v for k, v in params.items() if k in _RECON_KEYS and v is not None}
    keep.setdefault("preview_every", 0)
    out = []
    for j, (label, idx) in enumerate((("even tilts", order[0::2]), ("odd tilts", order[1::2]))):
        vol = yield from scaled(reconstruct_iter(ts.subset(idx), method, **keep),
                                 j / 2, (j + 1) / 2, f"{method.upper()} of the {label}: ")
        out.append(vol.data)
    return out[0], out[1]


#: Keywords of reconstruct_iter a volume's recorded parameters may carry over.
_RECON_KEYS = {"iterations", "backend", "device", "filter", "relaxation", "positivity",
               "n_subsets", "tv_weight", "tv_dims", "thickness_px", "axis_offset_px",
               "preview_every"}



def export_stem(name: str) -> str:
    """A file name stem for a layer name: known volume/stack extensions dropped, unsafe
    characters replaced ("sirt.mrc" -> "sirt", "a/b c" -> "a_b_c")."""
    stem = name.strip()
    for ext in (".mrc", ".mrcs", ".rec", ".st", ".ali", ".preali", ".tif", ".tiff", ".map"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return safe or "volume"


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
    tilt_series, half_set
        Or let the comparison make those halves: ``half_set={name: {"method": "sirt",
        "iterations": 100, ...}}`` reconstructs the even and the odd tilts of ``tilt_series``
        with the recipe the candidate was made with (:func:`half_set_reconstructions_iter`).
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


def nice_scale_bar_A(field_A: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k Å) of about a quarter of ``field_A``."""
    target = max(field_A, 1e-9) / 4.0
    k = 10 ** math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * k <= target:
            return m * k
    return k  # pragma: no cover


def draw_scale_bar(ax: Any, width_px: int, height_px: int, voxel_size_A: float | None,
                   fontsize: float = 9, color: str = "white") -> str | None:
    """Draw a white scale bar with its length in the lower right of an image axes.

    Drawn by hand with matplotlib (a rectangle and a label; no extra dependency). Lengths of
    10 Å and more are written in nm. Returns the label, or ``None`` without a voxel size.
    """
    from matplotlib.patches import Rectangle

    if not voxel_size_A:
        return None
    length_A = nice_scale_bar_A(width_px * voxel_size_A)
    length_px = length_A / voxel_size_A
    label = f"{length_A / 10:g} nm" if length_A >= 10 else f"{length_A:g} Å"
    x1 = width_px - 0.06 * width_px
    x0 = x1 - length_px
    y = height_px - 0.08 * height_px
    bar_h = max(0.02 * height_px, 1.0)
    ax.add_patch(Rectangle((x0 - 0.5, y - 0.5), length_px, bar_h, color=color, lw=0))
    ax.text((x0 + x1) / 2 - 0.5, y - 0.02 * height_px - 0.5, label, color=color,
            ha="center", va="bottom", fontsize=fontsize, fontweight="bold")
    return label


def _metric_line(row: dict[str, Any] | None) -> str:
    if not row:
        return ""
    parts = []
    if row.get("psnr_db") is not None:
        parts.append(f"PSNR {row['psnr_db']:.1f} dB")
    if row.get("ssim") is not None:
        parts.append(f"SSIM {row['ssim']:.3f}")
    return ", ".join(parts)


def plot_comparison(report: ComparisonReport, path: str | os.PathLike | None = None, *,
                    overwrite: bool = False, dpi: int = 110):
    """Comparison figure: orthoslices (and differences) of each volume, FSC curves, profiles.

    One column per volume (reference first): the central xy slice with the volume's name and its
    PSNR / SSIM against the reference, the central xz slice (the plane holding the missing
    wedge), and with a reference the difference xz slice; scale bars on every image when the
    voxel size is known. The last row spans the whole width: FSC curves, a line profile,
    per-slice SSIM and the metrics table, so no panel is left empty.

    Returns the matplotlib Figure; writes a PNG when ``path`` is given (no overwrite unless
    asked). Uses the non-interactive Agg canvas, so it works without a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vols: dict[str, np.ndarray] = {}
    if report.reference is not None:
        vols[report.reference_name or "reference"] = report.reference
    vols.update(report.candidates)
    rows_by_name = {r.get("name"): r for r in report.rows}
    n = len(vols)
    has_ref = report.reference is not None
    n_img_rows = 3 if has_ref else 2
    n_cols = max(n, 4)
    fig = Figure(figsize=(2.9 * n_cols, 2.9 * n_img_rows + 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    outer = fig.add_gridspec(2, 1, height_ratios=[n_img_rows, 1.25])
    grid = outer[0].subgridspec(n_img_rows, n_cols)
    bottom = outer[1].subgridspec(1, 4, width_ratios=[1.0, 1.0, 1.0, 1.25])
    ref = report.reference
    vs = report.voxel_size_A
    palette = [f"C{i}" for i in range(10)]
    color = {name: palette[i % 10] for i, name in enumerate(vols)}
    lo = min(float(np.percentile(v, 0.1)) for v in vols.values())
    hi = max(float(np.percentile(v, 99.9)) for v in vols.values())
    title_fs, label_fs, tick_fs = 11, 10, 9
    for j, (name, v) in enumerate(vols.items()):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(v[v.shape[0] // 2], cmap="gray", vmin=lo, vmax=hi)
        sub = "reference" if has_ref and j == 0 else _metric_line(rows_by_name.get(name))
        ax.set_title(f"{name}\n{sub}" if sub else name, fontsize=title_fs)
        draw_scale_bar(ax, v.shape[2], v.shape[1], vs)
        ax.text(0.02, 0.98, "xy", transform=ax.transAxes, color="yellow", va="top",
                fontsize=label_fs)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(v[:, v.shape[1] // 2, :], cmap="gray", vmin=lo, vmax=hi)
        draw_scale_bar(ax, v.shape[2], v.shape[0], vs)
        ax.text(0.02, 0.98, "xz (missing wedge)", transform=ax.transAxes, color="yellow",
                va="top", fontsize=label_fs)
        ax.axis("off")
        if has_ref:
            ax = fig.add_subplot(grid[2, j])
            d = difference(ref, v)[:, v.shape[1] // 2, :]
            lim = float(np.percentile(np.abs(difference(ref, v)), 99.9)) or 1.0
            ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
            draw_scale_bar(ax, v.shape[2], v.shape[0], vs, color="black")
            ax.set_title("difference: 0 (reference)" if j == 0
                         else f"{name} - reference (xz)", fontsize=label_fs)
            ax.axis("off")
    # empty image cells (fewer than 4 volumes): say why rather than leave a blank
    for j in range(n, n_cols):
        for r in range(n_img_rows):
            ax = fig.add_subplot(grid[r, j])
            ax.axis("off")
        if j == n:
            ax = fig.add_subplot(grid[0, j])
            ax.axis("off")
            ax.text(0.0, 0.5, "\n".join(f"{k}: {_describe_array(v, vs)}"
                                         for k, v in vols.items()),
                    fontsize=label_fs, va="center", transform=ax.transAxes, wrap=True)
    # bottom row: four plots spanning the whole width
    ax_fsc = fig.add_subplot(bottom[0, 0])
    unit = "1/Å" if vs else "1/px"
    for name, c in report.fsc_curves.items():
        ax_fsc.plot(c.frequency, c.fsc, color=color[name], label=f"{name} vs reference")
    for name, c in report.half_fsc.items():
        ax_fsc.plot(c.frequency, c.fsc, color=color[name], ls="--", label=f"{name} half sets")
    ax_fsc.axhline(0.143, color="k", lw=0.8, ls=":")
    ax_fsc.axhline(0.5, color="k", lw=0.8, ls="--")
    ax_fsc.set_xlabel(f"spatial frequency ({unit})", fontsize=label_fs)
    ax_fsc.set_ylabel("FSC (soft mask)", fontsize=label_fs)
    ax_fsc.set_title("Fourier shell correlation", fontsize=title_fs)
    ax_fsc.set_ylim(-0.2, 1.05)
    if report.fsc_curves or report.half_fsc:
        ax_fsc.legend(fontsize=tick_fs)
    ax_prof = fig.add_subplot(bottom[0, 1])
    for name, v in vols.items():
        prof = report.profiles[name] if name in report.profiles else line_profile(v, axis=0)
        z = np.arange(prof.size) * (vs / 10.0 if vs else 1.0)
        ax_prof.plot(z, prof, color=color[name], label=name,
                     lw=2.0 if has_ref and name == next(iter(vols)) else 1.2)
    ax_prof.set_xlabel("z, beam direction (nm)" if vs else "z (voxels, beam direction)",
                       fontsize=label_fs)
    ax_prof.set_title("profile through the centre", fontsize=title_fs)
    ax_prof.legend(fontsize=tick_fs)
    ax_ssim = fig.add_subplot(bottom[0, 2])
    if has_ref:
        for name, v in report.candidates.items():
            curve = (report.slice_ssim[name] if name in report.slice_ssim
                     else ssim_per_slice(ref, v, axis=1))
            ax_ssim.plot(curve, color=color[name], label=name)
        ax_ssim.set_xlabel("y slice (along the tilt axis)", fontsize=label_fs)
        ax_ssim.set_ylabel("SSIM", fontsize=label_fs)
        ax_ssim.legend(fontsize=tick_fs)
        ax_ssim.set_title("per-slice SSIM vs reference", fontsize=title_fs)
    else:
        ax_ssim.axis("off")
        ax_ssim.text(0.5, 0.5, "no reference:\nno SSIM", ha="center", va="center",
                     fontsize=label_fs, transform=ax_ssim.transAxes)
    ax_tab = fig.add_subplot(bottom[0, 3])
    ax_tab.axis("off")
    table = report.table_rows()
    keep = [i for i in range(1, len(table[0]))
            if any(r[i] != "-" for r in table[1:])]  # columns with at least one number
    tab = ax_tab.table(cellText=[[r[i] for i in keep] for r in table[1:]],
                       rowLabels=[r[0] for r in table[1:]],
                       colLabels=[_SHORT.get(table[0][i], table[0][i]) for i in keep],
                       loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(tick_fs)
    tab.scale(1.0, 1.5)
    for (r, _c), cell in tab.get_celld().items():
        if r == 0:
            cell.set_height(cell.get_height() * 1.8)  # two-line headers
    ax_tab.set_title("metrics vs " + (report.reference_name or "no reference"),
                     fontsize=title_fs)
    for ax in (ax_fsc, ax_prof, ax_ssim):
        ax.tick_params(labelsize=tick_fs)
    if path is not None:
        from napari_tiltgen.io.output import write_file  # validated, atomic, exclusive

        write_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi), overwrite=overwrite)
    return fig


#: Short column headers for the figure's table (volumes down, metrics across).
_SHORT = {"PSNR (dB)": "PSNR\n(dB)", "FSC0.5 vs ref (Å)": "FSC0.5\n(Å)",
          "half-set FSC0.143 (Å)": "half-set\nFSC (Å)", "Chamfer (Å)": "Chamfer\n(Å)",
          "RMS surface (Å)": "RMS surf.\n(Å)"}


def _describe_array(v: np.ndarray, vs: float | None) -> str:
    size = " x ".join(str(x) for x in v.shape)
    if vs:
        return f"{size} voxels of {vs:.3f} Å"
    return f"{size} voxels"


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
