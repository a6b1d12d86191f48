"""``tiltgen simulate`` (one tilt series + ground truth) and ``tiltgen simulate-dataset``."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_tiltgen.core.errors import TiltgenError


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
