"""Pretrained vs linear interpolation on noisy frames of the held-out test set.

Run (after generating ``test64`` with the command in the model card)::

    python benchmarks/interpolation_noise.py test64 [--sigmas 0,0.02,0.05] [--gaps 4,8,12]

Gaussian noise of ``sigma`` x the stack's range is added to every frame; the kept (noisy)
frames feed both methods; predictions are scored against the clean hidden frames (each scaled
by its true range, as in ``tiltgen eval-interpolation``). Every other test stack (with the
default 16 stacks: 4 of the 8 clusters, both optics presets) and every third frame pair are used
(a quick check, 20 s, not the full benchmark). Prints one table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from napari_tiltgen.nets.interpolation.data import load_frame_bank
    from napari_tiltgen.nets.interpolation.evaluate import frame_metrics, sparse_pairs
    from napari_tiltgen.nets.interpolation.frames import load_pretrained, model_frames

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="data set with a test split (tiltgen simulate-dataset)")
    p.add_argument("--sigmas", default="0,0.02,0.05", help="noise levels, fraction of range")
    p.add_argument("--gaps", default="4,8,12", help="gaps, degrees")
    p.add_argument("--max-series", type=int, default=16, help="test stacks read")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, _ = load_pretrained(None, "cpu")
    bank = load_frame_bank([a.data], "test", max_series=a.max_series)
    rng = np.random.default_rng(0)
    print("| noise (x range) | gap (deg) | frames | linear PSNR | pretrained PSNR | gain (dB) |")
    print("|---|---|---|---|---|---|")
    for sigma in (float(v) for v in a.sigmas.split(",")):
        for gap in (int(v) for v in a.gaps.split(",")):
            lin_p, net_p = [], []
            for s in range(0, len(bank), 2):
                clean = bank.stacks[s]
                noisy = clean + rng.normal(0.0, sigma * float(np.ptp(clean)),
                                           clean.shape).astype(np.float32)
                kept, pairs, _ = sparse_pairs(clean.shape[0], gap)
                for i0, i1, ts in pairs[::3]:
                    f0, f1 = noisy[kept[i0]], noisy[kept[i1]]
                    truth = np.stack([clean[kept[i0] + round(t * gap)] for t in ts])
                    lin = np.stack([(1 - t) * f0 + t * f1 for t in ts])
                    lin_p += frame_metrics(truth, lin)["psnr"].tolist()
                    net_p += frame_metrics(truth, model_frames(model, f0, f1, ts, gap))[
                        "psnr"].tolist()
            gain = np.mean(net_p) - np.mean(lin_p)
            print(f"| {sigma:g} | {gap} | {len(lin_p)} | {np.mean(lin_p):.2f} | "
                  f"{np.mean(net_p):.2f} | {gain:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
