"""Benchmark: time-resolved DIP vs static SIRT vs sliding-window SIRT on dynamic phantoms.

For every time point (one per tilt) the reconstruction at that time is compared with the ground
truth at that time: 3-D SSIM (Gaussian window, sigma 1.5 voxels) and PSNR, both with one data
range for the whole series (the truth's maximum over all times), from :mod:`napari_tiltgen.evaluate.metrics`.

Methods
    ``static SIRT``   one SIRT of all tilts, used for every time point;
    ``window SIRT``   a SIRT of the ``--window`` tilts recorded nearest in time to each time point;
    ``DIP``           :func:`napari_tiltgen.fits.dip.fit_dip` (one fit for all time points).

Phantoms
    ``spheres``       :func:`napari_tiltgen.simulate.phantoms.dynamic_sphere_phantom` (sintering,
                      growth and a density change; exact projections);
    ``sintering``, ``growth``, ``alloying``
                      atomistic clusters of :mod:`napari_tiltgen.simulate.dynamic` (fast HAADF
                      model, Gaussian-atom ground truth).

Run from the repository root, e.g.::

    python benchmarks/dip.py --size 64 --tilts 100 --steps 1500 --window 25 --threads 2

It prints the machine load (``uptime``) before and after, since other jobs sharing the cores
inflate the times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_phantom(kind: str, size: int, n_tilts: int, scheme: str, dose: float | None):
    """Tilt series (with times) and ground truth ``(n_tilts, nz, ny, nx)`` in time order."""
    if kind == "spheres":
        from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom

        ts, truth = dynamic_sphere_phantom(size=size, n_tilts=n_tilts, total_time_s=3600.0,
                                           scheme=scheme)
        if dose is not None:
            rng = np.random.default_rng(1)
            counts = dose * ts.pixel_size_A ** 2 / float(ts.data.max())
            ts.data = (rng.poisson(ts.data * counts) / counts).astype(np.float32)
    else:
        from napari_tiltgen.simulate.dynamic import dynamic_cluster, simulate_dynamic

        phantom = dynamic_cluster(kind, "Au", shells=3, seed=0)
        step = 140.0 / (n_tilts - 1)
        res = simulate_dynamic(phantom, tilt_range=(-70.0, 70.0 + 1e-6), tilt_step=step,
                               frame_time_s=3600.0 / (n_tilts - 1),
                               order="sequential" if scheme == "sequential" else "dose_symmetric",
                               size=size, dose_e_per_A2=dose, seed=0)
        ts = res.tilt_series
        truth = np.stack([res.volume_at(t).data for t in ts.acquisition_times_s])
    order = np.argsort(ts.acquisition_times_s, kind="stable")
    return ts, truth[order]


def scores(volumes: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from napari_tiltgen.evaluate.metrics import psnr as psnr_of
    from napari_tiltgen.evaluate.metrics import ssim as ssim_of
    dr = float(truth.max() - min(truth.min(), 0.0))
    ssim = np.array([ssim_of(t, v, data_range=dr) for t, v in zip(truth, volumes)])
    psnr = np.array([psnr_of(t, v, data_range=dr) for t, v in zip(truth, volumes)])
    return ssim, psnr


def time_dip_only(ts, args) -> int:
    """Wall and CPU seconds of the SIRT + warm start and of the self-supervised steps."""
    from napari_tiltgen.fits import dip

    marks: dict[str, float] = {}

    def on_event(ev) -> None:
        if "step" in ev.values and "first" not in marks:
            marks["first"] = time.perf_counter()
            marks["first_cpu"] = time.process_time()

    t0, c0 = time.perf_counter(), time.process_time()
    res = dip.fit_dip(ts, steps=args.steps, warm_start_steps=args.warm_start_steps,
                      n_components=args.components, slices_per_step=args.slices_per_step,
                      frames_per_step=args.frames_per_step, sirt_iterations=50, device="cpu",
                      seed=args.seed, n_threads=args.threads, preview_every=0,
                      callback=on_event)
    t1, c1 = time.perf_counter(), time.process_time()
    setup, setup_cpu = marks["first"] - t0, marks["first_cpu"] - c0
    per = (t1 - marks["first"]) / max(args.steps - 1, 1)
    per_cpu = (c1 - marks["first_cpu"]) / max(args.steps - 1, 1)
    print(f"\nDIP fit of {ts.n_tilts} frames, {args.size}^3, {args.steps} steps: total {t1 - t0:.0f} s "
          f"wall / {c1 - c0:.0f} s CPU; SIRT + warm start + first step {setup:.0f} s wall / "
          f"{setup_cpu:.0f} s CPU; then {per:.2f} s wall / {per_cpu:.2f} s CPU per step.")
    for total in (1500, 3000):
        print(f"extrapolated {total} steps: {(setup + per * total) / 60:.0f} min wall, "
              f"{(setup_cpu + per_cpu * total) / 60:.0f} min CPU")
    print(f"final data loss {res.loss_terms['data'][-5:].mean():.4g}")
    print(f"# after: {load()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phantom", default="spheres",
                   choices=["spheres", "sintering", "growth", "alloying"])
    p.add_argument("--size", type=int, default=64, help="volume edge, voxels")
    p.add_argument("--tilts", type=int, default=100, help="tilts = time points")
    p.add_argument("--scheme", default="sequential", choices=["sequential", "dose-symmetric"])
    p.add_argument("--dose", type=float, help="e-/Å^2 per frame (Poisson noise); default none")
    p.add_argument("--steps", type=int, default=1500, help="DIP steps")
    p.add_argument("--warm-start-steps", type=int, default=200)
    p.add_argument("--smoothness", type=float, default=None,
                   help="DIP temporal_smoothness (default: the method's default)")
    p.add_argument("--components", type=int, default=8)
    p.add_argument("--slices-per-step", type=int, default=16)
    p.add_argument("--frames-per-step", type=int)
    p.add_argument("--window", type=int, default=25, help="tilts per sliding-window SIRT")
    p.add_argument("--sirt-iterations", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="FILE.npz", help="save per-time scores")
    p.add_argument("--dip-only", action="store_true",
                   help="time the DIP fit only (no baselines, no scores): for the time per step")
    args = p.parse_args(argv)

    from napari_tiltgen.fits import dip
    from napari_tiltgen.recon.api import reconstruct
    torch.set_num_threads(args.threads)
    print(f"# DIP benchmark: {args.phantom} phantom {args.size}^3, {args.tilts} tilts "
          f"({args.scheme}), dose {args.dose or 'none'}; torch {torch.__version__}, "
          f"{args.threads} threads, {os.cpu_count()} cores")
    print(f"# before: {load()}")
    t0 = time.perf_counter()
    ts, truth = make_phantom(args.phantom, args.size, args.tilts, args.scheme, args.dose)
    print(f"# phantom: {time.perf_counter() - t0:.1f} s")
    n = ts.n_tilts
    results: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    if args.dip_only:
        return time_dip_only(ts, args)

    t0 = time.perf_counter()
    static = reconstruct(ts, "sirt", args.sirt_iterations, show=False, device="cpu",
                               n_threads=args.threads).data
    results["static SIRT"] = (*scores(np.repeat(static[None], n, axis=0), truth),
                              time.perf_counter() - t0)
    t0 = time.perf_counter()
    win = dip.sliding_window_sirt(ts, args.window, iterations=args.sirt_iterations,
                                  device="cpu")
    results[f"window SIRT ({args.window})"] = (*scores(win, truth), time.perf_counter() - t0)
    del win
    kw = {} if args.smoothness is None else {"temporal_smoothness": args.smoothness}
    t0 = time.perf_counter()
    res = dip.fit_dip(ts, steps=args.steps, warm_start_steps=args.warm_start_steps,
                      n_components=args.components, slices_per_step=args.slices_per_step,
                      frames_per_step=args.frames_per_step, sirt_iterations=50,
                      device="cpu", seed=args.seed, n_threads=args.threads, preview_every=0,
                      show=sys.stderr.isatty(), **kw)
    t_dip = time.perf_counter() - t0
    results["DIP"] = (*scores(res.volumes, truth), t_dip)
    smooth = res.provenance["parameters"]["temporal_smoothness"]

    picks = np.unique(np.linspace(0, n - 1, 5).round().astype(int))
    head = " | ".join(f"SSIM t={res.times_s[i]:.0f}s" for i in picks)
    print(f"\n| method | mean SSIM | mean PSNR (dB) | {head} | time (s) |")
    print("|---|---|---|" + "---|" * len(picks) + "---|")
    for name, (ssim, psnr, secs) in results.items():
        cells = " | ".join(f"{ssim[i]:.3f}" for i in picks)
        print(f"| {name} | {ssim.mean():.3f} | {psnr.mean():.2f} | {cells} | {secs:.0f} |")
    best = max((v[0].mean(), k) for k, v in results.items() if k != "DIP")
    gain = results["DIP"][0].mean() - best[0]
    print(f"\nDIP: {args.steps} steps (+{args.warm_start_steps} warm start), smoothness {smooth}, "
          f"{args.components} components, {res.volumes.nbytes / 2**20:.0f} MiB of volumes, "
          f"fit {t_dip:.0f} s ({t_dip / max(args.steps, 1):.2f} s/step incl. warm start). "
          f"Mean SSIM {'above' if gain > 0 else 'BELOW'} the best baseline ({best[1]}) by "
          f"{gain:+.3f}; final data loss {res.loss_terms['data'][-50:].mean():.4g}.")
    print(f"# after: {load()}")
    if args.save:
        np.savez(args.save, times_s=res.times_s,
                 **{k.replace(" ", "_"): np.stack(v[:2]) for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
