"""Candidate inpainting weights side by side on held-out families, as the product runs them.

For each held-out family, object, wedge and frame size, the degraded and prepared series of
``inpainting_scale.py`` (realistic noise, jitter, offset, ramp, blur; ``--rows`` central rows)
is reconstructed once (WBP / SIRT-20 inputs, SIRT-100 reference); then every ``--weights`` file
runs on the same inputs at the product's default network scale
(:func:`napari_tiltgen.nets.inpainting.scales.auto_factor`) and goes through the product's hard
data-consistency step (``consistency="auto"``). Printed per case and as means per frame size,
family and wedge: the final NRMSE as a multiple of SIRT-100's (target <= 0.8 x), the network
alone in brackets. ``--baseline-json`` adds the rows of an earlier run of the same cases (the
same seeds; checked by SIRT-100's NRMSE) so a new candidate can be measured against weights
run before.

    OMP_NUM_THREADS=1 python benchmarks/inpainting_weights.py --sizes 128 --objects 0-5 \\
        --weights stage7.safetensors,stage8.safetensors --json w128.json
    OMP_NUM_THREADS=1 python benchmarks/inpainting_weights.py --sizes 128 --objects 0-11 \\
        --weights packaged --symmetric both --json flips128.json

Measured 3 Dec 2026 (session 17): models/inpainting.md, "Stage 8".
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
import inpainting_transfer as B  # the benchmark's cases and metric
from inpainting_scale import case_inputs, make_prepared, score

from napari_tiltgen.core.progress import run
from napari_tiltgen.nets.inpainting import api, scales
from napari_tiltgen.simulate import families as F


def _objects(text: str) -> list[int]:
    """``0,1`` or ``0-5``."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True,
                    help="comma-separated weight files ('packaged': the shipped model)")
    ap.add_argument("--sizes", default="128")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--objects", default="0,1", help="object numbers, e.g. 0,1 or 0-5")
    ap.add_argument("--families", default=",".join(F.HELDOUT_FAMILIES))
    ap.add_argument("--symmetric", choices=["on", "off", "both"], default="on",
                    help="the network averaged over its four mirrors (on, the product's "
                    "default since 4 Dec 2026), one pass (off; column 'NAME single'), or both")
    ap.add_argument("--baseline-json", help="rows of an earlier run of the same cases")
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [w.strip() for w in args.weights.split(",") if w.strip()]
    models = {}
    passes = {"on": [True], "off": [False], "both": [True, False]}[args.symmetric]
    for n in names:
        model, info = api.load_pretrained(None if n == "packaged" else n, "cpu")
        for sym in passes:
            models[Path(n).stem + ("" if sym else " single")] = (
                model, list(info["in_channels"]), int(info["sirt_iterations"]), sym)
    base = {}
    if args.baseline_json:
        for r in json.loads(Path(args.baseline_json).read_text()):
            base[(r["family"], r["k"], r["wedge"], r["size"])] = r
    rows, t0 = [], time.perf_counter()
    for size in [int(s) for s in args.sizes.split(",")]:
        f = scales.auto_factor((size, size))
        for wedge in [float(w) for w in args.wedges.split(",")]:
            for fam in args.families.split(","):
                fi = F.HELDOUT_FAMILIES.index(fam)
                for k in _objects(args.objects):
                    truth, ts = make_prepared(fam, size, size, args.rows, wedge,
                                              [B.HELDOUT_SEED, 500 + fi, k, int(wedge)])
                    row = {"family": fam, "k": k, "wedge": wedge, "size": size, "factor": f,
                           "net": {}, "final": {}}
                    cache: dict[tuple, dict] = {}
                    for name, (model, chans, n_in, sym) in models.items():
                        key = (tuple(chans), n_in)
                        if key not in cache:
                            cache[key] = case_inputs(ts, truth, chans, n_in)
                        case = cache[key]
                        row["sirt"] = case["e_sirt"]
                        net, _ = run(scales.network_at_scales(
                            lambda r, w=wedge, m=model, c=chans, s=sym: api.network_volume(
                                m, r, c, w, symmetric=s), case["recs"], chans, scale=f),
                            show=False)
                        row["net"][name], row["final"][name] = score(case, net)
                    old = base.get((fam, k, wedge, size))
                    if old is not None:
                        if abs(old["sirt"] - row["sirt"]) > 1e-4:
                            raise SystemExit(f"baseline case {fam} #{k} {size} px {wedge:g} deg "
                                             f"differs (SIRT {old['sirt']:.4f} vs "
                                             f"{row['sirt']:.4f}): not the same cases")
                        for part in ("net", "final"):
                            for n_, v in old[part].items():
                                row[part].setdefault(n_, v)
                    rows.append(row)
                    print(f"[{time.perf_counter() - t0:5.0f} s] {fam} #{k} {size} px "
                          f"{wedge:g} deg x{f}: SIRT-100 {row['sirt']:.3f}; " + "; ".join(
                              f"{n_}: {row['final'][n_]:.3f} ({row['net'][n_]:.3f})"
                              for n_ in row["final"]), flush=True)
    cols = list(rows[0]["final"]) if rows else []
    print("\nfinal NRMSE / SIRT-100's, means (network alone in brackets)\n")
    print("| px | wedge | family | cases | " + " | ".join(cols) + " |\n|---|---|---|---|"
          + "---|" * len(cols))
    for size in sorted({r["size"] for r in rows}):
        for wedge in sorted({r["wedge"] for r in rows}):
            sel = [r for r in rows if r["size"] == size and r["wedge"] == wedge]
            for fam in [*dict.fromkeys(r["family"] for r in sel), "**all**"]:
                cs = sel if fam == "**all**" else [r for r in sel if r["family"] == fam]
                if not cs:
                    continue
                print(f"| {size} | {wedge:g} | {fam} | {len(cs)} | " + " | ".join(
                    f"{np.mean([r['final'][c] for r in cs]):.3f} "
                    f"({np.mean([r['net'][c] for r in cs]):.3f})" for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
