"""Benchmark of the interpolation methods on held-out simulated series (TSGNet protocol).

Frame metrics, per gap ``g`` (degrees)
    Every test series (sampled every degree) is thinned to every ``g``-th tilt (offset 0, as
    TSGNet's ``F_g^(0)``); the ``g - 1`` frames between two kept tilts are predicted by each
    method and compared with the true frames: MSE, PSNR and SSIM, each frame scaled by its own
    true range (``(x - min) / (max - min)`` of the true frame, so MSE is in units of that range
    squared and PSNR/SSIM use data range 1). Gap 1 keeps every tilt: nothing to predict.
Downstream 3-D, per gap in ``recon_gaps``
    SIRT of the Reference (all tilts), the Sparse series (every ``g``-th tilt) and the Sparse
    series completed with predicted frames (Mix, one per method), each compared with the
    Reference reconstruction: NRMSE, SSIM (3-D), and the Otsu-segmented surfaces' Chamfer and
    RMS distances (voxels).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.frames import METHODS, interpolate_at, load_pretrained

__all__ = ["EvalConfig", "evaluate", "evaluate_iter", "frame_metrics", "sparse_pairs"]


@dataclass
class EvalConfig:
    """Settings of :func:`evaluate` (see ``tiltgen eval-interpolation --help``)."""

    data: list[str]
    out_dir: str
    weights: str | None = None
    gaps: list[int] = field(default_factory=lambda: list(range(1, 13)))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    max_series: int | None = None
    presets: tuple[str, ...] | None = None
    reprojection_iterations: int = 50
    recon_gaps: list[int] = field(default_factory=lambda: [2, 4, 8, 12])
    recon_series: int = 2
    recon_iterations: int = 100
    device: str = "auto"
    command: str = ""


def sparse_pairs(n_tilts: int, gap: int) -> tuple[np.ndarray, list[tuple[int, int, list[float]]],
                                                   np.ndarray]:
    """Kept frames, pairs to fill (indices into the kept frames) and the hidden frame indices.

    Every ``gap``-th frame of ``n_tilts`` equally spaced frames is kept (offset 0); frames after
    the last kept one are not predicted.
    """
    kept = np.arange(0, n_tilts, gap)
    pairs, hidden = [], []
    for j in range(kept.size - 1):
        inner = list(range(kept[j] + 1, kept[j + 1]))
        if inner:
            pairs.append((j, j + 1, [(i - kept[j]) / gap for i in inner]))
            hidden.extend(inner)
    return kept, pairs, np.asarray(hidden, dtype=int)


def frame_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """MSE, PSNR (dB) and SSIM per frame, each frame scaled by its true range."""
    from napari_tiltgen.evaluate.metrics import ssim

    out: dict[str, list[float]] = {"mse": [], "psnr": [], "ssim": []}
    for r, p in zip(true, pred):
        lo, rng = float(r.min()), float(r.max() - r.min()) or 1.0
        rn, pn = (r - lo) / rng, (p - lo) / rng
        m = float(np.mean((pn - rn) ** 2))
        out["mse"].append(m)
        out["psnr"].append(10 * math.log10(1.0 / max(m, 1e-20)))
        out["ssim"].append(ssim(rn, pn, 1.0))
    return {k: np.asarray(v) for k, v in out.items()}


def _mean(x: list[float]) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _fmt(v: float, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _frame_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    head = "| gap (deg) | frames | " + " | ".join(
        f"{m} MSE | {m} PSNR | {m} SSIM" for m in methods) + " |"
    sep = "|" + "---|" * (2 + 3 * len(methods))
    lines = [head, sep]
    for r in rows:
        cells = [str(r["gap"]), str(r["n_frames"])]
        for m in methods:
            cells += [_fmt(r[m]["mse"], ".2e"), _fmt(r[m]["psnr"], ".2f"),
                      _fmt(r[m]["ssim"], ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _recon_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| gap (deg) | group | tilts | NRMSE | SSIM | Chamfer (vox) | RMS (vox) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gap']} | {r['group']} | {r['n_tilts']} | {_fmt(r['nrmse'], '.4f')} "
                     f"| {_fmt(r['ssim'], '.4f')} | {_fmt(r['chamfer_px'], '.3f')} | "
                     f"{_fmt(r['rms_surface_px'], '.3f')} |")
    return "\n".join(lines)


def _plot(path: Path, rows: list[dict[str, Any]], recon: list[dict[str, Any]],
          methods: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have_recon = bool(recon)
    fig, axes = plt.subplots(1, 4 if have_recon else 3, figsize=(16 if have_recon else 12, 3.6))
    rows = [r for r in rows if r["n_frames"]]
    gaps = [r["gap"] for r in rows]
    for ax, key, label in zip(axes, ("mse", "psnr", "ssim"),
                              ("MSE (range²)", "PSNR (dB)", "SSIM")):
        for m in methods:
            ax.plot(gaps, [r[m][key] for r in rows], "o-", label=m, ms=4)
        ax.set_xlabel("gap (degrees)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "mse":
            ax.set_yscale("log")
    axes[1].legend()
    if have_recon:
        ax = axes[3]
        groups = sorted({r["group"] for r in recon}, key=lambda g: (g != "sparse", g))
        for g in groups:
            rr = [r for r in recon if r["group"] == g]
            ax.plot([r["gap"] for r in rr], [r["chamfer_px"] for r in rr], "s-", label=g, ms=4)
        ax.set_xlabel("gap (degrees)")
        ax.set_ylabel("Chamfer to reference SIRT (voxels)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Tilt-frame interpolation on held-out fcc Yb/Ir/Xe/Al clusters")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_iter(cfg: EvalConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Run the benchmark (progress generator); returns the tables and the numbers.

    Returns
    -------
    dict
        ``frames`` (one row per gap: ``n_frames`` and per method ``mse``, ``psnr``, ``ssim``),
        ``average_2_12`` (the same averaged over gaps 2-12), ``recon`` (3-D rows),
        ``table_markdown``, ``files``, ``model_info``, ``inference_s_per_frame``.
    """
    from napari_tiltgen.evaluate.metrics import compare_volumes
    from napari_tiltgen.nets.interpolation.data import load_frame_bank
    from napari_tiltgen.recon.api import reconstruct_iter

    for m in cfg.methods:
        if m not in METHODS:
            raise TiltgenError(f"unknown method {m!r}; use {', '.join(METHODS)}.")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bank = load_frame_bank(cfg.data, "test", presets=cfg.presets, max_series=cfg.max_series)
    volumes_px = bank.pixel_size_A
    angles = bank.tilt_angles
    step = float(np.median(np.diff(angles)))
    if abs(step - 1.0) > 1e-6:
        raise TiltgenError(f"the test series must be sampled every degree; got {step:g}.")
    info: dict[str, Any] = {}
    if "pretrained" in cfg.methods:
        _, info = load_pretrained(cfg.weights, "cpu")
    n_series = len(bank)
    per = {g: {m: {"mse": [], "psnr": [], "ssim": []} for m in cfg.methods} for g in cfg.gaps}
    n_frames = {g: 0 for g in cfg.gaps}
    timing = {m: [0.0, 0] for m in cfg.methods}
    total = n_series * len(cfg.gaps)
    done = 0
    for s in range(n_series):
        full = TiltSeries(bank.stacks[s], tilt_angles=angles, pixel_size_A=float(volumes_px[s]))
        for g in cfg.gaps:
            kept, pairs, hidden = sparse_pairs(full.n_tilts, g)
            done += 1
            if hidden.size == 0:
                continue
            sparse = full.subset(kept)
            truth = full.data[hidden]
            n_frames[g] += int(hidden.size)
            for m in cfg.methods:
                t0 = time.perf_counter()
                gen = interpolate_at(sparse, pairs, m, weights=cfg.weights, device=cfg.device,
                                     allow_out_of_range=True,
                                     reprojection_iterations=cfg.reprojection_iterations)
                pred, _a, _w = yield from _quiet(gen)
                timing[m][0] += time.perf_counter() - t0
                timing[m][1] += int(hidden.size)
                fm = frame_metrics(truth, pred)
                for k in fm:
                    per[g][m][k].extend(fm[k].tolist())
            yield Progress(0.8 * done / total, f"series {s + 1}/{n_series}, gap {g}")
    rows = []
    for g in cfg.gaps:
        row: dict[str, Any] = {"gap": g, "n_frames": n_frames[g]}
        for m in cfg.methods:
            row[m] = {k: _mean(v) for k, v in per[g][m].items()}
        rows.append(row)
    avg_rows = [r for r in rows if 2 <= r["gap"] <= 12 and r["n_frames"]]
    average = {m: {k: _mean([r[m][k] for r in avg_rows]) for k in ("mse", "psnr", "ssim")}
               for m in cfg.methods}

    # ---------------------------------------------------------------- downstream 3-D
    recon_rows: list[dict[str, Any]] = []
    mix_methods = [m for m in cfg.methods if m != "reprojection"]
    n_rec = min(cfg.recon_series, n_series) if cfg.recon_gaps else 0
    jobs = n_rec * (1 + len(cfg.recon_gaps) * (1 + len(mix_methods)))
    k = 0
    for s in range(n_rec):
        full = TiltSeries(bank.stacks[s], tilt_angles=angles, pixel_size_A=float(volumes_px[s]))

        def sirt(ts: TiltSeries) -> Generator[Progress, None, np.ndarray]:
            nonlocal k
            vol = yield from _quiet(reconstruct_iter(ts, "sirt", cfg.recon_iterations,
                                                     device=cfg.device, preview_every=0))
            k += 1
            yield Progress(0.8 + 0.2 * k / max(jobs, 1), f"3-D: SIRT {k}/{jobs}")
            return vol.data

        ref = yield from sirt(full)
        for g in cfg.recon_gaps:
            kept, pairs, hidden = sparse_pairs(full.n_tilts, g)
            sparse = full.subset(kept)
            groups = {"sparse": sparse}
            for m in mix_methods:
                pred, _a, _w = yield from _quiet(interpolate_at(
                    sparse, pairs, m, weights=cfg.weights, device=cfg.device,
                    allow_out_of_range=True))
                idx = np.concatenate([kept, hidden])
                order = np.argsort(idx)
                stack = np.concatenate([sparse.data, pred])[order]
                groups[f"mix ({m})"] = TiltSeries(stack, tilt_angles=angles[idx[order]],
                                                  pixel_size_A=full.pixel_size_A)
            for name, ts in groups.items():
                vol = yield from sirt(ts)
                c = compare_volumes(ref, vol)
                recon_rows.append({"series": s, "gap": g, "group": name, "n_tilts": ts.n_tilts,
                                   "nrmse": c["nrmse"], "ssim": c["ssim"],
                                   "chamfer_px": c["chamfer_px"],
                                   "rms_surface_px": c["rms_surface_px"]})
    recon_mean: list[dict[str, Any]] = []
    for g in cfg.recon_gaps:
        for name in sorted({r["group"] for r in recon_rows if r["gap"] == g}):
            rr = [r for r in recon_rows if r["gap"] == g and r["group"] == name]
            recon_mean.append({"gap": g, "group": name, "n_tilts": rr[0]["n_tilts"],
                               **{key: _mean([r[key] for r in rr])
                                  for key in ("nrmse", "ssim", "chamfer_px", "rms_surface_px")}})

    # ---------------------------------------------------------------- outputs
    speed = {m: (v[0] / v[1] if v[1] else float("nan")) for m, v in timing.items()}
    avg_row = {"gap": "2-12 (mean)", "n_frames": sum(r["n_frames"] for r in avg_rows), **average}
    md = ["## Frame metrics (per gap; frames scaled by their true range)", "",
          _frame_table(rows + [avg_row], cfg.methods), ""]
    if recon_mean:
        md += [(f"## Downstream 3-D (SIRT {cfg.recon_iterations} iterations, {n_rec} series, "
                "compared with the reference SIRT of all tilts)"), "", _recon_table(recon_mean), ""]
    md += [f"Test stacks: {n_series} ({', '.join(sorted({n.split(' ')[1] for n in bank.names}))}"
           f" optics), held-out elements; seconds per predicted 64x64 frame: "
           + ", ".join(f"{m} {v:.4f}" for m, v in speed.items())]
    table = "\n".join(md)
    files = [out / "interpolation_eval.md", out / "interpolation_eval.json",
             out / "interpolation_eval.png"]
    files[0].write_text(table + "\n")
    result = {"frames": rows, "average_2_12": average, "recon": recon_mean,
              "recon_per_series": recon_rows, "n_series": n_series,
              "series": bank.names, "config": asdict(cfg), "seconds_per_frame": speed,
              "model_info": {k: v for k, v in info.items() if k != "evaluation"}}
    files[1].write_text(json.dumps(result, indent=2, default=str))
    _plot(files[2], rows, recon_mean, cfg.methods)
    yield Progress(1.0, "done")
    result["table_markdown"] = table
    result["files"] = [str(f) for f in files]
    return result


def _quiet(gen: Generator[Progress, None, Any], fraction: float = 0.0
           ) -> Generator[Progress, None, Any]:
    """Run a sub-generator with its warnings silenced (the benchmark records its own numbers),
    re-yielding its events at a fixed ``fraction`` so that cancellation still works."""
    import warnings

    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ev = next(gen)
            yield Progress(fraction, ev.message)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def evaluate(cfg: EvalConfig, show_progress: bool = True) -> dict[str, Any]:
    """:func:`evaluate_iter` run to completion."""
    from napari_tiltgen.core.progress import run

    return run(evaluate_iter(cfg), show=show_progress, desc="eval-interpolation")
