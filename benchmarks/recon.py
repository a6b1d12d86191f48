"""Benchmark: our torch SIRT/WBP against ASTRA (CPU), measured in the same run.

Prints a table of wall time, peak memory and quality (NRMSE, SSIM against the ground truth) for

* case a: 77 tilts (-76..76 deg, 2 deg steps) of 256 x 256 -> 256^3 (the size of a real needle
  series);
* case b: 71 tilts (-70..70 deg) of a 150^3 phantom;

both sphere-cluster phantoms whose projections are exact line integrals
(:mod:`napari_tiltgen.simulate.phantoms`). Every engine/method runs in its own subprocess so that
its peak memory is its own; the memory column is the peak resident set of the work over the
process after its imports (Linux high-water mark reset after the imports; it counts the data,
the volume, operators, temporaries and the thread pools' first-use buffers), and the ratio
column divides it by ``(volume + data)`` bytes in float32.

Usage::

    python benchmarks/recon.py                       # full: both cases, 100 iterations
    python benchmarks/recon.py --quick               # 96^3 and 64^3, 20 iterations (~1 min)
    python benchmarks/recon.py --cases b --iterations 50
    python benchmarks/recon.py --astra-slices 32     # ASTRA SIRT on 32 central slices only,
                                                     # time extrapolated (said in the table)

Other processes sharing the cores make timings noisy; the engines of one case run back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: case -> tilt range (first, last, step) in degrees; sizes are options.
CASES = {"a": {"angles": (-76.0, 76.0, 2.0)}, "b": {"angles": (-70.0, 70.0, 2.0)}}


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """Start measuring the peak from now; returns the current resident set, MB.

    On Linux the kernel's high-water mark (VmHWM) is reset through ``/proc/self/clear_refs``, so
    the peak is that of the work alone, not of the imports before it. Elsewhere ``ru_maxrss``
    (the lifetime peak) is the fallback, which can hide growth below an earlier import peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS") or 0.0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_mb() -> float:
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- worker
def worker(case_dir: Path, engine: str, method: str, iterations: int, threads: int,
           slices: int | None) -> None:
    """Run one reconstruction; print a JSON line with seconds and peak memory growth."""
    import torch

    torch.set_num_threads(threads)
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.physics.projector import Projector
    from napari_tiltgen.recon import backends
    from napari_tiltgen.recon.iterative import sirt_iter
    from napari_tiltgen.recon.wbp import wbp_iter

    if engine == "astra":
        import astra  # noqa: F401  (imported before the baseline, like torch)
    base = _reset_peak()
    data = np.load(case_dir / "data.npy")
    angles = np.load(case_dir / "angles.npy")
    _, ny, nx = data.shape
    if slices:
        y0 = ny // 2 - slices // 2
        data = np.ascontiguousarray(data[:, y0:y0 + slices])
    shape = (nx, data.shape[1], nx)
    t0 = time.perf_counter()
    if engine == "torch":
        proj = Projector(shape, angles)
        gen = (wbp_iter(proj, data) if method == "wbp"
               else sirt_iter(proj, data, iterations, preview_every=0))
        vol = run(gen, show=False).numpy()
    else:
        job = backends.ExternalJob(data, angles, shape, method=method, iterations=iterations,
                                   use_cuda=False, n_workers=threads)
        vol, _ = run(backends.astra_reconstruct_iter(job), show=False)
    seconds = time.perf_counter() - t0
    peak = _peak_mb() - base
    np.save(case_dir / f"result_{engine}_{method}.npy", vol.astype(np.float32))
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "slices": data.shape[1]}))


# ---------------------------------------------------------------------------- parent
def make_case(name: str, size: int, workdir: Path) -> Path:
    from napari_tiltgen.simulate.phantoms import project_spheres, random_spheres, voxelize_spheres

    lo, hi, step = CASES[name]["angles"]
    angles = np.arange(lo, hi + step / 2, step)
    d = workdir / f"case_{name}_{size}_{angles.size}"
    if (d / "truth.npy").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spheres = random_spheres(size, n_spheres=12, seed=0)
    np.save(d / "data.npy", project_spheres(spheres, angles, (size, size)))
    np.save(d / "angles.npy", angles)
    np.save(d / "truth.npy", voxelize_spheres(spheres, (size, size, size)))
    print(f"[bench] made phantom {name} ({size}^3, {angles.size} tilts) in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return d


def run_worker(case_dir: Path, engine: str, method: str, iterations: int, threads: int,
               slices: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(case_dir), engine, method, str(iterations),
           str(threads), str(slices or 0)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{engine} {method} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def quality(truth: np.ndarray, vol: np.ndarray) -> tuple[float, float]:
    try:
        from napari_tiltgen.evaluate.metrics import nrmse, ssim
    except ImportError:  # metrics module not there yet
        from skimage.metrics import structural_similarity

        def nrmse(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.linalg.norm(b - a) / np.linalg.norm(a))

        def ssim(a: np.ndarray, b: np.ndarray) -> float:
            return float(structural_similarity(a, b, data_range=float(a.max() - a.min()),
                                               gaussian_weights=True, sigma=1.5))
    return nrmse(truth, vol), ssim(truth, vol)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="a,b", help="comma-separated cases (a, b)")
    ap.add_argument("--iterations", type=int, default=100, help="SIRT iterations (both engines)")
    ap.add_argument("--size-a", type=int, default=256, help="edge of case a, pixels")
    ap.add_argument("--size-b", type=int, default=150, help="edge of case b, pixels")
    ap.add_argument("--quick", action="store_true", help="sizes 96 and 64, 20 iterations")
    ap.add_argument("--threads", type=int, default=2, help="torch threads / ASTRA workers")
    ap.add_argument("--astra-slices", type=int, default=0,
                    help="run ASTRA SIRT on this many central slices and extrapolate the time")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tiltgen-bench"),
                    help="where phantoms and results are cached")
    ap.add_argument("--worker", nargs=6, metavar="X", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        c, e, m, it, th, sl = args.worker
        worker(Path(c), e, m, int(it), int(th), int(sl) or None)
        return 0
    if args.quick:
        args.size_a, args.size_b, args.iterations = 96, 64, 20
    sizes = {"a": args.size_a, "b": args.size_b}
    workdir = Path(args.workdir)
    rows = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        d = make_case(name, sizes[name], workdir)
        truth = np.load(d / "truth.npy")
        n_t, ny, nx = np.load(d / "data.npy", mmap_mode="r").shape
        base_mb = (truth.nbytes + n_t * ny * nx * 4) / 2**20
        for engine, method in (("torch", "sirt"), ("astra", "sirt"), ("torch", "wbp"),
                               ("astra", "wbp")):
            subset = args.astra_slices if engine == "astra" and method == "sirt" else 0
            print(f"[bench] case {name}: {engine} {method} ...", file=sys.stderr, flush=True)
            res = run_worker(d, engine, method, args.iterations, args.threads, subset or None)
            vol = np.load(d / f"result_{engine}_{method}.npy")
            note, same_slices = "", None
            if subset and subset < ny:
                y0 = ny // 2 - subset // 2
                ref_vol = np.load(d / "result_torch_sirt.npy")[:, y0:y0 + subset]
                e, s = quality(truth[:, y0:y0 + subset], vol)
                e_t, _ = quality(truth[:, y0:y0 + subset], ref_vol)
                res["seconds"] *= ny / subset
                note = (f"time extrapolated from {subset}/{ny} slices; quality on those slices "
                        f"(torch there: NRMSE {e_t:.4f})")
                mem = float("nan")
                same_slices = e_t
            else:
                e, s = quality(truth, vol)
                mem = res["peak_mb"]
            its = args.iterations if method == "sirt" else 1
            rows.append({"case": name, "label": f"{name}: {n_t} tilts x {nx}^2 -> {nx}^3",
                "engine": engine, "method": method, "its": its,
                "seconds": res["seconds"], "mem": mem, "ratio": mem / base_mb,
                "nrmse": e, "ssim": s, "note": note, "torch_nrmse_same_slices": same_slices})
    print_table(rows, args)
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nReconstruction benchmark ({args.threads} threads/workers, {os.cpu_count()} CPUs; "
          f"SIRT {args.iterations} iterations)\n")
    head = ("| case | engine | method | its | wall s | s/it | peak MB | x(vol+data) | NRMSE | "
            "SSIM | note |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        mem = "n/a" if np.isnan(r["mem"]) else f"{r['mem']:.0f}"
        ratio = "n/a" if np.isnan(r["ratio"]) else f"{r['ratio']:.2f}"
        print(f"| {r['label']} | {r['engine']} | {r['method']} | {r['its']} | "
              f"{r['seconds']:.1f} | {r['seconds'] / r['its']:.3f} | {mem} | {ratio} | "
              f"{r['nrmse']:.4f} | {r['ssim']:.4f} | {r['note']} |")
    print()
    for case in dict.fromkeys(r["case"] for r in rows):
        by = {(r["engine"], r["method"]): r for r in rows if r["case"] == case}
        t, a = by.get(("torch", "sirt")), by.get(("astra", "sirt"))
        if t and a:
            # compare quality on the same voxels: ASTRA may have run on central slices only
            t_e = a["torch_nrmse_same_slices"] or t["nrmse"]
            print(f"case {case}: torch/ASTRA SIRT wall time {t['seconds'] / a['seconds']:.3f} "
                  f"(target <= 0.5); NRMSE torch {t_e:.4f} vs ASTRA {a['nrmse']:.4f} on the same "
                  f"slices (difference {100 * (t_e - a['nrmse']) / a['nrmse']:+.2f} %); torch "
                  f"peak memory {t['ratio']:.2f} x (volume + data) (target <= 3)")


if __name__ == "__main__":
    sys.exit(main())
