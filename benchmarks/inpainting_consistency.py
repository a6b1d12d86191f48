"""The data-consistency rules of inpainting, side by side, on kinds of data from noise-free to noisy.

For held-out objects (``inpainting_transfer.make_case``'s families and seeds, 128 px, ``--rows``
detector rows), the network's volume (shipped weights) is made consistent with the frames by
``consistency.enforce_consistency`` with ``method="closest"`` (the volume nearest the network's
that reprojects no worse than SIRT-100) and ``method="auto"`` (the product's default since 3
Dec 2026: fitted to convergence from the network's volume when the data allow it). Kinds:

* ``same``: noise-free, jitter-free frames from the reconstruction's own projector;
* ``fine``: noise-free frames of the object drawn and projected on a 2x finer grid, binned
  (another discretisation: no coarse-grid volume reproduces them exactly);
* ``fineJ`` (e.g. ``fine0.1``): the same with ``J`` px of random per-frame jitter;
* ``jitter``: the reconstruction's projector, 20000 e- peak Poisson noise and 0.3 px jitter;
* ``realistic``: the benchmark's realistic degradation (noise, jitter, offsets, ramps).

Prints per case the NRMSE of both rules as a multiple of SIRT-100's, whether the fit was kept,
its iterations, the probe ratio and the final reprojection error / SIRT's; then the means.

    OMP_NUM_THREADS=1 python benchmarks/inpainting_consistency.py --kinds same,fine,fine0.1,jitter,realistic
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
import inpainting_transfer as B

from napari_tiltgen.core.progress import run
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.inpainting import api
from napari_tiltgen.nets.inpainting.consistency import enforce_consistency, reprojection_error
from napari_tiltgen.simulate import families as F
from napari_tiltgen.simulate.degrade import DegradeParams

CASES = ("supported:0:60,supported:1:60,aggregate:0:60,aggregate:1:60,texture_heldout:0:60,"
         "supported:0:80,supported:1:80,aggregate:1:80,texture_heldout:1:80")


def make(kind: str, fam: str, k: int, wedge: float, rows: int) -> tuple[np.ndarray, TiltSeries]:
    fi = F.HELDOUT_FAMILIES.index(fam)
    seed = [B.HELDOUT_SEED, 500 + fi, k, int(wedge)]
    if kind.startswith("fine"):
        jitter = float(kind[4:] or 0)
        return B.make_fine_case(fam, 128, rows, wedge, 2.0, seed, 2,
                                lambda p: DegradeParams(jitter_px=jitter))
    adjust = {"same": lambda p: DegradeParams(), "realistic": None,
              "jitter": lambda p: DegradeParams(peak_counts=20000, jitter_px=0.3,
                                                offset=p.offset)}[kind]
    return B.make_case(fam, 128, rows, wedge, 2.0, seed, adjust=adjust)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="same,fine,fine0.1,jitter,realistic")
    ap.add_argument("--cases", default=CASES, help="family:object:wedge, comma-separated")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="save every number here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, info = api.load_pretrained(None, "cpu")
    channels = list(info.get("in_channels", model.config.in_channels))
    rows = []
    for kind in args.kinds.split(","):
        for spec in args.cases.split(","):
            fam, k, wedge = spec.split(":")
            t0 = time.perf_counter()
            truth, ts = make(kind, fam, int(k), float(wedge), args.rows)
            proj, b = api._geometry(ts, ts.tilt_angles, torch.device("cpu"), None)
            recs = run(api._inputs(proj, b, channels, int(info.get("sirt_iterations", 20)), 100),
                       show=False)
            x_ref = recs.pop("ref")
            r_sirt = reprojection_error(proj, b, x_ref)
            net = run(api.network_volume(model, recs, channels, float(wedge), 8, "cpu"),
                      show=False)
            s = B.nrmse(truth, x_ref.numpy())
            row = {"kind": kind, "case": spec}
            for m in ("closest", "auto"):
                x, rep = run(enforce_consistency(proj, b, net, x_ref, sirt_error=r_sirt,
                                                 method=m), show=False)
                row[m] = B.nrmse(truth, x.numpy()) / s
            row.update(kept=bool(rep.get("converge_kept")), iterations=rep["converge_iterations"],
                       probe=rep["converge_probe_ratio"], final=rep["final_error"] / r_sirt)
            rows.append(row)
            print(f"{kind:9s} {spec:20s} closest {row['closest']:.3f} auto {row['auto']:.3f} "
                  f"kept {row['kept']!s:5s} iterations {row['iterations']:3d} probe "
                  f"{row['probe']:.2f} final/SIRT {row['final']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| kind | cases | closest / SIRT-100 | auto / SIRT-100 | fit kept |\n|---|---|---|---|---|")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        print(f"| {kind} | {len(rs)} | {np.mean([r['closest'] for r in rs]):.3f} | "
              f"{np.mean([r['auto'] for r in rs]):.3f} | {sum(r['kept'] for r in rs)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
