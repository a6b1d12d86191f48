"""``tiltgen train-interpolation``, ``tiltgen eval-interpolation`` and ``tiltgen interpolate``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from napari_tiltgen.cli.options import (
    config_from_args,
    read_series_from_args,
)

# ---------------------------------------------------------------------------- train


# ---------------------------------------------------------------------------- data


def run_data(args: argparse.Namespace) -> int:
    """Simulate a family pool (training data for transfer) for train-interpolation.

    Simulate clean tilt-series windows (25 frames by default, 1 degree apart, random start angle) of
    random volumes of the TRAINING object families (napari_tiltgen.simulate.families),
    projected with the package's forward model, as resumable .npz shards in OUT/train and
    OUT/val. Noise, jitter, tilt-axis error and backgrounds are added at training time. Run it
    again to continue or to grow the pool.
    """
    import torch

    from napari_tiltgen.core.errors import TiltgenError
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.nets.interpolation.data import build_family_pool_iter
    from napari_tiltgen.simulate.families import training_families

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sizes = tuple(int(v) for v in args.sizes.split(","))
    except ValueError:
        raise TiltgenError(f"cannot read the sizes {args.sizes!r}; use e.g. 128,160.") from None
    if min(sizes) < 32:
        raise TiltgenError("frame sizes must be at least 32 pixels.")
    if args.window < 3:
        raise TiltgenError(f"a window needs at least 3 frames; got {args.window}.")
    kw = {"sizes": sizes, "shard_size": args.shard_size, "seed": args.seed,
          "window": args.window,
          "families": training_families(args.families.split(",")) if args.families else None}
    run(build_family_pool_iter(args.out, args.val_series, split="val", **kw),
        show=not args.quiet, desc="val pool")
    run(build_family_pool_iter(args.out, args.series, split="train", **kw),
        show=not args.quiet, desc="train pool")
    print(f"family pool in {args.out}")
    return 0


def _ints(text: str) -> tuple[int, int, int, int]:
    from napari_tiltgen.core.errors import TiltgenError

    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise TiltgenError(f"expected four comma-separated integers; got {text!r}.") from None
    if len(vals) != 4 or min(vals) < 1:
        raise TiltgenError(f"expected four positive comma-separated integers; got {text!r}.")
    return vals  # type: ignore[return-value]


def run_train(args: argparse.Namespace) -> int:
    """Train the tilt-frame interpolation network on simulated data sets.

    Train the conditioned IFRNet-style interpolation network on the train shards of one or more
    simulated data sets (tiltgen simulate-dataset / generate_dataset). Resumes from
    OUT/checkpoint.safetensors when it exists. Writes OUT/best.safetensors (best validation
    PSNR), OUT/last.safetensors and OUT/log.jsonl; --export copies the best weights (with their
    metadata) to a file, e.g. the package's models/interpolation.safetensors.
    """
    from napari_tiltgen.nets.interpolation.network import NetConfig, load_model, save_model
    from napari_tiltgen.nets.interpolation.train import TrainConfig, train

    cfg = config_from_args(
        TrainConfig, args, out_dir=args.out, warmup_steps=args.warmup,
        gap_range_deg=(args.min_gap, args.max_gap),
        net=NetConfig(channels=_ints(args.channels), decoder_channels=_ints(args.decoder_channels),
                      noise_planes=args.noise_planes),
        crops=tuple(int(c) for c in args.crops.split(",")),
    )
    summary = train(cfg, show_progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    if args.export:
        model, info = load_model(Path(args.out) / "best.safetensors")
        path = save_model(args.export, model, info)
        print(f"exported the best weights to {path}")
    return 0


# ---------------------------------------------------------------------------- eval


def _gap_list(text: str) -> list[int]:
    from napari_tiltgen.core.errors import TiltgenError

    out: list[int] = []
    try:
        for part in filter(None, (s.strip() for s in text.split(","))):
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise TiltgenError(f"cannot read the gap list {text!r}; use e.g. 1-12 or 2,4,8.") from None
    if any(g < 1 for g in out):
        raise TiltgenError("gaps must be positive whole degrees.")
    return sorted(set(out))


def run_eval(args: argparse.Namespace) -> int:
    """Benchmark pretrained / linear / reprojection interpolation on held-out series.

    Per gap: hide the frames between every GAP-th tilt of the held-out (test split) series,
    predict them with the pretrained model, linear interpolation and SIRT reprojection, and
    report MSE, PSNR and SSIM. Downstream 3-D: SIRT of the reference (all tilts), the sparse
    series and the sparse series plus interpolated frames, compared with the reference
    reconstruction by NRMSE, SSIM and Otsu + Chamfer/RMS surface distances. Writes a Markdown
    table, JSON and a PNG plot.
    """
    from napari_tiltgen.core.devices import num_threads
    from napari_tiltgen.nets.interpolation.evaluate import EvalConfig, evaluate

    cfg = config_from_args(
        EvalConfig, args, out_dir=args.out, gaps=_gap_list(args.gaps),
        methods=[m.strip() for m in args.methods.split(",") if m],
        presets=None if not args.presets else tuple(args.presets.split(",")),
        recon_gaps=_gap_list(args.recon_gaps) if args.recon_gaps else [],
    )
    with num_threads(args.threads):
        result = evaluate(cfg, show_progress=not args.quiet)
    print(result["table_markdown"])
    print(f"wrote {', '.join(result['files'])}")
    return 0


# ---------------------------------------------------------------------------- interpolate


def _write_qa(path: str, text: str, data: dict, overwrite: bool = False) -> None:
    from napari_tiltgen.io.output import write_text  # validated, atomic, exclusive

    target = Path(path)
    write_text(target, json.dumps(data, indent=2) if target.suffix.lower() == ".json"
               else text + "\n", overwrite=overwrite)
    print(f"wrote {target}", file=sys.stderr)


def run_interpolate(args: argparse.Namespace) -> int:
    """Insert interpolated frames into a tilt series (or leave-one-out QA).

    Insert frames between the tilts of a series and write the denser series as MRC with a
    .rawtlt of the new angles and a .json listing which frames are predicted. The default
    method, auto, fine-tunes a copy of the pretrained network on the series' own real frames
    (--adapt-seconds), scores pretrained, adapted and linear interpolation by leave-one-out on
    held-out real frames, and uses the best; a network is used only if it beats linear
    interpolation there. The choice and its margin over linear are printed on stderr; --qa-
    report writes the QA table. With --qa, only the leave-one-out QA is run and printed.
    """
    from napari_tiltgen.align.prepare import inserted_as_recorded
    from napari_tiltgen.core.errors import TiltgenError
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.io.output import planned_outputs
    from napari_tiltgen.io.writers import plan_write, write
    from napari_tiltgen.nets.interpolation.api import interpolate_series, real_frames
    from napari_tiltgen.nets.interpolation.qa import leave_one_out
    from napari_tiltgen.recon.api import with_vertical_axis

    # every output check (folder, extension, inputs and their sidecars, existing) before compute
    inputs = [args.input, getattr(args, "tilt_file", None), args.weights]
    if args.qa_report:
        planned_outputs(args.qa_report, overwrite=args.overwrite, inputs=inputs,
                        what="QA report")
    plan = None
    if args.out and not args.qa:
        plan = plan_write(args.out, "tilt_series", overwrite=args.overwrite, inputs=inputs,
                          extra=[Path(args.out).with_suffix(".json")])
    # turned without blur: the inserted frames are turned back and must look like the real ones
    recorded, prepared = read_series_from_args(args, keep_recorded=True, rotation_order=None)
    ts, note = with_vertical_axis(prepared)
    if note:
        print(f"tiltgen: note: {note}", file=sys.stderr)
    kw = {"weights": args.weights, "device": args.device,
          "allow_out_of_range": args.allow_out_of_range, "symmetric": not args.no_symmetric}
    if args.qa:
        if args.method in ("auto", "adapted"):
            from napari_tiltgen.nets.interpolation.adapt import AdaptConfig
            from napari_tiltgen.nets.interpolation.select import adapt_and_select

            cfg = AdaptConfig(seconds=args.adapt_seconds, max_steps=args.adapt_steps)
            sel = run(adapt_and_select(real_frames(ts), requested=args.method, config=cfg,
                                       weights=args.weights, device=args.device,
                                       symmetric=not args.no_symmetric),
                      show=not args.quiet, desc="adapt + leave-one-out")
            print(sel.table())
            print(f"tiltgen: {sel.message}", file=sys.stderr)
            if args.qa_report:
                _write_qa(args.qa_report, sel.table(), sel.as_dict(), args.overwrite)
            return 0
        qa = run(leave_one_out(real_frames(ts), args.method, **kw), show=not args.quiet,
                 desc="leave-one-out")
        print(qa.table())
        for w in qa.warnings:
            print(f"tiltgen: warning: {w}", file=sys.stderr)
        if args.qa_report:
            _write_qa(args.qa_report, qa.table(), qa.as_dict(), args.overwrite)
        return 0
    if not args.out:
        raise TiltgenError("give --out OUT.mrc (or --qa for leave-one-out QA).")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise TiltgenError("already exists; use --overwrite or another name.", out)
    if out.resolve() == Path(args.input).resolve():
        raise TiltgenError("the output would replace the input tilt series; choose another "
                           "name.", out)
    if args.frames_per_gap is None and args.target_step is None:
        raise TiltgenError("give --frames-per-gap N or --target-step DEG.")
    res = run(interpolate_series(ts, frames_per_gap=args.frames_per_gap,
                                 target_step_deg=args.target_step, method=args.method,
                                 adapt_seconds=args.adapt_seconds,
                                 adapt_steps=args.adapt_steps, **kw),
              show=not args.quiet, desc=f"interpolate ({args.method})")
    for w in res.warnings:
        print(f"tiltgen: warning: {w}", file=sys.stderr)
    if res.selection is not None:
        print(res.selection.table(), file=sys.stderr)
        print(f"tiltgen: method: {res.method} ({res.selection.message})", file=sys.stderr)
        if args.qa_report:
            _write_qa(args.qa_report, res.selection.table(),
                      res.selection.as_dict(), args.overwrite)
    elif args.qa_report:
        print("tiltgen: note: --qa-report is written only for --method auto or adapted "
              "(or with --qa).", file=sys.stderr)
    # the output is the input as recorded with the new frames inserted: the real frames as
    # they were read, the predicted ones mapped back to the recorded geometry and units
    res = replace(res, tilt_series=inserted_as_recorded(
        res.tilt_series, res.predicted, res.source_index, ts, recorded,
        "real frames as recorded; inserted frames made on the prepared series and mapped back "
        "to the recorded geometry and units"))
    # the stack, its .rawtlt and the .json report appear together or not at all
    path = write(res.tilt_series, plan=plan,
                 extra={out.with_suffix(".json"): json.dumps(res.report(), indent=2)})
    n_new = int(res.predicted.sum())
    print(f"wrote {path}: {res.tilt_series.n_tilts} frames ({n_new} predicted by {res.method}), "
          f"angles in {path.with_suffix('.rawtlt')}, predicted frames listed in "
          f"{path.with_suffix('.json')}")
    return 0
