"""Headless end-to-end demo: simulate -> save -> reconstruct -> compare -> report.

``tiltgen demo --out DIR`` runs :func:`run_demo`. It grows as methods land; every step it runs
writes real files into ``DIR`` and a line into ``DIR/report.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import Volume
from napari_tiltgen.io.writers import write_mrc


def run_demo(out: str | Path, *, size: int = 64, tilt_step: float = 3.0, seed: int = 0,
             sirt_iterations: int = 100, device: str = "auto", overwrite: bool = False,
             log: Any = print) -> dict[str, Any]:
    """Run the demo into folder ``out``; returns a summary dict (also written as JSON).

    Parameters
    ----------
    out
        Output folder (created; existing files in it are not replaced unless ``overwrite``).
    size
        Edge of the synthetic volume, pixels.
    tilt_step
        Tilt increment in degrees over -60..+60.
    seed
        Seed of the synthetic particle.
    sirt_iterations
        SIRT iterations.
    device
        Torch device for the reconstructions (``"auto"``: CUDA when available).
    """
    from napari_tiltgen.compare import compare, plot_comparison
    from napari_tiltgen.methods.recon import reconstruct
    from napari_tiltgen.simulate.phantoms import sphere_phantom

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"steps": []}

    def step(name: str, t0: float, **info: Any) -> None:
        rec = {"step": name, "seconds": round(time.perf_counter() - t0, 3), **info}
        summary["steps"].append(rec)
        log(f"[demo] {name}: " + ", ".join(f"{k}={v}" for k, v in rec.items() if k != "step"))

    t0 = time.perf_counter()
    ts, truth = sphere_phantom(size=size, tilt_range=(-60.0, 60.0), tilt_step=tilt_step,
                               seed=seed)
    step("simulate", t0, kind="sphere phantom", shape=list(ts.shape),
         angles=f"{ts.tilt_angles[0]:g}..{ts.tilt_angles[-1]:g} step {tilt_step:g} deg")

    t0 = time.perf_counter()
    targets = ["tilt_series.mrc", "tilt_series.rawtlt", "ground_truth.mrc", "wbp.mrc",
               "sirt.mrc", "metrics.csv", "metrics.json", "comparison.png", "summary.json"]
    existing = [t for t in targets if (out / t).exists()]
    if existing and not overwrite:
        raise TiltgenError(f"holds files from an earlier run ({', '.join(existing[:3])}...); "
                           "use --overwrite or another folder.", out)
    files = {
        "tilt_series": write_mrc(ts, out / "tilt_series.mrc", overwrite=overwrite),
        "ground_truth": write_mrc(truth, out / "ground_truth.mrc", overwrite=overwrite),
    }
    step("save", t0, files=[p.name for p in files.values()])

    volumes: dict[str, Volume] = {}
    for method, iterations in (("wbp", 1), ("sirt", sirt_iterations)):
        t0 = time.perf_counter()
        vol = reconstruct(ts, method, iterations, show=False, device=device)
        volumes[method.upper()] = vol
        files[method] = write_mrc(vol, out / f"{method}.mrc", overwrite=overwrite)
        step(f"reconstruct {method.upper()}", t0, iterations=iterations,
             device=vol.provenance.get("device"))

    t0 = time.perf_counter()
    report = compare(truth, volumes, reference_name="ground truth")
    files["metrics_csv"] = report.save_csv(out / "metrics.csv", overwrite=overwrite)
    files["metrics_json"] = report.save_json(out / "metrics.json", overwrite=overwrite)
    plot_comparison(report, out / "comparison.png", overwrite=overwrite)
    files["comparison_png"] = out / "comparison.png"
    step("compare", t0, reference="ground truth", volumes=list(volumes))
    log(report.table_text())
    summary["metrics"] = report.scalar_rows()

    summary["files"] = {k: str(v) for k, v in files.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return summary


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
