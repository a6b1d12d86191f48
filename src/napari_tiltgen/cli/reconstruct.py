"""``tiltgen reconstruct IN --out vol.mrc``: WBP, SIRT, SART or TV reconstruction of a tilt series."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_tiltgen.cli.options import (
    read_series_from_args,
)


def run(args: argparse.Namespace) -> int:
    """Reconstruct a tilt series into a volume (WBP, SIRT, SART, TV).

    Reconstruct a tilt series (MRC/TIFF, angles from the file, its sidecars or --tilt-
    start/--tilt-step) into a volume written as MRC. First the series is prepared (said on
    stderr): vacuum offset removed or bright field converted to -log(I/I0) (--intensity), the
    tilt axis taken from --tilt-axis, the file, or estimated from the data over 0-180 degrees,
    and the frames turned so that it runs along y; a jittered raw stack is aligned (--align).
    Per-tilt shifts stored with the series are applied.
    """
    from napari_tiltgen.io.writers import plan_write, write
    from napari_tiltgen.recon.api import reconstruct, with_vertical_axis

    out = Path(args.out)
    # every output check (folder, extension, inputs, existing) before any compute
    args.memory_budget_bytes = (args.memory_budget * 2**30) if args.memory_budget else None
    plan = plan_write(out, "volume", overwrite=args.overwrite,
                      inputs=[args.input, getattr(args, "tilt_file", None)])
    ts, note = with_vertical_axis(read_series_from_args(args))
    if note:
        print(f"tiltgen: note: {note}", file=sys.stderr)
    ts = _maybe_align(ts, args.align, args.thickness)
    if _stream(args, ts, plan):
        return 0
    vol = reconstruct(
        ts, args.method, args.iterations, backend=args.backend, device=args.device,
        filter=args.filter, relaxation=args.relaxation, positivity=args.positivity,
        n_subsets=args.subsets, tv_weight=args.tv_weight, tv_dims=args.tv_dims,
        thickness_px=args.thickness, axis_offset_px=args.axis_offset, n_threads=args.threads,
        preview_every=0, show=not args.quiet,
    )
    path = write(vol, plan=plan)
    p = vol.provenance
    its = p["parameters"].get("iterations")
    print(f"wrote {path}: {' x '.join(map(str, vol.shape))} voxels (nz, ny, nx), "
          f"{p['method'].upper()}{f' {its} iterations' if its else ''} on {p['device']} "
          f"({p['backend']}) in {p['seconds']:.1f} s")
    return 0


def _stream(args: argparse.Namespace, ts, plan) -> bool:
    """Reconstruct out of core (slabs to the MRC output) when chosen; True when done so."""
    from napari_tiltgen.recon import outofcore
    n, ny, nx = (int(s) for s in ts.shape)
    nz = int(args.thickness or nx)
    stream, budget, why = outofcore.choose(args.method, args.backend, n, ny, nx, nz,
                                           mode=args.out_of_core,
                                           memory_budget=args.memory_budget_bytes)
    if not stream:
        if args.workers or args.scheduler:
            print("tiltgen: note: --workers/--scheduler apply only out of core; ignored",
                  file=sys.stderr)
        return False
    client = None
    if args.workers or args.scheduler:
        from napari_tiltgen.workflows.batch import make_client

        client = make_client(args.workers, args.scheduler)
        why += f"; {len(client.scheduler_info()['workers'])} Dask workers, dashboard " \
               f"{client.dashboard_link}"
    from napari_tiltgen.core.devices import resolve_device

    print(f"tiltgen: note: {why}", file=sys.stderr)
    try:
        res = outofcore.reconstruct_to_file(
            ts, plan.main, args.method, args.iterations, memory_budget=budget,
            thickness_px=args.thickness, axis_offset_px=args.axis_offset, filter=args.filter,
            relaxation=args.relaxation, positivity=args.positivity,
            device=str(resolve_device(args.device)), n_threads=args.threads, client=client,
            plan=plan, show=not args.quiet)
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and args.workers:
                cluster.close()
    p = res.provenance
    its = p["parameters"].get("iterations")
    print(f"wrote {res.path}: {' x '.join(map(str, res.shape))} voxels (nz, ny, nx), "
          f"{p['method'].upper()}{f' {its} iterations' if its else ''} out of core "
          f"({len(res.slabs)} slabs of {res.slab_rows} rows) on {res.device} in "
          f"{res.seconds:.1f} s")
    return True


def _maybe_align(ts, mode: str, thickness: int | None):
    """Align when asked, or (``auto``) when the frames are jittered and carry no shifts."""
    from napari_tiltgen.align.projection_matching import align_series, needs_alignment

    def say(text: str) -> None:
        print(f"tiltgen: note: {text}", file=sys.stderr)

    if mode == "no":
        return ts
    if mode == "auto":
        yes, why = needs_alignment(ts)
        say(f"alignment: {why}" + ("" if yes else " (--align yes to align anyway)"))
        if not yes:
            return ts
    aligned, report = align_series(ts, prepare_first=False, thickness_px=thickness)
    for step in report.steps:
        say(f"alignment: {step}")
    say(f"alignment: reprojection error {report.reprojection_error_before:.4f} -> "
        f"{report.reprojection_error_after:.4f}")
    return aligned
