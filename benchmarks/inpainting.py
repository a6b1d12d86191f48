"""Benchmark: missing-wedge inpainting vs WBP, SIRT and TV; inference time per slice.

Quality (the issue's benchmark) is :func:`napari_tiltgen.nets.inpainting.evaluate.evaluate`:
held-out phantom faces and held-out cluster slices (elements never seen in training), missing
wedges 40-80 degrees, PSNR / SSIM / NRMSE against the ground truth for WBP, SIRT, TV (weight tuned
per wedge on separate phantoms) and the pretrained model, plus the targets (held-out phantoms,
mean over the wedges): NRMSE <= 0.8 x TV's and PSNR >= SIRT + 3 dB.

Speed: the network alone on 256 x 256 slices (batch of 8, ``--threads`` CPU threads or the GPU;
one pass), and the whole pipeline from a tilt series of 16 slices of 256 x 256 (WBP + SIRT
inputs, the network averaged over its four mirrors as by default, then with and without the
data-consistency step; and with one network pass, ``symmetric=False``), per slice. Target: <= 2 s per 256 x 256 slice on 2 CPU cores.

Run (prints Markdown tables; ``--json`` also saves the numbers)::

    python benchmarks/inpainting.py                       # quality at the training size + speed
    python benchmarks/inpainting.py --only speed --threads 2
    python benchmarks/inpainting.py --device cuda --n-phantoms 64 --n-clusters 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.devices import flush_denormals
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.inpainting import api, consistency
from napari_tiltgen.nets.inpainting.data import phantom_face, wedge_angles
from napari_tiltgen.nets.inpainting.evaluate import EvalConfig, evaluate
from napari_tiltgen.physics.projector import Projector


def speed(size: int = 256, n_slices: int = 16, batch: int = 8, device: str = "cpu",
          wedge: float = 60.0, step_deg: float = 2.0) -> dict[str, Any]:
    """Seconds per ``size x size`` slice: the network alone, and series -> inpainted volume."""
    model, info = api.load_pretrained(None, "cpu")
    dev = torch.device(device)
    net = model.to(dev)
    x = torch.rand(batch, len(info["in_channels"]), size, size, device=dev)
    w = torch.full((batch,), wedge, device=dev)
    with torch.no_grad(), flush_denormals():  # as api.inpaint_slices does
        net(x[:1], w[:1])  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        reps = max(1, n_slices // batch)
        for _ in range(reps):
            net(x, w)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        net_s = (time.perf_counter() - t0) / (reps * batch)
        net_cpu = (time.process_time() - c0) / (reps * batch)
    rng = np.random.default_rng(0)
    truth = np.stack([phantom_face(size, rng) for _ in range(n_slices)], axis=1)
    angles = wedge_angles(wedge, step_deg)
    sino = Projector(truth.shape, angles).forward(torch.from_numpy(truth)).numpy()
    ts = TiltSeries(sino, tilt_angles=angles)
    pipe = {}
    for key, kw in ((0, {"refine_iterations": 0}),
                    (consistency.REFINE_ITERATIONS,
                     {"refine_iterations": consistency.REFINE_ITERATIONS}),
                    ("single", {"symmetric": False})):
        t0, c0 = time.perf_counter(), time.process_time()
        api.inpaint(ts, device=device, batch_size=batch, **kw)
        pipe[key] = ((time.perf_counter() - t0) / n_slices,
                     (time.process_time() - c0) / n_slices)
    return {"size": size, "device": device, "threads": torch.get_num_threads(),
            "network_s_per_slice": net_s, "network_cpu_s_per_slice": net_cpu,
            "pipeline_s_per_slice": pipe[consistency.REFINE_ITERATIONS][0],
            "pipeline_cpu_s_per_slice": pipe[consistency.REFINE_ITERATIONS][1],
            "pipeline_no_refine_s_per_slice": pipe[0][0],
            "pipeline_no_refine_cpu_s_per_slice": pipe[0][1],
            "pipeline_single_pass_s_per_slice": pipe["single"][0],
            "pipeline_single_pass_cpu_s_per_slice": pipe["single"][1],
            "refine_iterations": consistency.REFINE_ITERATIONS, "load_average": _load(),
            "n_tilts": int(angles.size), "sirt_iterations": info["sirt_iterations"]}


def _load() -> float | None:
    """1-minute load average (other processes compete for the cores), or None."""
    try:
        import os

        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=("quality", "speed"),
                   default=["quality", "speed"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    p.add_argument("--n-phantoms", type=int, default=16)
    p.add_argument("--n-clusters", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="quality slice size (default: model's)")
    p.add_argument("--speed-size", type=int, default=256)
    p.add_argument("--out", default=None, help="folder for the evaluation outputs")
    p.add_argument("--json", default=None, help="also save the numbers here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res: dict[str, Any] = {}
    if "quality" in args.only:
        out = args.out or tempfile.mkdtemp(prefix="inpainting-eval-")
        r = evaluate(EvalConfig(out_dir=out, n_phantoms=args.n_phantoms,
                                n_clusters=args.n_clusters, size=args.size, device=args.device,
                                command="python benchmarks/inpainting.py"), show=False)
        print(r["table"])
        print(f"\n(figures in {out})\n")
        res["quality"] = {k: r[k] for k in ("sets", "mean", "targets", "tv_weights")}
    if "speed" in args.only:
        s = speed(args.speed_size, device=args.device)
        print("| slice | device | threads | network wall / CPU (s/slice) | series -> volume, "
              "no refinement, wall / CPU | series -> volume, "
              f"{s['refine_iterations']} refinement iterations, wall / CPU | series -> volume, "
              "one network pass (--no-symmetric), wall / CPU | load |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {s['size']}x{s['size']} | {s['device']} | {s['threads']} | "
              f"{s['network_s_per_slice']:.3f} / {s['network_cpu_s_per_slice']:.3f} | "
              f"{s['pipeline_no_refine_s_per_slice']:.3f} / "
              f"{s['pipeline_no_refine_cpu_s_per_slice']:.3f} | "
              f"{s['pipeline_s_per_slice']:.3f} / {s['pipeline_cpu_s_per_slice']:.3f} | "
              f"{s['pipeline_single_pass_s_per_slice']:.3f} / "
              f"{s['pipeline_single_pass_cpu_s_per_slice']:.3f} | {s['load_average']:.1f} |")
        print("\n(CPU = process time summed over threads; wall time grows with the load from "
              "other processes on the same cores)")
        print(f"\n(series: {s['n_tilts']} tilts, WBP + SIRT-{s['sirt_iterations']} inputs; "
              "target <= 2 s per 256 x 256 slice on 2 CPU cores)")
        res["speed"] = s
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
