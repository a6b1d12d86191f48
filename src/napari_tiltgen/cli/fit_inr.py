"""``tiltgen fit-inr IN --out vol.mrc``: self-supervised INR reconstruction with pose refinement.

Multi-GPU (or multi-process CPU) data parallelism::

    torchrun --nproc_per_node=4 -m napari_tiltgen.cli fit-inr IN --out vol.mrc --ddp

Each process draws its own pixel batches; gradients are averaged (DistributedDataParallel). Only
rank 0 shows progress and writes files. ``--ddp`` without ``torchrun`` runs one process in a
process group of size 1 (gloo on the CPU), which is what the tests exercise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from napari_tiltgen.cli.options import (
    read_series_from_args,
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _process_group(enabled: bool, device: str) -> Iterator[str]:
    """Initialise torch.distributed (torchrun's environment, else a group of one); yield device."""
    if not enabled:
        yield device
        return
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group(backend)
    else:
        print("tiltgen: note: --ddp outside torchrun: running one process (world size 1, "
              f"{backend}).", file=sys.stderr)
        if use_cuda:
            device = "cuda:0"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                                rank=0, world_size=1)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _axis_init(text: str) -> str | float:
    from napari_tiltgen.core.errors import TiltgenError

    if text in ("recorded", "estimate"):
        return text
    try:
        return float(text)
    except ValueError:
        raise TiltgenError(f"--tilt-axis-init must be recorded, estimate or an angle in "
                           f"degrees; got {text!r}.") from None


def run(args: argparse.Namespace) -> int:
    """Self-supervised INR reconstruction with joint pose (alignment) refinement.

    Fit an implicit neural representation (multiresolution feature grid + MLP) of the volume to
    the tilt series through differentiable rays, refining per-tilt shifts, tilt-angle offsets
    and the tilt-axis rotation after a warm-up (Lim et al., quantEM). Writes the volume as MRC
    and, with --poses, the fitted poses as JSON. The tilt axis must be within 45 degrees of y;
    a near-horizontal axis stack is turned by 90 degrees first (said on stderr).
    """
    from napari_tiltgen.fits.inr import fit_inr
    from napari_tiltgen.io.writers import plan_write, write
    from napari_tiltgen.recon.api import with_vertical_axis

    out = Path(args.out)
    # every output check (folder, extension, inputs, existing) before any compute
    plan = plan_write(out, "volume", overwrite=args.overwrite,
                      inputs=[args.input, getattr(args, "tilt_file", None), args.checkpoint],
                      extra=[Path(args.poses)] if args.poses else [])
    pose_params = [s.strip() for s in args.pose_params.split(",") if s.strip()]
    ts, note = with_vertical_axis(read_series_from_args(args))

    with _process_group(args.ddp, args.device) as device:
        import torch.distributed as dist

        rank = dist.get_rank() if args.ddp else 0
        if note and rank == 0:
            print(f"tiltgen: note: {note}", file=sys.stderr)
        res = fit_inr(
            ts, steps=args.steps, batch_size=args.batch_size,
            samples_per_ray=args.samples_per_ray, learning_rate=args.lr,
            optimize_pose=args.optimize_pose, pose_parameters=pose_params,
            pose_warmup_steps=args.pose_warmup, pose_learning_rate=args.pose_lr,
            tilt_axis_init=_axis_init(args.tilt_axis_init),
            tv_weight=args.tv_weight, loss=args.loss, thickness_px=args.thickness,
            sampling=args.sampling, device=device, mixed_precision=args.mixed_precision,
            seed=args.seed, n_threads=args.threads, checkpoint_path=args.checkpoint,
            checkpoint_every=args.checkpoint_every if args.checkpoint else 0,
            resume=args.resume, distributed=args.ddp, preview_every=0,
            show=not args.quiet and rank == 0,
        )
        if rank != 0:
            return 0
    p = res.volume.provenance
    extra = {}
    if args.poses:  # volume and poses appear together or not at all
        extra[Path(args.poses)] = json.dumps(
            {"input": str(args.input), "volume": str(out), **res.poses_json(),
             "final_loss": p["final_loss"], "seconds": p["seconds"],
             "parameters": p["parameters"]}, indent=2)
    path = write(res.volume, plan=plan, extra=extra)
    print(f"wrote {path}: {' x '.join(map(str, res.volume.shape))} voxels (nz, ny, nx), INR "
          f"{args.steps} steps on {p['device']} in {p['seconds']:.1f} s, final loss "
          f"{p['final_loss']:.4g}")
    poses = res.poses
    if args.optimize_pose:
        print(f"tilt axis {poses['initial_tilt_axis_angle_deg']:.2f} -> "
              f"{poses['tilt_axis_angle_deg']:.2f} deg; max |tilt-angle offset| "
              f"{abs(poses['tilt_angle_offsets_deg']).max():.2f} deg")
    if args.poses:
        print(f"wrote {args.poses}: fitted poses (shifts_px as (dy, dx) px, angles in degrees)")
    return 0
