"""Simulated data sets (sharded HDF5, resumable, deterministic, split by structure) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_tiltgen.cli import main
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.simulate.clusters import TEST_ELEMENTS, TRAIN_ELEMENTS
from napari_tiltgen.simulate.dataset import (
    DatasetConfig,
    generate_dataset,
    iter_samples,
    sample_spec,
    structure_keys,
)

TINY = DatasetConfig(n_train=3, n_val=1, n_test=2, shard_size=2, size=32, tilt_range=(-60, 60),
                     tilt_step=30.0, dose_e_per_A2=5e3, shells=(2, 3))


def shard_bytes(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted(folder.glob("*/shard-*.h5")):
        d: dict[str, np.ndarray] = {}

        def grab(name: str, obj, d=d) -> None:
            if isinstance(obj, h5py.Dataset):
                d[name] = obj[()]

        with h5py.File(p, "r") as f:
            f.visititems(grab)
        out[str(p.relative_to(folder))] = d
    return out


def test_splits_are_by_structure_with_held_out_elements() -> None:
    cfg = DatasetConfig()
    train, val, test = (set(structure_keys(cfg, s)) for s in ("train", "val", "test"))
    assert train and val and test
    assert not train & val and not train & test and not val & test
    assert {k[1] for k in train | val} == set(TRAIN_ELEMENTS)
    assert {k[1] for k in test} == set(TEST_ELEMENTS)
    assert all(k[4] in (None, *TEST_ELEMENTS) for k in test)
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.25
    # each sample is a function of (seed, split, index) only
    assert sample_spec(cfg, "train", 5) == sample_spec(cfg, "train", 5)
    assert sample_spec(cfg, "train", 5) != sample_spec(cfg, "train", 6)
    specs = [sample_spec(cfg, "test", i)[0] for i in range(20)]
    assert {s.element for s in specs} <= set(TEST_ELEMENTS)
    assert len({s.variant for s in specs}) >= 3


def test_dataset_is_deterministic_parallel_and_resumable(tmp_path: Path) -> None:
    a, b = tmp_path / "serial", tmp_path / "parallel"
    res = generate_dataset(a, TINY, workers=1)
    assert len(res["written"]) == 4 and not res["skipped"]  # 2 train shards, 1 val, 1 test
    generate_dataset(b, TINY, workers=2)
    sa, sb = shard_bytes(a), shard_bytes(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        for key in sa[name]:
            np.testing.assert_array_equal(sa[name][key], sb[name][key], err_msg=f"{name}:{key}")

    # contents and attributes
    with h5py.File(a / "train" / "shard-00000.h5", "r") as f:
        assert f["non_aberrated/clean"].shape == (2, 5, 32, 32)
        assert f["aberrated/noisy"].shape == (2, 5, 32, 32)
        assert f["aberrated/volume"].shape == (2, 32, 32, 32)
        # the aberrated ground truth is wider (matched to its probe): same sum, lower peak
        va, vn = f["aberrated/volume"][0], f["non_aberrated/volume"][0]
        assert abs(va.sum() / vn.sum() - 1) < 0.01 and va.max() < 0.5 * vn.max()
        np.testing.assert_allclose(f["tilt_angles"][()], [-60, -30, 0, 30, 60])
        assert f.attrs["complete"] and f.attrs["split"] == "train"
        cfg = json.loads(f.attrs["config"])
        assert cfg["dose_e_per_A2"] == 5e3 and cfg["tilt_step"] == 30.0
        optics = json.loads(f.attrs["optics"])
        assert optics["aberrated"]["Cs_A"] == 1e6 and optics["non_aberrated"]["convergence_mrad"] == 35
        seeds = f["seed"][()]
        specs = [json.loads(s) for s in f["spec"][()]]
        assert [s["seed"] for s in specs] == list(seeds)
        assert all(s["element"] in TRAIN_ELEMENTS for s in specs)
        assert np.all(f["pixel_size_A"][()] > 0)
    manifest = json.loads((a / "dataset.json").read_text())
    assert manifest["splits"]["test"]["elements"] == list(TEST_ELEMENTS)

    # resume: finished shards are skipped untouched; a missing or half-written one is redone
    done = a / "train" / "shard-00001.h5"
    mtimes = {p: p.stat().st_mtime_ns for p in a.glob("*/shard-*.h5")}
    done.unlink()
    (a / "train" / "shard-00001.h5.part").write_bytes(b"interrupted")
    res = generate_dataset(a, TINY, workers=1)
    assert res["written"] == [str(done)] and len(res["skipped"]) == 3
    for p, t in mtimes.items():
        if p != done:
            assert p.stat().st_mtime_ns == t
    assert not (a / "train" / "shard-00001.h5.part").exists()
    np.testing.assert_array_equal(shard_bytes(a)["train/shard-00001.h5"]["aberrated/volume"],
                                  sa["train/shard-00001.h5"]["aberrated/volume"])

    # other settings in the same folder: refused unless --overwrite
    with pytest.raises(TiltgenError, match="other settings"):
        generate_dataset(a, DatasetConfig(n_train=1, n_val=0, n_test=0, size=32, tilt_step=45))

    # reading back as TiltSeries/Volume
    items = list(iter_samples(a, "test", "aberrated", noisy=True))
    assert len(items) == 2
    ts, vol, info = items[0]
    assert ts.shape == (5, 32, 32) and vol.shape == (32, 32, 32)
    assert info["spec"]["element"] in TEST_ELEMENTS and ts.pixel_size_A == vol.voxel_size_A


def test_cli_simulate_writes_series_ground_truth_and_atoms(tmp_path: Path, capsys) -> None:
    from napari_tiltgen.io import read_tilt_series, read_volume

    out = tmp_path / "au.mrc"
    rc = main(["simulate", str(out), "--structure", "cuboctahedron", "--element", "Au",
               "--shells", "3", "--size", "48", "--tilt-range", "-60", "60", "--tilt-step", "15",
               "--dose", "1e4", "--preset", "aberrated", "--seed", "3"])
    assert rc == 0
    ts = read_tilt_series(out)
    vol = read_volume(tmp_path / "au_gt.mrc")
    assert ts.shape == (9, 48, 48) and vol.shape == (48, 48, 48)
    np.testing.assert_allclose(ts.tilt_angles, np.arange(-60, 61, 15))
    assert abs(ts.pixel_size_A - vol.voxel_size_A) < 1e-4
    assert (tmp_path / "au_atoms.xyz").read_text().startswith("55\n")
    assert "cuboctahedron Au55" in capsys.readouterr().out
    # never overwrites without --overwrite; bad inputs give one-line errors (exit 2)
    assert main(["simulate", str(out), "--size", "48"]) == 2
    assert main(["simulate", str(tmp_path / "x.mrc"), "--element", "Fe"]) == 2
    assert main(["simulate", str(tmp_path / "y.mrc"), "--shells", "6", "--size", "32",
                 "--pixel-size", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "not fcc" in err and "does not fit" in err


def test_cli_simulate_dynamic_and_dataset(tmp_path: Path) -> None:
    out = tmp_path / "sinter.mrc"
    assert main(["simulate", str(out), "--dynamic", "sintering", "--shells", "2", "--size", "40",
                 "--tilt-step", "20", "--order", "dose_symmetric", "--frame-time", "10"]) == 0
    times = np.loadtxt(tmp_path / "sinter_times.txt")
    assert times.shape == (10, 2) and times[times[:, 0] == -10.0, 1][0] == 0.0
    assert (tmp_path / "sinter_gt_end.mrc").is_file()
    ds = tmp_path / "ds"
    assert main(["simulate-dataset", "--out", str(ds), "--n-train", "1", "--n-val", "0",
                 "--n-test", "1", "--size", "32", "--tilt-step", "45", "--presets",
                 "non_aberrated", "--shells", "2", "2", "--workers", "1", "--quiet"]) == 0
    assert (ds / "train" / "shard-00000.h5").is_file() and (ds / "test" / "shard-00000.h5").is_file()


def test_cli_help_builds_without_heavy_imports() -> None:
    """``tiltgen simulate --help`` / ``simulate-dataset --help`` work, and building the parser
    (done for every ``tiltgen`` call) imports neither torch, abTEM, ase nor h5py."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from napari_tiltgen.cli import build_parser\n"
            "build_parser()\n"
            "print(sorted(m for m in ('torch', 'abtem', 'ase', 'h5py', 'napari') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for cmd, words in (("simulate", ["--structure", "--preset", "--dose", "--mode", "--dynamic"]),
                       ("simulate-dataset", ["--out", "--workers", "--shard-size", "--presets",
                                             "--val-fraction"])):
        res = subprocess.run([sys.executable, "-m", "napari_tiltgen.cli", cmd, "--help"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        for w in words:
            assert w in res.stdout
