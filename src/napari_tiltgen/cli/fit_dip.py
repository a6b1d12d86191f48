"""``tiltgen fit-dip IN --out DIR``: time-resolved (4-D) reconstruction with a deep image prior.

Output layout (a folder, or a file prefix when ``--out`` ends in ``.mrc``)::

    DIR/dip_t000.mrc ... dip_tNNN.mrc     one volume (nz, ny, nx) per time point, time order
    DIR/dip_times.json                    times (s), tilt angles (deg), file names, parameters
    DIR/static_sirt.mrc                   the static SIRT of all tilts (the warm start)
    DIR/window_sirt_t000.mrc ...          with --window N: sliding-window SIRT baseline

With ``--out run/sample.mrc`` the same files are ``run/sample_t000.mrc``, ``run/sample_times.json``,
``run/sample_static_sirt.mrc`` and ``run/sample_window_sirt_t000.mrc``. Existing files are never
replaced without ``--overwrite``; everything is checked before the fit starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.cli.options import (
    read_series_from_args,
)

TIMES_FORMAT = "napari-tiltgen 4-D volume series v1"


def output_paths(out: str | Path, n: int, window: bool) -> dict[str, Any]:
    """Files written for ``n`` time points: ``{"volumes", "times", "static", "window"}``."""
    out = Path(out)
    if out.suffix.lower() == ".mrc":
        folder, stem = out.parent, out.stem + "_"
        names = {"vol": f"{stem}t", "times": f"{stem}times.json", "static": f"{stem}static_sirt.mrc",
                 "window": f"{stem}window_sirt_t"}
    else:
        folder = out
        names = {"vol": "dip_t", "times": "dip_times.json", "static": "static_sirt.mrc",
                 "window": "window_sirt_t"}
    digits = max(3, len(str(n - 1)))
    return {
        "folder": folder,
        "volumes": [folder / f"{names['vol']}{i:0{digits}d}.mrc" for i in range(n)],
        "times": folder / names["times"],
        "static": folder / names["static"],
        "window": [folder / f"{names['window']}{i:0{digits}d}.mrc" for i in range(n)]
        if window else [],
    }


def _read_times(path: str) -> np.ndarray:
    from napari_tiltgen.core.errors import TiltgenError

    try:
        from napari_tiltgen.io.metadata import read_small_file

        text = read_small_file(path, "acquisition-times file").decode("utf-8", "replace")
        values = [float(line.split()[0]) for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, ValueError) as exc:
        raise TiltgenError(f"cannot read acquisition times ({exc}); give one number (seconds) "
                           "per line.", path) from None
    return np.asarray(values, dtype=np.float64)


def run(args: argparse.Namespace) -> int:
    """Time-resolved 4-D reconstruction (deep image prior) of a changing sample.

    Fit a deep-image-prior network to a tilt series of a sample that changes during the
    acquisition and write one volume per time point (MRC) plus a JSON file of times and tilt
    angles. Acquisition times come from the series (SerialEM .mdoc), --times-file, or are
    uniform (--frame-time) in --order. Self-supervised: no training data needed. See
    docs/dip.md.
    """
    from napari_tiltgen.core.errors import TiltgenError
    from napari_tiltgen.fits.dip import acquisition_times, fit_dip, sliding_window_sirt
    from napari_tiltgen.io.model import Volume
    from napari_tiltgen.io.output import planned_outputs
    from napari_tiltgen.io.writers import file_contents
    from napari_tiltgen.recon.api import with_vertical_axis

    ts, note = with_vertical_axis(read_series_from_args(args))
    if note:
        print(f"tiltgen: note: {note}", file=sys.stderr)
    times_in = _read_times(args.times_file) if args.times_file else None
    frame_times = acquisition_times(ts, times_in, order=args.order, frame_time_s=args.frame_time)
    if args.every < 1:
        raise TiltgenError(f"--every must be at least 1; got {args.every}.")
    if args.times:
        try:
            out_times = np.sort([float(v) for v in args.times.split(",") if v.strip()])
        except ValueError:
            raise TiltgenError(f"--times must be numbers (seconds) separated by commas; got "
                               f"{args.times!r}.") from None
    else:
        out_times = np.sort(frame_times)[::args.every]
    paths = output_paths(args.out, out_times.size, bool(args.window))
    folder: Path = paths["folder"]
    targets = [*paths["volumes"], paths["times"], paths["static"], *paths["window"]]
    # every output check (folder, names, inputs, existing) before the fit; all files or none
    plan = planned_outputs(targets[0], targets[1:], overwrite=args.overwrite,
                           inputs=[args.input, getattr(args, "tilt_file", None),
                                   args.times_file, args.checkpoint],
                           create_folder=Path(args.out).suffix.lower() != ".mrc")

    res = fit_dip(
        ts, steps=args.steps, temporal_smoothness=args.smoothness, times_s=frame_times,
        output_times_s=out_times, n_components=args.components,
        warm_start_steps=args.warm_start_steps, sirt_iterations=args.sirt_iterations,
        slices_per_step=args.slices_per_step, frames_per_step=args.frames_per_step,
        learning_rate=args.lr, lr_half_life_steps=args.lr_half_life, thickness_px=args.thickness, axis_offset_px=args.axis_offset,
        device=args.device, seed=args.seed, checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every, resume=args.resume, preview_every=0,
        n_threads=args.threads, show=not args.quiet,
    )
    contents: dict = {}
    for i, path in enumerate(paths["volumes"]):
        contents.update(file_contents(res.volume(i), path))
    if res.static_sirt is not None:
        contents.update(file_contents(Volume(res.static_sirt, res.voxel_size_A,
                                             provenance={"method": "sirt (static, all tilts)"}),
                                      paths["static"]))
    if args.window:
        win = sliding_window_sirt(ts, args.window, times_s=frame_times, output_times_s=out_times,
                                  iterations=args.sirt_iterations, thickness_px=args.thickness,
                                  axis_offset_px=args.axis_offset, device=args.device)
        for i, path in enumerate(paths["window"]):
            contents.update(file_contents(Volume(win[i], ts.pixel_size_A, provenance={
                "method": f"sliding-window sirt ({args.window} frames)",
                "parameters": {"time_s": float(out_times[i])}}), path))
    meta = {
        "format": TIMES_FORMAT,
        "times_s": res.times_s.tolist(),
        "tilt_angles_deg": res.tilt_angles.tolist(),
        "volumes": [p.name for p in paths["volumes"]],
        "static_sirt": paths["static"].name if res.static_sirt is not None else None,
        "window_sirt": [p.name for p in paths["window"]],
        "window_frames": args.window,
        "voxel_size_A": res.voxel_size_A,
        "shape_zyx": list(res.volumes.shape[1:]),
        "final_loss": float(res.loss_history[-1]) if res.loss_history.size else None,
        "provenance": res.provenance,
    }
    contents[paths["times"]] = json.dumps(meta, indent=2, default=float)
    plan.commit(contents)
    p = res.provenance
    print(f"wrote {len(paths['volumes'])} volumes of {' x '.join(map(str, res.volumes.shape[1:]))}"
          f" voxels (nz, ny, nx), {res.times_s[0]:g} to {res.times_s[-1]:g} s, to {folder} "
          f"({paths['times'].name}); DIP {p['parameters']['steps']} steps on {p['device']} in "
          f"{p['seconds']:.1f} s")
    return 0
