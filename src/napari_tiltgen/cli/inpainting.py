"""``tiltgen train-inpainting``, ``tiltgen eval-inpainting`` and ``tiltgen inpaint``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_tiltgen.cli.options import (
    config_from_args,
)


def _pair(text: str, what: str) -> tuple[float, float]:
    from napari_tiltgen.core.errors import TiltgenError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise TiltgenError(f"{what}: expected two comma-separated numbers; got {text!r}.") \
            from None
    return lo, hi


def _sources(text: str) -> dict[str, float]:
    from napari_tiltgen.core.errors import TiltgenError

    known = ("phantom", "cluster", "natural", "family")
    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if name not in known or w < 0:
            raise TiltgenError(f"--sources: expected NAME=WEIGHT with NAME one of "
                               f"{', '.join(known)} and WEIGHT >= 0; got {item!r}.")
        out[name] = w
    if not out or sum(out.values()) <= 0:
        raise TiltgenError(f"--sources: the weights must not all be zero; got {text!r}.")
    return out


# ---------------------------------------------------------------------------- train


def run_train(args: argparse.Namespace) -> int:
    """Train the missing-wedge inpainting GAN on images generated on the fly.

    Train the wedge-conditioned U-Net++ GAN (IRDM) on phantom faces, slices of simulated
    clusters and scikit-image sample images, each projected over a random wedge-limited tilt
    range and reconstructed (WBP and SIRT). Resumes from OUT/checkpoint.safetensors when it
    exists. Writes OUT/best.safetensors (best validation PSNR), OUT/last.safetensors and
    OUT/log.jsonl; --export copies the best weights to a file, e.g. the package's
    models/inpainting.safetensors.
    """
    from napari_tiltgen.nets.inpainting.network import (
        GeneratorConfig,
        load_generator,
        save_generator,
    )
    from napari_tiltgen.nets.inpainting.train import TrainConfig, train
    from napari_tiltgen.simulate.families import training_families

    channels = [c.strip().lower() for c in args.channels.split(",") if c.strip()]
    cfg = config_from_args(
        TrainConfig, args, out_dir=args.out,
        wedge_range_deg=_pair(args.wedge_range, "--wedge-range"),
        net=GeneratorConfig(in_channels=channels, width=args.width,
                            residual_channel=len(channels) - 1),
        source_weights=_sources(args.sources),
        families=training_families(args.families.split(",")) if args.families else None,
    )
    summary = train(cfg, show=not args.quiet)
    print(json.dumps(summary, indent=2))
    if args.export:
        model, info = load_generator(Path(args.out) / "best.safetensors")
        path = save_generator(args.export, model, info, half=args.half)
        print(f"exported the best weights to {path}")
    return 0


# ---------------------------------------------------------------------------- eval


def run_eval(args: argparse.Namespace) -> int:
    """Benchmark inpainting against WBP, SIRT and TV on held-out phantoms and clusters.

    Held-out phantom faces and held-out simulated cluster slices (elements never seen in
    training), wedges 40-80 degrees: PSNR, SSIM and NRMSE of WBP, SIRT, TV and the inpainting
    model (alone, and with its data-consistency step) against the ground truth. Writes
    table.md, results.json, metrics.png and fourier.png (the 3-D Fourier power of a held-out
    cluster volume before and after inpainting, showing what was filled in the missing wedge).
    """
    from napari_tiltgen.core.devices import num_threads
    from napari_tiltgen.nets.inpainting.evaluate import EvalConfig, evaluate

    cfg = config_from_args(
        EvalConfig, args, out_dir=args.out, tilt_step_deg=args.tilt_step,
        wedges_deg=[float(v) for v in args.wedges.split(",") if v.strip()],
        symmetric=not args.no_symmetric,
    )
    with num_threads(args.threads):
        result = evaluate(cfg, show=not args.quiet)
    print(result["table"])
    print(f"wrote {Path(args.out) / 'table.md'}, results.json, metrics.png, fourier.png")
    return 0


# ---------------------------------------------------------------------------- inpaint


def run_inpaint(args: argparse.Namespace) -> int:
    """Fill the missing wedge of a volume (or of a tilt series' reconstruction).

    Apply the pretrained inpainting model slice by slice in the planes perpendicular to the
    tilt axis. INPUT is a tilt series (reconstructed first with WBP and SIRT) or, with
    --volume, a reconstructed volume; the missing wedge comes from the series' angles (or
    --tilt-file / --tilt-start/--tilt-step, or --wedge).
    """
    import os

    from napari_tiltgen.core.errors import TiltgenError
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.nets.inpainting.api import inpaint_iter

    if args.output and args.out_option and args.output != args.out_option:
        raise TiltgenError(f"two outputs given ({args.output} and --out {args.out_option}); "
                           "give one.")
    args.output = args.output or args.out_option
    if not args.output:
        raise TiltgenError("no output given: tiltgen inpaint INPUT OUTPUT (or --out OUTPUT).")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise TiltgenError("the output must be a new file; the input is never overwritten.",
                           args.output)
    if args.volume:
        from napari_tiltgen.io import read_volume

        source = read_volume(args.input)
        from napari_tiltgen.core.resources import check_memory  # refuse before an OOM

        check_memory(22.0 * 4 * source.data.size, f"inpaint of a {' x '.join(map(str, source.shape))}"
                     " voxel volume", "crop or bin the volume, or use a larger machine.",
                     args.input)
        if args.tilt_file:
            from napari_tiltgen.io.metadata import read_angle_file

            source.provenance["tilt_angles"] = [float(v) for v in
                                                read_angle_file(args.tilt_file)]
    else:
        from napari_tiltgen.cli.options import read_series_from_args
        from napari_tiltgen.recon.api import with_vertical_axis

        source, turn = with_vertical_axis(read_series_from_args(args))
        if turn:
            print(f"note: {turn}", file=sys.stderr)
    from napari_tiltgen.io.writers import plan_write, write

    plan = plan_write(args.output, "volume", overwrite=args.overwrite, inputs=[args.input],
                      extra=[args.report] if args.report else [])
    vol, notes = run(inpaint_iter(source, missing_wedge_deg=args.wedge, weights=args.weights,
                             device=args.device, batch_size=args.batch_size,
                             refine_iterations=args.refine_iterations,
                             max_refine_iterations=args.max_refine_iterations,
                             reference_iterations=args.reference_iterations,
                             hard_consistency=not args.soft_consistency,
                             consistency=args.consistency,
                             network_scale=args.network_scale,
                             symmetric=not args.no_symmetric,
                             allow_out_of_range=args.allow_out_of_range),
                     show=not args.quiet, desc="inpaint")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    from napari_tiltgen.nets.inpainting.consistency import consistency_note

    dc = vol.provenance.get("data_consistency")
    if dc:
        print(consistency_note(dc), file=sys.stderr)
    extra = {}
    if args.report:
        extra[Path(args.report)] = json.dumps(
            {"input": str(args.input), "output": str(args.output),
             "missing_wedge_deg": vol.provenance["parameters"]["missing_wedge_deg"],
             "data_consistency": dc, "warnings": notes}, indent=2) + "\n"
    path = write(vol, args.output, plan=plan, extra=extra)
    if args.report:
        print(f"wrote {args.report}", file=sys.stderr)
    print(f"wrote {path} ({vol.shape[0]} x {vol.shape[1]} x {vol.shape[2]}, "
          f"wedge {vol.provenance['parameters']['missing_wedge_deg']:.1f} deg)")
    return 0
