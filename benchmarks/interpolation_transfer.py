"""Transfer benchmark of tilt-frame interpolation: held-out object families, realistic noise.

Tilt series of object families held out of training (default
:data:`~napari_tiltgen.simulate.families.HELDOUT_FAMILIES`: supported-particle catalysts,
sintered aggregates, the texture generator on held-out images and shapes) are projected with
the package's forward model at -60..60 degrees every degree, then degraded with the
``realistic`` setting of :func:`~napari_tiltgen.simulate.degrade.sample_params` (Poisson dose
100-1000 e- at the brightest pixels, 0.5-2 % Gaussian and 0.3-1 % scan-line noise, 0.5-1.5 px
residual jitter, up to 1 degree tilt-axis error, vacuum offset and gradient; drawn per series).

For each gap ``g``, every ``g``-th NOISY frame is kept and the frames between are predicted by
each model, by linear interpolation and by linear interpolation of the inputs smoothed with a
1-px Gaussian (``linear_blur``: how much of a gain plain noise removal gives), ``--pairs`` pairs
per series, evenly spread over the range. Predictions are scored against the CLEAN reference frames (same geometry and
background, no noise, no jitter), each scaled by its true range, as in
``tiltgen eval-interpolation``. Models run as the user's command runs them
(:func:`~napari_tiltgen.nets.interpolation.frames.check_inputs` picks the binning of the flow
estimation from the object's size against the model's training data).

Run::

    git show 8193553:src/napari_tiltgen/models/interpolation.safetensors > old.safetensors
    python benchmarks/interpolation_transfer.py --model old=old.safetensors --model new=packaged

``packaged`` means the weights shipped in the package. A four-frame network (``--context 2``
of ``tiltgen train-interpolation``) also gets the kept frame one gap before and one gap after
each pair, where they exist (at the ends of the range it runs without). Prints one table per family and one over
all families (PSNR in dB and the gain of each model over linear); a few minutes on one core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter


def main() -> None:
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.interpolation.evaluate import frame_metrics
    from napari_tiltgen.nets.interpolation.frames import check_inputs, model_frames
    from napari_tiltgen.nets.interpolation.network import load_model
    from napari_tiltgen.simulate.degrade import degrade, sample_params
    from napari_tiltgen.simulate.families import FAMILIES, HELDOUT_FAMILIES, tilt_series

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=FILE",
                   help="a model to measure (repeatable); FILE 'packaged' = the shipped weights")
    p.add_argument("--families", default=",".join(HELDOUT_FAMILIES),
                   help="object families (default: the held-out ones)")
    p.add_argument("--series", type=int, default=3, help="series per family (default 3)")
    p.add_argument("--sizes", default="128,160,192",
                   help="frame sizes, px, one per series in turn (default 128,160,192)")
    p.add_argument("--gaps", default="2,4,6,8,10,12", help="gaps, degrees")
    p.add_argument("--pairs", type=int, default=6, help="frame pairs per gap and series")
    p.add_argument("--noise", default="realistic", help="realistic, train or clean")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-symmetric", action="store_true",
                   help="one prediction per frame (default: the mean over the eight mirror/swap "
                   "symmetries, as tiltgen interpolate makes them)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    from napari_tiltgen.nets.interpolation.frames import load_pretrained

    specs = a.model or ["packaged=packaged"]
    models = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        models[name] = (load_pretrained(None, "cpu") if path in ("", "packaged")
                        else load_model(path, "cpu"))
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    for f in families:
        if f not in FAMILIES:
            raise SystemExit(f"unknown family {f!r}")
    sizes = [int(s) for s in a.sizes.split(",")]
    gaps = [int(g) for g in a.gaps.split(",")]
    angles = np.arange(-60.0, 60.0 + 1e-9, 1.0)
    methods = ["linear", "linear_blur", *models]
    # psnr[(family, gap, method)] -> list of per-frame PSNR
    psnr: dict[tuple[str, int, str], list[float]] = {}
    bins: dict[str, set[int]] = {m: set() for m in models}
    for fi, fam in enumerate(families):
        for s in range(a.series):
            rng = np.random.default_rng([a.seed, fi, s])
            size = sizes[s % len(sizes)]
            clean, info = tilt_series(fam, size, angles, rng)
            noisy, ref = degrade(clean, rng, sample_params(rng, a.noise), return_clean=True)
            ts = TiltSeries(noisy, tilt_angles=angles, pixel_size_A=info["pixel_size_A"])
            for g in gaps:
                kept = np.arange(0, angles.size, g)
                starts = kept[:-1]
                pick = starts[np.unique(np.linspace(0, starts.size - 1, a.pairs).round()
                                        .astype(int))]
                tpos = [k / g for k in range(1, g)]
                for m, (model, minfo) in models.items():
                    _, bf = check_inputs(ts, [float(g)], minfo, allow_out_of_range=True)
                    bins[m].add(bf)
                for i0 in pick:
                    i1 = i0 + g
                    truth = ref[i0 + 1:i1]
                    preds = {"linear": np.stack([(1 - t) * noisy[i0] + t * noisy[i1]
                                                 for t in tpos])}
                    # a denoising baseline: linear interpolation of the inputs smoothed by a
                    # Gaussian of 1 px (how much of a gain is plain noise removal?)
                    b0, b1 = (gaussian_filter(noisy[i], 1.0, mode="nearest") for i in (i0, i1))
                    preds["linear_blur"] = np.stack([(1 - t) * b0 + t * b1 for t in tpos])
                    for m, (model, minfo) in models.items():
                        _, bf = check_inputs(ts, [float(g)], minfo, allow_out_of_range=True)
                        # four-frame networks also get the kept frame one gap before i0 and
                        # one gap after i1 (None at the ends, as in tiltgen interpolate)
                        outer = (noisy[i0 - g] if i0 - g >= 0 else None,
                                 noisy[i1 + g] if i1 + g < angles.size else None)
                        preds[m] = model_frames(model, noisy[i0], noisy[i1], tpos, float(g),
                                                bin_factor=bf, symmetric=not a.no_symmetric,
                                                outer=outer)
                    for m in methods:
                        vals = frame_metrics(truth, preds[m])["psnr"]
                        psnr.setdefault((fam, g, m), []).extend(vals.tolist())
    elapsed = time.perf_counter() - t_start

    def table(fams: list[str], title: str) -> None:
        print(f"\n### {title}\n")
        head = "| gap (deg) | frames | " + " | ".join(f"{m} PSNR" for m in methods) + " | " + \
            " | ".join(f"{m} - linear (dB)" for m in methods[1:]) + " |"
        print(head)
        print("|" + "---|" * (1 + 2 * len(methods)))
        for g in gaps:
            vals = {m: [v for f in fams for v in psnr[(f, g, m)]] for m in methods}
            mean = {m: float(np.mean(v)) for m, v in vals.items()}
            cells = [f"{mean[m]:.2f}" for m in methods]
            gains = [f"{mean[m] - mean['linear']:+.2f}" for m in methods[1:]]
            print(f"| {g} | {len(vals['linear'])} | " + " | ".join(cells) + " | "
                  + " | ".join(gains) + " |")

    print(f"# interpolation transfer benchmark: families {', '.join(families)}; noise "
          f"{a.noise}; {a.series} series per family ({a.sizes} px), -60..60 deg every 1 deg; "
          f"{a.pairs} pairs per gap and series; seed {a.seed}; networks "
          f"{'one prediction per frame' if a.no_symmetric else 'symmetric (8 averaged)'}")
    print("flow binning used (check_inputs): " +
          ", ".join(f"{m}: {sorted(b)}" for m, b in bins.items()))
    for f in families:
        table([f], f"family: {f}")
    if len(families) > 1:
        table(families, "all families (mean over frames)")
    print(f"\n{elapsed:.0f} s")


if __name__ == "__main__":
    main()
