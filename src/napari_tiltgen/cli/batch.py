"""``tiltgen batch IN... --out DIR``: many tilt series as tasks on Dask distributed (resumable)."""

from __future__ import annotations

import argparse
import sys

from napari_tiltgen.core.errors import TiltgenError


def run(args: argparse.Namespace) -> int:
    """Process many tilt series on Dask (local processes or a cluster), resumable.

    Run the same steps on every input tilt series, each as one task on Dask distributed: a
    local cluster of --workers single-threaded processes by default, or a running scheduler
    (--scheduler tcp://host:8786, e.g. a dask-jobqueue SLURM cluster; see docs/batch.md). Each
    series writes DIR/<name>.mrc and a done-marker; a rerun skips the finished ones. A failed
    series is reported and never stops the others. The report of every series is written to
    DIR/batch_report.csv and .json.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise TiltgenError("tiltgen batch needs Dask distributed: pip install "
                           "'dask[distributed]' (or napari-tiltgen[batch]).") from None
    from napari_tiltgen.workflows.batch import run_batch

    bar = None

    def on_start(client, n: int) -> None:
        nonlocal bar
        link = getattr(client, "dashboard_link", None)
        n_workers = len(client.scheduler_info().get("workers", {}))
        print(f"tiltgen: batch: {n} series on {n_workers} Dask worker(s); dashboard: "
              f"{link or 'none'}", file=sys.stderr)
        if not args.quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="series", unit="series", file=sys.stderr)

    def on_result(row: dict) -> None:
        if row["status"] == "failed":
            msg = f"tiltgen: batch: {row['input']}: failed: {row['error']}"
            (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))
        if bar is not None and row["status"] != "skipped":
            bar.update(1)

    try:
        report = run_batch(
            args.inputs, args.out, steps=args.steps, method=args.method,
            iterations=args.iterations, thickness_px=args.thickness, device=args.device,
            intensity=args.intensity,
            interpolate={"target_step_deg": args.interpolate_step,
                         "method": args.interpolate_method},
            inr_steps=args.inr_steps, workers=args.workers, scheduler=args.scheduler,
            overwrite=args.overwrite, on_start=on_start, on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
    c = report.counts
    print(f"batch: {c.get('done', 0)} done, {c.get('skipped', 0)} skipped (finished before), "
          f"{c.get('failed', 0)} failed in {report.seconds:.1f} s; report {report.csv_path} "
          f"and {report.json_path}")
    return 1 if c.get("failed") else 0
