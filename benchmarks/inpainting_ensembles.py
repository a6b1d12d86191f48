"""Does a consistent ensemble beat the inpainting default on held-out families?

For every cached case of ``benchmarks/inpainting_transfer.py`` (run it first with ``--cache C``:
WBP, SIRT-100 and TV volumes of held-out objects, realistic noise), compare with SIRT's NRMSE:
the network alone, the default (the volume nearest the network's that reprojects no worse than
SIRT-100), the same nearest to TV's volume, the mean of the two (it meets the bound too: the
reprojection error is convex) and the nearest to the mean of network and TV.

    OMP_NUM_THREADS=1 python benchmarks/inpainting_ensembles.py --cache C --json out.json

Measured 2 Dec 2026 (models/inpainting.md): none beats the default.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="inpainting_transfer.py's --cache folder")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--n-per-family", type=int, default=2)
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache_dir = Path(args.cache)
    model, info = api.load_pretrained(None, "cpu")
    chans = list(info["in_channels"])
    dev = torch.device("cpu")
    out, t0 = [], time.perf_counter()
    wedges = [float(w) for w in args.wedges.split(",")]
    for case in B.cached_cases(cache_dir, args.size, args.rows, wedges, args.n_per_family):
        fam, k, wedge, truth = case["family"], case["k"], case["wedge"], case["truth"]
        proj, b, recs, tv = case["proj"], case["b"], case["recs"], case["tv"]
        bound = consistency.reprojection_error(proj, b, recs["ref"])
        net = run(api.network_volume(model, recs, chans, wedge, 8, dev), show=False)

        def nearest(x: torch.Tensor, proj=proj, b=b, bound=bound) -> torch.Tensor:
            return run(consistency.closest_consistent(proj, b, x, bound), show=False)[0]

        c_net, c_tv = nearest(net), nearest(tv)
        vols = {"sirt": recs["ref"], "tv": tv, "net": net, "default": c_net,
                "nearest to TV": c_tv, "mean of both": 0.5 * (c_net + c_tv),
                "nearest to (net+TV)/2": nearest(0.5 * (net + tv))}
        e = {n: B.nrmse(truth, v.numpy()) for n, v in vols.items()}
        rep = {n: consistency.reprojection_error(proj, b, v) / bound
               for n, v in vols.items()}
        out.append({"family": fam, "k": k, "wedge": wedge, "nrmse": e,
                    "reprojection_over_sirt": rep})
        print(f"[{time.perf_counter() - t0:5.0f} s] {fam} #{k} {wedge:g}: "
              + ", ".join(f"{n} {v / e['sirt']:.3f}" for n, v in e.items()), flush=True)
    print("\n| wedge | " + " | ".join(out[0]["nrmse"]) + " |")
    print("|---" * (1 + len(out[0]["nrmse"])) + "|")
    for wedge in wedges:
        cs = [c for c in out if c["wedge"] == wedge]
        ref = np.mean([c["nrmse"]["sirt"] for c in cs])
        print(f"| {wedge:g} | " + " | ".join(
            f"{np.mean([c['nrmse'][n] for c in cs]) / ref:.3f}" for n in cs[0]["nrmse"]) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
