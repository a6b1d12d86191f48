"""``tiltgen reconstruct IN --out vol.mrc``: WBP, SIRT, SART or TV reconstruction of a tilt series."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_tiltgen.cli.options import (
    add_command,
    add_compute_options,
    read_series_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    from napari_tiltgen.recon.names import BACKENDS, FILTER_NAMES, METHODS

    p = add_command(
        sub, "reconstruct", run,
        series=True,
        out=("VOL.mrc", "output volume (MRC)"),
        overwrite="replace an existing output file",
    )
    p.add_argument("--method", default="sirt", choices=[*METHODS, "fbp"],
                   help="reconstruction method (default sirt; fbp = wbp)")
    p.add_argument("--iterations", type=int, default=100,
                   help="SIRT/TV iterations or SART passes (default 100; ignored by wbp)")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="engine: torch (built in), astra or tomopy (default torch)")
    add_compute_options(p)
    p.add_argument("--filter", default="ramp", choices=list(FILTER_NAMES),
                   help="WBP filter (default ramp)")
    p.add_argument("--relaxation", type=float, default=1.0,
                   help="SIRT/SART step length in (0, 2) (default 1)")
    p.add_argument("--no-positivity", dest="positivity", action="store_false",
                   help="allow negative densities (SIRT, SART, TV)")
    p.add_argument("--subsets", type=int, default=8, metavar="N",
                   help="SART ordered subsets (default 8)")
    p.add_argument("--tv-weight", type=float, default=0.01,
                   help="TV strength, dimensionless (default 0.01)")
    p.add_argument("--tv-dims", type=int, default=3, choices=[2, 3],
                   help="TV in 3-D or within each slice (2) (default 3)")
    p.add_argument("--thickness", type=int, metavar="PX",
                   help="volume thickness along the beam in pixels (default: frame width)")
    p.add_argument("--axis-offset", type=float, default=0.0, metavar="PX",
                   help="tilt-axis offset from the detector centre along x, pixels")
    p.add_argument("--align", default="auto", choices=["auto", "yes", "no"],
                   help="align before reconstructing (tilt-axis refinement, shifts, projection "
                   "matching; see 'tiltgen align'): auto (default) aligns a raw stack whose "
                   "frames are measurably jittered (centre-of-mass fit residual above 0.5 px) "
                   "and no stored shifts; yes: always; no: never")
    g = p.add_argument_group("volumes larger than memory (WBP, SIRT)")
    g.add_argument("--out-of-core", default="auto", choices=["auto", "yes", "no"],
                   help="stream slabs of rows from the input to the MRC output: auto (default) "
                   "when the in-memory estimate exceeds --memory-budget (said on stderr)")
    g.add_argument("--memory-budget", type=float, metavar="GB",
                   help="memory the reconstruction may use, GiB (default: 70%% of the "
                   "available memory)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="out of core: spread the slabs over N local Dask worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="out of core: spread the slabs over a running Dask scheduler")


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
