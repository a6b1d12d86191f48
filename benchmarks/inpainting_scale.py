"""Inpainting on slices larger than the network's training size: full size against binned.

For each held-out family, object, wedge and frame size (``--sizes``), the degraded series of
``inpainting_transfer.py`` (realistic noise, jitter, offset, ramp, blur) is made with all its
rows, prepared as every command prepares a series (vacuum level, tilt axis given as 0:
:func:`napari_tiltgen.align.prepare.prepare`), and its ``--rows`` central rows kept. Then, from
the same WBP / SIRT-20 inputs, the network is run at each binning of ``--factors``
(:func:`napari_tiltgen.nets.inpainting.scales.network_at_scales`) and each result goes through
the product's hard data-consistency step (``consistency="auto"``). Printed per case: NRMSE of
the network alone and of the final volume as a multiple of SIRT-100's, for every factor, and
which factor the default (``network_scale="auto"``) uses; then the means per frame size.

``--noise clean`` makes the same objects noise-free (the data-consistency step then fits them
to convergence). ``--inner N`` draws each object at ``N`` px in the middle of the ``--sizes`` field (a small
object in a large frame).

    OMP_NUM_THREADS=1 python benchmarks/inpainting_scale.py --sizes 128,192,256 \\
        --objects 0,1 --wedges 60,80

Measured 3 Dec 2026 (session 16): models/inpainting.md, "Slice size".
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

from napari_tiltgen.align.prepare import prepare
from napari_tiltgen.core.progress import run
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.inpainting import api, consistency, scales
from napari_tiltgen.nets.inpainting.data import wedge_angles
from napari_tiltgen.simulate import families as F
from napari_tiltgen.simulate.degrade import DegradeParams, degrade, sample_params


def make_prepared(family: str, size: int, inner: int, rows: int, wedge: float, seed: list[int],
                  clean: bool = False) -> tuple[np.ndarray, TiltSeries]:
    """Truth rows and the prepared series rows of one held-out case (``inner < size``: the
    object drawn at ``inner`` px, centred in a ``size`` field; ``clean``: no noise, jitter,
    offset or ramp)."""
    if inner >= size:
        truth, ts = B.make_case(family, size, size, wedge, 2.0, seed,
                                adjust=(lambda _p: DegradeParams()) if clean else None)
    else:
        rng = np.random.default_rng(seed)
        obj, info = F.make_sample(family, inner, rng)
        truth = np.zeros((size,) * 3, np.float32)
        o = (size - inner) // 2
        truth[o:o + inner, o:o + inner, o:o + inner] = obj
        angles = wedge_angles(wedge, 2.0)
        frames = F.project(truth, angles, info["pixel_size_A"], 0.0, float(rng.uniform(0.3, 1.2)))
        params = sample_params(rng, "realistic")
        ts = TiltSeries(degrade(frames, rng, DegradeParams() if clean else params),
                        tilt_angles=angles, pixel_size_A=float(info["pixel_size_A"]))
    prepared, _ = prepare(ts, tilt_axis=0.0)
    y0 = size // 2 - rows // 2
    return (np.ascontiguousarray(truth[:, y0:y0 + rows]),
            TiltSeries(np.ascontiguousarray(prepared.data[:, y0:y0 + rows]),
                       tilt_angles=prepared.tilt_angles, pixel_size_A=prepared.pixel_size_A))


def case_inputs(ts: TiltSeries, truth: np.ndarray, chans: list[str], n_in: int
                ) -> dict:
    """Everything the network and the consistency step need for one prepared case, reconstructed
    once: the projector ``proj`` and frames ``b``, the input reconstructions ``recs``, SIRT-100
    (``ref``), its reprojection error ``r_sirt`` and NRMSE ``e_sirt``, and the ``truth``."""
    proj, b = api._geometry(ts, ts.tilt_angles, torch.device("cpu"), None)
    recs = dict(run(api._inputs(proj, b, chans, n_in, 100), show=False))
    ref = recs.pop("ref")
    return {"proj": proj, "b": b, "recs": recs, "ref": ref, "truth": truth,
            "r_sirt": consistency.reprojection_error(proj, b, ref),
            "e_sirt": B.nrmse(truth, ref.numpy())}


def score(case: dict, net: torch.Tensor) -> tuple[float, float]:
    """NRMSE of the network's volume ``net`` and of the product's final volume (hard data
    consistency, ``consistency="auto"``) as multiples of SIRT-100's."""
    fin, _ = run(consistency.enforce_consistency(case["proj"], case["b"], net, case["ref"],
                                                 sirt_error=case["r_sirt"], method="auto"),
                 show=False)
    return (B.nrmse(case["truth"], net.numpy()) / case["e_sirt"],
            B.nrmse(case["truth"], fin.numpy()) / case["e_sirt"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,192,256")
    ap.add_argument("--inner", type=int, default=0, help="object size in px (0: the field)")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--noise", choices=("realistic", "clean"), default="realistic",
                    help="clean: the same objects, noise-, jitter- and background-free")
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--objects", default="0,1")
    ap.add_argument("--families", default=",".join(F.HELDOUT_FAMILIES))
    ap.add_argument("--factors", default="1,2,4", help="binnings compared (1: full size)")
    ap.add_argument("--weights", help="inpainting weights (default: the packaged model)")
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, info = api.load_pretrained(args.weights, "cpu")
    chans, n_in = list(info["in_channels"]), int(info["sirt_iterations"])
    rows, t0 = [], time.perf_counter()
    for size in [int(s) for s in args.sizes.split(",")]:
        inner = args.inner or size
        auto = scales.auto_factor((size, size))
        factors = sorted({f for f in (int(v) for v in args.factors.split(","))
                          if size // f >= 32} | {auto})
        for wedge in [float(w) for w in args.wedges.split(",")]:
            for fam in args.families.split(","):
                fi = F.HELDOUT_FAMILIES.index(fam)
                for k in [int(v) for v in args.objects.split(",")]:
                    truth, ts = make_prepared(fam, size, inner, args.rows, wedge,
                                              [B.HELDOUT_SEED, 500 + fi, k, int(wedge)],
                                              args.noise == "clean")
                    case = case_inputs(ts, truth, chans, n_in)
                    e_sirt = case["e_sirt"]
                    row = {"family": fam, "k": k, "wedge": wedge, "size": size, "inner": inner,
                           "sirt": e_sirt, "auto_factor": auto, "net": {}, "final": {}}
                    for f in factors:
                        net, _ = run(scales.network_at_scales(
                            lambda r, w=wedge: api.network_volume(model, r, chans, w),
                            case["recs"], chans, scale=f), show=False)
                        row["net"][f], row["final"][f] = score(case, net)
                    rows.append(row)
                    print(f"[{time.perf_counter() - t0:5.0f} s] {fam} #{k} {size} px "
                          f"(object {inner}) {wedge:g} deg: SIRT-100 {e_sirt:.3f}; " + "; ".join(
                              f"x{f}: net {row['net'][f]:.3f} final {row['final'][f]:.3f}"
                              for f in factors) + f"; default x{auto}", flush=True)
    print("\nfinal NRMSE / SIRT-100's, mean over the cases (network alone in brackets)\n")
    fs = sorted({f for r in rows for f in r["final"]})
    print("| frame px | object px | cases | " + " | ".join(f"x{f}" for f in fs)
          + " | **default** |\n|---|---|---|" + "---|" * (len(fs) + 1))
    for size in sorted({r["size"] for r in rows}):
        cs = [r for r in rows if r["size"] == size]
        cells = []
        for f in fs:
            have = [r for r in cs if f in r["final"]]
            cells.append(f"{np.mean([r['final'][f] for r in have]):.3f} "
                         f"({np.mean([r['net'][f] for r in have]):.3f})"
                         if len(have) == len(cs) else "")
        d = np.mean([r["final"][r["auto_factor"]] for r in cs])
        print(f"| {size} | {cs[0]['inner']} | {len(cs)} | " + " | ".join(cells)
              + f" | **{d:.3f}** (x{cs[0]['auto_factor']}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
