"""``tiltgen train-inpainting``, ``tiltgen eval-inpainting`` and ``tiltgen inpaint``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_tiltgen.cli.options import (
    add_angle_options,
    add_command,
    add_compute_options,
    add_training_options,
    config_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    _register_eval(sub)
    _register_inpaint(sub)


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
def _register_train(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train-inpainting", run_train,
        out=("DIR", "output folder"),
    )
    p.add_argument("--size", type=int, default=64, help="training slice edge, px (default 64)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per step (default 16)")
    p.add_argument("--width", type=int, default=12,
                   help="generator channels at full resolution (paper 32; default 12)")
    p.add_argument("--wedge-range", default="20,90", metavar="LO,HI",
                   help="missing wedges to train on, degrees (default 20,90)")
    p.add_argument("--channels", default="wbp,sirt",
                   help="input reconstructions, comma-separated (default wbp,sirt)")
    p.add_argument("--sirt-iterations", type=int, default=20,
                   help="SIRT iterations of the SIRT input (default 20)")
    p.add_argument("--bank-size", type=int, default=256,
                   help="cluster slices and natural images generated once, each (default 256)")
    add_training_options(p, lr=1e-3, weight_decay=1e-3, val_every=100)
    p.add_argument("--adv-weight", type=float, default=0.003,
                   help="weight of the RaLSGAN loss next to the pixel loss (default 0.003)")
    p.add_argument("--adv-start", type=float, default=0.5,
                   help="fraction of the steps before the GAN terms start (default 0.5)")
    add_compute_options(p)
    p.add_argument("--sources", default="phantom=0.5,cluster=0.25,natural=0.25",
                   metavar="NAME=W,...",
                   help="share of phantom faces, cluster slices, natural images and slices of "
                   "the training object families (family; simulate.families) "
                   "(default phantom=0.5,cluster=0.25,natural=0.25)")
    p.add_argument("--noise-level", choices=["train", "realistic"], default=None,
                   help="degrade the sinograms like a microscope (Poisson over a dose range, "
                   "Gaussian, scan lines, offsets, ramps, jitter, blur; simulate.degrade) "
                   "instead of 0-1 %% Gaussian noise")
    p.add_argument("--group-size", type=int, default=4,
                   help="slices sharing one wedge and tilt step (one projector) (default 4)")
    p.add_argument("--half", action="store_true", help="export float16 weights (half the size)")


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

    channels = [c.strip().lower() for c in args.channels.split(",") if c.strip()]
    cfg = config_from_args(
        TrainConfig, args, out_dir=args.out,
        wedge_range_deg=_pair(args.wedge_range, "--wedge-range"),
        net=GeneratorConfig(in_channels=channels, width=args.width,
                            residual_channel=len(channels) - 1),
        source_weights=_sources(args.sources),
    )
    summary = train(cfg, show=not args.quiet)
    print(json.dumps(summary, indent=2))
    if args.export:
        model, info = load_generator(Path(args.out) / "best.safetensors")
        path = save_generator(args.export, model, info, half=args.half)
        print(f"exported the best weights to {path}")
    return 0


# ---------------------------------------------------------------------------- eval
def _register_eval(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "eval-inpainting", run_eval,
        out=("DIR", "output folder"),
    )
    p.add_argument("--weights", metavar="FILE", help="weights (default: the packaged model)")
    p.add_argument("--wedges", default="40,50,60,70,80",
                   help="missing wedges, degrees (default 40,50,60,70,80)")
    p.add_argument("--n-phantoms", type=int, default=16, help="held-out phantoms per wedge")
    p.add_argument("--n-clusters", type=int, default=8, help="held-out cluster slices per wedge")
    p.add_argument("--size", type=int, default=None,
                   help="slice edge, px (default: the model's training size)")
    p.add_argument("--tilt-step", type=float, default=2.0, help="tilt increment, degrees")
    p.add_argument("--noise", type=float, default=0.0,
                   help="Gaussian sinogram noise, fraction of the sinogram maximum (default 0)")
    p.add_argument("--sirt-iterations", type=int, default=100, help="SIRT baseline iterations")
    p.add_argument("--tv-iterations", type=int, default=200, help="TV baseline iterations")
    p.add_argument("--tv-weight", type=float, default=None,
                   help="TV weight (default: the best of a small sweep on validation phantoms)")
    p.add_argument("--refine-iterations", type=int, default=10,
                   help="SIRT iterations of the data-consistency step after the network "
                   "(default 10; 0: the network alone)")
    p.add_argument("--fourier-size", type=int, default=64,
                   help="edge of the cluster volume of the Fourier view, px (0: skip)")
    add_compute_options(p)


def run_eval(args: argparse.Namespace) -> int:
    """Benchmark inpainting against WBP, SIRT and TV on held-out phantoms and clusters.

    Held-out phantom faces and held-out simulated cluster slices (elements never seen in
    training), wedges 40-80 degrees: PSNR, SSIM and NRMSE of WBP, SIRT, TV and the inpainting
    model (alone, and with its data-consistency step) against the ground truth. Writes
    table.md, results.json, metrics.png and fourier.png (the 3-D Fourier power of a held-out
    cluster volume before and after inpainting, showing what was filled in the missing wedge).
    """
    from napari_tiltgen.nets.inpainting.evaluate import EvalConfig, evaluate

    cfg = config_from_args(
        EvalConfig, args, out_dir=args.out, tilt_step_deg=args.tilt_step,
        wedges_deg=[float(v) for v in args.wedges.split(",") if v.strip()],
    )
    result = evaluate(cfg, show=not args.quiet)
    print(result["table"])
    print(f"wrote {Path(args.out) / 'table.md'}, results.json, metrics.png, fourier.png")
    return 0


# ---------------------------------------------------------------------------- inpaint
def _register_inpaint(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "inpaint", run_inpaint,
        overwrite="replace OUTPUT if it exists (never the input)",
    )
    p.add_argument("input", help="tilt series (.mrc/.st/.ali/.tif) or volume (with --volume)")
    p.add_argument("output", help="output volume (.mrc or .tif); never the input file")
    p.add_argument("--volume", action="store_true", help="INPUT is a reconstructed volume")
    p.add_argument("--wedge", type=float, metavar="DEG",
                   help="missing wedge in degrees (when no angles are known)")
    p.add_argument("--weights", metavar="FILE", help="weights (default: the packaged model)")
    add_compute_options(p, threads=False)
    p.add_argument("--batch-size", type=int, default=8, help="slices per network call")
    p.add_argument("--consistency", choices=["closest", "iterative"], default="closest",
                   help="how the result is made to reproject no worse than SIRT: closest = the "
                   "volume nearest the network's that does (default; best on noisy data), "
                   "iterative = SIRT iterations from the network's output (better on clean, "
                   "low-noise data)")
    p.add_argument("--refine-iterations", type=int, default=10,
                   help="--consistency iterative (and --soft-consistency): SIRT iterations "
                   "started from the network's output, at least this many (default 10)")
    p.add_argument("--max-refine-iterations", type=int, default=100,
                   help="more data-consistency iterations, up to this many, while the result "
                   "reprojects worse than SIRT at the measured angles; past them it is blended "
                   "toward the SIRT volume (default 100)")
    p.add_argument("--reference-iterations", type=int, default=100,
                   help="iterations of the reference SIRT whose reprojection error the result "
                   "must not exceed (default 100)")
    p.add_argument("--soft-consistency", action="store_true",
                   help="do not enforce 'never reprojects worse than SIRT': exactly "
                   "--refine-iterations (0: the network's output as it is); still reported")
    p.add_argument("--report", metavar="FILE.json",
                   help="write the data-consistency report (reprojection errors of SIRT, the "
                   "network alone and the result; iterations; blend toward SIRT) here")
    p.add_argument("--allow-out-of-range", action="store_true",
                   help="run even when the wedge lies outside the trained range (warns)")
    add_angle_options(p)


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
