"""Validation PSNR of inpainting weights on a larger training-family set than the trainer's.

The trainer picks its checkpoint on 24 slices (``TrainConfig.val_size``), whose mean moves by
about a dB between steps. This scores any number of weight files on ``--val-size`` slices drawn
the same way (training families only, realistic degradations, wedges spread over 20-90
degrees, the validation seed stream: never the training bank, never the held-out families),
with the PSNR of the error's part in the missing wedge (what the data-consistency step cannot
correct; ``train.validation_scores``):

    OMP_NUM_THREADS=1 python benchmarks/inpainting_validation.py --val-size 192 A.safetensors B.safetensors

Measured 2 Dec 2026 (models/inpainting.md): stage 3 25.57 dB, stage 4 28.25, stage 5 28.49.
"""

from __future__ import annotations

import argparse

import torch

from napari_tiltgen.nets.inpainting import api
from napari_tiltgen.nets.inpainting import train as T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", help="inpainting .safetensors files")
    ap.add_argument("--val-size", type=int, default=192, help="slices (default 192)")
    ap.add_argument("--size", type=int, default=96, help="slice edge, px (default 96)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = T.TrainConfig(size=args.size, val_size=args.val_size, sirt_iterations=20,
                        source_weights={"family": 0.85, "phantom": 0.15})
    val = T.validation_set(cfg)
    print("| weights | validation PSNR (dB) | PSNR of the missing-wedge part (dB) |\n|---|---|---|")
    for w in args.weights:
        model, info = api.load_pretrained(w, "cpu")
        if int(info["sirt_iterations"]) != cfg.sirt_iterations:
            raise SystemExit(f"{w}: SIRT input of {info['sirt_iterations']} iterations, not 20")
        s = T.validation_scores(model, val, torch.device("cpu"))
        print(f"| {w} | {s['val_psnr']:.2f} | {s['val_wedge_psnr']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
