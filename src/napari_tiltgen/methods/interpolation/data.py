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

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.methods.interpolation.network import normalise_pair

__all__ = ["FrameBank", "Triplets", "load_frame_bank", "object_radius_px"]


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
            (:func:`~napari_tiltgen.methods.interpolation.network.normalise_pair`), ``t`` and
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
