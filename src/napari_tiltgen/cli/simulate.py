"""``tiltgen simulate`` (one tilt series + ground truth) and ``tiltgen simulate-dataset``."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_tiltgen.cli.options import add_command
from napari_tiltgen.core.errors import TiltgenError


def _add_structure_options(p: argparse.ArgumentParser) -> None:
    from napari_tiltgen.simulate.clusters import ELEMENTS, STRUCTURES, VARIANTS

    g = p.add_argument_group("cluster (ase)")
    g.add_argument("--structure", choices=STRUCTURES, default="icosahedron",
                   help="cluster shape (default icosahedron)")
    g.add_argument("--element", default="Au",
                   help=f"main element, e.g. {', '.join(ELEMENTS)} (default Au)")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--shells", type=int, help="size as a shell count (default 4)")
    size.add_argument("--diameter", type=float, metavar="Å",
                      help="size as a diameter in Å (nearest shell count)")
    g.add_argument("--variant", choices=VARIANTS, default="solid",
                   help="solid, alloy (random), core_shell (element2 core) or hollow")
    g.add_argument("--element2", help="second element (alloy solute or core)")
    g.add_argument("--fraction", type=float,
                   help="share of atoms for the variant (alloy 0.5, core/hollow 0.3 by default)")
    g.add_argument("--orientation", default="random",
                   help="'random' (from --seed), 'none', or Euler angles ZYZ in degrees 'a,b,c'")
    g.add_argument("--dynamic", choices=["growth", "sintering", "alloying"],
                   help="simulate a cluster that changes during the acquisition instead")
    g.add_argument("--frame-time", type=float, default=20.0, metavar="S",
                   help="dynamic: seconds per frame (default 20)")
    g.add_argument("--order", choices=["sequential", "dose_symmetric"], default="sequential",
                   help="dynamic: acquisition order (default sequential)")


def _add_imaging_options(p: argparse.ArgumentParser, single: bool = True) -> None:
    from napari_tiltgen.simulate.haadf import PRESETS

    g = p.add_argument_group("imaging")
    g.add_argument("--size", type=int, default=128, help="frame edge in pixels (default 128)")
    if single:
        g.add_argument("--pixel-size", type=float, metavar="Å",
                       help="pixel size in Å (default: the cluster fills 75%% of the frame)")
        g.add_argument("--preset", choices=list(PRESETS), default="non_aberrated",
                       help="optics: non_aberrated (35 mrad) or aberrated (25 mrad, Cs 100 µm)")
    g.add_argument("--tilt-range", type=float, nargs=2, default=(-90.0, 90.0),
                   metavar=("FIRST", "LAST"), help="first and last tilt, degrees (-90 90)")
    g.add_argument("--tilt-step", type=float, default=1.0, metavar="DEG",
                   help="tilt increment, degrees (default 1)")
    g.add_argument("--dose", type=float, metavar="E_PER_A2",
                   help="electron dose per frame in e-/Å² for Poisson noise (default: none)")
    g.add_argument("--mode", choices=["fast", "abtem"], default="fast",
                   help="fast incoherent model (default) or abTEM multislice (minutes per frame)")
    g.add_argument("--seed", type=int, default=0, help="seed of orientation and noise (0)")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "simulate", run_simulate,
        overwrite="replace existing output files",
    )
    p.add_argument("output", metavar="OUT.mrc", help="tilt series to write (.mrc/.st)")
    p.add_argument("--volume", metavar="GT.mrc",
                   help="ground-truth volume to write (default OUT_gt.mrc)")
    p.add_argument("--atoms", metavar="ATOMS.xyz",
                   help="atom positions (extended XYZ, Å) to write (default OUT_atoms.xyz)")
    _add_structure_options(p)
    _add_imaging_options(p)

    d = add_command(
        sub, "simulate-dataset", run_dataset,
        out=("DIR", "output folder"),
        overwrite="delete a data set made with other settings in DIR and start again",
    )
    from napari_tiltgen.simulate.clusters import STRUCTURES, VARIANTS
    from napari_tiltgen.simulate.haadf import PRESETS

    d.add_argument("--n-train", type=int, default=64, help="training samples (64)")
    d.add_argument("--n-val", type=int, default=8, help="validation samples (8)")
    d.add_argument("--n-test", type=int, default=16, help="test samples (16)")
    d.add_argument("--shard-size", type=int, default=8, help="samples per HDF5 file (8)")
    d.add_argument("--presets", default=",".join(PRESETS),
                   help=f"comma-separated optics presets ({','.join(PRESETS)})")
    d.add_argument("--structures", default=",".join(STRUCTURES),
                   help="comma-separated shapes (default: all)")
    d.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated variants (default: all)")
    d.add_argument("--shells", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"),
                   help="range of shell counts (2 5)")
    d.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of training-element structures kept for validation (0.15)")
    d.add_argument("--no-volumes", action="store_true", help="do not store ground-truth volumes")
    d.add_argument("--workers", type=int, default=2,
                   help="worker processes, one torch thread each (default 2)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_imaging_options(d, single=False)


def _orientation(text: str):
    if text in ("random", "none"):
        return text
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise TiltgenError(f"--orientation must be 'random', 'none' or 'a,b,c' degrees; got "
                           f"{text!r}.")
    return vals


def _outputs(args: argparse.Namespace):
    """All output paths, validated before the simulation (see :mod:`napari_tiltgen.io.output`)."""
    from napari_tiltgen.io.output import planned_outputs

    out = Path(args.output)
    if out.suffix.lower() not in (".mrc", ".st", ".ali", ".mrcs"):
        raise TiltgenError(f"the output must be an MRC file (.mrc, .st); got {out.name}.")
    vol = Path(args.volume) if args.volume else out.with_name(out.stem + "_gt.mrc")
    if vol.suffix.lower() not in (".mrc", ".rec", ".map", ".tif", ".tiff"):
        raise TiltgenError("the ground-truth volume must be .mrc, .rec or .tif.", vol)
    atoms = Path(args.atoms) if args.atoms else out.with_name(out.stem + "_atoms.xyz")
    extra = [out.with_suffix(".rawtlt"), vol, atoms]
    if args.dynamic:
        extra += [vol.with_name(vol.stem + "_end" + vol.suffix),
                  out.with_name(out.stem + "_times.txt")]
    plan = planned_outputs(out, extra, overwrite=args.overwrite, create_folder=True,
                           what="output tilt series")
    return out, vol, atoms, plan


def _atoms_writer(atoms):
    def write(tmp: Path) -> None:
        import ase.io

        ase.io.write(tmp, atoms, format="extxyz")

    return write


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate a HAADF-STEM tilt series of an ase nanocluster (MRC + ground truth).

    Build a nanocluster with ase, simulate its HAADF-STEM tilt series (fast incoherent model or
    abTEM multislice; 200 keV, tilt about y) and write it as MRC with a .rawtlt sidecar, plus
    the ground-truth volume (same pixel size) and the atoms.
    """
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.io.writers import file_contents
    from napari_tiltgen.simulate.clusters import build_cluster, describe

    out, vol_path, atoms_path, plan = _outputs(args)
    common = {"tilt_range": tuple(args.tilt_range), "tilt_step": args.tilt_step,
              "size": args.size, "pixel_size_A": args.pixel_size, "optics": args.preset,
              "mode": args.mode, "dose_e_per_A2": args.dose, "seed": args.seed}
    if args.dynamic:
        from napari_tiltgen.simulate.dynamic import dynamic_cluster, simulate_dynamic_iter

        ph = dynamic_cluster(args.dynamic, args.element, structure=args.structure,
                             shells=args.shells or 3, element2=args.element2, seed=args.seed)
        res = run(simulate_dynamic_iter(ph, frame_time_s=args.frame_time, order=args.order,
                                        **common), desc="simulate")
        ts = res.tilt_series
        start, end = res.volume_at(0.0), res.volume_at(res.total_time_s)
        end_path = vol_path.with_name(vol_path.stem + "_end" + vol_path.suffix)
        times = out.with_name(out.stem + "_times.txt")
        plan.commit({  # every file or none
            **file_contents(ts, out), **file_contents(start, vol_path),
            **file_contents(end, end_path),
            times: "".join(f"{a:.3f} {t:.3f}\n" for a, t in zip(ts.tilt_angles, res.times_s)),
            atoms_path: _atoms_writer([res.atoms_at(0.0), res.atoms_at(res.total_time_s)]),
        })
        print(f"{args.dynamic} phantom ({ph.n_atoms_max} atoms), {ts.n_tilts} frames of "
              f"{ts.shape[1]} x {ts.shape[2]} px at {ts.pixel_size_A:.4g} Å over "
              f"{res.total_time_s:.0f} s")
        print(f"wrote {out} (+ .rawtlt), {vol_path} (t = 0), {end_path} (t = end), {times} "
              f"(angle, time), {atoms_path}")
        return 0

    from napari_tiltgen.simulate.series import simulate_tilt_series_iter

    shells = args.shells if (args.shells or args.diameter) else 4
    atoms = build_cluster(args.structure, args.element, shells=shells,
                          diameter_A=args.diameter, variant=args.variant,
                          element2=args.element2, fraction=args.fraction,
                          orientation=_orientation(args.orientation), seed=args.seed)
    res = run(simulate_tilt_series_iter(atoms, **common), desc="simulate")
    ts, vol = res.tilt_series, res.volume
    plan.commit({**file_contents(ts, out), **file_contents(vol, vol_path),
                 atoms_path: _atoms_writer(atoms)})  # every file or none
    print(f"{describe(atoms)}: {ts.n_tilts} frames of {ts.shape[1]} x {ts.shape[2]} px at "
          f"{ts.pixel_size_A:.4g} Å ({args.mode}, {args.preset})")
    print(f"wrote {out} (+ .rawtlt), {vol_path}, {atoms_path}")
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    """Write a sharded, resumable HDF5 training/validation/test data set.

    Simulate many cluster tilt series (both optics presets) into HDF5 shards
    DIR/{train,val,test}/shard-NNNNN.h5, split by structure (test uses the held-out elements
    Yb, Ir, Xe, Al). Finished shards are skipped when the command is run again with the same
    settings, and every sample is reproducible from its seed.
    """
    from napari_tiltgen.core.progress import run
    from napari_tiltgen.simulate.dataset import DatasetConfig, generate_dataset_iter

    def items(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    cfg = DatasetConfig(
        n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, shard_size=args.shard_size,
        size=args.size, tilt_range=tuple(args.tilt_range), tilt_step=args.tilt_step,
        presets=items(args.presets), dose_e_per_A2=args.dose, mode=args.mode, seed=args.seed,
        structures=items(args.structures), variants=items(args.variants),
        shells=tuple(args.shells), val_fraction=args.val_fraction,
        save_volumes=not args.no_volumes,
    )
    if args.workers < 1:
        raise TiltgenError("--workers must be at least 1.")
    res = run(generate_dataset_iter(args.out, cfg, workers=args.workers,
                                    overwrite=args.overwrite),
              show=not args.quiet, desc="simulate-dataset")
    print(f"{len(res['written'])} shards written, {len(res['skipped'])} already complete, in "
          f"{res['out_dir']} (config {cfg.hash()})")
    return 0
