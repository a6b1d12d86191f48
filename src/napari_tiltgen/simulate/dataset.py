"""Sharded, resumable, deterministic HDF5 data sets of simulated cluster tilt series.

Layout of an output folder::

    DIR/dataset.json                 configuration, split catalogues, shard list
    DIR/train/shard-00000.h5         samples 0 .. shard_size-1 of the training split
    DIR/val/shard-00000.h5
    DIR/test/shard-00000.h5

Each shard holds, for its ``n`` samples (``T`` tilts of ``ny x nx`` pixels):

============================  =============================  =====================================
dataset                       shape                          content
============================  =============================  =====================================
``tilt_angles``               ``(T,)``                       degrees
``<preset>/clean``            ``(n, T, ny, nx)`` float32     noise-free frames, fraction of beam
``<preset>/noisy``            ``(n, T, ny, nx)`` float32     Poisson noise (only with a dose)
``<preset>/volume``           ``(n, nx, ny, nx)`` float32    ground truth matched to the preset's
                                                             probe (unless disabled)
``pixel_size_A``              ``(n,)``                       Å (automatic per sample)
``seed``                      ``(n,)``                       per-sample seed (orientation, noise)
``spec``                      ``(n,)`` JSON strings          :class:`ClusterSpec` of each sample
``n_atoms``, ``formula``      ``(n,)``                       atom count and chemical formula
============================  =============================  =====================================

and attributes ``config`` (JSON), ``config_hash``, ``split``, ``shard``, ``first_sample``,
``optics`` (JSON per preset), ``dose_e_per_A2``, ``complete``.

Splits are *by structure*: a structure key (shape, element, shells, variant, second element)
belongs to one split only. The test split uses only the held-out elements (Yb, Ir, Xe, Al); train
and validation use Pt, Ag, Au, Cu, with about ``val_fraction`` of the structure keys reserved for
validation (by a stable hash of the key). Every sample is a function of (config, split, index)
alone, computed with one torch thread, so the files are identical whatever the number of worker
processes and however often the run was interrupted and resumed. A shard is written to
``*.h5.part`` and renamed when complete; finished shards are skipped on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress
from napari_tiltgen.simulate.clusters import (
    STRUCTURES,
    TEST_ELEMENTS,
    TRAIN_ELEMENTS,
    VARIANTS,
    ClusterSpec,
)
from napari_tiltgen.simulate.haadf import ATOM_SIGMA_A, PRESETS

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DatasetConfig:
    """What to simulate.

    Parameters
    ----------
    n_train, n_val, n_test
        Number of samples (tilt series) per split.
    shard_size
        Samples per HDF5 file.
    size
        Frame edge in pixels (square frames; volumes are ``size^3``).
    tilt_range, tilt_step
        Tilt angles, degrees (default -90 to +90 in 1 degree, 181 frames).
    presets
        Optics presets simulated for every sample (same cluster and orientation).
    dose_e_per_A2
        Dose per frame for the ``noisy`` copy, e-/Å²; ``None``: clean frames only.
    mode
        ``"fast"`` or ``"abtem"`` (abTEM takes minutes per frame: small validation sets only).
    seed
        Base seed; sample ``i`` of split ``s`` uses a seed derived from ``(seed, s, i)``.
    structures, variants
        Shapes and variants to draw from (variants are drawn uniformly, then a structure key).
    shells
        Inclusive range of shell counts.
    val_fraction
        Share of the training-element structure keys reserved for validation.
    save_volumes
        Store the ground-truth volume of each sample, per preset (atoms as Gaussians of the
        preset's image width, so forward projections match that preset's frames).
    z_exponent, atom_sigma_A
        Fast-model settings (see :func:`~napari_tiltgen.simulate.haadf.fast_haadf`).
    """

    n_train: int = 64
    n_val: int = 8
    n_test: int = 16
    shard_size: int = 8
    size: int = 128
    tilt_range: tuple[float, float] = (-90.0, 90.0)
    tilt_step: float = 1.0
    presets: tuple[str, ...] = ("non_aberrated", "aberrated")
    dose_e_per_A2: float | None = None
    mode: str = "fast"
    seed: int = 0
    structures: tuple[str, ...] = STRUCTURES
    variants: tuple[str, ...] = VARIANTS
    shells: tuple[int, int] = (2, 5)
    val_fraction: float = 0.15
    save_volumes: bool = True
    z_exponent: float = 1.7
    atom_sigma_A: float = ATOM_SIGMA_A

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise TiltgenError(f"{name} must be >= 0.")
        if self.shard_size < 1:
            raise TiltgenError("shard_size must be at least 1.")
        for p in self.presets:
            if p not in PRESETS:
                raise TiltgenError(f"unknown optics preset {p!r}; choose from {', '.join(PRESETS)}.")
        if not self.presets:
            raise TiltgenError("give at least one optics preset.")
        for s in self.structures:
            if s not in STRUCTURES:
                raise TiltgenError(f"unknown structure {s!r}; choose from {', '.join(STRUCTURES)}.")
        for v in self.variants:
            if v not in VARIANTS:
                raise TiltgenError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}.")
        if self.mode not in ("fast", "abtem"):
            raise TiltgenError(f"unknown mode {self.mode!r}; use 'fast' or 'abtem'.")
        lo, hi = self.shells
        if not 1 <= lo <= hi <= 12:
            raise TiltgenError(f"shells must be a range within 1..12; got {self.shells}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TiltgenError("val_fraction must lie in [0, 1).")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetConfig:
        d = dict(d)
        for k in ("tilt_range", "presets", "structures", "variants", "shells"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    def n_samples(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


# ----------------------------------------------------------------------------- catalogues


def _min_shells(structure: str) -> int:
    from napari_tiltgen.simulate.clusters import _min_shells as ms

    return ms(structure)


def structure_keys(config: DatasetConfig, split: str) -> list[tuple]:
    """Sorted structure keys ``(structure, element, shells, variant, element2)`` of a split."""
    if split not in SPLITS:
        raise TiltgenError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    elements = TEST_ELEMENTS if split == "test" else TRAIN_ELEMENTS
    keys = []
    for structure in config.structures:
        lo = max(config.shells[0], _min_shells(structure))
        for shells in range(lo, config.shells[1] + 1):
            for el in elements:
                for variant in config.variants:
                    if variant in ("alloy", "core_shell"):
                        seconds = [e for e in elements if e != el]
                    else:
                        seconds = [None]
                    if variant == "hollow" and shells < 3:
                        continue  # too small to hollow out
                    for el2 in seconds:
                        keys.append((structure, el, shells, variant, el2))
    if split != "test":
        keys = [k for k in keys if _is_val(k, config.val_fraction) == (split == "val")]
    return sorted(keys, key=lambda k: json.dumps(k))


def _is_val(key: tuple, fraction: float) -> bool:
    h = int(hashlib.sha1(json.dumps(key).encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def sample_spec(config: DatasetConfig, split: str, index: int,
                keys: list[tuple] | None = None) -> tuple[ClusterSpec, int]:
    """The cluster and seed of sample ``index`` of ``split`` (deterministic)."""
    keys = structure_keys(config, split) if keys is None else keys
    if not keys:
        raise TiltgenError(
            f"the {split} split has no structures with these settings (structures, variants, "
            "shells, val_fraction); widen them."
        )
    split_id = SPLITS.index(split)
    rng = np.random.default_rng([int(config.seed), split_id, int(index)])
    sample_seed = int(rng.integers(0, 2**31 - 1))
    variants = sorted({k[3] for k in keys}, key=lambda v: VARIANTS.index(v))
    variant = variants[int(rng.integers(len(variants)))]
    group = [k for k in keys if k[3] == variant]
    structure, el, shells, variant, el2 = group[int(rng.integers(len(group)))]
    spec = ClusterSpec(structure=structure, element=el, shells=int(shells), variant=variant,
                       element2=el2, orientation="random", seed=sample_seed)
    return spec, sample_seed


# ----------------------------------------------------------------------------- one sample


def simulate_sample(config: DatasetConfig, split: str, index: int) -> dict[str, Any]:
    """Simulate one sample (every preset) with one torch thread; a plain dict of arrays."""
    import torch

    from napari_tiltgen.core.progress import run
    from napari_tiltgen.simulate.series import simulate_tilt_series_iter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec, seed = sample_spec(config, split, index)
        atoms = spec.build()
        out: dict[str, Any] = {"index": index, "spec": spec.to_json(), "seed": seed,
                               "n_atoms": len(atoms), "formula": atoms.get_chemical_formula(),
                               "clean": {}, "noisy": {}, "volume": {}}
        for k, preset in enumerate(config.presets):
            res = run(simulate_tilt_series_iter(
                atoms, tilt_range=config.tilt_range, tilt_step=config.tilt_step,
                size=config.size, optics=preset, mode=config.mode,
                dose_e_per_A2=config.dose_e_per_A2, seed=seed + 1000 * k,
                z_exponent=config.z_exponent, atom_sigma_A=config.atom_sigma_A), show=False)
            out["clean"][preset] = res.clean
            if config.dose_e_per_A2 is not None:
                out["noisy"][preset] = res.tilt_series.data
            out["pixel_size_A"] = res.tilt_series.pixel_size_A
            out["tilt_angles"] = res.tilt_series.tilt_angles
            if config.save_volumes:
                out["volume"][preset] = res.volume.data
        return out
    finally:
        torch.set_num_threads(threads)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _worker_task(args: tuple[dict[str, Any], str, int]) -> dict[str, Any]:
    cfg, split, index = args
    return simulate_sample(DatasetConfig.from_dict(cfg), split, index)


# ----------------------------------------------------------------------------- shards


def shard_path(out_dir: str | os.PathLike, split: str, shard: int) -> Path:
    return Path(out_dir) / split / f"shard-{shard:05d}.h5"


def _shard_done(path: Path, config_hash: str) -> bool:
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False)) and f.attrs.get("config_hash") == config_hash
    except OSError:
        return False


def _check_folder(out_dir: Path, config: DatasetConfig, overwrite: bool) -> None:
    manifest = out_dir / "dataset.json"
    if manifest.is_file() and not overwrite:
        old = json.loads(manifest.read_text())
        if old.get("config_hash") != config.hash():
            raise TiltgenError(
                f"{out_dir} already holds a data set made with other settings "
                f"(config {old.get('config_hash')} vs {config.hash()}). Use a new folder, the "
                "same settings (to resume), or --overwrite to start again.",
            )


def _write_manifest(out_dir: Path, config: DatasetConfig, shards: dict[str, list[str]]) -> None:
    info = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "splits": {s: {"n_samples": config.n_samples(s), "shards": shards.get(s, []),
                       "n_structure_keys": len(structure_keys(config, s)),
                       "elements": list(TEST_ELEMENTS if s == "test" else TRAIN_ELEMENTS)}
                   for s in SPLITS},
        "optics": {p: PRESETS[p].to_dict() for p in config.presets},
    }
    tmp = out_dir / "dataset.json.part"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out_dir / "dataset.json")


@dataclass
class _ShardWriter:
    path: Path
    config: DatasetConfig
    split: str
    shard: int
    first: int
    n: int
    count: int = 0
    file: Any = None

    def open(self, sample: dict[str, Any]) -> None:
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        f = h5py.File(part, "w")
        cfg = self.config
        angles = np.asarray(sample["tilt_angles"], dtype=np.float64)
        t, ny, nx = len(angles), cfg.size, cfg.size
        f.create_dataset("tilt_angles", data=angles)
        f["tilt_angles"].attrs["units"] = "degrees"
        chunks = (1, 1, ny, nx)
        for p in cfg.presets:
            g = f.create_group(p)
            g.attrs["optics"] = json.dumps(PRESETS[p].to_dict())
            g.create_dataset("clean", shape=(self.n, t, ny, nx), dtype="f4", chunks=chunks,
                             compression="lzf")
            if cfg.dose_e_per_A2 is not None:
                g.create_dataset("noisy", shape=(self.n, t, ny, nx), dtype="f4", chunks=chunks,
                                 compression="lzf")
            if cfg.save_volumes:
                g.create_dataset("volume", shape=(self.n, nx, ny, nx), dtype="f4",
                                 chunks=(1, 1, ny, nx), compression="lzf")
                g["volume"].attrs["units"] = "1/Å² (sum along z = image, fraction of beam)"
        f.create_dataset("pixel_size_A", shape=(self.n,), dtype="f8")
        f.create_dataset("seed", shape=(self.n,), dtype="i8")
        f.create_dataset("n_atoms", shape=(self.n,), dtype="i8")
        sdt = h5py.string_dtype()
        f.create_dataset("spec", shape=(self.n,), dtype=sdt)
        f.create_dataset("formula", shape=(self.n,), dtype=sdt)
        f.attrs.update({
            "format_version": FORMAT_VERSION,
            "config": json.dumps(cfg.to_dict(), sort_keys=True),
            "config_hash": cfg.hash(),
            "split": self.split,
            "shard": self.shard,
            "first_sample": self.first,
            "n_samples": self.n,
            "optics": json.dumps({p: PRESETS[p].to_dict() for p in cfg.presets}),
            "dose_e_per_A2": -1.0 if cfg.dose_e_per_A2 is None else float(cfg.dose_e_per_A2),
            "mode": cfg.mode,
            "complete": False,
        })
        self.file = f

    def add(self, sample: dict[str, Any]) -> None:
        if self.file is None:
            self.open(sample)
        f, j = self.file, sample["index"] - self.first
        for p in self.config.presets:
            f[p]["clean"][j] = sample["clean"][p]
            if self.config.dose_e_per_A2 is not None:
                f[p]["noisy"][j] = sample["noisy"][p]
            if self.config.save_volumes:
                f[p]["volume"][j] = sample["volume"][p]
        f["pixel_size_A"][j] = sample["pixel_size_A"]
        f["seed"][j] = sample["seed"]
        f["n_atoms"][j] = sample["n_atoms"]
        f["spec"][j] = sample["spec"]
        f["formula"][j] = sample["formula"]
        self.count += 1

    def finish(self) -> None:
        self.file.attrs["complete"] = True
        self.file.close()
        self.file = None
        os.replace(self.path.with_name(self.path.name + ".part"), self.path)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def generate_dataset_iter(out_dir: str | os.PathLike, config: DatasetConfig | None = None, *,
                          workers: int = 1, overwrite: bool = False
                          ) -> Generator[Progress, None, dict[str, Any]]:
    """Write (or complete) a data set in ``out_dir``; a progress generator.

    Parameters
    ----------
    out_dir
        Output folder (created).
    config
        What to simulate (default :class:`DatasetConfig`).
    workers
        Worker processes (each with one torch thread); 1 computes in this process.
    overwrite
        Replace a data set made with other settings (its shards are deleted).

    Returns
    -------
    dict
        ``{"written": [...], "skipped": [...], "out_dir": ...}`` shard paths.
    """
    config = config or DatasetConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_folder(out, config, overwrite)
    if overwrite:
        for s in SPLITS:
            for p in list((out / s).glob("shard-*.h5*")) if (out / s).is_dir() else []:
                p.unlink()
    h = config.hash()
    plan: list[tuple[str, int, int, int]] = []  # split, shard, first, n
    shards: dict[str, list[str]] = {}
    skipped: list[str] = []
    for split in SPLITS:
        n = config.n_samples(split)
        if n and not structure_keys(config, split):
            raise TiltgenError(f"the {split} split has no structures with these settings; "
                               "widen structures/variants/shells or change val_fraction.")
        for k, first in enumerate(range(0, n, config.shard_size)):
            path = shard_path(out, split, k)
            shards.setdefault(split, []).append(str(path.relative_to(out)))
            if _shard_done(path, h):
                skipped.append(str(path))
            else:
                plan.append((split, k, first, min(config.shard_size, n - first)))
    _write_manifest(out, config, shards)
    tasks = [(split, first + j) for split, _k, first, n in plan for j in range(n)]
    total = max(len(tasks), 1)
    written: list[str] = []
    yield Progress(0.0, f"{len(tasks)} samples to simulate, {len(skipped)} shards done")
    if not tasks:
        return {"written": written, "skipped": skipped, "out_dir": str(out)}

    cfg_dict = config.to_dict()
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(processes=int(workers), initializer=_worker_init)
        results: Iterator[dict[str, Any]] = pool.imap(
            _worker_task, [(cfg_dict, s, i) for s, i in tasks], chunksize=1)
    else:
        results = (simulate_sample(config, s, i) for s, i in tasks)
    writer: _ShardWriter | None = None
    done = 0
    try:
        for split, k, first, n in plan:
            writer = _ShardWriter(shard_path(out, split, k), config, split, k, first, n)
            for _ in range(n):
                sample = next(results)
                writer.add(sample)
                done += 1
                yield Progress(done / total, f"{split} sample {sample['index'] + 1}/"
                               f"{config.n_samples(split)} ({sample['formula']})")
            writer.finish()
            written.append(str(writer.path))
            writer = None
    finally:
        if writer is not None:
            writer.abort()
        if pool is not None:
            pool.terminate()
            pool.join()
    return {"written": written, "skipped": skipped, "out_dir": str(out)}


def generate_dataset(out_dir: str | os.PathLike, config: DatasetConfig | None = None, *,
                     workers: int = 1, overwrite: bool = False,
                     show_progress: bool = False) -> dict[str, Any]:
    """Run :func:`generate_dataset_iter` to completion (same parameters)."""
    from napari_tiltgen.core.progress import run

    return run(generate_dataset_iter(out_dir, config, workers=workers, overwrite=overwrite),
               show=show_progress, desc="simulate-dataset")


def iter_samples(out_dir: str | os.PathLike, split: str = "train",
                 preset: str = "non_aberrated", noisy: bool = False
                 ) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """Iterate over a data set's samples as ``(TiltSeries, Volume or None, info)``."""
    import h5py

    from napari_tiltgen.io.model import TiltSeries, Volume

    folder = Path(out_dir) / split
    for path in sorted(folder.glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            if preset not in f:
                raise TiltgenError(f"{path} has no preset {preset!r}; it has "
                                   f"{', '.join(k for k in f if isinstance(f[k], h5py.Group))}.")
            key = "noisy" if noisy else "clean"
            if key not in f[preset]:
                raise TiltgenError(f"{path} has no {key} frames (it was made without a dose).")
            angles = f["tilt_angles"][()]
            for j in range(int(f.attrs["n_samples"])):
                px = float(f["pixel_size_A"][j])
                info = {"spec": json.loads(f["spec"][j]), "seed": int(f["seed"][j]),
                        "formula": f["formula"][j].decode() if isinstance(f["formula"][j], bytes)
                        else str(f["formula"][j]), "shard": str(path), "index": j}
                ts = TiltSeries(f[preset][key][j], tilt_angles=angles, pixel_size_A=px,
                                provenance={"source": str(path), "method": "simulated data set",
                                            "parameters": info})
                vol = Volume(f[preset]["volume"][j], px) if "volume" in f[preset] else None
                yield ts, vol, info

