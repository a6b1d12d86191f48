"""Training (resumable), the benchmark and the CLI of tilt-frame interpolation, on tiny data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tiltgen.cli import main
from napari_tiltgen.nets.interpolation import NetConfig, load_model
from napari_tiltgen.nets.interpolation.train import TrainConfig, train

torch.set_num_threads(1)
TINY = NetConfig(channels=(4, 6, 8, 8), decoder_channels=(4, 6, 8, 8))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train and 1 test cluster, 32 px, -12..12 degrees every degree."""
    from napari_tiltgen.simulate.dataset import DatasetConfig, generate_dataset

    out = tmp_path_factory.mktemp("ds")
    cfg = DatasetConfig(n_train=3, n_val=0, n_test=1, shard_size=4, size=32,
                        tilt_range=(-12.0, 12.0), shells=(2, 3), save_volumes=False,
                        structures=("octahedron", "cuboctahedron"), variants=("solid",))
    generate_dataset(out, cfg)
    return out


def _cfg(data: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig(data=[str(data)], out_dir=str(out), steps=steps, batch_size=2,
                       warmup_steps=2, val_series=1, val_every=2, val_triplets=4, log_every=1,
                       checkpoint_every=1, device="cpu", net=TINY, gap_range_deg=(2.0, 6.0))


def test_training_runs_and_resumes_to_the_same_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = train(_cfg(tiny_dataset, tmp_path / "a", 4), show_progress=False)
    assert straight["step"] == 4 and straight["stopped"] == "steps"
    train(_cfg(tiny_dataset, tmp_path / "b", 2), show_progress=False)
    resumed = train(_cfg(tiny_dataset, tmp_path / "b", 4), show_progress=False)
    assert resumed["step"] == 4
    wa, _ = load_model(tmp_path / "a" / "last.safetensors")
    wb, info = load_model(tmp_path / "b" / "last.safetensors")
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "total" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["total"]) for r in log if "total" in r)
    assert info["trained_gap_deg"] == [2.0, 6.0] and info["data"]["frame_px"] == [32, 32]
    assert (tmp_path / "b" / "best.safetensors").is_file()


def test_fine_tuning_starts_from_the_given_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    base = train(_cfg(tiny_dataset, tmp_path / "base", 2), show_progress=False)
    assert base["step"] == 2
    start, start_info = load_model(tmp_path / "base" / "last.safetensors")
    cfg = _cfg(tiny_dataset, tmp_path / "ft", 1)
    cfg.net = NetConfig()  # replaced by the architecture of the --init weights
    cfg.init = str(tmp_path / "base" / "last.safetensors")
    cfg.lr = 0.0  # zero learning rate: the weights must stay those of the start file
    cfg.weight_decay = 0.0
    train(cfg, show_progress=False)
    tuned, info = load_model(tmp_path / "ft" / "last.safetensors")
    assert tuned.config == start.config == TINY
    for (k, va), vb in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(va, vb), k
    assert info["initialised_from"]["training"]["step"] == start_info["training"]["step"] == 2
    fresh = train(_cfg(tiny_dataset, tmp_path / "fresh", 1), show_progress=False)
    assert fresh["step"] == 1
    other, _ = load_model(tmp_path / "fresh" / "last.safetensors")
    assert any(not torch.equal(a, b) for a, b in
               zip(start.state_dict().values(), other.state_dict().values()))


def test_cli_train_eval_and_interpolate(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    weights = tmp_path / "w.safetensors"
    assert main(["train-interpolation", str(tiny_dataset), "--out", str(out), "--steps", "2",
                 "--batch-size", "2", "--val-series", "1", "--val-every", "1", "--device", "cpu",
                 "--channels", "4,6,8,8", "--decoder-channels", "4,6,8,8", "--max-gap", "6",
                 "--export", str(weights), "--quiet"]) == 0
    assert weights.is_file()
    ev = tmp_path / "eval"
    assert main(["eval-interpolation", str(tiny_dataset), "--out", str(ev), "--weights",
                 str(weights), "--gaps", "1-3", "--reprojection-iterations", "3",
                 "--recon-gaps", "3", "--recon-series", "1", "--recon-iterations", "3",
                 "--device", "cpu", "--quiet"]) == 0
    table = (ev / "interpolation_eval.md").read_text()
    assert "| 1 | 0 |" in table and "| 2 |" in table and "2-12 (mean)" in table
    assert "mix (pretrained)" in table and "sparse" in table
    assert (ev / "interpolation_eval.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((ev / "interpolation_eval.json").read_text())
    assert res["frames"][1]["n_frames"] == 2 * 12  # 2 presets x 12 hidden frames at gap 2
    assert 0 < res["frames"][1]["linear"]["ssim"] <= 1

    # interpolate a file with the CLI, then refuse a gap the model was not trained for
    from napari_tiltgen.io import write_mrc
    from napari_tiltgen.io.model import TiltSeries
    from napari_tiltgen.nets.interpolation.data import load_frame_bank

    bank = load_frame_bank(tiny_dataset, "test", max_series=1)
    ts = TiltSeries(bank.stacks[0][::4], tilt_angles=bank.tilt_angles[::4],
                    pixel_size_A=float(bank.pixel_size_A[0]))
    src = write_mrc(ts, tmp_path / "sparse.mrc")
    Path(src).with_suffix(".rawtlt").write_text("".join(f"{a}\n" for a in ts.tilt_angles))
    dst = tmp_path / "dense.mrc"
    capsys.readouterr()
    assert main(["interpolate", str(src), "--out", str(dst), "--target-step", "1",
                 "--weights", str(weights), "--device", "cpu", "--quiet"]) == 0
    rep = json.loads(dst.with_suffix(".json").read_text())
    assert rep["n_frames"] == 25 and len(rep["predicted_indices"]) == 18
    angles = np.loadtxt(dst.with_suffix(".rawtlt"))
    np.testing.assert_allclose(angles, np.arange(-12, 13))
    assert main(["interpolate", str(src), "--qa", "--method", "linear", "--quiet"]) == 0
    assert "leave-one-out QA (linear)" in capsys.readouterr().out
    # gaps of 8 degrees > the 6 degrees this tiny model was trained for: the pretrained method
    # is refused (exit 2); auto (the default) falls back to linear and says why
    assert main(["interpolate", str(src), "--qa", "--method", "pretrained", "--weights",
                 str(weights), "--quiet"]) == 2
    assert "trained on gaps of 2-6 degrees" in capsys.readouterr().err
    assert main(["interpolate", str(src), "--qa", "--weights", str(weights), "--quiet"]) == 0
    assert "linear" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A family pool: 4 train and 2 val windows of 32 px (training families)."""
    from napari_tiltgen.nets.interpolation.data import build_family_pool_iter

    out = tmp_path_factory.mktemp("pool")
    for split, n in (("val", 2), ("train", 4)):
        for _ in build_family_pool_iter(out, n, split=split, sizes=(32,), shard_size=2,
                                        families=("rods", "polyhedra", "metaballs")):
            pass
    return out


def test_family_pool_is_resumable_and_its_triplets_are_noisy_with_clean_targets(
        tiny_pool: Path) -> None:
    from napari_tiltgen.nets.interpolation.data import (
        FamilyTriplets,
        build_family_pool_iter,
        load_family_pool,
    )

    # building again makes nothing new (every shard is there)
    again = list(build_family_pool_iter(tiny_pool, 4, sizes=(32,), shard_size=2,
                                        families=("rods", "polyhedra", "metaballs")))
    assert again == []
    pool = load_family_pool(tiny_pool, "train")
    assert len(pool) == 4 and pool.stacks[32].shape == (4, 25, 32, 32)
    assert set(pool.summary()["families"]) <= {"rods", "polyhedra", "metaballs"}
    batch = FamilyTriplets(pool, (2.0, 6.0), crops=(16, 32), level="realistic").sample(
        np.random.default_rng(0), 6)
    assert batch["img0"].shape[-1] in (16, 32)
    # the target is clean: far smoother (typical pixel-to-pixel step) than the noisy inputs
    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().median())

    assert roughness(batch["img0"]) > 3 * roughness(batch["target"])
    assert torch.all((batch["t"] > 0) & (batch["t"] < 1))


def test_family_pool_refuses_held_out_families(tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["build-interpolation-data", str(tmp_path / "p"), "--series", "2",
                 "--families", "rods,aggregate", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "held-out families are for evaluation only" in err and "aggregate" in err
    assert not (tmp_path / "p").exists()


def test_training_on_a_family_pool_resumes_to_the_same_weights(tiny_pool: Path,
                                                               tmp_path: Path) -> None:
    def cfg(out: Path, steps: int) -> TrainConfig:
        return TrainConfig(data=[str(tiny_pool)], out_dir=str(out), steps=steps, batch_size=2,
                           warmup_steps=2, val_every=2, val_triplets=4, log_every=1,
                           checkpoint_every=1, device="cpu", net=TINY, crops=(32,),
                           val_crop=32, reload_every=1, gap_range_deg=(2.0, 6.0))

    straight = train(cfg(tmp_path / "a", 3), show_progress=False)
    train(cfg(tmp_path / "b", 2), show_progress=False)
    resumed = train(cfg(tmp_path / "b", 3), show_progress=False)
    assert straight["step"] == resumed["step"] == 3
    wa, _ = load_model(tmp_path / "a" / "last.safetensors")
    wb, info = load_model(tmp_path / "b" / "last.safetensors")
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k
    assert info["data"]["kind"] == "family pool" and info["data"]["n_series"] == 4
    assert info["data"]["object_radius_px"][1] > 0


def test_noise_conditioned_fine_tuning_from_plain_weights(tiny_pool: Path,
                                                          tmp_path: Path) -> None:
    """--noise-planes 2 with --init: the new planes are added to the start weights (same
    predictions at step 0), clean triplets are mixed in and validated on, and the weights
    written keep the noise conditioning through save and load."""
    from napari_tiltgen.nets.interpolation.data import FamilyTriplets, load_family_pool
    from napari_tiltgen.nets.interpolation.network import TiltInterpNet, noise_level, save_model

    torch.manual_seed(1)
    plain = TiltInterpNet(TINY)
    for p in plain.parameters():  # a non-trivial start (the fresh network is exactly linear)
        p.data.add_(0.05 * torch.randn_like(p))
    save_model(tmp_path / "plain.safetensors", plain)
    cfg = TrainConfig(data=[str(tiny_pool)], out_dir=str(tmp_path / "nc"), steps=2,
                      batch_size=2, warmup_steps=1, val_every=1, val_triplets=4, log_every=1,
                      checkpoint_every=1, device="cpu", net=NetConfig(noise_planes=2),
                      init=str(tmp_path / "plain.safetensors"), crops=(32,), val_crop=32,
                      gap_range_deg=(2.0, 6.0), clean_fraction=0.5, lr=0.0, weight_decay=0.0)
    summary = train(cfg, show_progress=False)
    assert summary["step"] == 2
    tuned, _ = load_model(tmp_path / "nc" / "last.safetensors")
    assert tuned.config.noise_planes == 2 and tuned.config.channels == TINY.channels
    assert tuned.n_parameters() == plain.n_parameters() + 2 * sum(TINY.decoder_channels) * 9
    i0, i1 = torch.rand(2, 1, 1, 32, 32)
    noisy = (i0 + 0.2 * torch.randn_like(i0), i1 + 0.2 * torch.randn_like(i1))
    for a, b in ((i0, i1), noisy):  # lr 0: exactly the plain network, noisy input or not
        assert torch.allclose(tuned(a, b, 0.4, 4.0)["image"], plain(a, b, 0.4, 4.0)["image"],
                              atol=1e-6)
    log = [json.loads(line) for line in (tmp_path / "nc" / "log.jsonl").read_text().splitlines()]
    val = [r for r in log if "score" in r]
    assert val and all(r["score"] == pytest.approx(r["val_gain_db"] + r["val_gain_db_clean"])
                       for r in val)
    # clean_fraction=1: the inputs are the clean frames (no noise), 0: noisy ("realistic")
    pool = load_family_pool(tiny_pool, "train")
    rng = np.random.default_rng(0)
    clean = FamilyTriplets(pool, (2.0, 6.0), crops=(32,), level="realistic",
                           clean_fraction=1.0).sample(rng, 4)
    dirty = FamilyTriplets(pool, (2.0, 6.0), crops=(32,), level="realistic").sample(rng, 4)
    s_clean = noise_level(clean["img0"], clean["img1"])[:, 0]
    s_dirty = noise_level(dirty["img0"], dirty["img1"])[:, 0]
    assert float(s_clean.max()) < 0.3 * float(s_dirty.min())
    with pytest.raises(Exception, match="clean_fraction"):
        FamilyTriplets(pool, (2.0, 6.0), crops=(32,), clean_fraction=1.5)


def test_shared_training_helpers(tmp_path: Path) -> None:
    """nets.training: the schedule's ends, per-item PSNR, and a saved state that resumes
    exactly (modules and the optimiser's moments and step)."""
    import torch

    from napari_tiltgen.nets.training import (
        item_psnr,
        load_training_state,
        save_training_state,
        warmup_cosine,
    )

    assert warmup_cosine(0, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.1)
    ref = torch.stack([torch.linspace(0, 1, 16), torch.linspace(0, 2, 16)])
    p = item_psnr(ref, ref + 0.01)
    assert p[1] - p[0] == pytest.approx(20 * math.log10(2), abs=1e-3)

    def make():
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 2)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2)

    def step(m, opt):
        opt.zero_grad()
        m(torch.ones(3, 4)).square().sum().backward()
        opt.step()

    a, opt_a = make()
    step(a, opt_a)
    save_training_state(tmp_path / "c.safetensors", {"m": a}, {"o": opt_a}, {"step": 1})
    b, opt_b = make()
    state = load_training_state(tmp_path / "c.safetensors", {"m": b}, {"o": opt_b},
                                torch.device("cpu"))
    assert state == {"step": 1} and [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    step(a, opt_a)
    step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    from safetensors.torch import save_file

    from napari_tiltgen.core.errors import TiltgenError

    save_file({"x": torch.zeros(1)}, str(tmp_path / "old.safetensors"), metadata={"step": "3"})
    with pytest.raises(TiltgenError, match="earlier version"):
        load_training_state(tmp_path / "old.safetensors", {"m": b}, {"o": opt_b},
                            torch.device("cpu"))
