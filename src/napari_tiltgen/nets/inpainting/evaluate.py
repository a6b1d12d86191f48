"""Benchmark of the inpainting model against WBP, SIRT and TV on held-out data.

Held-out sets (never drawn in training or validation):

* phantom faces from the seed stream :data:`~napari_tiltgen.nets.inpainting.data.HELDOUT_SEED`;
* cluster slices of the held-out elements (Yb, Ir, Xe, Al) from the next seed stream.

For every wedge the slices are projected over ``[-a, a]`` (``a = 90 - wedge / 2``) with the
package's projector (noise-free unless ``noise`` is set) and reconstructed by WBP, SIRT, TV
(2-D TV within each slice; its weight is the best of a sweep on separate validation phantoms at
that wedge, so TV is tuned, not handicapped) and the inpainting pipeline: the network alone
(``network``) and the network followed by its data-consistency step (``inpainting``, SIRT
started from the network's output, ``refine_iterations`` iterations; what
:func:`~napari_tiltgen.nets.inpainting.api.inpaint` returns by default). Each result is compared
with the ground truth slice by PSNR and SSIM (data range = the slice's range) and NRMSE
(Euclidean), then averaged.

The Fourier view reconstructs a held-out 3-D cluster from a wedge-limited tilt series with WBP,
SIRT and :func:`~napari_tiltgen.nets.inpainting.api.inpaint_iter`, and shows the central
``(k_z, k_x)`` section of the 3-D power spectrum: the missing wedge is the empty double cone
around ``k_z`` in WBP (SIRT with its positivity constraint fills part of it); what the
network put there is visible in the inpainted volume's spectrum.
It also reports the Fourier correlation with the truth inside and outside the wedge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.evaluate.metrics import nrmse, psnr, ssim
from napari_tiltgen.nets.inpainting.api import load_pretrained
from napari_tiltgen.nets.inpainting.apply import SYMMETRIC_DEFAULT, inpaint_slices
from napari_tiltgen.nets.inpainting.consistency import REFINE_ITERATIONS, enforce_consistency
from napari_tiltgen.nets.inpainting.data import (
    HELDOUT_SEED,
    make_image,
    normalise_inputs,
    sinogram_reconstructions,
    wedge_angles,
)
from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.recon.iterative import sirt
from napari_tiltgen.recon.tv import tv_reconstruct
from napari_tiltgen.recon.wbp import wbp

__all__ = ["METHODS", "EvalConfig", "evaluate", "evaluate_iter", "fourier_view", "heldout_images"]

METHODS = ("wbp", "sirt", "tv", "network", "inpainting")
TV_SWEEP = (0.0003, 0.001, 0.003, 0.01)


@dataclass
class EvalConfig:
    """Settings of :func:`evaluate` (see ``tiltgen eval-inpainting --help``)."""

    out_dir: str = "inpainting-eval"
    weights: str | None = None
    wedges_deg: list[float] = field(default_factory=lambda: [40.0, 50.0, 60.0, 70.0, 80.0])
    n_phantoms: int = 16
    n_clusters: int = 8
    size: int | None = None
    tilt_step_deg: float = 2.0
    noise: float = 0.0
    sirt_iterations: int = 100
    tv_iterations: int = 200
    tv_weight: float | None = None
    refine_iterations: int = REFINE_ITERATIONS
    fourier_size: int = 64
    fourier_wedge_deg: float = 60.0
    device: str = "auto"
    symmetric: bool = SYMMETRIC_DEFAULT
    command: str = ""


def heldout_images(source: str, n: int, size: int) -> np.ndarray:
    """The held-out evaluation slices ``(n, size, size)`` of ``"phantom"`` or ``"cluster"``."""
    k = {"phantom": 0, "cluster": 1}[source]
    rng = np.random.default_rng([HELDOUT_SEED, k])
    return np.stack([make_image(source, size, rng, heldout=True) for _ in range(n)])


def _sinogram(images: np.ndarray, angles: np.ndarray, noise: float, seed: int
              ) -> tuple[Projector, torch.Tensor]:
    b, n, _ = images.shape
    proj = Projector((n, b, n), angles)
    sino = proj.forward(torch.from_numpy(images).permute(1, 0, 2).contiguous())
    if noise > 0:
        rng = np.random.default_rng(seed)
        sino = sino + torch.from_numpy(
            rng.normal(0, noise * float(sino.max()), sino.shape).astype(np.float32))
    return proj, sino


def _slices(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 0, 2).detach().cpu().numpy()


def _scores(truth: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    out = {"psnr": [], "ssim": [], "nrmse": []}
    for t, r in zip(truth, rec):
        dr = float(t.max() - t.min())
        out["psnr"].append(psnr(t, r, data_range=dr))
        out["ssim"].append(ssim(t, r, data_range=dr))
        out["nrmse"].append(nrmse(t, r))
    return {k: float(np.mean(v)) for k, v in out.items()}


def _tv_weight_for(wedge: float, cfg: EvalConfig, size: int) -> float:
    """Best TV weight (mean PSNR) on 3 validation phantoms (not the test set) at this wedge."""
    rng = np.random.default_rng([HELDOUT_SEED, 9])
    imgs = np.stack([make_image("phantom", size, rng) for _ in range(3)])
    proj, sino = _sinogram(imgs, wedge_angles(wedge, cfg.tilt_step_deg), cfg.noise, 1)
    best, best_w = -np.inf, TV_SWEEP[0]
    for w in TV_SWEEP:
        rec = _slices(tv_reconstruct(proj, sino, cfg.tv_iterations, tv_weight=w, tv_dims=2,
                                     preview_every=0))
        p = _scores(imgs, rec)["psnr"]
        if p > best:
            best, best_w = p, w
    return best_w


def _reconstruct_all(images: np.ndarray, wedge: float, cfg: EvalConfig, model: Any,
                     info: dict[str, Any], tv_weight: float, device: torch.device
                     ) -> tuple[dict[str, np.ndarray], float]:
    angles = wedge_angles(wedge, cfg.tilt_step_deg)
    proj, sino = _sinogram(images, angles, cfg.noise, int(wedge))
    recs = {
        "wbp": _slices(wbp(proj, sino)),
        "sirt": _slices(sirt(proj, sino, cfg.sirt_iterations, preview_every=0)),
        "tv": _slices(tv_reconstruct(proj, sino, cfg.tv_iterations, tv_weight=tv_weight,
                                     tv_dims=2, preview_every=0)),
    }
    channels = list(info["in_channels"])
    t0 = time.perf_counter()
    inp = sinogram_reconstructions(proj, sino, channels, int(info["sirt_iterations"]))
    x, s = normalise_inputs(inp, channels)
    out = run(inpaint_slices(model, x, wedge, 8, device, cfg.symmetric),
              show=False) * s[:, None, None]
    recs["network"] = out.numpy()
    # the product's hard data-consistency step (the slices of a set form one volume)
    x0 = out.permute(1, 0, 2).contiguous()
    x_sirt = torch.from_numpy(recs["sirt"]).permute(1, 0, 2).contiguous()
    x, _ = run(enforce_consistency(proj, sino, x0, x_sirt, cfg.refine_iterations),
               show=False)
    recs["inpainting"] = _slices(x)
    return recs, (time.perf_counter() - t0) / len(images)


def fourier_view(size: int, wedge: float, weights: str | None, device: str, step_deg: float = 2.0,
                 sirt_iterations: int = 100, refine_iterations: int = REFINE_ITERATIONS
                 ) -> dict[str, Any]:
    """3-D power spectra of a held-out cluster: truth, WBP, SIRT and inpainted (a dict of arrays
    and Fourier correlations inside / outside the missing wedge)."""
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.inpainting.api import inpaint_iter
    from napari_tiltgen.simulate.clusters import build_cluster
    from napari_tiltgen.simulate.series import atoms_volume

    atoms = build_cluster("decahedron", "Ir", shells=4, variant="core_shell", element2="Al",
                          seed=HELDOUT_SEED)
    pos = np.asarray(atoms.positions)
    radius = float(np.max(np.linalg.norm(pos, axis=1))) + 1.0
    px = 2.0 * radius / (0.7 * size)
    truth = atoms_volume(atoms, (size,) * 3, px, max(0.5, 0.4 * px), centre=False)
    angles = wedge_angles(wedge, step_deg)
    proj = Projector(truth.shape, angles)
    ts = TiltSeries(proj.forward(torch.from_numpy(truth)).numpy(), tilt_angles=angles,
                    pixel_size_A=px, provenance={"source": "held-out cluster"})
    w = _slices(wbp(proj, torch.from_numpy(ts.data))).transpose(1, 0, 2)
    s = _slices(sirt(proj, torch.from_numpy(ts.data), sirt_iterations,
                     preview_every=0)).transpose(1, 0, 2)
    vol, _ = run(inpaint_iter(ts, weights=weights, device=device,
                              refine_iterations=refine_iterations), show=False)

    def power(v: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.fftshift(np.fft.fftn(v))) ** 2

    k = np.fft.fftshift(np.fft.fftfreq(size))
    kz, _, kx = np.meshgrid(k, k, k, indexing="ij")
    ang = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))  # 90 deg = along the beam (k_z)
    in_wedge = (ang > 90.0 - wedge / 2.0) & (np.hypot(kz, kx) > 2.0 / size)
    ft_t = np.fft.fftshift(np.fft.fftn(truth))

    def corr(v: np.ndarray, mask: np.ndarray) -> float:
        f = np.fft.fftshift(np.fft.fftn(v))
        a, b = ft_t[mask], f[mask]
        return float(np.real(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))

    out_wedge = ~in_wedge & (np.hypot(kz, kx) > 2.0 / size)
    c = size // 2
    return {
        "truth": power(truth)[:, c, :], "wbp": power(w)[:, c, :], "sirt": power(s)[:, c, :],
        "inpainting": power(vol.data)[:, c, :],
        "corr_in_wedge": {"wbp": corr(w, in_wedge), "sirt": corr(s, in_wedge),
                          "inpainting": corr(vol.data, in_wedge)},
        "corr_outside": {"wbp": corr(w, out_wedge), "sirt": corr(s, out_wedge),
                         "inpainting": corr(vol.data, out_wedge)},
        "slices": {"truth": truth[:, c, :], "wbp": w[:, c, :], "sirt": s[:, c, :],
                   "inpainting": vol.data[:, c, :]},
        "wedge_deg": wedge,
    }


def _table(results: dict[str, Any], cfg: EvalConfig) -> str:
    lines = ["| set | wedge (deg) | method | PSNR (dB) | SSIM | NRMSE |",
             "|---|---|---|---|---|---|"]
    for set_name, per_wedge in results["sets"].items():
        for wedge, per_method in per_wedge.items():
            for m in METHODS:
                s = per_method[m]
                lines.append(f"| {set_name} | {wedge} | {m} | {s['psnr']:.2f} | "
                             f"{s['ssim']:.3f} | {s['nrmse']:.3f} |")
        for m in METHODS:
            s = results["mean"][set_name][m]
            lines.append(f"| {set_name} | **mean** | {m} | {s['psnr']:.2f} | {s['ssim']:.3f} | "
                         f"{s['nrmse']:.3f} |")
    t = results["targets"]
    lines += ["", "Targets (held-out phantoms, mean over the wedges):",
              (f"- NRMSE inpainting / TV = {t['nrmse_ratio_vs_tv']:.3f} (target <= 0.8): "
               f"{'met' if t['nrmse_met'] else 'NOT met'}"),
              (f"- PSNR inpainting - SIRT = {t['psnr_gain_vs_sirt_db']:+.2f} dB (target >= +3 dB): "
               f"{'met' if t['psnr_met'] else 'NOT met'}"),
              (f"- TV weights (best of {list(TV_SWEEP)} per wedge on validation phantoms): "
               + ", ".join(f"{w}: {v:g}" for w, v in results["tv_weights"].items())),
              (f"- network time per {results['size']}x{results['size']} slice: "
               f"{1000 * results['seconds_per_slice']:.1f} ms (inputs + network + "
               f"{cfg.refine_iterations} refinement iterations, "
               f"{torch.get_num_threads()} threads)")]
    if "fourier" in results:
        f = results["fourier"]
        lines.append(f"- Fourier correlation with the truth inside the {f['wedge_deg']:g} deg "
                     f"wedge (held-out 3-D cluster): WBP {f['corr_in_wedge']['wbp']:.3f}, "
                     f"SIRT {f['corr_in_wedge']['sirt']:.3f}, "
                     f"inpainting {f['corr_in_wedge']['inpainting']:.3f}; outside: WBP "
                     f"{f['corr_outside']['wbp']:.3f}, SIRT {f['corr_outside']['sirt']:.3f}, "
                     f"inpainting {f['corr_outside']['inpainting']:.3f}")
    return "\n".join(lines)


def _plots(results: dict[str, Any], examples: dict[str, Any], fourier: dict[str, Any] | None,
           out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["sets"])
    fig, axes = plt.subplots(len(sets), 3, figsize=(13, 3.6 * len(sets)), squeeze=False)
    for r, s in enumerate(sets):
        wedges = [float(w) for w in results["sets"][s]]
        for c, metric in enumerate(("psnr", "ssim", "nrmse")):
            ax = axes[r, c]
            for m in METHODS:
                ax.plot(wedges, [results["sets"][s][w][m][metric] for w in results["sets"][s]],
                        "o-", label=m)
            ax.set_xlabel("missing wedge (deg)")
            ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
            ax.set_title(f"held-out {s}")
            ax.grid(alpha=0.3)
        axes[r, 0].legend()
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=90)
    plt.close(fig)

    cols = ["truth"] + list(METHODS)
    fig, axes = plt.subplots(len(examples), len(cols), figsize=(2.2 * len(cols),
                                                                  2.2 * len(examples)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(examples.items()):
        lo, hi = float(imgs["truth"].min()), float(imgs["truth"].max())
        for c, m in enumerate(cols):
            axes[r, c].imshow(imgs[m], cmap="gray", vmin=lo, vmax=hi)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(m)
        axes[r, 0].set_ylabel(label)
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=90)
    plt.close(fig)

    if fourier is None:
        return
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.8))
    for c, m in enumerate(("truth", "wbp", "sirt", "inpainting")):
        axes[0, c].imshow(fourier["slices"][m], cmap="gray")
        axes[0, c].set_title(f"{m}: (z, x) slice")
        axes[1, c].imshow(np.log10(fourier[m] + 1e-12 * fourier["truth"].max()), cmap="magma",
                          vmin=np.log10(fourier["truth"].max()) - 7,
                          vmax=np.log10(fourier["truth"].max()))
        axes[1, c].set_title(f"{m}: log |F|², k_y = 0")
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"held-out 3-D cluster, {fourier['wedge_deg']:g} deg missing wedge "
                 "(vertical axis = beam direction z / k_z)")
    fig.tight_layout()
    fig.savefig(out / "fourier.png", dpi=90)
    plt.close(fig)


def evaluate_iter(cfg: EvalConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Run the benchmark (progress generator); writes ``table.md``, ``results.json``,
    ``metrics.png``, ``examples.png`` and ``fourier.png`` to ``cfg.out_dir``."""
    from napari_tiltgen.core.devices import resolve_device

    device = resolve_device(cfg.device)
    model, info = load_pretrained(cfg.weights, "cpu")
    size = int(cfg.size or info.get("train_size_px", 64))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = {"phantoms": heldout_images("phantom", cfg.n_phantoms, size),
            "clusters": heldout_images("cluster", cfg.n_clusters, size)}
    results: dict[str, Any] = {"config": asdict(cfg), "size": size, "model": info, "sets": {},
                               "tv_weights": {}}
    examples: dict[str, Any] = {}
    times = []
    n_steps = len(cfg.wedges_deg) * (len(sets) + 1)
    k = 0
    for wedge in cfg.wedges_deg:
        key = f"{wedge:g}"
        tvw = cfg.tv_weight if cfg.tv_weight is not None else _tv_weight_for(wedge, cfg, size)
        results["tv_weights"][key] = tvw
        k += 1
        yield Progress(k / n_steps, f"wedge {key}: TV weight {tvw:g}")
        for set_name, imgs in sets.items():
            recs, sec = _reconstruct_all(imgs, wedge, cfg, model, info, tvw, device)
            times.append(sec)
            results["sets"].setdefault(set_name, {})[key] = {
                m: _scores(imgs, recs[m]) for m in METHODS}
            mid = cfg.wedges_deg[len(cfg.wedges_deg) // 2]
            if (set_name == "phantoms" and wedge in (cfg.wedges_deg[0], mid, cfg.wedges_deg[-1])
                    or set_name == "clusters" and wedge == mid):
                examples[f"{set_name[:-1]} {key} deg"] = {
                        "truth": imgs[0], **{m: recs[m][0] for m in METHODS}}
            k += 1
            yield Progress(k / n_steps, f"wedge {key}: {set_name} done")
    results["mean"] = {
        s: {m: {q: float(np.mean([results["sets"][s][w][m][q] for w in results["sets"][s]]))
                for q in ("psnr", "ssim", "nrmse")} for m in METHODS} for s in sets}
    ph = results["mean"]["phantoms"]
    ratio = ph["inpainting"]["nrmse"] / ph["tv"]["nrmse"]
    gain = ph["inpainting"]["psnr"] - ph["sirt"]["psnr"]
    results["targets"] = {"nrmse_ratio_vs_tv": ratio, "nrmse_met": bool(ratio <= 0.8),
                          "psnr_gain_vs_sirt_db": gain, "psnr_met": bool(gain >= 3.0)}
    results["seconds_per_slice"] = float(np.mean(times))
    fourier = None
    if cfg.fourier_size > 0:
        yield Progress(0.99, "Fourier view of a held-out 3-D cluster")
        fourier = fourier_view(cfg.fourier_size, cfg.fourier_wedge_deg, cfg.weights,
                               cfg.device, cfg.tilt_step_deg, cfg.sirt_iterations,
                               cfg.refine_iterations)
        results["fourier"] = {k2: fourier[k2] for k2 in ("corr_in_wedge", "corr_outside",
                                                         "wedge_deg")}
    table = _table(results, cfg)
    results["table"] = table
    header = f"Command: `{cfg.command}`\n\n" if cfg.command else ""
    (out / "table.md").write_text(header + table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    _plots(results, examples, fourier, out)
    return results


def evaluate(cfg: EvalConfig, show: bool = True) -> dict[str, Any]:
    """:func:`evaluate_iter` run to completion."""
    return run(evaluate_iter(cfg), show=show, desc="eval inpainting")
