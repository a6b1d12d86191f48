"""The ``tiltgen`` command line, run as a real subprocess (no Qt import allowed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ANGLES, N, file_state, stack, write_plain_mrc

from napari_tiltgen.io import read_volume


def tiltgen(*args: str, cwd: Path | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_tiltgen.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("fixture, lines", [
    ("imod_stack", ["13 tilts x 16 x 20 px",
                    "dtype:       int16 (kept on disk, converted to float32 per frame)",
                    "tilt angles: 13 from -60.00 to 60.00 deg, step 10.00 deg",
                    "from:      IMOD .rawtlt sidecar (tomo.rawtlt)", "pixel size:  2.7 Å"]),
    ("serialem_mdoc_stack", ["tilt angles: 13 from -60.00 to 60.00 deg, step 10.00 deg",
                             "SerialEM mdoc (ts.mrc.mdoc)", "pixel size:  3.42 Å",
                             "tilt axis:   85.30 deg from image Y (near horizontal)"]),
])
def test_info_says_what_the_file_records(request, fixture: str, lines: list[str]) -> None:
    r = tiltgen("info", str(request.getfixturevalue(fixture)))
    assert r.returncode == 0, r.stderr
    for line in lines:
        assert line in r.stdout


def test_info_fei_json(fei_stack: Path) -> None:
    r = tiltgen("info", str(fei_stack), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    np.testing.assert_allclose(info["tilt_angles"], ANGLES)
    assert info["pixel_size_A"] == pytest.approx(4.5)
    assert info["angle_stats"]["count"] == N
    assert info["provenance"]["angles_source"] == "FEI extended header (Alpha tilt)"


def test_info_serialem_header_angles_list(serialem_header_stack: Path) -> None:
    r = tiltgen("info", str(serialem_header_stack), "--angles")
    assert r.returncode == 0, r.stderr
    assert "SerialEM extended header" in r.stdout
    assert "angles (deg): -60 -50 -40 -30 -20 -10 0 10 20 30 40 50 60" in r.stdout


def test_info_missing_angles_then_start_step(tmp_path: Path) -> None:
    p = write_plain_mrc(tmp_path / "bare.st", stack())
    r = tiltgen("info", str(p))
    assert r.returncode == 0
    assert "tilt angles: UNKNOWN" in r.stdout
    r = tiltgen("info", str(p), "--tilt-start", "-45", "--tilt-step", "7.5")
    assert "tilt angles: 13 from -45.00 to 45.00 deg, step 7.50 deg" in r.stdout


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"x" * 2000, "not a readable MRC file"),
], ids=["empty", "garbage"])
def test_cli_bad_input_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.mrc"
    p.write_bytes(content)
    before = file_state(p)
    r = tiltgen("info", str(p))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one line, no traceback
    assert lines[0].startswith(f"tiltgen: error: {p}: ")
    assert message in lines[0]
    assert file_state(p) == before


def test_cli_angle_count_mismatch(imod_stack: Path) -> None:
    imod_stack.with_suffix(".rawtlt").write_text("0\n1\n")
    r = tiltgen("info", str(imod_stack))
    assert r.returncode == 2
    assert "gives 2 tilt angles but the stack tomo.st has 13 frames" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_does_not_import_qt(imod_stack: Path) -> None:
    code = ("import sys; from napari_tiltgen.cli import main; "
            f"main(['info', {str(imod_stack)!r}]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_demo_writes_outputs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = tiltgen("demo", "--out", str(out), "--size", "32", "--tilt-step", "5",
                "--sirt-iterations", "50", "--inr-steps", "30", "--dip-steps", "20",
                "--device", "cpu", timeout=900)  # every step, on a busy 2-core machine
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [
        "simulate", "save", "reconstruct WBP", "reconstruct SIRT", "interpolation", "inpainting",
        "INR fit", "compare", "time-resolved DIP"]
    rows = {r["name"]: r for r in summary["metrics"]}
    assert set(rows) == {"WBP", "SIRT", "SIRT sparse", "SIRT interpolated", "SIRT inpainted",
                         "SIRT jittered", "INR"}
    # the summary says, per enhancement, whether it beat its SIRT baseline
    assert [v["name"] for v in summary["verdicts"]] == [
        "SIRT interpolated", "SIRT inpainted", "INR", "time-resolved DIP"]
    assert "Enhanced results against SIRT" in r.stdout
    assert rows["SIRT"]["psnr_db"] > rows["WBP"]["psnr_db"]  # SIRT beats WBP on +-60 deg
    for name in ("sirt", "sirt_sparse", "sirt_interpolated", "sirt_inpainted", "inr"):
        assert read_volume(out / f"{name}.mrc").shape == (32, 32, 32), name
    for name in ("dip_first", "dip_middle", "dip_last"):  # its own 24^3 dynamic phantom
        assert read_volume(out / f"{name}.mrc").shape == (24, 24, 24), name
    dip = json.loads((out / "dip_metrics.json").read_text())
    assert dip["n_times"] == 40 and len(dip["ssim_dip"]) == 40
    assert 0.0 < dip["mean_ssim_dip"] <= 1.0
    assert (out / "comparison.png").stat().st_size > 10_000
    assert "SIRT" in r.stdout and "PSNR (dB)" in r.stdout
    r_info = tiltgen("info", str(out / "tilt_series.mrc"))
    assert "tilt angles: 25 from -60.00 to 60.00 deg, step 5.00 deg" in r_info.stdout
    before = file_state(out / "tilt_series.mrc")
    r2 = tiltgen("demo", "--out", str(out), "--size", "32")
    assert r2.returncode == 2 and "holds files from an earlier run" in r2.stderr
    assert file_state(out / "tilt_series.mrc") == before


def test_options_table_is_consistent_with_the_code():
    """options.toml: every command's function exists, every option section is used, every key
    is one add_options reads, and defaults the code also defines agree with it."""
    from napari_tiltgen.cli import build_parser
    from napari_tiltgen.cli.options import option_table
    from napari_tiltgen.nets.interpolation.adapt import DEFAULT_ADAPT_SECONDS, DEFAULT_ADAPT_STEPS

    table = option_table()
    commands = table["commands"]
    used = set(commands) | {s for c in commands.values() for s in c.get("sections", ())}
    sections = set(table) - {"commands"}
    assert sections == used & sections and used >= sections, sorted(sections - used)
    known = {"flags", "type", "min", "max", "min_open", "max_open", "default", "choices",
             "action", "nargs", "metavar", "dest", "required", "help", "group", "exclusive"}
    for name in sections:
        for entry in table[name]:
            assert set(entry) <= known, (name, set(entry) - known)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(commands)  # the help lists them in the table's order
    interp = sub.choices["interpolate"].parse_args(["x.mrc"])
    assert interp.adapt_seconds == DEFAULT_ADAPT_SECONDS
    assert interp.adapt_steps == DEFAULT_ADAPT_STEPS
    # a range from the table is enforced by the parser
    with pytest.raises(SystemExit):
        sub.choices["align"].parse_args(["x.mrc", "--out", "y.mrc", "--rounds", "101"])
