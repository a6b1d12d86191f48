"""Tilt-axis estimation on realistic held-out series: the estimate every command makes when a
file records no axis.

For each held-out family (``simulate.families.HELDOUT_FAMILIES``), object and wedge, the series
of ``inpainting_transfer.py`` is made (128 px, 2-degree steps, realistic degradation: Poisson +
Gaussian + scan-line noise, 0.5-1.5 px jitter, vacuum offset and ramp, and a tilt-axis error
of up to 1 degree, which is the truth here), its intensities prepared as ``tiltgen`` does, and
the axis found by :func:`napari_tiltgen.align.axis.find_tilt_axis` over 0-180 degrees, with the
vacuum flattening (default) and without it (the estimator before 2 Dec 2026), in the same run.
``applied`` is the error of the rotation ``prepare`` then applies (an estimate below
confidence 0.3 is not applied: the frames stay as they are, so the error is the truth's; for
an object that crosses the frame edges, ``ext``, or a confidence below 0.5, the search by
reprojection consistency of :mod:`napari_tiltgen.align.axis_search` runs and decides as
``prepare`` does: ``search`` is its error, ``(used)`` when its angle is applied).

``--rotations 0,30,-70`` also makes every series with its axis turned by each angle more (the
clean frames are turned before noise, scan lines and jitter, which stay along the rows) and
crops the square inscribed in the frame: the held-out series with axes far from y.

    OMP_NUM_THREADS=1 python benchmarks/axis_transfer.py --objects 6 [--no-scan-lines]
    OMP_NUM_THREADS=1 python benchmarks/axis_transfer.py --objects 6 --rotations 0,30,-70 --methods flattened

Prints one row per series and a summary per method (median and mean |error|, how many are
off by more than 1, 2 and 10 degrees). Measured 2 Dec 2026 (docs/alignment.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inpainting_transfer as B  # the benchmark's cases

from napari_tiltgen.align.axis import find_tilt_axis, wrap_axis_deg
from napari_tiltgen.align.axis_search import axis_search_iter, needs_search
from napari_tiltgen.align.prepare import prepare_intensity
from napari_tiltgen.core.progress import run
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.simulate import families as F
from napari_tiltgen.simulate.degrade import DegradeParams

LOW_CONFIDENCE = 0.3  # prepare_tilt_axis_iter's default


def make_series(fam: str, fi: int, k: int, wedge: float, size: int, scan_lines: bool,
                rot: float = 0.0) -> tuple[TiltSeries, float]:
    """The prepared series of ``inpainting_transfer.make_case`` (all rows) and its true
    tilt-axis angle (degrees, IMOD convention). ``rot``: the clean frames are turned by that
    much more (the simulator's axis error, before noise, scan lines and jitter, which stay
    along the frame's rows as a scanning microscope records them) and the square inscribed in
    the frame is kept (no filled corners)."""
    def adjust(p: DegradeParams) -> DegradeParams:
        return replace(p, axis_error_deg=p.axis_error_deg + rot,
                       scan_line_sigma=p.scan_line_sigma if scan_lines else 0.0)

    _, ts = B.make_case(fam, size, size, wedge, 2.0, [B.HELDOUT_SEED, 500 + fi, k, int(wedge)],
                        adjust=adjust)
    true = -float(ts.provenance["degrade"]["axis_error_deg"])  # a vertical axis turned by -e
    if rot:
        s = int(size / np.sqrt(2.0)) - 2
        o = (size - s) // 2
        ts = replace(ts, data=np.ascontiguousarray(ts.data[:, o:o + s, o:o + s]))
    ts, _ = prepare_intensity(ts, "auto")
    return ts, wrap_axis_deg(true)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--wedges", default="60,80")
    ap.add_argument("--objects", type=int, default=6, help="objects per family and wedge")
    ap.add_argument("--no-scan-lines", action="store_true", help="ablation: no scan-line noise")
    ap.add_argument("--families", default=",".join(F.HELDOUT_FAMILIES),
                    help="held-out families to run (comma-separated)")
    ap.add_argument("--rotations", default="0", help="turn each series by these angles (deg)")
    ap.add_argument("--methods", default="flattened,as before",
                    help="flattened (the default estimator), as before (no flattening)")
    args = ap.parse_args()
    methods = {m: m == "flattened" for m in args.methods.split(",")}
    errs: dict[str, list[float]] = {m: [] for m in methods}
    applied: dict[str, list[float]] = {m: [] for m in methods}
    print("| series | true | " + " | ".join(f"{m}: est / err / conf" for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    t0 = time.perf_counter()
    for wedge in [float(w) for w in args.wedges.split(",")]:
        for fi, fam in enumerate(F.HELDOUT_FAMILIES):
            if fam not in args.families.split(","):
                continue
            for k in range(args.objects):
                for rot in [float(r) for r in args.rotations.split(",")]:
                    ts, true = make_series(fam, fi, k, wedge, args.size, not args.no_scan_lines,
                                           rot)
                    cells = []
                    for m, flat in methods.items():
                        est = find_tilt_axis(ts, flatten_vacuum=flat)
                        e = wrap_axis_deg(est.angle_deg - true)
                        errs[m].append(abs(e))
                        why, note = est.distrust(LOW_CONFIDENCE)  # as prepare decides
                        used = est.angle_deg if not why else 0.0
                        extra = ""
                        if flat and needs_search(est, why):  # prepare's search by reprojection
                            angle, _, why, _, out = run(axis_search_iter(ts, est, [], why, note),
                                                        show=False)
                            used = angle if not why else 0.0
                            f = out.provenance["tilt_axis_reprojection"]
                            extra = (f"; search {wrap_axis_deg(f['angle_deg'] - true):+.2f} "
                                     f"sep {f['separation']:.2f}"
                                     + (" bar" if "elongation" in why else "")
                                     + (" (used)" if not why and angle != est.angle_deg
                                        else ""))
                        applied[m].append(abs(wrap_axis_deg(used - true)))
                        cells.append(f"{est.angle_deg:+.2f} / {e:+.2f} / {est.confidence:.2f}"
                                     + (" ext" if est.extended else "")
                                     + (" needle" if est.needle_deg is not None else "")
                                     + (" (used)" if est.needle_override else "") + extra)
                    print(f"| {fam} #{k} {wedge:g} rot {rot:g} | {true:+.2f} | "
                          + " | ".join(cells) + " |", flush=True)
    print(f"\n{len(next(iter(errs.values())))} series, {time.perf_counter() - t0:.0f} s; "
          f"scan lines {'off' if args.no_scan_lines else 'on'}\n")
    print("| method | median abs err | mean | > 1 deg | > 2 deg | > 10 deg | applied: > 1 deg "
          "| > 2 deg | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in methods:
        e, a = np.array(errs[m]), np.array(applied[m])
        print(f"| {m} | {np.median(e):.2f} | {e.mean():.2f} | {(e > 1).sum()} | {(e > 2).sum()} "
              f"| {(e > 10).sum()} | {(a > 1).sum()} | {(a > 2).sum()} | {a.max():.1f} |")


if __name__ == "__main__":
    main()
