"""Fault injection: a hostile corpus run through the REAL command line (and the widget cancel).

Every case asserts what a user is promised (docs/cli.md, "Errors and outputs"):

* no traceback, ever: an error a user can cause is ONE line ``tiltgen: error: <file>: <problem>``
  with exit status 2, naming the file;
* inputs byte-identical (the stack and its sidecars, hashed before and after);
* no file clobbered and no stray temporary or partial output left in the folder;
* a cancelled widget job ends within 1 s, set-up included.

The corpus is built in ``tmp_path`` from tiny arrays (8-16 px frames, few iterations).
Tests run as root, where permission bits do not stop anything: a read-only output folder is
made with ``chattr +i`` (immutable: even root cannot create files in it) when the file system
allows it, else with a read-only tmpfs mount, else by making ``os.open`` refuse (the same
PermissionError the kernel gives); an unreadable input by making ``open`` refuse it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_tiltgen.cli import main
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.output import planned_outputs, stray_temporaries

ANGLES = np.linspace(-60, 60, 9)


# ---------------------------------------------------------------------------- corpus helpers
def make_series(folder: Path, name: str = "ts.mrc", n: int = 9, size: int = 12,
                sidecar: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 3) ** 2)
    data = np.stack([np.roll(blob, i % 3 - 1, axis=1) for i in range(n)]).astype(np.float32)
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
        m.voxel_size = 2.0
    if sidecar:
        p.with_suffix(".rawtlt").write_text("".join(f"{a:.2f}\n" for a in
                                                    np.linspace(-60, 60, n)))
    return p


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the real CLI in-process; returns (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return code, out, err


def assert_one_line_error(code: int, err: str, names: str | None) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("tiltgen: error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    if names is not None:
        assert names in errors[0], errors[0]
    return errors[0]


def assert_no_strays(folder: Path) -> None:
    for d in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        assert stray_temporaries(d) == [], d
    leftovers = [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]
    assert leftovers == []


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    make_series(tmp_path)
    return tmp_path


RECON = ["reconstruct", "--method", "wbp", "--device", "cpu", "--threads", "1", "--quiet"]
INTERP = ["interpolate", "--method", "linear", "--frames-per-gap", "1", "--device", "cpu",
          "--quiet"]


# ---------------------------------------------------------------------------- outputs
def test_interpolate_never_rewrites_the_inputs_sidecar(corpus: Path, capsys) -> None:
    """The data-loss bug: ``interpolate ts.mrc --out ts.st --overwrite`` rewrote ts.rawtlt."""
    before = snapshot(corpus)
    code, _, err = cli(capsys, *INTERP, corpus / "ts.mrc", "--out", corpus / "ts.st",
                       "--overwrite")
    line = assert_one_line_error(code, err, "ts.rawtlt")
    assert "sidecar" in line
    assert snapshot(corpus) == before  # nothing written, nothing changed
    assert_no_strays(corpus)


def test_interpolate_writes_stack_rawtlt_and_json_together(corpus: Path, capsys) -> None:
    before = snapshot(corpus)
    out = corpus / "dense.st"
    code, _, err = cli(capsys, *INTERP, corpus / "ts.mrc", "--out", out)
    assert code == 0, err
    assert {p.name for p in corpus.iterdir()} == {"ts.mrc", "ts.rawtlt", "dense.st",
                                                  "dense.rawtlt", "dense.json"}
    assert len(out.with_suffix(".rawtlt").read_text().split()) == 17
    assert json.loads(out.with_suffix(".json").read_text())
    # an existing OUT.json alone blocks the whole write without --overwrite
    for p in (out, out.with_suffix(".rawtlt")):
        p.unlink()
    json_before = out.with_suffix(".json").read_bytes()
    code, _, err = cli(capsys, *INTERP, corpus / "ts.mrc", "--out", out)
    assert_one_line_error(code, err, "dense.json")
    assert out.with_suffix(".json").read_bytes() == json_before
    assert not out.exists() and not out.with_suffix(".rawtlt").exists()
    assert {k: v for k, v in snapshot(corpus).items() if k.startswith("ts.")} == before
    assert_no_strays(corpus)


@pytest.mark.parametrize("case", ["exists", "txt", "is_input", "symlink_to_input",
                                  "hardlink_to_input", "folder", "missing_folder", "loop",
                                  "name_300", "parent_is_file"])
def test_bad_outputs_refused_before_compute(corpus: Path, capsys, case: str) -> None:
    src = corpus / "ts.mrc"
    out = corpus / "vol.mrc"
    extra: list[str] = []
    if case == "exists":
        out.write_bytes(b"precious")
    elif case == "txt":
        out = corpus / "vol.txt"
    elif case == "is_input":
        out, extra = src, ["--overwrite"]
    elif case == "symlink_to_input":
        out.symlink_to(src)
        extra = ["--overwrite"]
    elif case == "hardlink_to_input":
        os.link(src, out)
        extra = ["--overwrite"]
    elif case == "folder":
        out.mkdir()
        extra = ["--overwrite"]
    elif case == "missing_folder":
        out = corpus / "nope" / "vol.mrc"
    elif case == "loop":
        out.symlink_to(out.name)  # vol.mrc -> vol.mrc
        extra = ["--overwrite"]
    elif case == "name_300":
        out = corpus / ("v" * 296 + ".mrc")
    elif case == "parent_is_file":
        (corpus / "afile").write_text("x")
        out = corpus / "afile" / "vol.mrc"
    before = snapshot(corpus)
    t0 = time.perf_counter()
    code, _, err = cli(capsys, *RECON, src, "--out", out, *extra)
    assert_one_line_error(code, err, None)
    assert time.perf_counter() - t0 < 10
    assert snapshot(corpus) == before
    assert_no_strays(corpus)


def test_out_tif_is_written_as_tiff(corpus: Path, capsys) -> None:
    out = corpus / "vol.tif"
    code, _, err = cli(capsys, *RECON, corpus / "ts.mrc", "--out", out)
    assert code == 0, err
    assert out.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")  # TIFF, not MRC bytes
    assert_no_strays(corpus)


def test_long_but_legal_output_name_is_written(corpus: Path, capsys) -> None:
    out = corpus / ("v" * 242 + ".mrc")  # 246 bytes: legal; the temporary name must be too
    code, _, err = cli(capsys, *RECON, corpus / "ts.mrc", "--out", out)
    assert code == 0, err
    assert out.is_file()
    assert_no_strays(corpus)


def _read_only_folder(folder: Path, monkeypatch) -> str:
    """Make ``folder`` refuse new files even to root; returns how."""
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0:
        return "chattr"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(folder)],
                      capture_output=True, check=False).returncode == 0:
        return "mount"
    from napari_tiltgen.io import output

    real_open = os.open

    def refusing_open(path, flags, *a, **k):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(output.os, "open", refusing_open)
    return "patched"


def _undo_read_only(folder: Path, how: str) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    elif how == "mount":
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder(corpus: Path, capsys, monkeypatch) -> None:
    ro = corpus / "ro"
    how = _read_only_folder(ro, monkeypatch)
    try:
        before = snapshot(corpus)
        code, _, err = cli(capsys, *RECON, corpus / "ts.mrc", "--out", ro / "vol.mrc")
        line = assert_one_line_error(code, err, str(ro))
        assert any(w in line for w in ("permission denied", "read-only")), (how, line)
        assert list(ro.iterdir()) == []
        assert snapshot(corpus) == before
    finally:
        _undo_read_only(ro, how)


def test_full_disk_leaves_nothing_and_keeps_the_old_file(corpus: Path, capsys,
                                                         monkeypatch) -> None:
    import mrcfile as mrc_module

    out = corpus / "vol.mrc"
    out.write_bytes(b"old result")

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mrc_module, "new", full_disk)
    code, _, err = cli(capsys, *RECON, corpus / "ts.mrc", "--out", out, "--overwrite")
    line = assert_one_line_error(code, err, "vol.mrc")
    assert "no space left" in line
    assert out.read_bytes() == b"old result"
    assert_no_strays(corpus)


def test_all_or_nothing_and_concurrent_writers(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mrc", tmp_path / "a.json"
    plan = planned_outputs(a, [b])

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TiltgenError, match="no space"):
        plan.commit({a: b"complete", b: boom})
    assert list(tmp_path.iterdir()) == []  # neither file, no temporary

    # two writers of one new name, both validated before either writes: exactly one wins
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        p = planned_outputs(tmp_path / "out.mrc")
        barrier.wait()
        try:
            p.commit({p.main: f"writer {i}".encode()})
            results.append("ok")
        except TiltgenError as exc:
            assert "another program" in str(exc)
            results.append("refused")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7
    assert (tmp_path / "out.mrc").read_bytes().startswith(b"writer ")
    assert stray_temporaries(tmp_path) == []


@pytest.mark.slow  # real processes: seconds each on an idle machine
def test_two_cli_writers_of_one_out(corpus: Path) -> None:
    """Two real processes racing for one --out: exactly one succeeds, the other says why."""
    out = corpus / "race.mrc"
    cmd = [sys.executable, "-m", "napari_tiltgen.cli", *RECON, str(corpus / "ts.mrc"),
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    res = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in res)
    assert codes == [0, 2], res
    loser = next(r for r in res if r[2] == 2)
    assert "Traceback" not in loser[1] and "race.mrc" in loser[1]
    assert_no_strays(corpus)


def test_simulate_refuses_existing_atoms_file_before_simulating(tmp_path: Path,
                                                                capsys) -> None:
    (tmp_path / "sim_atoms.xyz").write_text("precious")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "simulate", tmp_path / "sim.mrc", "--size", "8",
                       "--tilt-step", "30", "--shells", "2")
    assert_one_line_error(code, err, "sim_atoms.xyz")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- hostile inputs
def _hostile_inputs(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    good = make_series(folder / "good")
    cases: dict[str, tuple[Path, list[str]]] = {}
    trunc = folder / "trunc.mrc"
    trunc.write_bytes(good.read_bytes()[:1500])
    cases["truncated"] = (trunc, [])
    empty = folder / "empty.mrc"
    empty.write_bytes(b"")
    cases["empty"] = (empty, [])
    garbage = folder / "garbage.st"
    garbage.write_bytes(os.urandom(4096))
    cases["garbage"] = (garbage, [])
    loop = folder / "loop.mrc"
    loop.symlink_to("loop.mrc")
    cases["symlink_loop"] = (loop, [])
    d = folder / "dir.mrc"
    d.mkdir()
    cases["folder"] = (d, [])
    cases["missing"] = (folder / "missing.mrc", [])
    cases["unsupported"] = (folder / "x.png", [])
    (folder / "x.png").write_bytes(b"\x89PNG\r\n")
    import tifffile

    tifffile.imwrite(folder / "rgb.tif", np.zeros((10, 13, 3), np.uint8), photometric="rgb")
    cases["rgb_tiff"] = (folder / "rgb.tif", [])
    tifffile.imwrite(folder / "complex.tif", np.zeros((4, 8, 8), np.complex64),
                     photometric="minisblack")
    cases["complex_tiff"] = (folder / "complex.tif", [])
    for key, value in (("pixel_size_A", "abc"), ("shifts_px", [[1, 2, 3]]),
                       ("tilt_angles", {"a": 1})):
        tifffile.imwrite(folder / f"meta_{key}.tif", np.ones((5, 8, 8), np.float32),
                         photometric="minisblack",
                         metadata={"tiltgen": {"kind": "tilt_series", key: value}})
        cases[f"tiff_metadata_{key}"] = (folder / f"meta_{key}.tif", [])
    nan = make_series(folder / "nan", "nan.mrc")
    with mrcfile.open(nan, "r+") as m:
        m.data[3, 2, 2] = np.nan
    cases["nan_frame"] = (nan, [])
    wrong = make_series(folder / "wrong", "wrong.mrc")
    wrong.with_suffix(".rawtlt").write_text("0\n10\n")
    cases["angle_count"] = (wrong, [])
    bad_angle = make_series(folder / "badangle", "badangle.mrc")
    bad_angle.with_suffix(".rawtlt").write_text("0\nnan\n" + "1\n" * 7)
    cases["nan_angle"] = (bad_angle, [])
    cases["tilt_file_dev_zero"] = (good, ["--tilt-file", "/dev/zero"])
    cases["tilt_file_folder"] = (good, ["--tilt-file", str(folder)])
    (folder / "binary.tlt").write_bytes(b"\xff\xfe\x00\x01" * 10)
    cases["tilt_file_binary"] = (good, ["--tilt-file", str(folder / "binary.tlt")])
    return cases


HOSTILE = ["truncated", "empty", "garbage", "symlink_loop", "folder", "missing", "unsupported",
           "rgb_tiff", "complex_tiff", "nan_frame", "angle_count", "nan_angle",
           "tilt_file_dev_zero", "tilt_file_folder", "tilt_file_binary",
           "tiff_metadata_pixel_size_A", "tiff_metadata_shifts_px", "tiff_metadata_tilt_angles"]


@pytest.mark.parametrize("command", ["info", "reconstruct", "interpolate"])
def test_hostile_inputs_one_line_each(tmp_path: Path, capsys, command: str) -> None:
    cases = _hostile_inputs(tmp_path)
    assert sorted(cases) == sorted(HOSTILE)
    before = snapshot(tmp_path)
    for name, (path, extra) in cases.items():
        out = tmp_path / f"out_{command}_{name}.mrc"
        args = {"info": ["info", path],
                "reconstruct": [*RECON, path, "--out", out],
                "interpolate": [*INTERP, path, "--out", out]}[command]
        t0 = time.perf_counter()
        code, _, err = cli(capsys, *args, *extra)
        shown = path.name
        if name in ("angle_count", "nan_angle"):
            shown = path.with_suffix(".rawtlt").name  # the sidecar at fault is named
        if name.startswith("tilt_file"):
            shown = extra[-1]
        assert_one_line_error(code, err, shown)
        assert time.perf_counter() - t0 < 60, name  # first case includes importing torch
        assert not out.exists(), name
    assert snapshot(tmp_path) == before
    assert_no_strays(tmp_path)


def test_three_and_four_frame_tiffs_stay_stacks(tmp_path: Path) -> None:
    """Not mistaken for colour: tifffile stores a 3/4-frame grey stack as planar 'RGB'."""
    import tifffile

    from napari_tiltgen.io import read_tilt_series, write_tiff
    from napari_tiltgen.io.model import TiltSeries

    for n in (3, 4):
        data = np.random.default_rng(n).random((n, 8, 8), dtype=np.float32)
        plain = tmp_path / f"plain{n}.tif"
        tifffile.imwrite(plain, data)  # tifffile's default: planar samples
        assert read_tilt_series(plain, tilt_start=-30, tilt_step=30).shape == (n, 8, 8)
        ours = write_tiff(TiltSeries(data, tilt_angles=np.linspace(-30, 30, n)),
                          tmp_path / f"ours{n}.tif")
        back = read_tilt_series(ours)
        assert back.shape == (n, 8, 8)
        np.testing.assert_array_equal(np.asarray(back.data), data)


def test_unreadable_input_permission_error(corpus: Path, capsys, monkeypatch) -> None:
    import builtins

    src = corpus / "ts.mrc"
    real_open = builtins.open

    def refusing_open(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file).name == "ts.mrc":
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", refusing_open)
    for args in (["info", src], [*RECON, src, "--out", corpus / "v.mrc"]):
        code, _, err = cli(capsys, *args)
        line = assert_one_line_error(code, err, "ts.mrc")
        assert "ermission denied" in line


# ---------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("args, names", [
    ([*RECON, "--axis-offset", "nan"], "--axis-offset"),
    ([*RECON, "--axis-offset", "1e9"], "--axis-offset"),
    ([*RECON, "--axis-offset", "7"], "--axis-offset"),  # outside a 12 px frame
    (["reconstruct", "--method", "tv", "--tv-weight", "nan"], "--tv-weight"),
    (["reconstruct", "--iterations", "0"], "--iterations"),
    (["reconstruct", "--iterations", "-5"], "--iterations"),
    (["reconstruct", "--relaxation", "inf"], "--relaxation"),
    ([*RECON, "--device", "meta"], "--device"),
    ([*RECON, "--device", "cuda:7"], "--device"),
    ([*RECON, "--thickness", "0"], "--thickness"),
    ([*RECON, "--pixel-size", "-1"], "--pixel-size"),
    ([*RECON, "--tilt-start", "nan", "--tilt-step", "1"], "--tilt-start"),
    (["interpolate", "--frames-per-gap", "1000"], "--frames-per-gap"),
    (["fit-inr", "--lr", "nan", "--steps", "1"], "--lr"),
    (["fit-inr", "--steps", "-1"], "--steps"),
    (["fit-dip", "--smoothness", "nan", "--steps", "1"], "--smoothness"),
])
def test_bad_parameters_refused_before_work(corpus: Path, capsys, args, names) -> None:
    before = snapshot(corpus)
    out_opt = ["--out", str(corpus / "o.mrc")]
    t0 = time.perf_counter()
    code, _, err = cli(capsys, args[0], corpus / "ts.mrc", *out_opt, *args[1:])
    assert_one_line_error(code, err, names)
    assert time.perf_counter() - t0 < 5
    assert snapshot(corpus) == before


# ---------------------------------------------------------------------------- memory
def _sparse_mrc(path: Path, n: int, ny: int, nx: int) -> Path:
    """A large float32 MRC that costs no disk (sparse zeros after a real header)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.zeros((2, 2, 2), np.float32))
    with mrcfile.open(path, "r+", header_only=True) as m:
        m.header.nx, m.header.ny, m.header.nz = nx, ny, n
        m.header.mx, m.header.my, m.header.mz = nx, ny, n
        m.header.ispg = 0
    with open(path, "r+b") as f:
        f.truncate(1024 + 4 * n * ny * nx)
    return path


@pytest.mark.parametrize("command", ["reconstruct", "inpaint", "fit-inr"])
def test_2048_cube_is_refused_not_killed(tmp_path: Path, capsys, command: str) -> None:
    big = _sparse_mrc(tmp_path / "big.mrc", 3, 2048, 2048)
    big.with_suffix(".rawtlt").write_text("-30\n0\n30\n")
    before = snapshot(tmp_path)
    # in memory (--out-of-core no): auto would stream this volume slab by slab (issue 18)
    args = {"reconstruct": [*RECON, big, "--out", tmp_path / "v.mrc", "--out-of-core", "no"],
            "inpaint": ["inpaint", big, tmp_path / "v.mrc", "--device", "cpu", "--quiet"],
            "fit-inr": ["fit-inr", big, "--out", tmp_path / "v.mrc", "--steps", "1",
                        "--device", "cpu", "--quiet"]}[command]
    env_limit = os.environ.get("TILTGEN_MEMORY_LIMIT")
    os.environ["TILTGEN_MEMORY_LIMIT"] = "16G"  # the same answer on a large CI machine
    try:
        t0 = time.perf_counter()
        code, _, err = cli(capsys, *args)
    finally:
        if env_limit is None:
            del os.environ["TILTGEN_MEMORY_LIMIT"]
        else:
            os.environ["TILTGEN_MEMORY_LIMIT"] = env_limit
    line = assert_one_line_error(code, err, "big.mrc")
    assert "GiB" in line and "memory" in line
    assert time.perf_counter() - t0 < 20
    assert snapshot(tmp_path) == before


def test_memory_estimate_scales_and_small_jobs_pass() -> None:
    from napari_tiltgen.core.resources import job_peak_bytes, parse_size

    small = job_peak_bytes("reconstruct", 9, 12, 12)
    big = job_peak_bytes("reconstruct", 61, 2048, 2048)
    assert small < 1e6
    assert big > 3 * 4 * 2048 ** 3  # at least three float32 copies of the 2048^3 volume
    assert parse_size("8G") == 8 << 30 and parse_size("512M") == 512 << 20


# ---------------------------------------------------------------------------- errors
def test_unexpected_error_is_one_line_with_a_log(corpus: Path, capsys, monkeypatch) -> None:
    import napari_tiltgen.cli.info as info_cmd

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(info_cmd, "run", bug)
    monkeypatch.setenv("TILTGEN_LOG_DIR", str(corpus / "logs"))
    code, _, err = cli(capsys, "info", corpus / "ts.mrc")
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "internal error" in lines[0] and "ZeroDivisionError" in lines[0]
    logs = list((corpus / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    assert "Traceback" in logs[0].read_text() and "a bug" in logs[0].read_text()


@pytest.mark.parametrize("exc, words", [
    (MemoryError(), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 34359738368 bytes."), "out of memory"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300), "too long"),
    (OSError(errno.ELOOP, "Too many levels of symbolic links", "/a/loop"), "loops"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/a/dir"), "folder"),
])
def test_system_errors_are_one_line(corpus: Path, capsys, monkeypatch, exc, words) -> None:
    import napari_tiltgen.cli.info as info_cmd

    def fail(args):
        raise exc

    monkeypatch.setattr(info_cmd, "run", fail)
    code, _, err = cli(capsys, "info", corpus / "ts.mrc")
    line = assert_one_line_error(code, err, None)
    assert words in line


@pytest.mark.slow  # real processes: seconds each on an idle machine
def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    """``tiltgen info big.mrc --angles | head -c 1``: no BrokenPipeError traceback."""
    n = 12000
    p = tmp_path / "many.mrc"
    with mrcfile.new(p) as m:
        m.set_data(np.ones((n, 2, 2), np.float32))
        m.set_image_stack()
    r = subprocess.run(f"'{sys.executable}' -m napari_tiltgen.cli info '{p}' --angles "
                       f"--tilt-start -60 --tilt-step 0.01 | head -c 1", shell=True,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout == "f"  # "file: ..."
    assert r.stderr == "", r.stderr


@pytest.mark.slow  # real processes: seconds each on an idle machine
def test_a_cli_error_in_a_real_process_has_no_traceback(corpus: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "napari_tiltgen.cli", *RECON,
                        str(corpus / "ts.mrc"), "--out", str(corpus / "v.dat")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "v.dat" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- weights
def _tampered_weights(tmp_path: Path, what: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_tiltgen.nets.weights import MODELS_DIR

    src = MODELS_DIR / ("inpainting.safetensors" if what == "inpainting" else
                        "interpolation.safetensors")
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    first = next(k for k, v in tensors.items() if v.is_floating_point() and v.ndim > 1)
    if what == "nan":
        tensors[first].view(-1)[0] = float("nan")
    elif what == "shape":
        arch = json.loads(meta["architecture"])
        arch["channels"] = [c + 4 for c in arch["channels"]]
        meta["architecture"] = json.dumps(arch)
    out = tmp_path / f"{what}.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("what, words", [("nan", "NaN"), ("shape", "do not match"),
                                         ("inpainting", "not a napari-tiltgen interpolation model")])
def test_bad_weights_one_clear_error(corpus: Path, capsys, what: str, words: str) -> None:
    weights = _tampered_weights(corpus, what)
    before = snapshot(corpus)
    code, _, err = cli(capsys, "interpolate", corpus / "ts.mrc", "--out", corpus / "d.st",
                       "--method", "pretrained", "--frames-per-gap", "1", "--weights", weights,
                       "--device", "cpu", "--quiet")
    line = assert_one_line_error(code, err, weights.name)
    assert words in line
    assert snapshot(corpus) == before
    assert_no_strays(corpus)


def test_recorded_checksums_match_the_shipped_weights() -> None:
    """Fails loudly when weights were replaced without
    ``python -m napari_tiltgen.nets.weights --update-checksums``."""
    from napari_tiltgen.nets.weights import recorded_sums, sha256_of, shipped_files

    files = shipped_files()
    assert {f.name for f in files} >= {"interpolation.safetensors", "inpainting.safetensors"}
    sums = recorded_sums()
    for f in files:
        assert sums.get(f.name) == sha256_of(f), (
            f"{f.name}: recorded sha256 is stale; run "
            "python -m napari_tiltgen.nets.weights --update-checksums")


def test_flipped_byte_in_shipped_weights_is_refused(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from napari_tiltgen.nets import weights as models
    from napari_tiltgen.nets.interpolation.network import load_model

    fake = tmp_path / "models"
    fake.mkdir()
    for f in models.shipped_files():
        shutil.copy(f, fake / f.name)
    shutil.copy(models.SUMS_FILE, fake / "SHA256SUMS")
    monkeypatch.setattr(models, "MODELS_DIR", fake)
    monkeypatch.setattr(models, "SUMS_FILE", fake / "SHA256SUMS")
    target = fake / "interpolation.safetensors"
    load_model(target)  # intact copy: loads
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one flipped bit in the tensor data
    target.write_bytes(bytes(raw))
    with pytest.raises(TiltgenError, match="damaged or was replaced"):
        load_model(target)


# ---------------------------------------------------------------------------- cancel
@pytest.mark.gui
def test_cancel_during_set_up_within_one_second(make_napari_viewer, qtbot) -> None:
    """A job whose set-up runs 10 s before its first progress step stops within 1 s."""
    from napari_tiltgen.core.progress import Progress
    from napari_tiltgen.gui._base import WorkerWidget

    state = {"setup_steps": 0, "finished_setup": False}

    def job():
        t_end = time.perf_counter() + 10.0
        while time.perf_counter() < t_end:  # e.g. model loading, SIRT initialisation
            sum(range(2000))
            state["setup_steps"] += 1
        state["finished_setup"] = True
        yield Progress(1.0, "done")
        return 1

    class Slow(WorkerWidget):
        def _on_run(self) -> None:
            self.start(job, on_result=lambda r: None)

    w = Slow(make_napari_viewer())
    times = []
    for _ in range(3):
        state["setup_steps"] = 0
        w.run_button.native.click()
        qtbot.waitUntil(lambda: state["setup_steps"] > 10, timeout=5000)
        t0 = time.perf_counter()
        w.cancel_button.native.click()
        qtbot.waitUntil(lambda: not w.running, timeout=5000)
        times.append(time.perf_counter() - t0)
        assert w.status.value == "cancelled"
        assert not state["finished_setup"]
    print("cancel times (s):", [round(t, 3) for t in times])
    assert max(times) < 1.0, times
