"""Benchmarks of the cluster simulation: fast model timings, abTEM timings, fast-vs-abTEM agreement.

Run from the repository root::

    python benchmarks/simulate.py --fast            # fast model: time per frame / series, GT check
    python benchmarks/simulate.py --abtem-timing    # abTEM: time per probe position, extrapolated
    python benchmarks/simulate.py --correlation     # fast vs abTEM, Au55, 3 angles, both presets
    python benchmarks/simulate.py --cross-sections  # single-atom HAADF cross-sections (abTEM)
    python benchmarks/simulate.py --all

Times are wall-clock seconds and process CPU seconds (all threads of this process); on a shared
machine the CPU time is the steadier number. abTEM frames are cached as ``.npz`` in ``--cache``
(default ``/tmp/tiltgen-bench-simulate``) so that tables can be re-printed without re-running
abTEM; ``--no-cache`` recomputes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_tiltgen.core.progress import run
from napari_tiltgen.simulate.abtem_haadf import AbtemSettings, abtem_haadf_iter, abtem_sampling_A
from napari_tiltgen.simulate.clusters import build_cluster, cluster_diameter_A
from napari_tiltgen.simulate.haadf import (
    PRESETS,
    fast_haadf,
    haadf_cross_section_A2,
    probe_fwhm_A,
    probe_radius_A,
)
from napari_tiltgen.simulate.series import (
    auto_pixel_size_A,
    default_gt_sigma_A,
    ground_truth_volume,
)

N_SERIES = 181


class Timer:
    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and in abTEM's dask graphs (``n == 1``: synchronous)."""
    import abtem
    import dask
    import torch

    torch.set_num_threads(int(n))
    abtem.config.set({"mkl.threads": int(n), "fftw.threads": int(n)})
    if n == 1:
        dask.config.set(scheduler="synchronous")
    else:
        dask.config.set(scheduler="threads", num_workers=int(n))


def load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def table(header: list[str], rows: list[list], title: str) -> None:
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def highpass(img: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return img - gaussian_filter(img, sigma_px)


# ----------------------------------------------------------------------------- fast model


def bench_fast() -> None:
    import torch

    from napari_tiltgen.physics.projector import forward_project

    rows = []
    angles = np.arange(-90.0, 90.1, 1.0)
    for shells in (4, 6):
        atoms = build_cluster("icosahedron", "Au", shells=shells, seed=0)
        w = haadf_cross_section_A2(atoms.numbers)
        for n in (64, 128, 256):
            px = auto_pixel_size_A(atoms, n)
            for preset in PRESETS:
                fast_haadf(atoms.positions, w, angles[:2], (n, n), px, preset)  # warm plan
                with Timer() as t:
                    fast_haadf(atoms.positions, w, angles, (n, n), px, preset)
                rows.append([f"Au{len(atoms)}", n, f"{px:.3f}", preset,
                             f"{1e3 * t.wall / N_SERIES:.1f}", f"{1e3 * t.cpu / N_SERIES:.1f}",
                             f"{t.wall:.2f}", f"{t.cpu:.2f}"])
    table(["cluster", "px", "pixel Å", "preset", "wall ms/frame", "CPU ms/frame",
           "wall s/181", "CPU s/181"], rows,
          f"Fast model, 181 tilts (-90..90, 1 deg), torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, load {load()}")

    # ground truth: time and agreement of its forward projection with the fast frames
    rows = []
    atoms = build_cluster("icosahedron", "Au", shells=4, seed=0)
    w = haadf_cross_section_A2(atoms.numbers)
    test_angles = np.array([-60.0, 0.0, 35.0, 70.0])
    for n in (64, 128):
        px = auto_pixel_size_A(atoms, n)
        for preset in PRESETS:
            for gt_kind in ("sharp", "probe"):
                s = default_gt_sigma_A(px, None if gt_kind == "sharp" else PRESETS[preset])
                with Timer() as t:
                    vol = ground_truth_volume(atoms.positions, w, (n, n, n), px, s)
                proj = forward_project(torch.from_numpy(vol), test_angles).numpy()
                fast = fast_haadf(atoms.positions, w, test_angles, (n, n), px, preset)
                r = [corr(proj[k], fast[k]) for k in range(test_angles.size)]
                ratio = float(fast.sum() / proj.sum())
                rows.append([n, f"{px:.3f}", preset, gt_kind, f"{s:.3f}", f"{t.wall:.2f}",
                             " ".join(f"{v:.3f}" for v in r), f"{ratio:.3f}"])
    table(["px", "pixel Å", "preset", "GT width", "sigma Å", "GT s", "r at -60/0/35/70 deg",
           "sum fast/proj"], rows,
          "Ground truth (Au147): forward projection (physics.projector, Joseph) vs fast frames")


# ----------------------------------------------------------------------------- abTEM


def _cache_path(cache: Path | None, name: str) -> Path | None:
    if cache is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"{name}.npz"


def abtem_frame(atoms, angle: float, n: int, px: float, preset: str, settings: AbtemSettings,
                cache: Path | None, tag: str) -> tuple[np.ndarray, float, float]:
    """One abTEM frame (cached): image, wall seconds, CPU seconds."""
    path = _cache_path(cache, f"{tag}_{preset}_{n}_{px:.4f}_{angle:+.1f}_"
                              f"{settings.slice_thickness_A}")
    if path is not None and path.is_file():
        d = np.load(path)
        return d["img"], float(d["wall"]), float(d["cpu"])
    with Timer() as t:
        img = run(abtem_haadf_iter(atoms.positions, atoms.numbers, [angle], (n, n), px, preset,
                                   settings), show=False)[0]
    if path is not None:
        np.savez(path, img=img, wall=t.wall, cpu=t.cpu)
    return img, t.wall, t.cpu


def bench_correlation(cache: Path | None, presets: list[str], angles: list[float]) -> None:
    atoms = build_cluster("icosahedron", "Au", shells=3, seed=0)  # Au55, random orientation
    rows = []
    spent = 0.0
    # (scan pixels, scan step Å, abTEM vacuum margin Å or None for the probe's 98 % radius + 2)
    # The aberrated probe (Cs 100 µm, 25 mrad, defocus 0) is a ~25 Å wide disc of confusion
    # around a 1.6 Å core (95 % of its intensity within 14.4 Å): its cell needs a 14 Å margin.
    plan = {"non_aberrated": (24, 0.667, None), "aberrated": (16, 1.0, 14.0)}
    plan = {k: v for k, v in plan.items() if k in presets}
    per_position: dict[str, list[tuple[float, float]]] = {}
    for preset, (n, px, margin) in plan.items():
        settings = AbtemSettings(slice_thickness_A=2.0, rows_per_step=n, margin_A=margin)
        for angle in angles:
            ab, wall, cpu = abtem_frame(atoms, angle, n, px, preset, settings, cache, "au55")
            spent += cpu
            per_position.setdefault(preset, []).append((wall / (n * n), cpu / (n * n)))
            fast = fast_haadf(atoms.positions, haadf_cross_section_A2(atoms.numbers), [angle],
                              (n, n), px, preset)[0]
            rows.append([preset, f"{angle:+.0f}", f"{n}x{n} @ {px:.3g} Å",
                         "auto" if margin is None else f"{margin:g}",
                         f"{corr(fast, ab):.4f}", f"{corr(highpass(fast), highpass(ab)):.4f}",
                         f"{fast.mean() / ab.mean():.3f}", f"{wall:.0f}", f"{cpu:.0f}"])
            print(f"  {preset} {angle:+.0f} deg: r = {rows[-1][4]} (abTEM {wall:.0f} s wall, "
                  f"{cpu:.0f} s CPU)", flush=True)
    table(["preset", "tilt deg", "scan", "margin Å", "r (fast, abTEM)", "r high-pass", "mean fast/abTEM",
           "abTEM wall s", "abTEM CPU s"], rows,
          f"Fast model vs abTEM multislice: Au55 icosahedron ({cluster_diameter_A(atoms):.1f} Å, "
          f"random orientation seed 0), 200 keV, 50-200 mrad, slices 2 Å, abTEM sampling "
          f"{abtem_sampling_A(PRESETS['non_aberrated']):.3f} Å (FFT-friendly grid), "
          f"load {load()}; abTEM CPU total {spent:.0f} s")

    # whole frames and series, extrapolated from the measured frames above
    rows = []
    for preset, vals in per_position.items():
        w = float(np.mean([v[0] for v in vals]))
        c = float(np.mean([v[1] for v in vals]))
        for m in (64, 128, 256):
            rows.append([preset, m, f"{1e3 * w:.0f}", f"{1e3 * c:.0f}",
                         f"{w * m * m / 60:.0f}", f"{c * m * m / 60:.0f}",
                         f"{N_SERIES * w * m * m / 3600:.0f}",
                         f"{N_SERIES * c * m * m / 3600 / 2:.0f}"])
    table(["preset", "px", "wall ms/position", "CPU ms/position", "wall min/frame",
           "CPU min/frame", "wall h/181 frames", "h/181 frames at 2 cores"], rows,
          "abTEM per frame and per 181-frame series, EXTRAPOLATED (positions x measured cost per "
          "position of the frames above, Au55, same 16 Å field of view and abTEM cell; the cost "
          "per position depends on the cell and the slice count, not on the pixel count)")


def bench_abtem_timing(cache: Path | None, presets: list[str]) -> None:
    rows = []
    for shells in (3,):
        atoms = build_cluster("icosahedron", "Au", shells=shells, seed=0)
        for preset in presets:
            n = 64
            px = auto_pixel_size_A(atoms, n)
            rows_meas = 1
            path = _cache_path(cache, f"timing_au{len(atoms)}_{preset}")
            if path is not None and path.is_file():
                d = np.load(path)
                t_pot, t_blk, c_pot, c_blk = (float(d[k]) for k in ("t_pot", "t_blk", "c_pot",
                                                                     "c_blk"))
            else:
                settings = AbtemSettings(slice_thickness_A=2.0, rows_per_step=rows_meas)
                gen = abtem_haadf_iter(atoms.positions, atoms.numbers, [0.0], (n, n), px,
                                       preset, settings)
                with Timer() as t1:
                    next(gen)  # potential + first block (includes imports and warm-up)
                with Timer() as t2:
                    next(gen)  # one more block: the steady cost of n * rows_meas positions
                gen.close()
                t_blk, c_blk = t2.wall, t2.cpu
                t_pot, c_pot = max(t1.wall - t2.wall, 0.0), max(t1.cpu - t2.cpu, 0.0)
                if path is not None:
                    np.savez(path, t_pot=t_pot, t_blk=t_blk, c_pot=c_pot, c_blk=c_blk)
            per_pos_w = t_blk / (n * rows_meas)
            per_pos_c = c_blk / (n * rows_meas)
            for m in (64, 128, 256):
                frame_w = t_pot + per_pos_w * m * m
                frame_c = c_pot + per_pos_c * m * m
                rows.append([f"Au{len(atoms)}", preset, m, f"{1e3 * per_pos_w:.0f}",
                             f"{1e3 * per_pos_c:.0f}", f"{frame_w / 60:.1f}",
                             f"{frame_c / 60:.1f}",
                             f"{N_SERIES * frame_w / 3600:.1f}", "extrapolated"])
    table(["cluster", "preset", "px", "wall ms/position", "CPU ms/position", "wall min/frame",
           "CPU min/frame", "wall h/181 frames", "how"], rows,
          f"abTEM multislice per frame: {rows_meas} scan row(s) of 64 positions measured after "
          f"warm-up, whole frames and series extrapolated as positions x time (field of view "
          f"fixed by the cluster, so the cost per position does not depend on the pixel count); "
          f"slices 2 Å, load {load()}")


def bench_cross_sections() -> None:
    import abtem
    import ase

    rows = []
    for el in ("Al", "Cu", "Ag", "Xe", "Yb", "Ir", "Pt", "Au"):
        atoms = ase.Atoms(el, positions=[(6.0, 6.0, 2.0)], cell=(12.0, 12.0, 4.0))
        pot = abtem.Potential(atoms, gpts=(300, 300), slice_thickness=4.0,
                              projection="infinite")
        probe = abtem.Probe(energy=200e3, semiangle_cutoff=35, Cs=0, defocus=0)
        det = abtem.AnnularDetector(inner=50, outer=200)
        scan = abtem.GridScan(start=(3.0, 3.0), end=(9.0, 9.0), sampling=0.25)
        m = probe.scan(pot, scan=scan, detectors=det, lazy=True).compute(progress_bar=False)
        s_abtem = float(m.array.sum() * 0.25**2)
        z = ase.data.atomic_numbers[el]
        rows.append([el, z, f"{s_abtem:.5f}", f"{float(haadf_cross_section_A2([z])[0]):.5f}"])
    z = np.array([r[1] for r in rows], float)
    s = np.array([float(r[2]) for r in rows])
    gamma = np.polyfit(np.log(z), np.log(s), 1)[0]
    table(["element", "Z", "abTEM sigma Å^2", "model sigma Å^2 (Z^1.7)"], rows,
          f"Single-atom HAADF cross-sections, 200 keV, 50-200 mrad (abTEM fit: Z^{gamma:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fast", action="store_true")
    p.add_argument("--abtem-timing", action="store_true")
    p.add_argument("--correlation", action="store_true")
    p.add_argument("--cross-sections", action="store_true")
    p.add_argument("--all", action="store_true")
    p.add_argument("--cache", default="/tmp/tiltgen-bench-simulate")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--presets", default=",".join(PRESETS),
                   help="comma-separated optics presets for the abTEM benchmarks")
    p.add_argument("--angles", default="0,35,70", help="comma-separated tilts (--correlation)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads and abTEM/dask workers (default 1: the machine is shared)")
    a = p.parse_args(argv)
    set_threads(a.threads)
    presets = [t.strip() for t in a.presets.split(",") if t.strip()]
    angles = [float(t) for t in a.angles.split(",") if t.strip()]
    cache = None if a.no_cache else Path(a.cache)
    if not any((a.fast, a.abtem_timing, a.correlation, a.cross_sections, a.all)):
        a.fast = True
    print(f"{a.threads} thread(s); probe FWHM: non-aberrated {probe_fwhm_A('non_aberrated'):.3f} Å, aberrated "
          f"{probe_fwhm_A('aberrated'):.3f} Å; 98 % radius {probe_radius_A('non_aberrated'):.1f} / "
          f"{probe_radius_A('aberrated'):.1f} Å; {os.cpu_count()} CPUs, load {load()}")
    if a.fast or a.all:
        bench_fast()
    if a.cross_sections or a.all:
        bench_cross_sections()
    if a.abtem_timing or a.all:
        bench_abtem_timing(cache, presets)
    if a.correlation or a.all:
        bench_correlation(cache, presets, angles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
