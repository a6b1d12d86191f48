"""What the hard data-consistency bound costs the inpainting output, and which SIRT it is.

For every cached case of ``benchmarks/inpainting_transfer.py`` (run it first with ``--cache C``:
held-out object families, realistic noise, jitter, background), and each reference SIRT-N
(``--references``, default 20,30,50,100; the product's default is 100, as ``tiltgen
reconstruct``'s): the NRMSE of SIRT-N, of the default output (the volume nearest the network's
that reprojects no worse than SIRT-N; ``tiltgen inpaint --reference-iterations N``) and of the
same step started from the **true object** (the floor of the bound: what even a perfect network
would end at). Also the true object's own reprojection error at the measured angles.

    OMP_NUM_THREADS=1 python benchmarks/inpainting_bound.py --cache C [--weights W]

Measured 2 Dec 2026: see models/inpainting.md ("What the bound costs").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inpainting_transfer as B  # the benchmark's cases and metrics

from napari_tiltgen.core.progress import run
from napari_tiltgen.nets.inpainting import api, consistency
from napari_tiltgen.recon.iterative import sirt_iter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="inpainting_transfer.py's --cache folder")
    ap.add_argument("--weights", help="inpainting weights (default: the packaged model)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--n-per-family", type=int, default=2)
    ap.add_argument("--references", default="20,30,50,100",
                    help="SIRT iterations of the reference the output must match")
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, info = api.load_pretrained(args.weights, "cpu")
    chans, n_input = list(info["in_channels"]), int(info["sirt_iterations"])
    default = api.REFERENCE_SIRT_ITERATIONS  # the product's reference, always measured
    refs = sorted({int(n) for n in args.references.split(",")} | {default})
    if refs[0] < n_input:
        raise SystemExit(f"references start at the SIRT input's {n_input} iterations")
    wedges = [float(w) for w in args.wedges.split(",")]
    out, t0 = [], time.perf_counter()
    for case in B.cached_cases(Path(args.cache), args.size, args.rows, wedges,
                               args.n_per_family):
        proj, b, recs, truth = case["proj"], case["b"], case["recs"], case["truth"]
        net = run(api.network_volume(model, recs, chans, case["wedge"], 8, "cpu"), show=False)
        true_vol = torch.from_numpy(truth).float()
        row = {"family": case["family"], "k": case["k"], "wedge": case["wedge"],
               "net": B.nrmse(truth, net.numpy()),
               "reprojection_truth": consistency.reprojection_error(proj, b, true_vol)}
        x, done = recs["sirt"].clone(), n_input  # SIRT-N continued from the SIRT input
        for n in refs:
            if n > done:
                x = run(sirt_iter(proj, b, n - done, positivity=True, x0=x, preview_every=0),
                        show=False)
                done = n
            bound = consistency.reprojection_error(proj, b, x)
            final = run(consistency.closest_consistent(proj, b, net, bound), show=False)[0]
            floor = run(consistency.closest_consistent(proj, b, true_vol, bound), show=False)[0]
            row[f"sirt{n}"] = B.nrmse(truth, x.numpy())
            row[f"final{n}"] = B.nrmse(truth, final.numpy())
            row[f"floor{n}"] = B.nrmse(truth, floor.numpy())
            row[f"reprojection_sirt{n}"] = bound
        out.append(row)
        print(f"[{time.perf_counter() - t0:5.0f} s] {case['family']} #{case['k']} "
              f"{case['wedge']:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                  if isinstance(v, float)), flush=True)
    print("\nNRMSE means over the objects; x = ratio to the reference SIRT-N's NRMSE "
          "(and to SIRT-100's)")
    print(f"\n| wedge | reference | SIRT-N | SIRT-N / SIRT-{default} | network alone | **output** "
          f"| output / SIRT-N | output / SIRT-{default} | from the true object / SIRT-N "
          "| reprojection SIRT-N | reprojection of the true object |")
    print("|---" * 11 + "|")
    for wedge in wedges:
        cs = [c for c in out if c["wedge"] == wedge]

        def m(key: str, cs: list = cs) -> float:
            return float(np.mean([c[key] for c in cs]))

        for n in refs:
            s = m(f"sirt{n}")
            print(f"| {wedge:g} | SIRT-{n} | {s:.3f} | {s / m(f'sirt{default}'):.3f} | "
                  f"{m('net') / s:.3f} x | **{m(f'final{n}'):.3f}** | "
                  f"{m(f'final{n}') / s:.3f} x | {m(f'final{n}') / m(f'sirt{default}'):.3f} x | "
                  f"{m(f'floor{n}') / s:.3f} x | {m(f'reprojection_sirt{n}'):.4f} | "
                  f"{m('reprojection_truth'):.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
