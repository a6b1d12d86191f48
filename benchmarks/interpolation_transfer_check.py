"""Benchmark: does ``auto``'s transfer check predict whether the adapted network beats its start
at the inserted frames?

The adapted network is fine-tuned at 2-4 times the step and scored by the QA at 2 times; frames
are inserted at 1 times. For each stand-in of :mod:`interpolation_adapt` (``needle``,
``catalyst``, ``cluster``) and gap, this script runs what ``tiltgen interpolate --method auto``
runs (``prepare``, then :func:`~napari_tiltgen.nets.interpolation.select.adapt_and_select`), then
predicts the inserted frames with the start network and with the adapted one and scores both
against the true frames, and runs the transfer check
(:func:`~napari_tiltgen.nets.interpolation.transfer.transfer_check`), reusing ``auto``'s own run
of it where ``auto`` needed it. Prints, per case: the QA's difference adapted - start at twice the step, the check's
gain, and the difference at the inserted frames (PSNR against the noisy true frames, each frame's
range), and whether the check and the QA have its sign.

    OMP_NUM_THREADS=1 python benchmarks/interpolation_transfer_check.py --counts 200
    OMP_NUM_THREADS=1 python benchmarks/interpolation_transfer_check.py --counts 0

Options: ``--cases``, ``--gaps`` (4,8,12), ``--size`` (128), ``--counts`` (200; 0: noise-free),
``--adapt-seconds`` (600; the step cap, 300, ends the fine-tuning first on most machines),
``--seed``, ``--out`` (Markdown table). About 1-2 minutes per case at 128 px on one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interpolation_adapt import make_series


def one_case(case: str, gap: float, size: int, counts: float, seed: int, seconds: float
             ) -> dict[str, float]:
    """QA, check and inserted-frame differences (adapted - start, dB) of one stand-in."""
    from napari_tiltgen.align.prepare import prepare
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.nets.interpolation.adapt import AdaptConfig
    from napari_tiltgen.nets.interpolation.frames import (
        PACKAGED,
        check_inputs,
        interpolate_at,
        load_pretrained,
    )
    from napari_tiltgen.nets.interpolation.qa import _scores
    from napari_tiltgen.nets.interpolation.select import adapt_and_select
    from napari_tiltgen.nets.interpolation.transfer import transfer_check
    from napari_tiltgen.recon.api import with_vertical_axis

    ts, _clean, _ = make_series(case, size, gap / 2.0, counts, seed)
    hidden = np.arange(1, ts.n_tilts, 2)
    sparse = ts.subset(np.arange(0, ts.n_tilts, 2))
    prepared, _ = prepare(sparse)
    tv, _ = with_vertical_axis(prepared)
    offset = float(np.median(sparse.data - tv.data))  # the vacuum level prepare removed
    cfg = AdaptConfig(seconds=seconds)
    sel = run(adapt_and_select(tv, config=cfg, device="cpu"), show=False)
    if sel.adapt is None:
        raise RuntimeError(f"{case} {gap:g}: too few frames to adapt")
    start = load_pretrained(PACKAGED.get(sel.pretrained, None), "cpu")
    a = tv.require_angles()
    _, factor = check_inputs(tv, [float(np.median(a[2:] - a[:-2]))], start[1],
                             allow_out_of_range=True)
    pairs = [(j, j + 1, [0.5]) for j in range(tv.n_tilts - 1)]
    native = {}
    for name, mod in (("start", start), ("adapted", (sel.adapt.model, start[1]))):
        frames, _, _ = run(interpolate_at(tv, pairs, "adapted", model=mod,
                                          allow_out_of_range=True, quiet=True), show=False)
        native[name] = float(np.mean(_scores(ts.data[hidden], frames + offset)[0]))
    check = sel.transfer  # run by auto when it was about to use adapted; else run it here
    if check is None:
        check = run(transfer_check(tv, start, cfg, sel.qa[1]["pretrained"], factor, "cpu"),
                    show=False)
    qa = float(np.mean(sel.qa[1]["adapted"].psnr - sel.qa[1]["pretrained"].psnr))
    return {"qa": qa, "check": check.gain_db if check else float("nan"),
            "check_se": check.stderr_db if check else float("nan"),
            "passed": bool(check and check.passed), "native": native["adapted"] - native["start"],
            "start": sel.pretrained, "auto": sel.method}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="needle,catalyst,cluster")
    p.add_argument("--gaps", default="4,8,12")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--counts", type=float, default=200.0)
    p.add_argument("--adapt-seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the Markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    head = ("| case | gap (deg) | start | QA at 2x: adapted - start | check (+/- se) | passed "
            "| inserted frames: adapted - start | QA sign right | check sign right | auto chose |")
    lines = [head, "|" + "---|" * 10]
    for case in args.cases.split(","):
        for gap in (float(g) for g in args.gaps.split(",")):
            r = one_case(case, gap, args.size, args.counts, args.seed, args.adapt_seconds)
            good = r["native"] > 0
            lines.append(
                f"| {case} | {gap:g} | {r['start']} | {r['qa']:+.2f} | {r['check']:+.2f} "
                f"(+/- {r['check_se']:.2f}) | {'yes' if r['passed'] else 'no'} | "
                f"{r['native']:+.2f} | {'yes' if (r['qa'] > 0) == good else 'no'} | "
                f"{'yes' if (r['check'] > 0) == good else 'no'} | {r['auto']} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
