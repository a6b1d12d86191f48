"""The prepared GPU scripts run end to end on the CPU (``--dry-run``, tiny sizes).

A session lent a GPU has minutes to run them: an import error found there costs the whole
loan. These dry runs catch that here (slow lane, about two minutes together).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _dry_run(script: str, out: Path) -> str:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / script), "--dry-run"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _rows(report: str) -> dict[str, str]:
    rows = re.finditer(r"^\| (\w+) \| ([^|]+) \|", report, re.MULTILINE)
    return {m.group(1): m.group(2) for m in rows if m.group(1) != "part"}


def test_gpu_check_dry_run_every_part_ok(tmp_path):
    _dry_run("gpu_check.sh", tmp_path)
    rows = _rows((tmp_path / "performance_gpu.md").read_text())
    assert set(rows) == {"setup", "tests", "sirt", "wbp", "train", "inr"}
    assert all(s.strip() == "ok" for s in rows.values()), rows


def test_gpu_train_dry_run_brings_back_loadable_weights(tmp_path):
    from napari_tiltgen.nets.inpainting.network import load_generator
    from napari_tiltgen.nets.interpolation.network import load_model

    _dry_run("gpu_train.sh", tmp_path)
    rows = _rows((tmp_path / "gpu_train.md").read_text())
    assert set(rows) == {"setup", "pool", "interp", "inpaint"}
    assert all(s.strip() == "ok" for s in rows.values()), rows
    model, info = load_model(tmp_path / "interpolation_context.safetensors")
    assert "train-interpolation" in info["training"]["command"]
    assert model.config.noise_planes == 2 and info["training"]["clean_fraction"] == 0.3
    assert model.config.context == 2 and info["training"]["context"] == 2
    _, info = load_generator(tmp_path / "inpainting.safetensors")
    assert "train-inpainting" in info.get("command", "")
