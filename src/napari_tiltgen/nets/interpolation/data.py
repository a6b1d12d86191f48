"""Training triplets from simulated tilt series (data sets of :mod:`napari_tiltgen.simulate.dataset`).

A *triplet* is two known frames ``I0``, ``I1`` at tilt angles ``a0 < a1`` (gap ``a1 - a0``
degrees) and a true intermediate frame at ``a0 + t (a1 - a0)``. From a series sampled every
degree, a gap of ``g`` degrees offers the positions ``t = k / g``, ``k = 1 .. g - 1``.

Augmentations keep the tilt geometry valid (the tilt axis stays along y): mirror x (the series
of the mirrored object), mirror y (along the axis), and swapping the two frames (``t -> 1 - t``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.nets.interpolation.network import normalise_pair

__all__ = ["FamilyPool", "FamilyTriplets", "FrameBank", "Triplets", "build_family_pool_iter",
           "is_family_pool", "load_family_pool", "load_frame_bank", "object_radius_px"]


@dataclass
class FrameBank:
    """Tilt series held in memory for sampling.

    Attributes
    ----------
    stacks
        ``(M, T, H, W)`` float32 frames (one entry per sample and optics preset).
    tilt_angles
        ``(T,)`` degrees, increasing, shared by all stacks.
    pixel_size_A
        ``(M,)`` Å.
    names
        ``(M,)`` description of each stack (formula, preset, shard).
    """

    stacks: np.ndarray
    tilt_angles: np.ndarray
    pixel_size_A: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.stacks.shape[0])

    def split(self, n_series: int) -> tuple[FrameBank, FrameBank]:
        """Hold out whole samples: the last samples (all their optics presets) until at least
        ``n_series`` stacks are held out. Returns ``(rest, held_out)``."""
        samples = [name.split(" ")[-1] for name in self.names]  # "shard-00003.h5#7"
        order = list(dict.fromkeys(samples))
        held: set[str] = set()
        for key in reversed(order):
            if sum(s in held for s in samples) >= n_series:
                break
            held.add(key)
        mask = np.array([s in held for s in samples])
        if mask.all() or not mask.any():
            raise TiltgenError(f"cannot hold out {n_series} of {len(self)} tilt series.")
        keep, out = np.flatnonzero(~mask), np.flatnonzero(mask)
        return (FrameBank(self.stacks[keep], self.tilt_angles, self.pixel_size_A[keep],
                          [self.names[i] for i in keep]),
                FrameBank(self.stacks[out], self.tilt_angles, self.pixel_size_A[out],
                          [self.names[i] for i in out]))

    def summary(self) -> dict[str, Any]:
        step = float(np.median(np.diff(self.tilt_angles))) if self.tilt_angles.size > 1 else 0.0
        radii = [object_radius_px(s) for s in self.stacks]
        return {
            "n_series": len(self),
            "frames_per_series": int(self.stacks.shape[1]),
            "frame_px": [int(self.stacks.shape[2]), int(self.stacks.shape[3])],
            "tilt_range_deg": [float(self.tilt_angles[0]), float(self.tilt_angles[-1])],
            "tilt_step_deg": step,
            "pixel_size_A": [float(self.pixel_size_A.min()), float(self.pixel_size_A.max())],
            "object_radius_px": [float(np.min(radii)), float(np.percentile(radii, 95))],
        }


def object_radius_px(stack: np.ndarray, level: float = 0.05) -> float:
    """Largest distance (pixels) of the object from the tilt axis, measured on the frames.

    For each frame, the columns whose summed intensity (background removed: the frame's 5th
    percentile) exceeds ``level`` of the frame's largest column sum are "object"; the result is
    the largest ``|x - centre|`` of such columns over the frames. Points at distance ``r`` from the
    axis move by up to ``r * gap_rad`` pixels between frames ``gap`` apart.

    Parameters
    ----------
    stack
        ``(n, ny, nx)`` frames (any subset of a series; a few frames are enough).
    """
    a = np.asarray(stack, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    idx = np.linspace(0, a.shape[0] - 1, min(a.shape[0], 9)).round().astype(int)
    nx = a.shape[2]
    centre = (nx - 1) / 2.0
    r = 0.0
    for frame in a[np.unique(idx)]:
        cols = np.clip(frame - np.percentile(frame, 5), 0, None).sum(axis=0)
        if cols.max() <= 0:
            continue
        on = np.flatnonzero(cols > level * cols.max())
        r = max(r, float(np.max(np.abs(on - centre))))
    return r


def load_frame_bank(folders: list[str | Path] | str | Path, split: str = "train",
                    presets: tuple[str, ...] | None = None, max_series: int | None = None,
                    noisy: bool = False) -> FrameBank:
    """Read every complete shard of ``split`` in one or more data-set folders into memory.

    Parameters
    ----------
    folders
        Folders written by ``generate_dataset`` / ``tiltgen simulate-dataset``.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    presets
        Optics presets to use (default: all in the files, e.g. aberrated and non-aberrated).
    max_series
        Stop after this many stacks.
    noisy
        Use the noisy frames instead of the clean ones.
    """
    import h5py

    if isinstance(folders, (str, Path)):
        folders = [folders]
    stacks: list[np.ndarray] = []
    px: list[float] = []
    names: list[str] = []
    angles: np.ndarray | None = None
    key = "noisy" if noisy else "clean"
    for folder in folders:
        paths = sorted((Path(folder) / split).glob("shard-*.h5"))
        for path in paths:
            with h5py.File(path, "r") as f:
                if not f.attrs.get("complete", False):
                    continue
                a = np.asarray(f["tilt_angles"][()], dtype=np.float64)
                if angles is None:
                    angles = a
                elif a.shape != angles.shape or not np.allclose(a, angles):
                    raise TiltgenError("all data sets must share the same tilt angles.", path)
                groups = [k for k in f if isinstance(f[k], h5py.Group)]
                for p in presets or tuple(groups):
                    if p not in f or key not in f[p]:
                        raise TiltgenError(f"no {p}/{key} frames in this shard.", path)
                    data = f[p][key][()]
                    for j in range(data.shape[0]):
                        stacks.append(data[j].astype(np.float32))
                        px.append(float(f["pixel_size_A"][j]))
                        formula = f["formula"][j]
                        formula = formula.decode() if isinstance(formula, bytes) else str(formula)
                        names.append(f"{formula} {p} {path.name}#{j}")
                        if max_series is not None and len(stacks) >= max_series:
                            break
                    if max_series is not None and len(stacks) >= max_series:
                        break
            if max_series is not None and len(stacks) >= max_series:
                break
    if not stacks or angles is None:
        raise TiltgenError(f"no complete {split} shards found in {', '.join(map(str, folders))}; "
                           "simulate a data set first (tiltgen simulate-dataset).")
    order = np.argsort(angles)
    bank = np.stack(stacks)[:, order]
    return FrameBank(bank, angles[order], np.asarray(px), names)


class Triplets:
    """Random training triplets from a :class:`FrameBank`.

    Parameters
    ----------
    bank
        The frames.
    gap_range_deg
        Smallest and largest angular gap between the two known frames, degrees (inclusive);
        gaps are multiples of the bank's tilt step.
    augment
        Mirror x / y and swap the frames at random.
    """

    def __init__(self, bank: FrameBank, gap_range_deg: tuple[float, float] = (2.0, 12.0),
                 augment: bool = True):
        self.bank = bank
        step = float(np.median(np.diff(bank.tilt_angles)))
        self.step_deg = step
        lo = max(2, round(gap_range_deg[0] / step))
        hi = round(gap_range_deg[1] / step)
        if hi < lo or hi >= bank.stacks.shape[1]:
            raise TiltgenError(f"gap range {gap_range_deg} degrees does not fit series sampled "
                               f"every {step:g} degrees with {bank.stacks.shape[1]} frames.")
        self.gaps = np.arange(lo, hi + 1)
        self.augment = augment

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch of normalised triplets.

        Returns
        -------
        dict
            ``img0``, ``img1``, ``target`` ``(B, 1, H, W)`` normalised by the inputs' range
            (:func:`~napari_tiltgen.nets.interpolation.network.normalise_pair`), ``t`` and
            ``gap_deg`` ``(B,)``.
        """
        m, n_t = self.bank.stacks.shape[:2]
        i0s, i1s, its, ts, gaps = [], [], [], [], []
        s = rng.integers(0, m, batch_size)
        for _ in range(batch_size):
            g = int(rng.choice(self.gaps))
            k = int(rng.integers(1, g))
            start = int(rng.integers(0, n_t - g))
            i0s.append(start)
            i1s.append(start + g)
            its.append(start + k)
            ts.append(k / g)
            gaps.append(g * self.step_deg)
        st = self.bank.stacks
        img0 = np.stack([st[a, b] for a, b in zip(s, i0s)])
        img1 = np.stack([st[a, b] for a, b in zip(s, i1s)])
        tgt = np.stack([st[a, b] for a, b in zip(s, its)])
        t = np.asarray(ts, dtype=np.float32)
        if self.augment:
            for j in range(batch_size):
                if rng.random() < 0.5:
                    img0[j], img1[j], tgt[j] = img0[j, :, ::-1], img1[j, :, ::-1], tgt[j, :, ::-1]
                if rng.random() < 0.5:
                    img0[j], img1[j], tgt[j] = img0[j, ::-1], img1[j, ::-1], tgt[j, ::-1]
                if rng.random() < 0.5:
                    img0[j], img1[j] = img1[j].copy(), img0[j].copy()
                    t[j] = 1.0 - t[j]
        x0 = torch.from_numpy(np.ascontiguousarray(img0))[:, None]
        x1 = torch.from_numpy(np.ascontiguousarray(img1))[:, None]
        xt = torch.from_numpy(np.ascontiguousarray(tgt))[:, None]
        lo, scale = normalise_pair(x0, x1)
        return {"img0": (x0 - lo) / scale, "img1": (x1 - lo) / scale, "target": (xt - lo) / scale,
                "t": torch.from_numpy(t), "gap_deg": torch.tensor(gaps, dtype=torch.float32)}


def describe_bank(bank: FrameBank) -> str:
    """One-line JSON summary (for logs)."""
    return json.dumps(bank.summary())


# ---------------------------------------------------------------------------- family pools
#: Frames per series window in a family pool (1-degree steps: gaps up to 24 degrees).
POOL_WINDOW = 25
POOL_FORMAT = "napari-tiltgen interpolation family pool v1"


def pool_shard_path(out_dir: str | Path, split: str, shard: int) -> Path:
    return Path(out_dir) / split / f"pool-{shard:05d}.npz"


def _pool_series(rng: np.random.Generator, families: tuple[str, ...], size: int,
                 window: int, step_deg: float) -> tuple[np.ndarray, np.ndarray, str, float]:
    from napari_tiltgen.simulate.families import tilt_series

    family = str(families[int(rng.integers(len(families)))])
    span = (window - 1) * step_deg
    start = float(rng.uniform(-78.0, 78.0 - span))
    angles = start + step_deg * np.arange(window)
    frames, info = tilt_series(family, size, angles, rng)
    return frames, angles, family, float(info["pixel_size_A"])


def build_family_pool_iter(out_dir: str | Path, n_series: int, *, split: str = "train",
                           families: tuple[str, ...] | None = None,
                           sizes: tuple[int, ...] = (128,), shard_size: int = 16,
                           window: int = POOL_WINDOW, step_deg: float = 1.0, seed: int = 0):
    """Write clean tilt-series windows of random family volumes as ``.npz`` shards (resumable).

    Each shard holds ``shard_size`` series of ``window`` frames 1 degree apart (a random start
    in -78..78 degrees, so any angle), frames stored float16 (relative precision 1e-3, far
    below the noise added at training time). Shard ``i`` is made from
    ``default_rng([seed, split_code, i])``, so an interrupted run continues where it stopped and
    makes the same data. Noise, jitter and the other degradations are drawn at training time
    (:class:`FamilyTriplets`), fresh for every triplet.

    Parameters
    ----------
    out_dir
        Pool folder (``OUT/<split>/pool-*.npz`` and ``OUT/pool.json``).
    n_series
        Series to have in this split when done (rounded up to whole shards).
    split
        ``"train"`` or ``"val"`` (same families, other seeds).
    families
        Object families, training families only (a name may repeat; default
        :data:`~napari_tiltgen.simulate.families.TRAIN_FAMILIES`).
    sizes
        Frame sizes in pixels (one per shard, in turn).
    """
    from napari_tiltgen.core.progress import Progress
    from napari_tiltgen.simulate.families import training_families

    fams = training_families(families)
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    meta = {"format": POOL_FORMAT, "families": list(fams), "sizes": list(sizes),
            "window": window, "step_deg": step_deg, "seed": seed, "shard_size": shard_size}
    mpath = out / "pool.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old != meta:
            raise TiltgenError("this pool folder was made with other settings; use a new "
                               "folder.", mpath)
    else:
        mpath.write_text(json.dumps(meta, indent=2))
    code = {"train": 0, "val": 1}.get(split, 2)
    n_shards = -(-int(n_series) // shard_size)
    for i in range(n_shards):
        path = pool_shard_path(out, split, i)
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, code, i])
        size = int(sizes[i % len(sizes)])
        frames, angles, fams_i, px = [], [], [], []
        for _ in range(shard_size):
            f, a, fam, p = _pool_series(rng, fams, size, window, step_deg)
            frames.append(f.astype(np.float16))
            angles.append(a)
            fams_i.append(fam)
            px.append(p)
        tmp = path.with_name(path.stem + ".part.npz")
        np.savez(tmp, frames=np.stack(frames), angles=np.stack(angles),
                 families=np.array(fams_i), pixel_size_A=np.array(px))
        tmp.replace(path)
        yield Progress((i + 1) / n_shards, f"{split} shard {i + 1}/{n_shards} ({size} px)")


def is_family_pool(folder: str | Path) -> bool:
    """True when ``folder`` is a family pool (``pool.json``), not a simulate-dataset folder."""
    return (Path(folder) / "pool.json").is_file()


@dataclass
class FamilyPool:
    """Clean series windows of a pool, grouped by frame size: ``stacks[size]`` is ``(M, W, S,
    S)`` float16; ``families[size]`` the family of each series."""

    stacks: dict[int, np.ndarray]
    families: dict[int, list[str]]
    pixel_size_A: dict[int, np.ndarray]
    step_deg: float
    n_shards: int

    def __len__(self) -> int:
        return sum(int(s.shape[0]) for s in self.stacks.values())

    def summary(self) -> dict[str, Any]:
        fams: dict[str, int] = {}
        for lst in self.families.values():
            for f in lst:
                fams[f] = fams.get(f, 0) + 1
        px = np.concatenate(list(self.pixel_size_A.values()))
        return {"kind": "family pool", "n_series": len(self),
                "frames_per_series": int(next(iter(self.stacks.values())).shape[1]),
                "frame_px": sorted(self.stacks), "tilt_step_deg": self.step_deg,
                "families": fams,
                "pixel_size_A": [float(px.min()), float(px.max())]}


def load_family_pool(folders: list[str | Path] | str | Path, split: str = "train",
                     max_series: int | None = None) -> FamilyPool:
    """Read every complete shard of ``split`` of one or more pool folders."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    by: dict[int, list[np.ndarray]] = {}
    fams: dict[int, list[str]] = {}
    pxs: dict[int, list[float]] = {}
    step = None
    n_shards = 0
    total = 0
    for folder in folders:
        meta = json.loads((Path(folder) / "pool.json").read_text())
        if step is None:
            step = float(meta["step_deg"])
        elif abs(step - float(meta["step_deg"])) > 1e-9:
            raise TiltgenError("all pools must share the same tilt step.", folder)
        for path in sorted((Path(folder) / split).glob("pool-[0-9]*.npz")):
            if ".part" in path.name:
                continue
            with np.load(path) as z:
                fr = z["frames"]
                size = int(fr.shape[-1])
                by.setdefault(size, []).append(fr)
                fams.setdefault(size, []).extend(str(f) for f in z["families"])
                pxs.setdefault(size, []).extend(float(p) for p in z["pixel_size_A"])
            n_shards += 1
            total += int(fr.shape[0])
            if max_series is not None and total >= max_series:
                break
    if not by or step is None:
        raise TiltgenError(f"no {split} shards in the family pool(s) "
                           f"{', '.join(map(str, folders))}; build one first "
                           "(tiltgen build-interpolation-data).")
    return FamilyPool({s: np.concatenate(v) for s, v in by.items()}, fams,
                      {s: np.asarray(v) for s, v in pxs.items()}, step, n_shards)


class FamilyTriplets:
    """Degraded training triplets from a :class:`FamilyPool`: noisy, jittered inputs, CLEAN
    target.

    For each triplet the three clean frames go through
    :func:`~napari_tiltgen.simulate.degrade.degrade` with parameters drawn by
    :func:`~napari_tiltgen.simulate.degrade.sample_params` (``level``): the two known frames
    are the degraded ones (shot, read and scan-line noise, their own jitter), the target is the
    clean reference (same tilt-axis error and background, no noise, no jitter). A random
    square crop (one size per batch, from ``crops``) and mirror / swap augmentation follow;
    everything is normalised by the noisy pair's range. A fraction ``clean_fraction`` of the
    triplets is left untouched (level ``"clean"``: no noise, jitter, axis error or background),
    so that a noise-conditioned network keeps the detail of clean pairs.

    ``context=True`` draws four-frame samples for the context network
    (:mod:`~napari_tiltgen.nets.interpolation.context`): also the degraded frames one gap
    before ``img0`` and one gap after ``img1`` (``outer_a``, ``outer_b``), and ``present``
    ``(N, 2)``; with probability ``absent_fraction`` each outer frame is replaced by its inner
    neighbour and marked absent (the ends of a stack).
    """

    def __init__(self, pool: FamilyPool, gap_range_deg: tuple[float, float] = (2.0, 12.0),
                 crops: tuple[int, ...] = (96, 112, 128), augment: bool = True,
                 level: str = "train", clean_fraction: float = 0.0, context: bool = False,
                 absent_fraction: float = 0.0):
        self.pool = pool
        self.step_deg = pool.step_deg
        lo = max(2, round(gap_range_deg[0] / pool.step_deg))
        hi = round(gap_range_deg[1] / pool.step_deg)
        window = min(int(s.shape[1]) for s in pool.stacks.values())
        span = 3 if context else 1
        if hi < lo or span * hi >= window:
            raise TiltgenError(f"gap range {gap_range_deg} degrees does not fit windows of "
                               f"{window} frames {pool.step_deg:g} degrees apart"
                               + (" (four-frame samples span three gaps)" if context else "")
                               + ".")
        self.context = bool(context)
        if not 0.0 <= absent_fraction <= 1.0:
            raise TiltgenError(f"absent_fraction must be in [0, 1]; got {absent_fraction}.")
        self.absent_fraction = float(absent_fraction)
        self.gaps = np.arange(lo, hi + 1)
        self.crops = tuple(int(c) for c in crops)
        self.augment = augment
        self.level = level
        if not 0.0 <= clean_fraction <= 1.0:
            raise TiltgenError(f"clean_fraction must be in [0, 1]; got {clean_fraction}.")
        self.clean_fraction = float(clean_fraction)

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch; same keys as :meth:`Triplets.sample`."""
        from napari_tiltgen.simulate.degrade import degrade, sample_params

        sizes = sorted(self.pool.stacks)
        weights = np.array([self.pool.stacks[s].shape[0] for s in sizes], float)
        size = int(sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))])
        stacks = self.pool.stacks[size]
        crops = [c for c in self.crops if c <= size] or [size]
        crop = int(rng.choice(crops))
        img0, img1, tgt, ts, gaps = [], [], [], [], []
        outer_a, outer_b, present = [], [], []
        span = 3 if self.context else 1
        for _ in range(batch_size):
            j = int(rng.integers(stacks.shape[0]))
            g = int(rng.choice(self.gaps))
            k = int(rng.integers(1, g))
            start = int(rng.integers(0, stacks.shape[1] - span * g))
            i0 = start + g if self.context else start
            idx = [i0, i0 + k, i0 + g] + ([i0 - g, i0 + 2 * g] if self.context else [])
            frames = stacks[j, idx].astype(np.float32)
            level = ("clean" if self.clean_fraction and rng.random() < self.clean_fraction
                     else self.level)
            noisy, ref = degrade(frames, rng, sample_params(rng, level), return_clean=True)
            a = int(rng.integers(0, size - crop + 1))
            b = int(rng.integers(0, size - crop + 1))
            sl = (slice(a, a + crop), slice(b, b + crop))
            f0, f1, ft = noisy[0][sl], noisy[2][sl], ref[1][sl]
            fa, fb = (noisy[3][sl], noisy[4][sl]) if self.context else (f0, f1)
            pa = pb = 1.0
            if self.context and self.absent_fraction:
                if rng.random() < self.absent_fraction:
                    fa, pa = f0, 0.0
                if rng.random() < self.absent_fraction:
                    fb, pb = f1, 0.0
            t = k / g
            if self.augment:
                if rng.random() < 0.5:
                    f0, f1, ft, fa, fb = (x[:, ::-1] for x in (f0, f1, ft, fa, fb))
                if rng.random() < 0.5:
                    f0, f1, ft, fa, fb = (x[::-1] for x in (f0, f1, ft, fa, fb))
                if rng.random() < 0.5:
                    f0, f1, t = f1, f0, 1.0 - t
                    fa, fb, pa, pb = fb, fa, pb, pa
            img0.append(np.ascontiguousarray(f0))
            img1.append(np.ascontiguousarray(f1))
            tgt.append(np.ascontiguousarray(ft))
            outer_a.append(np.ascontiguousarray(fa))
            outer_b.append(np.ascontiguousarray(fb))
            present.append((pa, pb))
            ts.append(t)
            gaps.append(g * self.step_deg)
        x0 = torch.from_numpy(np.stack(img0))[:, None]
        x1 = torch.from_numpy(np.stack(img1))[:, None]
        xt = torch.from_numpy(np.stack(tgt))[:, None]
        lo, scale = normalise_pair(x0, x1)
        out = {"img0": (x0 - lo) / scale, "img1": (x1 - lo) / scale,
               "target": (xt - lo) / scale, "t": torch.tensor(ts, dtype=torch.float32),
               "gap_deg": torch.tensor(gaps, dtype=torch.float32)}
        if self.context:
            xa = torch.from_numpy(np.stack(outer_a))[:, None]
            xb = torch.from_numpy(np.stack(outer_b))[:, None]
            out.update({"outer_a": (xa - lo) / scale, "outer_b": (xb - lo) / scale,
                        "present": torch.tensor(present, dtype=torch.float32)})
        return out
