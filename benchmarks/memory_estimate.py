"""Measured peak memory of CLI jobs next to the estimate the CLI refuses jobs with.

Measured 2026-12-01 on the shared 2-core machine (61 tilts; growth over the same job on 8-px
frames, MiB; estimates as now in resources.py):

    size   wbp   sirt   fit-inr   inpaint
    128     63     27       559       292
    224    203    122      2426       924
    256    290    185         -         -

Each job runs in a fresh process (``tiltgen ...`` through the real CLI); its peak resident memory
(``ru_maxrss`` of the child) is compared with
:func:`napari_tiltgen.core.resources.job_peak_bytes`, after subtracting the baseline of a process that
only imports torch and the package. The estimate must stay above the measured growth (no OOM
slips through) without refusing jobs that fit by a large factor.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/memory_estimate.py [--size 256] [--tilts 61]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np


def child_peak(cmd: list[str]) -> tuple[float, float, int]:
    """Peak RSS (bytes) and seconds of one child process, and its exit status."""
    import os

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read().decode() if p.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err, file=sys.stderr)
    return usage.ru_maxrss * 1024.0, time.perf_counter() - t0, code


def main() -> None:
    from napari_tiltgen.core.resources import job_peak_bytes

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tilts", type=int, default=61)
    args = ap.parse_args()
    n, s = args.tilts, args.size
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "ts.mrc"
        rng = np.random.default_rng(0)
        with mrcfile.new(src) as m:
            m.set_data(rng.random((n, s, s), dtype=np.float32))
            m.set_image_stack()
        src.with_suffix(".rawtlt").write_text("".join(f"{a:.2f}\n" for a in
                                                      np.linspace(-60, 60, n)))
        tiny = Path(d) / "tiny.mrc"  # baseline: the same CLI job on a 8-px series
        with mrcfile.new(tiny) as m:
            m.set_data(rng.random((n, 8, 8), dtype=np.float32))
            m.set_image_stack()
        tiny.with_suffix(".rawtlt").write_text(src.with_suffix(".rawtlt").read_text())
        rows = []
        for method, its in (("wbp", 1), ("sirt", 2)):
            def job(series: Path, tag: str, method: str = method, its: int = its) -> list[str]:
                return [sys.executable, "-m", "napari_tiltgen.cli", "reconstruct", str(series),
                        "--out", str(Path(d) / f"{method}_{tag}.mrc"), "--method", method,
                        "--iterations", str(its), "--device", "cpu", "--quiet", "--align", "no"]

            base, _, _ = child_peak(job(tiny, "tiny"))
            peak, secs, code = child_peak(job(src, "big"))
            est = job_peak_bytes("reconstruct", n, s, s, method=method)
            rows.append((f"reconstruct {method}", peak - base, est, secs, code))
        for command, extra in (("fit-inr", ["--steps", "3", "--batch-size", "1024"]),
                               ("inpaint", ["--refine-iterations", "1",
                                            "--max-refine-iterations", "1",
                                            "--reference-iterations", "2"])):
            def job2(series: Path, tag: str, command: str = command,
                     extra: list[str] = extra) -> list[str]:
                out = str(Path(d) / f"{command}_{tag}.mrc")
                io = ["--out", out] if command == "fit-inr" else [out]
                return [sys.executable, "-m", "napari_tiltgen.cli", command, str(series), *io,
                        "--device", "cpu", "--quiet", *extra]

            base, _, _ = child_peak(job2(tiny, "tiny"))
            peak, secs, code = child_peak(job2(src, "big"))
            rows.append((command, peak - base, job_peak_bytes(command, n, s, s), secs, code))
    print(f"{n} tilts x {s} x {s} px -> {s}^3 volume (growth over the same job on 8-px frames)")
    print(f"{'job':<18} {'measured growth MiB':>20} {'estimate MiB':>13} {'est/measured':>13} "
          f"{'s':>6} {'exit':>5}")
    for name, grow, est, secs, code in rows:
        print(f"{name:<18} {grow / 2**20:>20.0f} {est / 2**20:>13.0f} "
              f"{est / max(grow, 1):>13.2f} {secs:>6.1f} {code:>5}")


if __name__ == "__main__":
    main()
