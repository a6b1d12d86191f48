"""Scale-out benchmark: batch throughput, out-of-core peak memory, threads under load, ASTRA.

Parts (``--parts``, comma-separated; default all):

``batch``     N small series through ``run_batch`` on a LocalCluster of 1 and of 2 workers
              (series per minute; a fresh output folder each).
``memory``    ``tiltgen reconstruct`` WBP (and SIRT with ``--memory-sirt``) of int16 MRC stacks
              of ``--sizes`` (``NZxNYxNX`` volumes, e.g. 256x1024x1024 is the 1 GiB case:
              1024^2 frames, thickness 256), out of core with ``--budget`` GB and, for volumes up
              to ``--in-memory-max`` GiB, in memory; peak resident memory (ru_maxrss of a
              fresh child process, i.e. including Python and torch) and time.
``threads``   SIRT (torch) with 1, 2 and auto threads, and ASTRA CPU SIRT, each with and
              without another process busy on one core (a Python spin loop).

Prints Markdown tables (paste into docs/performance.md) with the machine's load before each
part. Run under ``nice`` on a shared machine and say so.

Examples
--------
Full run (idle machine, ~24 GB)::

    python benchmarks/scale.py --sizes 256x1024x1024,512x512x512,1024x1024x1024,512x2048x2048

Small run (a loaded machine)::

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/scale.py --sizes 64x128x128 \\
        --batch-size 24 --threads-size 64 --threads-iterations 10 --budget 0.05
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


# ---------------------------------------------------------------------------- helpers
def load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.1f} / {la[1]:.1f} on {os.cpu_count()} cores"


def make_stack(path: Path, n_tilts: int, ny: int, nx: int, seed: int = 0) -> None:
    """An int16 MRC tilt series (projections of random blobs + noise) written frame by frame."""
    import mrcfile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    blobs = [(rng.uniform(0.2, 0.8) * ny, rng.uniform(0.3, 0.7) * nx, rng.uniform(0.02, 0.06) * nx)
             for _ in range(6)]
    angles = np.linspace(-60, 60, n_tilts)
    with mrcfile.new_mmap(path, shape=(n_tilts, ny, nx), mrc_mode=1, overwrite=True) as mrc:
        for i, a in enumerate(angles):
            f = np.zeros((ny, nx), np.float32)
            c = np.cos(np.deg2rad(a))
            for y0, x0, r in blobs:
                x1 = nx / 2 + (x0 - nx / 2) * c
                f += np.exp(-((yy - y0) ** 2 + (xx - x1) ** 2) / (2 * r * r))
            mrc.data[i] = (1000 * f + rng.normal(0, 20, f.shape)).astype(np.int16)
        mrc.set_image_stack()
        mrc.voxel_size = 1.0
    path.with_suffix(".rawtlt").write_text("\n".join(f"{a:.2f}" for a in angles) + "\n")


def child(argv: list[str]) -> dict:
    """Run ``tiltgen`` in a fresh process; its peak resident memory and wall time."""
    code = ("import json,resource,sys,time;from napari_tiltgen.cli import main;t=time.time();"
            "rc=main(sys.argv[1:]);print('@@'+json.dumps({'rc':rc,'s':time.time()-t,"
            "'rss':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024}))")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       check=False)
    for line in p.stdout.splitlines():
        if line.startswith("@@"):
            out = json.loads(line[2:])
            out["err"] = p.stderr.strip().splitlines()[-1:] if out["rc"] else []
            return out
    return {"rc": p.returncode, "s": float("nan"), "rss": float("nan"),
            "err": p.stderr.strip().splitlines()[-2:]}


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


# ---------------------------------------------------------------------------- parts
def part_batch(args, tmp: Path) -> None:
    from napari_tiltgen.io.writers import write
    from napari_tiltgen.simulate.phantoms import sphere_phantom
    from napari_tiltgen.workflows import run_batch

    ins = []
    for i in range(args.batch_series):
        ts, _ = sphere_phantom(size=args.batch_size, tilt_step=3.0)
        p = tmp / f"batch{i}.mrc"
        write(ts, p)
        ins.append(p)
    print(f"\n### Batch throughput ({args.batch_series} series of {args.batch_size}^3, SIRT "
          f"{args.batch_iterations} iterations; {load()})\n")
    print("| workers | wall s (incl. cluster start) | series / min | done | failed |")
    print("|---|---|---|---|---|")
    for w in (1, 2):
        t = time.perf_counter()
        rep = run_batch(ins, tmp / f"batch_out_{w}", method="sirt", intensity="none",
                        iterations=args.batch_iterations, workers=w)
        s = time.perf_counter() - t
        print(f"| {w} | {s:.1f} | {60 * len(ins) / s:.2f} | {rep.counts['done']} | "
              f"{rep.counts['failed']} |", flush=True)


def part_memory(args, tmp: Path) -> None:
    print(f"\n### Out-of-core peak resident memory ({args.memory_tilts} int16 tilts; budget "
          f"{args.budget} GB; {load()})\n")
    print("| volume nz x ny x nx | volume GiB | input GiB | method | mode | peak resident GiB | "
          "s | rc |")
    print("|---|---|---|---|---|---|---|---|")
    methods = ["wbp"] + (["sirt"] if args.memory_sirt else [])
    for size in args.sizes.split(","):
        nz, ny, nx = (int(v) for v in size.lower().split("x"))
        stack = tmp / f"stack_{ny}x{nx}.mrc"
        if not stack.exists():
            make_stack(stack, args.memory_tilts, ny, nx)
        vol_b, in_b = 4.0 * nz * ny * nx, 2.0 * args.memory_tilts * ny * nx
        for m in methods:
            modes = [("out of core", ["--out-of-core", "yes", "--memory-budget",
                                       str(args.budget)])]
            if vol_b / 2**30 <= args.in_memory_max:
                modes.append(("in memory", ["--out-of-core", "no"]))
            modes.append(("default (auto, budget 70 % of free memory)", []))
            for label, extra in modes:
                out = tmp / f"v_{size}_{m}_{label[:2]}.mrc"
                r = child(["reconstruct", str(stack), "--out", str(out), "--method", m,
                           "--iterations", str(args.memory_iterations), "--thickness", str(nz),
                           "--tilt-axis", "0", "--intensity", "none", "--align", "no",
                           "--quiet", "--overwrite", *extra])
                print(f"| {nz}x{ny}x{nx} | {gib(vol_b)} | {gib(in_b)} | {m} | {label} | "
                      f"{gib(r['rss'])} | {r['s']:.1f} | {r['rc']}"
                      f"{' ' + ' '.join(r['err']) if r['err'] else ''} |", flush=True)
                out.unlink(missing_ok=True)


def _timed_recon(ts, backend: str, threads, iterations: int) -> float:
    from napari_tiltgen.recon.api import reconstruct

    t = time.perf_counter()
    reconstruct(ts, "sirt", iterations, backend=backend, device="cpu", n_threads=threads,
                preview_every=0, show=False)
    return time.perf_counter() - t


def part_threads(args, tmp: Path) -> None:
    from napari_tiltgen.core.devices import free_cpu_cores
    from napari_tiltgen.recon.api import reconstruct
    from napari_tiltgen.simulate.phantoms import sphere_phantom

    ts, _ = sphere_phantom(size=args.threads_size, tilt_step=2.0)
    reconstruct(ts, "sirt", 1, device="cpu", show=False)  # warm-up (imports, first build)
    try:
        import astra  # noqa: F401

        have_astra = True
    except ImportError:
        have_astra = False
    print(f"\n### SIRT threads under load ({ts.shape[0]} tilts, {args.threads_size}^3, "
          f"{args.threads_iterations} iterations; {load()})\n")
    print("| competing process | engine | threads | s | x ASTRA (same load) |")
    print("|---|---|---|---|---|")
    for busy in (False, True):
        spin = None
        if busy:
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            astra_s = (_timed_recon(ts, "astra", None, args.threads_iterations)
                       if have_astra else float("nan"))
            rows = [("torch", 1), ("torch", 2), ("torch", None)]
            for eng, th in rows:
                s = _timed_recon(ts, eng, th, args.threads_iterations)
                label = th if th else f"auto ({free_cpu_cores()} free)"
                print(f"| {'yes, 1 core' if busy else 'no'} | {eng} | {label} | {s:.2f} | "
                      f"{s / astra_s:.2f} |", flush=True)
            print(f"| {'yes, 1 core' if busy else 'no'} | astra CPU | (its own) | "
                  f"{astra_s:.2f} | 1.00 |", flush=True)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="batch,memory,threads")
    ap.add_argument("--sizes", default="256x1024x1024,512x512x512,1024x1024x1024,512x2048x2048",
                    help="volumes NZxNYxNX for the memory part (default: the 1 GiB WBP case, "
                    "512^3, 1024^3, 2048x2048x512)")
    ap.add_argument("--memory-tilts", type=int, default=61)
    ap.add_argument("--memory-sirt", action="store_true", help="also SIRT in the memory part")
    ap.add_argument("--memory-iterations", type=int, default=10)
    ap.add_argument("--budget", type=float, default=0.25, help="out-of-core budget, GB")
    ap.add_argument("--in-memory-max", type=float, default=4.0,
                    help="also run in memory for volumes up to this many GiB")
    ap.add_argument("--batch-series", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-iterations", type=int, default=50)
    ap.add_argument("--threads-size", type=int, default=128)
    ap.add_argument("--threads-iterations", type=int, default=50)
    ap.add_argument("--tmp", help="work folder (default: a temporary one, removed)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    print(f"# benchmarks/scale.py {' '.join(sys.argv[1:])}\n\n{time.strftime('%Y-%m-%d %H:%M')}"
          f" UTC; {load()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"nice {os.nice(0)}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        if "batch" in parts:
            part_batch(args, tmp)
        if "memory" in parts:
            part_memory(args, tmp)
        if "threads" in parts:
            part_threads(args, tmp)
    print(f"\nself peak resident {gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
          " GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
