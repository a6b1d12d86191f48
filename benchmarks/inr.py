"""Benchmark: self-supervised INR reconstruction vs SIRT (and quantEM's INR when installed).

Cases, all on the exact-projection sphere phantom (:func:`~napari_tiltgen.simulate.phantoms.sphere_phantom`)
and an atomistic cluster (fast HAADF model, ``--only cluster``):

* main: 64^3, +-60 degrees, 3-degree step, no noise: SSIM / PSNR vs ground truth for SIRT and INR,
  INR time to converge (first time within 0.005 of its final 3-D SSIM) and time to beat SIRT;
* missing wedge: +-45, +-60, +-70, +-80 degrees (3-degree step);
* tilt step: 1, 3, 5, 10 degrees (+-60);
* dose: noiseless, 1000, 100, 20 e-/Å^2 per frame (+-60, 3 degrees; 2 Å pixels);
* pose recovery: frames recorded with the tilt axis at 0, 2, 5, 10 degrees from y while the fit
  starts from 0 degrees; fitted axis error and SSIM with and without pose refinement;
* cluster: the sample cluster (Au55@Ag92 icosahedron), +-60 degrees, 3-degree step, noiseless
  and 2e4 e-/Å^2: SSIM, NRMSE, PSNR of SIRT and INR against the atomistic ground truth;
* quantEM (``pip install quantem``; the package never depends on it): ``TomographyLiteINR`` (H-SIREN,
  the paper authors' own code) on the same data and device, epochs run until a wall-time budget
  is spent; reported with the time our INR needed to reach quantEM's best SSIM.

SSIM is :func:`napari_tiltgen.evaluate.metrics.ssim` (3-D Gaussian window, data range of the ground
truth) over the whole volume, and the paper's protocol: 2-D SSIM of the central slice
perpendicular to the tilt axis (the xz slice, where the missing wedge shows).

Run (prints a Markdown table; ``--json`` also saves the numbers)::

    python benchmarks/inr.py                 # everything, 64^3 (about an hour on 2 loaded cores)
    python benchmarks/inr.py --quick         # 32^3, fewer cases and steps (a few minutes)
    python benchmarks/inr.py --only main quantem --quantem-seconds 600

quantEM needs torch-compatible extras; install it into a virtual environment that sees this
package (``python -m venv --system-site-packages ENV && ENV/bin/pip install -c constraints.txt
quantem``, constraints pinning the installed torch) and run the benchmark with ``ENV/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_tiltgen.evaluate.metrics import nrmse, psnr, ssim
from napari_tiltgen.fits.inr import fit_inr
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.physics.geometry import centered_coords, detector_u
from napari_tiltgen.recon.api import reconstruct
from napari_tiltgen.simulate.phantoms import random_spheres, sphere_phantom

SECTIONS = ("main", "wedge", "step", "dose", "pose", "cluster", "quantem")


# ----------------------------------------------------------------------------- measuring
def slice_ssim(truth: np.ndarray, vol: np.ndarray) -> float:
    """2-D SSIM of the central xz slice (perpendicular to the tilt axis y)."""
    j = truth.shape[1] // 2
    return ssim(truth[:, j, :], vol[:, j, :], data_range=float(np.ptp(truth)))


def scores(truth: np.ndarray, vol: np.ndarray) -> dict[str, float]:
    return {"ssim": ssim(truth, vol), "ssim_xz": slice_ssim(truth, vol),
            "psnr": psnr(truth, vol)}


def run_sirt(ts: TiltSeries, truth: np.ndarray, iterations: int, threads: int | None
             ) -> dict[str, Any]:
    t0 = time.perf_counter()
    vol = reconstruct(ts, "sirt", iterations=iterations, show=False, device="cpu",
                      n_threads=threads)
    return {"seconds": time.perf_counter() - t0, **scores(truth, vol.data), "result": vol}


def run_inr(ts: TiltSeries, truth: np.ndarray, steps: int, threads: int | None,
            monitor_every: int = 0, **kw: Any) -> dict[str, Any]:
    """Fit; with ``monitor_every`` record 3-D SSIM over (fit-only) wall time."""
    trace: list[tuple[int, float, float]] = []
    spent = [0.0]
    t0 = time.perf_counter()

    def monitor(v: np.ndarray) -> dict[str, float]:
        t = time.perf_counter()
        fit_time = t - t0 - spent[0]
        s = ssim(truth, v)
        spent[0] += time.perf_counter() - t
        trace.append((min((len(trace) + 1) * monitor_every, steps), fit_time, s))
        return {"ssim": s}

    res = fit_inr(ts, steps=steps, n_threads=threads, show=False, device="cpu",
                  preview_every=0, monitor=monitor if monitor_every else None,
                  monitor_every=monitor_every, **kw)
    seconds = time.perf_counter() - t0 - spent[0]
    out = {"seconds": seconds, "steps": steps, **scores(truth, res.volume.data),
           "poses": res.poses, "result": res}
    if trace:
        out["trace"] = trace
    return out


def time_to(trace: list[tuple[int, float, float]], target: float) -> float | None:
    for _, t, s in trace:
        if s >= target:
            return t
    return None


def load_note() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min) on " \
               f"{os.cpu_count()} cores"
    except OSError:  # pragma: no cover
        return "load average unknown"


def recorded_with_axis(ts: TiltSeries, axis_deg: float, seed: int) -> TiltSeries:
    """Exact projections of the phantom as recorded with the tilt axis at ``axis_deg`` from y.

    Each recorded pixel ``p_r`` (2x2 sub-pixels) is mapped to the axis-aligned detector by
    ``Rot(-axis)`` (the IMOD convention of :mod:`napari_tiltgen.physics.rays`) and the
    spheres' line integrals are evaluated there: no interpolation of frames, so no bias.
    """
    if axis_deg == 0:
        return ts
    n_spheres = ts.provenance["parameters"]["n_spheres"]
    ny, nx = ts.data.shape[1:]
    spheres = random_spheres(nx, n_spheres, seed)
    o = (np.arange(2) + 0.5) / 2 - 0.5
    vr = (centered_coords(ny)[:, None] + o[None, :]).reshape(-1)
    ur = (centered_coords(nx)[:, None] + o[None, :]).reshape(-1)
    vr, ur = np.meshgrid(vr, ur, indexing="ij")
    p = np.deg2rad(axis_deg)
    u, v = ur * np.cos(p) + vr * np.sin(p), -ur * np.sin(p) + vr * np.cos(p)
    frames = np.zeros(ts.data.shape)
    for t, theta in enumerate(ts.tilt_angles):
        img = np.zeros_like(u)
        for x, y, z, r, rho in spheres:
            u0 = detector_u(x, z, theta)
            img += rho * 2.0 * np.sqrt(np.clip(r * r - (v - y) ** 2 - (u - u0) ** 2, 0, None))
        frames[t] = img.reshape(ny, 2, nx, 2).mean(axis=(1, 3))
    return replace(ts, data=frames.astype(np.float32))


# ----------------------------------------------------------------------------- quantEM
def quantem_available() -> str | None:
    """``None`` when quantEM's INR tomography can be imported, else why not."""
    try:
        import quantem  # noqa: F401
        from quantem.tomography.tomography_lite import TomographyLiteINR  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"quantem not usable here ({type(exc).__name__}: {exc})"
    return None


def run_quantem(ts: TiltSeries, truth: np.ndarray, budget_s: float, batch_size: int,
                threads: int | None) -> dict[str, Any]:
    """quantEM ``TomographyLiteINR`` (default H-SIREN 3x256) epoch by epoch until ``budget_s``.

    Geometry: quantEM tilts about its x axis (image columns); ours tilts about y (rows), so the
    frames are transposed in, and its volume ``(X, Y, Z)`` maps to ours ``(z, y, x)`` as
    ``obj.transpose(2, 0, 1)``. Its densities are in units of the 0.95-quantile-normalised data
    per normalised length; ``rho = rho_q * q95 * 2 / (N - 1)`` converts them to ours.
    """
    from quantem.tomography.tomography_lite import TomographyLiteINR

    if threads:
        torch.set_num_threads(threads)
    data = np.ascontiguousarray(ts.data.transpose(0, 2, 1))
    n = data.shape[-1]
    q95 = float(torch.quantile(torch.from_numpy(data), 0.95))
    tomo = TomographyLiteINR.from_dataset(data, ts.tilt_angles.astype(np.float32), device="cpu",
                                          rng=0)
    trace = []
    fit_s = 0.0
    epoch = 0
    while fit_s < budget_s:
        t0 = time.perf_counter()
        tomo.reconstruct(num_iter=1, batch_size=batch_size, num_workers=0, learn_pose=False)
        fit_s += time.perf_counter() - t0
        epoch += 1
        tomo.obj_model.create_volume()
        obj = tomo.obj_model._obj[0].cpu().numpy()  # (X, Y, Z)
        vol = obj.transpose(2, 0, 1) * q95 * 2.0 / (n - 1)
        s = scores(truth, vol)
        trace.append((epoch, fit_s, s["ssim"]))
        print(f"  quantem epoch {epoch}: {fit_s:.0f} s, SSIM {s['ssim']:.4f}", file=sys.stderr)
    best = max(trace, key=lambda r: r[2])
    return {"epochs": epoch, "seconds": fit_s, "trace": trace, "best_ssim": best[2],
            "best_at_s": best[1], **s}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32^3, fewer cases and steps")
    ap.add_argument("--size", type=int, help="phantom edge in pixels (default 64; quick 32)")
    ap.add_argument("--steps", type=int, help="INR steps (default 400; quick 150)")
    ap.add_argument("--sirt-iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--quantem-seconds", type=float, default=600.0,
                    help="wall-time budget for quantEM's fit (default 600 s)")
    ap.add_argument("--axis-errors", type=float, nargs="*",
                    help="tilt-axis errors of the pose section, degrees (default 0 2 5 10; "
                    "quick 0 5)")
    ap.add_argument("--pose-steps", type=int, help="INR steps of the pose section (default "
                    "--steps)")
    ap.add_argument("--axis-init", nargs="*", choices=["recorded", "estimate"],
                    default=["recorded", "estimate"],
                    help="starting tilt axis(es) of the pose section (default both)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    size = args.size or (32 if args.quick else 64)
    steps = args.steps or (150 if args.quick else 400)
    its = args.sirt_iterations
    th = args.threads
    only = set(args.only or SECTIONS)
    report: dict[str, Any] = {"size": size, "steps": steps, "sirt_iterations": its,
                              "threads": th or torch.get_num_threads(), "load_start": load_note(),
                              "torch": torch.__version__}
    lines: list[str] = []

    def table(title: str, header: list[str], rows: list[list[str]]) -> None:
        lines.extend(["", f"### {title}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)])
        lines.extend("| " + " | ".join(r) + " |" for r in rows)
        print("\n".join(lines[-(len(rows) + 4):]), flush=True)

    def phantom(**kw: Any) -> tuple[TiltSeries, np.ndarray]:
        ts, gt = sphere_phantom(size=size, seed=0, **kw)
        return ts, gt.data

    main_inr = None
    if "main" in only:
        ts, gt = phantom(tilt_range=(-60.0, 60.0), tilt_step=3.0)
        sirt = run_sirt(ts, gt, its, th)
        sirt2 = run_sirt(ts, gt, 2 * its, th)
        inr = run_inr(ts, gt, steps, th, monitor_every=max(steps // 20, 1), optimize_pose=False)
        main_inr = inr
        final = inr["ssim"]
        t_conv = time_to(inr["trace"], final - 0.005)
        t_beat = time_to(inr["trace"], sirt["ssim"])
        report["main"] = {"sirt": sirt, "sirt_2x": sirt2,
                          "inr": {k: v for k, v in inr.items() if k not in ("result", "poses")},
                          "inr_converged_s": t_conv, "inr_beats_sirt_s": t_beat}
        rows = [
            [f"SIRT {its} it", f"{sirt['ssim']:.4f}", f"{sirt['ssim_xz']:.4f}",
             f"{sirt['psnr']:.2f}", f"{sirt['seconds']:.1f}", ""],
            [f"SIRT {2 * its} it", f"{sirt2['ssim']:.4f}", f"{sirt2['ssim_xz']:.4f}",
             f"{sirt2['psnr']:.2f}", f"{sirt2['seconds']:.1f}", ""],
            [f"INR {steps} steps", f"{inr['ssim']:.4f}", f"{inr['ssim_xz']:.4f}",
             f"{inr['psnr']:.2f}", f"{inr['seconds']:.1f}",
             f"converged (within 0.005 SSIM of final) at {t_conv:.0f} s; beats SIRT at "
             + (f"{t_beat:.0f} s" if t_beat is not None else "never")],
        ]
        table(f"Main case: {size}^3, +-60 deg, 3 deg step, noiseless",
              ["method", "SSIM 3-D", "SSIM xz slice", "PSNR dB", "time s", "note"], rows)

    def sweep(name: str, title: str, cases: list[tuple[str, dict[str, Any]]]) -> None:
        rows, out = [], []
        for label, kw in cases:
            ts, gt = phantom(**kw)
            s = run_sirt(ts, gt, its, th)
            i = run_inr(ts, gt, steps, th, optimize_pose=False)
            out.append({"case": label, "sirt": s,
                        "inr": {k: v for k, v in i.items() if k not in ("result", "poses")}})
            rows.append([label, str(ts.n_tilts), f"{s['ssim']:.4f}", f"{i['ssim']:.4f}",
                         f"{i['ssim'] - s['ssim']:+.4f}", f"{s['ssim_xz']:.4f}",
                         f"{i['ssim_xz']:.4f}", f"{i['ssim_xz'] - s['ssim_xz']:+.4f}",
                         f"{i['seconds']:.0f}"])
        report[name] = out
        table(title, ["case", "tilts", "SIRT SSIM", "INR SSIM", "gain", "SIRT xz", "INR xz",
                      "gain xz", "INR s"], rows)

    if "wedge" in only:
        ranges = (45, 60, 80) if args.quick else (45, 60, 70, 80)
        sweep("wedge", "Missing wedge (3 deg step)",
              [(f"+-{r} deg", {"tilt_range": (-r, r), "tilt_step": 3.0}) for r in ranges])
    if "step" in only:
        st = (1.0, 5.0, 10.0) if args.quick else (1.0, 3.0, 5.0, 10.0)
        sweep("step", "Tilt step (+-60 deg)",
              [(f"{s:g} deg", {"tilt_range": (-60, 60), "tilt_step": s}) for s in st])
    if "dose" in only:
        doses = (None, 100.0, 20.0) if args.quick else (None, 1000.0, 100.0, 20.0)
        sweep("dose", "Dose per frame (+-60 deg, 3 deg step, 2 Å pixels, Poisson noise)",
              [("noiseless" if d is None else f"{d:g} e-/Å^2",
                {"tilt_range": (-60, 60), "tilt_step": 3.0, "dose_e_per_A2": d}) for d in doses])

    if "pose" in only:
        ts0, gt = phantom(tilt_range=(-60.0, 60.0), tilt_step=3.0)
        rows, out = [], []
        errs = args.axis_errors or ((0.0, 5.0) if args.quick else (0.0, 2.0, 5.0, 10.0))
        psteps = args.pose_steps or steps
        for err in errs:
            rec = recorded_with_axis(ts0, err, seed=0)
            for init in args.axis_init:
                fitted = run_inr(rec, gt, psteps, th, optimize_pose=True, tilt_axis_init=init)
                p = fitted["poses"]
                axis, start = p["tilt_axis_angle_deg"], p["initial_tilt_axis_angle_deg"]
                out.append({"axis_error_deg": err, "init": init, "start_deg": start,
                            "fitted_axis_deg": axis, "ssim": fitted["ssim"],
                            "seconds": fitted["seconds"]})
                rows.append([f"{err:g}", init, f"{start:.3f}", f"{axis:.3f}",
                             f"{abs(axis - err):.3f}", f"{fitted['ssim']:.4f}",
                             f"{fitted['seconds']:.0f}"])
        report["pose"] = out
        table(f"Pose recovery ({size}^3, +-60 deg, 3 deg step, {psteps} steps): frames recorded "
              "with the tilt axis at the error; the fit starts at 0 deg (recorded) or at the "
              "common-line estimate",
              ["axis error deg", "start", "start deg", "fitted deg", "abs error deg",
               "SSIM 3-D", "INR s"], rows)

    if "cluster" in only:
        from napari_tiltgen.simulate.series import simulated_cluster_sample

        rows, out = [], []
        for dose in (None, 2e4):
            ts, gt_vol = simulated_cluster_sample(0, size=size, tilt_range=(-60.0, 60.0),
                                                  tilt_step=3.0, dose_e_per_A2=dose)
            gt = gt_vol.data
            s = run_sirt(ts, gt, its, th)
            i = run_inr(ts, gt, steps, th, optimize_pose=False)
            label = "noiseless" if dose is None else f"{dose:g} e-/Å^2"
            out.append({"case": label, "sirt": s,
                        "inr": {k: v for k, v in i.items() if k not in ("result", "poses")},
                        "nrmse_sirt": nrmse(gt, s["result"].data),
                        "nrmse_inr": nrmse(gt, i["result"].volume.data)})
            rows.append([label, f"{s['ssim']:.4f}", f"{i['ssim']:.4f}",
                         f"{i['ssim'] - s['ssim']:+.4f}", f"{out[-1]['nrmse_sirt']:.3f}",
                         f"{out[-1]['nrmse_inr']:.3f}", f"{s['psnr']:.2f}", f"{i['psnr']:.2f}",
                         f"{i['seconds']:.0f}"])
        report["cluster"] = out
        table(f"Atomistic cluster (Au55@Ag92 icosahedron, fast HAADF model, {size} px, "
              "+-60 deg, 3 deg step)",
              ["dose", "SIRT SSIM", "INR SSIM", "gain", "SIRT NRMSE", "INR NRMSE",
               "SIRT PSNR", "INR PSNR", "INR s"], rows)

    if "quantem" in only:
        why = quantem_available()
        if why:
            report["quantem"] = why
            lines.extend(["", f"quantEM: {why} (not measured)."])
            print(lines[-1])
        else:
            import quantem

            ts, gt = phantom(tilt_range=(-60.0, 60.0), tilt_step=3.0)
            if main_inr is None or "trace" not in main_inr:
                main_inr = run_inr(ts, gt, steps, th, monitor_every=max(steps // 20, 1),
                                   optimize_pose=False)
            q = run_quantem(ts, gt, args.quantem_seconds, 1024, th)
            ours_t = time_to(main_inr["trace"], q["best_ssim"])
            report["quantem"] = {"version": quantem.__version__,
                                 **{k: v for k, v in q.items()}, "ours_time_to_best_s": ours_t}
            speed = (f"{q['best_at_s'] / ours_t:.1f}x" if ours_t else "n/a")
            rows = [[f"quantEM {quantem.__version__} TomographyLiteINR (H-SIREN 3x256)",
                     f"{q['epochs']} epochs", f"{q['best_ssim']:.4f}", f"{q['best_at_s']:.0f}",
                     f"{q['ssim_xz']:.4f}"],
                    [f"ours ({steps} steps)", "-", f"{main_inr['ssim']:.4f}",
                     f"{main_inr['seconds']:.0f}", f"{main_inr['ssim_xz']:.4f}"],
                    ["ours, time to quantEM's best SSIM", "-", "-",
                     "not reached" if ours_t is None else f"{ours_t:.0f}", f"speed-up {speed}"]]
            table(f"quantEM on the same data ({size}^3, +-60 deg, 3 deg) and device (CPU)",
                  ["method", "work", "best SSIM 3-D", "time s", "SSIM xz / note"], rows)

    report["load_end"] = load_note()
    lines.extend(["", (f"Machine: {report['load_start']} at start, {report['load_end']} at end; "
                       f"torch {torch.__version__}, {report['threads']} thread(s).")])
    print(lines[-1])
    if args.json:
        def clean(o: Any) -> Any:
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items() if k != "result"}
            if isinstance(o, (list, tuple)):
                return [clean(v) for v in o]
            if isinstance(o, np.ndarray):
                return o.tolist()
            if isinstance(o, np.generic):
                return o.item()
            return o

        with open(args.json, "w") as f:
            json.dump(clean(report), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
