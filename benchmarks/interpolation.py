"""Inference speed of tilt-frame interpolation on 512 x 512 frames (shipped model).

Run::

    python benchmarks/interpolation.py [--threads 2] [--size 512] [--repeats 5] [--device cpu]

Prints one table: seconds per new frame for

* ``pretrained, full resolution`` (``scale=1``: the network runs on the 512 x 512 frames), for
  one frame per pair (both frames encoded: the worst case) and per frame when 3 frames are
  inserted per pair (the encoder's cost shared);
* ``pretrained, auto scale`` on a frame whose object fills the field (the network estimates the
  motion on a binned copy and warps the full-resolution frames: what ``interpolate_series`` does
  by default for objects larger than the training clusters);
* ``linear`` for reference.

Timings are medians over ``--repeats`` runs after one warm-up, as wall-clock seconds and as CPU
seconds of this process (all threads). On a shared, overloaded CPU the wall time mostly measures
the other jobs; the CPU time is the cost of the work itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _frames(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of a blob-and-atoms pattern that moves by a few pixels (tilt-like motion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.zeros((size, size), np.float32)
    for _ in range(400):
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.006 * size) ** 2))
    shifted = np.roll(img, max(1, size // 128), axis=1)
    return img, shifted


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds (all threads of this process) of ``fn()``."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    from napari_tiltgen.nets.interpolation.frames import (
        CONTEXT_WEIGHTS,
        linear_frames,
        load_pretrained,
        model_frames,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--size", type=int, default=512, help="frame edge, pixels (default 512)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, info = load_pretrained(device=args.device)
    f0, f1 = _frames(args.size)
    n_params = sum(t.numel() for t in model.parameters())
    rows = [
        ("pretrained, full resolution, 1 frame/pair",
         _time(lambda: model_frames(model, f0, f1, [0.5], 6.0, 1, args.device, False),
               args.repeats)),
        ("pretrained, full resolution, 3 frames/pair (per frame)",
         tuple(v / 3 for v in _time(
             lambda: model_frames(model, f0, f1, [0.25, 0.5, 0.75], 6.0, 1, args.device, False),
             args.repeats))),
        ("pretrained, auto scale (8x binned flow), 1 frame/pair",
         _time(lambda: model_frames(model, f0, f1, [0.5], 6.0, 8, args.device, False),
               args.repeats)),
        ("symmetric (default: 8 predictions averaged), full res.",
         _time(lambda: model_frames(model, f0, f1, [0.5], 6.0, 1, args.device, True),
               args.repeats)),
        ("symmetric (default: 8 predictions averaged), 8x binned",
         _time(lambda: model_frames(model, f0, f1, [0.5], 6.0, 8, args.device, True),
               args.repeats)),
        ("linear, 1 frame/pair",
         _time(lambda: linear_frames(f0, f1, [0.5]), args.repeats)),
    ]
    if CONTEXT_WEIGHTS.is_file():
        ctx, _ = load_pretrained("context", args.device)
        fa, fb = np.roll(f0, -2, axis=1), np.roll(f1, 2, axis=1)
        rows[-1:-1] = [
            ("four-frame (context) network, full res., 1 prediction",
             _time(lambda: model_frames(ctx, f0, f1, [0.5], 6.0, 1, args.device, False,
                                        (fa, fb)), args.repeats)),
            ("four-frame (context) network, symmetric, full res.",
             _time(lambda: model_frames(ctx, f0, f1, [0.5], 6.0, 1, args.device, True,
                                        (fa, fb)), args.repeats)),
            ("four-frame (context) network, symmetric, 8x binned",
             _time(lambda: model_frames(ctx, f0, f1, [0.5], 6.0, 8, args.device, True,
                                        (fa, fb)), args.repeats)),
        ]
    print(f"tilt-frame interpolation, {args.size} x {args.size} frames, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, model {n_params} parameters "
          f"(trained {info.get('training', {}).get('step', '?')} steps)")
    print(f"{'case':58s} {'wall s/frame':>13s} {'CPU s/frame':>12s}")
    for name, (wall, cpu) in rows:
        print(f"{name:58s} {wall:13.3f} {cpu:12.3f}")
    print("CPU s = CPU time of all threads; on an idle machine with N threads, wall is about "
          "CPU / N at best.")


if __name__ == "__main__":
    main()
