"""Real microscope data in: every common format with angles, pixel size and tilt axis from its
own metadata, written the way the microscopes' software writes them.

Stacks are generated (sphere-phantom projections, Poisson noise, int16 with a vacuum offset near
-31900, like FEI Inspect3D) and written with the real libraries (mrcfile, tifffile,
rosettasciio); MRC quirks are made by patching bytes as found in the wild. DM3/DM4, SER/EMI and
Velox/NCEM EMD are public example files from the HyperSpy 1.7.6 wheel, fetched from PyPI by
``tests/fetch_test_data.py`` (the fixture fails, it does not skip, if they cannot be had).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_tiltgen import TiltgenError, TiltSeries, read, read_tilt_series
from napari_tiltgen.io import formats
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.lazy import LazyFrames

sys.path.insert(0, str(Path(__file__).parent))
import fetch_test_data

ANGLES = np.arange(-66.0, 66.1, 6.0)  # 23 tilts


def realistic_stack(angles: np.ndarray = ANGLES, ny: int = 40, nx: int = 36, seed: int = 3,
                    offset: int = -31900) -> np.ndarray:
    """HAADF-like int16 stack: sphere projections, Poisson counts, a vacuum offset."""
    from napari_tiltgen.simulate.phantoms import project_spheres, random_spheres

    proj = project_spheres(random_spheres(32, seed=seed), angles, (ny, nx), supersample=1)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(proj * 40.0 + 20.0)
    return (counts + offset).astype(np.int16)


def write_inspect3d_mrc(path: Path, data: np.ndarray, tilt: np.ndarray, axis_deg: float = 90.0,
                        px_m: float = 4.2e-10) -> Path:
    """An FEI Inspect3D-style file: int16, old-FEI 128-byte records (1024 of them), no MAP
    stamp, machine stamp zero, nint = 0 / nreal = 32."""
    ext = np.zeros((1024, 32), dtype="<f4")
    ext[: len(tilt), 0] = tilt  # a_tilt
    ext[: len(tilt), 10] = axis_deg  # tilt_axis
    ext[: len(tilt), 11] = px_m  # pixel size, metres
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.set_extended_header(ext.reshape(-1).view(np.uint8))
    raw = bytearray(path.read_bytes())
    raw[104:108] = b"\0\0\0\0"  # exttyp blank (old files)
    raw[128:132] = struct.pack("<hh", 0, 32)  # nint, nreal
    raw[208:212] = b"\0\0\0\0"  # no "MAP " stamp
    raw[212:216] = b"\0\0\0\0"  # machine stamp zero
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="session")
def example_files() -> Path:
    try:
        return fetch_test_data.fetch()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the public example files (HyperSpy 1.7.6 wheel from PyPI) could not be "
                    f"fetched: {exc}. Run 'python tests/fetch_test_data.py' with PyPI access.")


# ------------------------------------------------------------------ MRC in the wild
def test_inspect3d_mrc_opens_with_header_metadata(tmp_path: Path) -> None:
    data = realistic_stack()
    with pytest.raises(ValueError, match="Map ID string not found"):
        write_inspect3d_mrc(tmp_path / "probe.mrc", data[:2], ANGLES[:2])
        mrcfile.open(tmp_path / "probe.mrc")  # what the reader used to do
    p = write_inspect3d_mrc(tmp_path / "needle.mrc", data, ANGLES)
    ts = read_tilt_series(p)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES, atol=1e-5)
    assert ts.provenance["angles_source"] == "old FEI extended header (a_tilt)"
    assert ts.tilt_axis_known and ts.tilt_axis_angle_deg == pytest.approx(90.0)
    assert "old FEI" in ts.provenance["tilt_axis_source"]
    assert ts.pixel_size_A == pytest.approx(4.2, rel=1e-5)
    assert any("'MAP ' stamp" in n for n in ts.provenance["notes"])
    assert any("machine stamp" in n for n in ts.provenance["notes"])
    # int16 kept memory-mapped, converted per frame, values exact (vacuum offset kept)
    assert isinstance(ts.data, LazyFrames) and isinstance(ts.data.source, np.memmap)
    assert ts.data.source_dtype == np.int16 and ts.provenance["file_dtype"] == "int16"
    np.testing.assert_array_equal(ts.data[5], data[5].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(ts.data), data.astype(np.float32))
    assert float(ts.data[0].min()) < -31800
    # a .rawtlt sidecar still wins over the header
    p.with_suffix(".rawtlt").write_text("".join(f"{a + 0.5}\n" for a in ANGLES))
    np.testing.assert_allclose(read_tilt_series(p).tilt_angles, ANGLES + 0.5)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16])
def test_integer_modes_stay_memory_mapped(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, size=(7, 12, 10), endpoint=True).astype(dtype)
    p = tmp_path / "m.mrc"
    with mrcfile.new(p) as m:
        m.set_data(data)
    ts = read_tilt_series(p, tilt_start=-30, tilt_step=10)
    assert isinstance(ts.data, LazyFrames) and isinstance(ts.data.source, np.memmap)
    assert ts.data.dtype == np.float32 and ts.data.shape == (7, 12, 10)
    np.testing.assert_array_equal(ts.data[3], data[3].astype(np.float32))
    np.testing.assert_array_equal(ts.data[1:5, 2, ::3], data[1:5, 2, ::3].astype(np.float32))
    np.testing.assert_array_equal(ts.data[[6, 0]], data[[6, 0]].astype(np.float32))
    np.testing.assert_array_equal(ts.subset([4, 2]).data, data[[4, 2]].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(ts.data, np.float32), data.astype(np.float32))


def _info(argv: list[str]) -> int:
    """``tiltgen info ARGS`` through the command's own parser and run function."""
    from napari_tiltgen.cli import build_parser

    args = build_parser().parse_args(["info", *argv])
    return args.func(args)


def test_info_does_not_convert_a_big_integer_stack(tmp_path: Path, monkeypatch, capsys) -> None:
    data = realistic_stack()
    p = write_inspect3d_mrc(tmp_path / "big.mrc", data, ANGLES)

    def refuse(*a, **k):
        raise AssertionError("tiltgen info converted the whole stack")

    monkeypatch.setattr(LazyFrames, "__array__", refuse)
    monkeypatch.setattr(LazyFrames, "__getitem__", refuse)
    assert _info([str(p)]) == 0
    out = capsys.readouterr().out
    assert "old FEI extended header (a_tilt)" in out
    assert "old FEI extended header (tilt_axis)" in out
    assert "90.00 deg from image Y (near horizontal)" in out
    assert "4.2 Å" in out and "old FEI extended header (pixel_size, m)" in out
    assert "'MAP ' stamp" in out


def test_garbage_is_still_refused(tmp_path: Path) -> None:
    p = tmp_path / "noise.mrc"
    p.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(TiltgenError, match="not a readable MRC file|header"):
        read(p)


# ------------------------------------------------------------------ IMOD .xf
def test_imod_xf_shifts_and_axis(tmp_path: Path) -> None:
    data = realistic_stack()
    p = tmp_path / "tomo.st"
    with mrcfile.new(p) as m:
        m.set_data(data)
    p.with_suffix(".rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    rng = np.random.default_rng(2)
    rot = np.radians(-84.7 + rng.normal(0, 0.05, ANGLES.size))  # IMOD rotates by -axis
    d = rng.uniform(-8, 8, (ANGLES.size, 2))  # DX, DY
    lines = [f"{np.cos(r):.7f} {-np.sin(r):.7f} {np.sin(r):.7f} {np.cos(r):.7f} "
             f"{dx:.3f} {dy:.3f}\n" for r, (dx, dy) in zip(rot, d)]
    p.with_suffix(".xf").write_text("".join(lines))
    ts = read_tilt_series(p)
    assert ts.tilt_axis_known
    assert ts.tilt_axis_angle_deg == pytest.approx(84.7, abs=0.05)
    assert "tomo.xf" in ts.provenance["tilt_axis_source"]
    assert "tomo.xf" in ts.provenance["shifts_source"]
    for k in (0, 7, 22):  # shift in the recorded frame = -A^-1 d, stored (dy, dx)
        c, s = np.cos(rot[k]), np.sin(rot[k])
        inv = np.array([[c, s], [-s, c]])
        sx, sy = -inv @ d[k]
        np.testing.assert_allclose(ts.shifts_px[k], [sy, sx], atol=2e-3)
    # a pure translation: the frame content sits at -d in the recorded frame
    p.with_suffix(".xf").write_text("1 0 0 1 3.0 -2.0\n" * ANGLES.size)
    np.testing.assert_allclose(read_tilt_series(p).shifts_px[0], [2.0, -3.0])
    # an aligned stack ignores the raw stack's .xf
    ali = tmp_path / "aligned.ali"
    shutil.copy(p, ali)
    shutil.copy(p.with_suffix(".xf"), ali.with_suffix(".xf"))
    ali.with_suffix(".rawtlt").write_text("".join(f"{a}\n" for a in ANGLES))
    assert not np.any(read_tilt_series(ali).shifts_px)


def test_bad_xf_is_one_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "tomo.st"
    with mrcfile.new(p) as m:
        m.set_data(realistic_stack()[:5])
    p.with_suffix(".xf").write_text("1 0 0 1 0 0\n" * 4)
    with pytest.raises(TiltgenError, match="4 transforms but the stack has 5"):
        read(p, tilt_start=0, tilt_step=1)


# ------------------------------------------------------------------ SerialEM .mdoc
def _mdoc(angles: np.ndarray, title_axis: float | None, zvalue_axis: float | None) -> str:
    out = ["PixelSpacing = 2.13", "ImageFile = ts.mrc", "",
           "[T = SerialEM: Digitized on Krios   "
           + (f"Tilt axis angle = {title_axis}, binning = 1  spot = 8" if title_axis is not None
              else "binning = 1") + "]", ""]
    for i, a in enumerate(angles):
        out += [f"[ZValue = {i}]", f"TiltAngle = {a:.2f}", "PixelSpacing = 2.13"]
        if zvalue_axis is not None:
            out.append(f"Tilt axis angle = {zvalue_axis}")
        out.append(f"TimeStamp = {1000 + 20 * i}")
        out.append("")
    return "\n".join(out)


def _write_serialem(tmp_path: Path, data: np.ndarray, text: str) -> Path:
    p = tmp_path / "ts.mrc"
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(data)
    (tmp_path / "ts.mrc.mdoc").write_text(text)
    return p


def test_mdoc_tilt_axis_in_zvalue_sections(tmp_path: Path) -> None:
    p = _write_serialem(tmp_path, realistic_stack()[:5], _mdoc(ANGLES[:5], None, -4.6))
    ts = read_tilt_series(p)
    assert ts.tilt_axis_known and ts.tilt_axis_angle_deg == pytest.approx(-4.6)
    assert "[ZValue] section 'Tilt axis angle'" in ts.provenance["tilt_axis_source"]
    p = _write_serialem(tmp_path, realistic_stack()[:5], _mdoc(ANGLES[:5], 85.3, None))
    ts = read_tilt_series(p)
    assert ts.tilt_axis_angle_deg == pytest.approx(85.3)
    assert "title line" in ts.provenance["tilt_axis_source"]


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_mdoc_multi_frame_tilts_are_combined(tmp_path: Path, mode: str) -> None:
    base = realistic_stack(ANGLES[:8]).astype(np.int32) + 32000
    frames = np.repeat(base, 2, axis=0)  # 2 frames per tilt
    frames[1::2] += 7  # the second frame of each tilt differs
    p = _write_serialem(tmp_path, frames.astype(np.int16), _mdoc(np.repeat(ANGLES[:8], 2),
                                                                 85.3, None))
    ts = read_tilt_series(p, multi_frame=mode)
    assert ts.n_tilts == 8
    np.testing.assert_allclose(ts.tilt_angles, ANGLES[:8])
    expect = (frames[0::2] + frames[1::2]).astype(np.float64)
    expect = expect / 2 if mode == "mean" else expect
    np.testing.assert_allclose(np.asarray(ts.data), expect, rtol=0, atol=1e-3)
    assert ts.angle_stats()["step"] == pytest.approx(6.0)
    assert ts.acquisition_times_s[1] == pytest.approx(40.0)  # first frame of the tilt
    note = " ".join(ts.provenance["notes"])
    assert "16 frames at 8 distinct tilt angles" in note
    assert ("averaged" if mode == "mean" else "summed") in note
    summary = ts.summary()
    assert "step 6.00 deg" in summary and "step 0.00" not in summary
    kept = read_tilt_series(p, multi_frame="keep")
    assert kept.n_tilts == 16 and kept.angle_stats()["step"] == pytest.approx(6.0)


# ------------------------------------------------------------------ angle conventions
def _imod(tmp_path: Path, angles: np.ndarray) -> Path:
    p = tmp_path / "conv.st"
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(realistic_stack(ANGLES)[: angles.size])
    p.with_suffix(".rawtlt").write_text("".join(f"{float(a)!r}\n" for a in angles))
    return p


def test_zero_to_180_range_is_mapped(tmp_path: Path) -> None:
    a = np.arange(0.0, 179.0, 8.0)  # 0..176: 23 tilts
    ts = read_tilt_series(_imod(tmp_path, a))
    np.testing.assert_allclose(ts.tilt_angles, a - 90.0)
    assert any("0..180 convention" in n for n in ts.provenance["notes"])
    assert "0..180 convention" in ts.summary()


def test_radians_are_mapped(tmp_path: Path) -> None:
    ts = read_tilt_series(_imod(tmp_path, np.radians(ANGLES)))
    np.testing.assert_allclose(ts.tilt_angles, ANGLES, atol=1e-9)
    assert any("radians" in n for n in ts.provenance["notes"])


def test_descending_angles_are_kept_with_their_frames(tmp_path: Path) -> None:
    p = tmp_path / "desc.st"
    data = realistic_stack()
    with mrcfile.new(p) as m:
        m.set_data(data[::-1].copy())
    p.with_suffix(".rawtlt").write_text("".join(f"{a}\n" for a in ANGLES[::-1]))
    ts = read_tilt_series(p)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES[::-1])
    np.testing.assert_array_equal(ts.data[0], data[-1].astype(np.float32))
    assert any("descend" in n for n in ts.provenance["notes"])
    s = ts.sorted_by_angle()
    np.testing.assert_allclose(s.tilt_angles, ANGLES)
    np.testing.assert_array_equal(np.asarray(s.data), data.astype(np.float32))


def test_normalise_angles_leaves_ordinary_degrees_alone() -> None:
    a, notes = md.normalise_angles(ANGLES)
    np.testing.assert_array_equal(a, ANGLES)
    assert notes == []
    a, notes = md.normalise_angles(np.array([-9000, -4500, 0, 4500, 9000]))
    np.testing.assert_allclose(a, [-90, -45, 0, 45, 90])
    a, notes = md.normalise_angles(np.arange(0.0, 18001.0, 600.0))  # x100 of 0..180
    np.testing.assert_allclose(a, np.arange(0.0, 180.1, 6.0) - 90.0)
    assert len(notes) == 2


# ------------------------------------------------------------------ unknown tilt axis
def test_unknown_tilt_axis_is_explicit(tmp_path: Path) -> None:
    p = tmp_path / "bare.mrc"
    with mrcfile.new(p) as m:
        m.set_data(realistic_stack())
    ts = read_tilt_series(p, tilt_start=-66, tilt_step=6)
    assert ts.tilt_axis_known is False
    assert ts.provenance["tilt_axis_source"].startswith("not recorded")
    assert "UNKNOWN" in ts.summary() and "near vertical" not in ts.summary()
    back = TiltSeries.from_metadata(ts.data, ts.to_layer_data()[1]["metadata"])
    assert back.tilt_axis_known is False
    old_layer = ts.to_metadata()
    del old_layer["tilt_axis_known"]  # a layer saved before the flag existed
    assert TiltSeries.from_metadata(ts.data, old_layer).tilt_axis_known is True
    given = ts.with_tilt_axis(-87.5, "estimated from the data (test)")
    assert given.tilt_axis_known and given.tilt_axis_angle_deg == -87.5
    assert given.provenance["tilt_axis_source"] == "estimated from the data (test)"
    user = read_tilt_series(p, tilt_start=-66, tilt_step=6, tilt_axis_deg=12.0)
    assert user.tilt_axis_known and user.provenance["tilt_axis_source"] == "user"


# ------------------------------------------------------------------ rosettasciio formats
def _hspy(path: Path, data: np.ndarray, nav: dict, meta: dict | None = None) -> Path:
    from rsciio.hspy import file_writer

    ny, nx = data.shape[1:]
    sig = {"data": data,
           "axes": [dict(nav, size=data.shape[0], navigate=True),
                    {"name": "y", "size": ny, "scale": 0.42, "offset": 0.0, "units": "nm",
                     "navigate": False},
                    {"name": "x", "size": nx, "scale": 0.42, "offset": 0.0, "units": "nm",
                     "navigate": False}],
           "metadata": {"General": {"title": "HAADF tilt series"}, "Signal": {"signal_type": ""},
                        **(meta or {})},
           "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {},
           "package_info": {"name": "etspy", "version": "0.8"}, "learning_results": {},
           "models": {}}
    file_writer(str(path), sig)
    return path


def test_hspy_with_a_tilt_axis_in_degrees(tmp_path: Path) -> None:
    data = realistic_stack()
    p = _hspy(tmp_path / "ts.hspy", data,
              {"name": "Tilt", "scale": 6.0, "offset": -66.0, "units": "degrees"})
    ts = read_tilt_series(p)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES)
    assert "navigation axis 'Tilt'" in ts.provenance["angles_source"]
    assert ts.pixel_size_A == pytest.approx(4.2)
    assert "0.42 nm" in ts.provenance["pixel_size_source"]
    assert ts.tilt_axis_known is False
    np.testing.assert_array_equal(ts.data[4], data[4].astype(np.float32))


def test_etspy_hspy_tilts_and_axis_in_metadata(tmp_path: Path) -> None:
    data = realistic_stack()
    p = _hspy(tmp_path / "etspy.hspy", data, {"name": "Projections", "scale": 1.0,
                                              "offset": 0.0, "units": ""},
              {"Tomography": {"tilts": np.radians(ANGLES), "tiltaxis": -3.5,
                              "shifts": np.zeros((ANGLES.size, 2))}})
    ts = read_tilt_series(p)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES, atol=1e-9)  # radians recognised
    assert "Tomography.tilts" in ts.provenance["angles_source"]
    raw = _hspy(tmp_path / "raw.hspy", data, {"name": "Projections", "scale": 1.0,
                                              "offset": 0.0, "units": ""},
                {"Tomography": {"tilts": ANGLES, "tiltaxis": 0.0}})
    assert read_tilt_series(raw).tilt_axis_known is False  # etspy never aligned it
    assert "Tomography.tilts" in ts.provenance["angles_source"]
    # etspy's tiltaxis is the rotation it already applied: the frames' axis is now vertical
    assert ts.tilt_axis_known and ts.tilt_axis_angle_deg == 0.0
    assert "already rotated by -3.50 deg" in ts.provenance["tilt_axis_source"]
    notes = " ".join(ts.provenance["notes"])
    assert "radians" in notes and "etspy alignment shifts" in notes


def test_dm_stacks(example_files: Path) -> None:
    ts = read_tilt_series(example_files / "dm_stackbuilder_plugin/test_stackbuilder_imagestack.dm3")
    assert ts.shape == (3, 2, 16) and ts.provenance["file_dtype"] == "uint32"
    assert ts.pixel_size_A == pytest.approx(0.05998290330171585 * 1e4, rel=1e-6)  # µm -> Å
    assert ts.tilt_angles is None and ts.tilt_axis_known is False
    assert "Gatan DM3" in ts.provenance["format"]
    for name in ("dm3_3D_data/test-1.dm3", "dm4_3D_data/test-1.dm4"):
        ts = read_tilt_series(example_files / name, tilt_start=-10, tilt_step=20)
        assert ts.shape == (2, 2, 2)
        assert np.isfinite(np.asarray(ts.data)).all()


def _patch_stage_alpha(src: Path, dst: Path, alpha: float) -> None:
    raw = bytearray(src.read_bytes())
    i = raw.find(b"Stage Alpha") + len(b"Stage Alpha")
    assert raw[i:i + 4] == b"%%%%" and struct.unpack(">ii", raw[i + 4:i + 12]) == (1, 7)
    raw[i + 12:i + 20] = struct.pack("<d", alpha)  # float64 tag value
    dst.write_bytes(bytes(raw))


def test_folder_and_glob_of_one_dm3_per_tilt(example_files: Path, tmp_path: Path) -> None:
    src = example_files / "dm3_2D_data/test_STEM_image.dm3"
    folder = tmp_path / "tilts"
    folder.mkdir()
    angles = [-40.0, 20.0, -10.0, 50.0, 5.0]
    for k, a in enumerate(angles):  # file names in acquisition order, not angle order
        _patch_stage_alpha(src, folder / f"scan_{k:03d}.dm3", a)
    ts = read_tilt_series(folder)
    np.testing.assert_allclose(ts.tilt_angles, sorted(angles))
    assert "Stage Alpha" in ts.provenance["angles_source"]
    assert ts.pixel_size_A == pytest.approx(2.4853801727294922, rel=1e-6)
    assert any("ordered by tilt angle" in n for n in ts.provenance["notes"])
    assert ts.shape == (5, 68, 68)
    same = tmp_path / "same"
    same.mkdir()
    for k in range(3):  # a stage that did not report its angle: not 3 frames at one tilt
        shutil.copy(src, same / f"s{k}.dm3")
    s3 = read_tilt_series(same)
    assert s3.n_tilts == 3 and s3.tilt_angles is None
    assert any("same stage alpha (24.9505 deg)" in n for n in s3.provenance["notes"])
    g = read_tilt_series(str(folder / "scan_*.dm3"))
    np.testing.assert_allclose(g.tilt_angles, sorted(angles))
    np.testing.assert_array_equal(np.asarray(g.data), np.asarray(ts.data))


def test_velox_ncem_emd_and_ser_emi(example_files: Path) -> None:
    velox = read(example_files / "emd_files/fei_example_tem_stack.emd", tilt_start=0,
                 tilt_step=1)
    assert velox.shape == (2, 3, 3) and velox.provenance["file_dtype"] == "int16"
    assert velox.pixel_size_A == pytest.approx(0.0817288, rel=1e-4)  # pm -> Å
    np.testing.assert_allclose(velox.acquisition_times_s, [0.0, 0.8])
    assert any("one stage alpha" in n for n in velox.provenance["notes"])
    ncem = read(example_files / "emd_files/example_signal.emd", tilt_start=0, tilt_step=1)
    assert ncem.shape == (3, 3, 3)
    ser = read_tilt_series(example_files / "FEI_old/64x64x5_TEM_preview.emi", tilt_start=-20,
                           tilt_step=10)
    assert ser.shape == (5, 64, 64)
    assert ser.pixel_size_A == pytest.approx(62.8183, rel=1e-4)
    same = read_tilt_series(example_files / "FEI_old/64x64x5_TEM_preview_1.ser", tilt_start=-20,
                            tilt_step=10)
    np.testing.assert_array_equal(np.asarray(same.data), np.asarray(ser.data))


def test_dm_tomography_tag_group() -> None:
    # Gatan tomography acquisition's tags (the layout etspy reads), as rosettasciio returns them
    gms = {"ImageList": {"TagGroup0": {"ImageTags": {"Tomography": {"Tomography_setup": {
        "Tilt_angles": {"Maximum_tilt_angle_deg": 66.0, "Minimum_tilt_angle_deg": -66.0,
                        "Tilt_angle_step_deg": 6.0}, "Tilt_axis_rotation_deg": 87.25}}}}}}
    info = formats.tomography_tags(gms, ANGLES.size)
    np.testing.assert_allclose(info.tilt_angles, ANGLES)
    assert "Minimum_tilt_angle_deg" in info.source and "Tilt_angle_step_deg" in info.source
    assert info.tilt_axis_angle_deg == pytest.approx(87.25)
    wrong = formats.tomography_tags(gms, ANGLES.size - 2)  # the tags do not fit the stack
    assert wrong.tilt_angles is None and "not used" in wrong.notes[0]
    start_step = {"Tomography": {"Start_tilt_angle": -60.0, "Tilt_angle_step": 2.0}}
    np.testing.assert_allclose(formats.tomography_tags(start_step, 61).tilt_angles,
                               -60 + 2.0 * np.arange(61))
    per_frame = {"Tomography": {"Tilt angles": list(ANGLES)}}
    np.testing.assert_allclose(formats.tomography_tags(per_frame, ANGLES.size).tilt_angles,
                               ANGLES)


def test_format_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "broken.dm4"
    bad.write_bytes(b"\x00\x00\x00\x04" + b"garbage" * 50)
    with pytest.raises(TiltgenError, match="not a readable Gatan DM4 file") as e:
        read(bad)
    assert str(bad) in str(e.value)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(TiltgenError, match="no per-tilt image files"):
        read(empty)
    with pytest.raises(TiltgenError, match="no files match"):
        read(str(tmp_path / "nothing_*.dm3"))


def test_permission_denied_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    from napari_tiltgen.io import readers

    p = tmp_path / "locked.mrc"
    with mrcfile.new(p) as m:
        m.set_data(realistic_stack()[:3])
    monkeypatch.setattr(readers.os, "access", lambda *a, **k: False)
    with pytest.raises(TiltgenError, match="permission denied") as e:
        read(p)
    assert str(p) in str(e.value)
    monkeypatch.undo()

    real_open = open

    def deny(f, *a, **k):
        if str(f).endswith("locked.mrc"):
            raise PermissionError(13, "Permission denied", str(f))
        return real_open(f, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(TiltgenError, match="permission denied"):
        read(p)


# ------------------------------------------------------------------ napari reader hook
def test_napari_reader_takes_new_formats_and_folders(tmp_path: Path) -> None:
    from napari_tiltgen.gui.reader import napari_get_reader

    for name in ("a.dm3", "a.DM4", "a.emd", "a.ser", "a.emi", "a.hspy", "a.map"):
        assert napari_get_reader(str(tmp_path / name)) is not None, name
    folder = tmp_path / "tilts"
    folder.mkdir()
    assert napari_get_reader(str(folder)) is None  # nothing in it we read
    (folder / "t_-10.0.tif").write_bytes(b"")
    assert napari_get_reader(str(folder)) is not None
    assert napari_get_reader(str(tmp_path / "a.png")) is None


def test_napari_reader_error_is_one_notification(tmp_path: Path, monkeypatch) -> None:
    """npe2 gets the 'read, no layers' sentinel: it adds no generic error of its own."""
    from napari.utils import notifications
    from npe2 import PluginManager, io_utils

    PluginManager.instance().discover()
    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda m: shown.append(m))
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x01" * 3000)
    out = io_utils.read([str(bad)], plugin_name="napari-tiltgen", stack=False)
    assert out == [(None,)]
    assert len(shown) == 1 and str(bad) in shown[0] and "not a readable MRC file" in shown[0]


def test_tilt_series_json_info_of_a_folder(example_files: Path, tmp_path: Path,
                                          capsys) -> None:
    folder = tmp_path / "tilts"
    folder.mkdir()
    for k, a in enumerate([-30.0, 0.0, 30.0]):
        _patch_stage_alpha(example_files / "dm3_2D_data/test_STEM_image.dm3",
                           folder / f"{k}.dm3", a)
    assert _info(["--json", str(folder)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["tilt_angles"] == [-30.0, 0.0, 30.0]
    assert meta["tilt_axis_known"] is False
    assert meta["provenance"]["tilt_axis_source"].startswith("not recorded")


def test_napari_opens_int16_stack_and_dm3_folder(make_napari_viewer, example_files: Path,
                                                 tmp_path: Path) -> None:
    """A real viewer: an int16 Inspect3D stack stays lazy in the layer, a folder is one layer,
    and a bad file adds one notification and no layer."""
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    data = realistic_stack()
    p = write_inspect3d_mrc(tmp_path / "needle.mrc", data, ANGLES)
    (layer,) = viewer.open(str(p), plugin="napari-tiltgen")
    assert isinstance(layer.data, LazyFrames)
    viewer.dims.set_point(0, 7)
    np.testing.assert_array_equal(np.asarray(layer.data[7]), data[7].astype(np.float32))
    ts = TiltSeries.from_layer(layer)
    assert ts.tilt_axis_angle_deg == pytest.approx(90.0) and ts.tilt_axis_known

    folder = tmp_path / "tilts"
    folder.mkdir()
    for k, a in enumerate([10.0, -20.0, 0.0]):
        _patch_stage_alpha(example_files / "dm3_2D_data/test_STEM_image.dm3",
                           folder / f"{k}.dm3", a)
    (fl,) = viewer.open(str(folder), plugin="napari-tiltgen")
    assert fl.data.shape == (3, 68, 68)
    np.testing.assert_allclose(TiltSeries.from_layer(fl).tilt_angles, [-20.0, 0.0, 10.0])

    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x01" * 3000)
    before = len(notification_manager.records)
    out = viewer.open(str(bad), plugin="napari-tiltgen")
    assert out == [] and len(viewer.layers) == 2
    new = notification_manager.records[before:]
    assert len(new) == 1 and "not a readable MRC file" in str(new[0].message)


def test_dm_stack_with_gatan_tomography_tags(example_files: Path, monkeypatch) -> None:
    """The whole read path on a real DM3 stack whose tags carry Gatan's tomography set-up."""
    path = example_files / "dm_stackbuilder_plugin/test_stackbuilder_imagestack.dm3"
    real = formats.load_signals

    def with_tags(p: Path) -> list[dict]:
        sigs = real(p)
        tags = sigs[0]["original_metadata"]["ImageList"]["TagGroup0"]["ImageTags"]
        tags["Tomography"] = {"Tomography_setup": {"Tilt_angles": {
            "Minimum_tilt_angle_deg": -30.0, "Maximum_tilt_angle_deg": 30.0,
            "Tilt_angle_step_deg": 30.0}}}
        return sigs

    monkeypatch.setattr(formats, "load_signals", with_tags)
    ts = read_tilt_series(path)
    np.testing.assert_allclose(ts.tilt_angles, [-30.0, 0.0, 30.0])
    assert ts.provenance["angles_source"].startswith("Gatan DM3 tags ImageList.TagGroup0")
    assert ts.tilt_axis_known is False


def test_random_extended_header_is_not_taken_for_angles(tmp_path: Path) -> None:
    p = tmp_path / "odd.mrc"
    with mrcfile.new(p) as m:
        m.set_data(realistic_stack()[:6])
        m.set_extended_header(np.random.default_rng(0).integers(0, 255, 6 * 128, np.uint8))
    raw = bytearray(p.read_bytes())
    raw[104:108] = b"\0\0\0\0"
    raw[128:132] = struct.pack("<hh", 0, 32)
    p.write_bytes(bytes(raw))
    ts = read_tilt_series(p)
    assert ts.tilt_angles is None and ts.tilt_axis_known is False


def test_two_frames_at_one_tilt_are_one_view_not_a_wedge(tmp_path: Path) -> None:
    """The report: a SerialEM file with 2 frames at one tilt showed 'step 0.00, 180 deg missing'."""
    frames = realistic_stack(ANGLES[:2])
    p = _write_serialem(tmp_path, frames, _mdoc(np.array([12.0, 12.02]), 85.3, None))
    ts = read_tilt_series(p)
    assert ts.n_tilts == 1 and ts.tilt_angles[0] == pytest.approx(12.0)
    np.testing.assert_allclose(ts.data[0], frames.astype(np.float64).mean(axis=0), atol=1e-3)
    summary = ts.summary()
    assert "a single view, not a tilt series" in summary
    assert "step 0.00" not in summary and "180.0 deg missing" not in summary


def test_folder_of_tiff_and_mrc_images_angles_from_names(tmp_path: Path) -> None:
    import tifffile

    data = realistic_stack(ANGLES[:4])
    tif = tmp_path / "tif"
    tif.mkdir()
    order = [2, 0, 3, 1]
    for k in order:  # written out of order, names carry the angle
        tifffile.imwrite(tif / f"tilt_{ANGLES[k]:+.1f}.tif", data[k])
    ts = read_tilt_series(tif)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES[:4])
    np.testing.assert_array_equal(np.asarray(ts.data), data.astype(np.float32))
    assert "file names" in ts.provenance["angles_source"]
    mrc = tmp_path / "mrc"
    mrc.mkdir()
    for k in range(4):
        with mrcfile.new(mrc / f"img{k:02d}.mrc") as m:
            m.set_data(data[k])
            m.voxel_size = 3.1
    ts = read(mrc)  # names hold only frame numbers: name order, no angles, said
    assert ts.tilt_angles is None and ts.pixel_size_A == pytest.approx(3.1)
    np.testing.assert_array_equal(np.asarray(ts.data), data.astype(np.float32))
    assert any("no tilt angle in their metadata or names" in n for n in ts.provenance["notes"])
    with mrcfile.new(mrc / "img99.mrc") as m:  # one image of another size
        m.set_data(data[0][:, :20])
    with pytest.raises(TiltgenError, match="every tilt must have the same size") as e:
        read(mrc)
    assert "img99.mrc" in str(e.value)


def test_napari_opens_an_ome_zarr_volume_lazily_as_multiscale(make_napari_viewer,
                                                              tmp_path: Path) -> None:
    import dask.array as da

    from napari_tiltgen.recon.outofcore import reconstruct_to_file
    from napari_tiltgen.simulate.phantoms import sphere_phantom

    ts, _ = sphere_phantom(size=136, tilt_step=15.0)
    reconstruct_to_file(ts, tmp_path / "v.zarr", "wbp", memory_budget=1 << 22)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "v.zarr"), plugin="napari-tiltgen")
    assert layer.multiscale and len(layer.data) == 2
    assert all(isinstance(level, da.Array) for level in layer.data)  # nothing read up front
    assert tuple(layer.scale) == (2.0, 2.0, 2.0)
    assert layer.metadata["napari_tiltgen"]["kind"] == "volume"
