"""Readers, writers and the data model, on real files written in each microscope's style."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from conftest import ANGLES, N, file_state, stack, write_plain_mrc

from napari_tiltgen import TiltgenError, TiltSeries, Volume, read, read_tilt_series
from napari_tiltgen.io import write_mrc, write_tiff


# ------------------------------------------------------------------ angle sources
def test_imod_rawtlt_sidecar(imod_stack: Path) -> None:
    ts = read_tilt_series(imod_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES)
    assert ts.provenance["angles_source"] == "IMOD .rawtlt sidecar (tomo.rawtlt)"
    assert ts.pixel_size_A == pytest.approx(2.7, rel=1e-6)
    assert ts.provenance["file_dtype"] == "int16"
    assert ts.data.dtype == np.float32
    with mrcfile.open(imod_stack) as m:
        np.testing.assert_array_equal(ts.data, m.data.astype(np.float32))


def test_aligned_stack_prefers_tlt(tmp_path: Path) -> None:
    p = write_plain_mrc(tmp_path / "tomo.ali", stack())
    p.with_suffix(".rawtlt").write_text("\n".join(str(a) for a in ANGLES))
    refined = ANGLES + 0.37
    p.with_suffix(".tlt").write_text("\n".join(str(a) for a in refined))
    ts = read_tilt_series(p)
    np.testing.assert_allclose(ts.tilt_angles, refined)
    assert ".tlt" in ts.provenance["angles_source"]


def test_serialem_mdoc(serialem_mdoc_stack: Path) -> None:
    ts = read_tilt_series(serialem_mdoc_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES, atol=1e-9)
    assert ts.provenance["angles_source"] == "SerialEM mdoc (ts.mrc.mdoc)"
    assert ts.pixel_size_A == pytest.approx(3.42)
    assert "mdoc" in ts.provenance["pixel_size_source"]
    assert ts.tilt_axis_angle_deg == pytest.approx(85.3)
    # acquisition order: 0 deg first, then alternating outwards, 30 s apart
    t = ts.acquisition_times_s
    assert t[np.argmin(np.abs(ANGLES))] == 0.0
    assert t.max() == pytest.approx(30.0 * (N - 1))


def test_serialem_extended_header(serialem_header_stack: Path) -> None:
    ts = read_tilt_series(serialem_header_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES, atol=0.005)
    assert ts.provenance["angles_source"] == "SerialEM extended header (tilt x 100)"
    assert ts.pixel_size_A == pytest.approx(1.8, rel=1e-6)


def test_fei_extended_header(fei_stack: Path) -> None:
    ts = read_tilt_series(fei_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES)
    assert ts.provenance["angles_source"] == "FEI extended header (Alpha tilt)"
    assert ts.pixel_size_A == pytest.approx(4.5, rel=1e-6)
    assert ts.tilt_axis_angle_deg == pytest.approx(-2.5)
    np.testing.assert_allclose(ts.acquisition_times_s, np.arange(N) * 20.0, atol=1e-3)


def test_sidecar_beats_mdoc(serialem_mdoc_stack: Path) -> None:
    serialem_mdoc_stack.with_suffix(".rawtlt").write_text("\n".join(str(a + 1) for a in ANGLES))
    ts = read_tilt_series(serialem_mdoc_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES + 1)
    assert ts.pixel_size_A == pytest.approx(3.42)  # other fields still from the mdoc


def test_user_angles_override(fei_stack: Path) -> None:
    ts = read_tilt_series(fei_stack, tilt_start=-30, tilt_step=5)
    np.testing.assert_allclose(ts.tilt_angles, -30 + 5 * np.arange(N))
    assert ts.provenance["angles_source"].startswith("user")


def test_no_angles_found(tmp_path: Path) -> None:
    p = write_plain_mrc(tmp_path / "bare.mrc", stack())
    ts = read_tilt_series(p)
    assert ts.tilt_angles is None
    with pytest.raises(TiltgenError, match="tilt angles of this series are unknown"):
        ts.require_angles()


def test_float32_is_memory_mapped(tmp_path: Path) -> None:
    p = write_plain_mrc(tmp_path / "big.mrc", stack())
    p.with_suffix(".rawtlt").write_text("\n".join(str(a) for a in ANGLES))
    ts = read_tilt_series(p)
    assert isinstance(ts.data, np.memmap)
    assert not ts.data.flags.writeable


def test_big_endian_mrc(tmp_path: Path) -> None:
    data = stack()
    p = tmp_path / "be.mrc"
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(data.astype(">f4"))
        m.set_image_stack()
    ts = read_tilt_series(p, tilt_start=-60, tilt_step=10)
    np.testing.assert_array_equal(ts.data, data)


def test_volume_detection(tmp_path: Path) -> None:
    vol = np.random.default_rng(1).random((8, 9, 10)).astype(np.float32)
    p = tmp_path / "recon.rec"
    with mrcfile.new(p) as m:
        m.set_data(vol)
        m.voxel_size = 5.0
    v = read(p)
    assert isinstance(v, Volume)
    assert v.voxel_size_A == pytest.approx(5.0)
    np.testing.assert_array_equal(v.data, vol)


# ------------------------------------------------------------------ writers and round trips
@pytest.mark.parametrize("suffix", [".mrc", ".tif"])
def test_tilt_series_round_trip(tmp_path: Path, suffix: str) -> None:
    ts = TiltSeries(stack(), tilt_angles=ANGLES + 0.125, pixel_size_A=3.3,
                    tilt_axis_angle_deg=1.5)
    out = tmp_path / f"out{suffix}"
    (write_mrc if suffix == ".mrc" else write_tiff)(ts, out)
    back = read_tilt_series(out)
    np.testing.assert_array_equal(back.data, ts.data)
    np.testing.assert_allclose(back.tilt_angles, ts.tilt_angles, rtol=1e-6)
    assert back.pixel_size_A == pytest.approx(3.3, rel=1e-6)
    if suffix == ".mrc":
        assert out.with_suffix(".rawtlt").is_file()
        with mrcfile.open(out) as m:  # IMOD sees an image stack with the voxel size set
            assert m.is_image_stack()
            assert float(m.voxel_size.x) == pytest.approx(3.3, rel=1e-6)
    else:
        assert back.tilt_axis_angle_deg == pytest.approx(1.5)
        with tifffile.TiffFile(out) as tif:
            assert tif.series[0].shape == ts.shape


def test_volume_round_trip_tiff(tmp_path: Path) -> None:
    v = Volume(np.random.default_rng(2).random((5, 6, 7)), voxel_size_A=2.5)
    write_tiff(v, tmp_path / "v.tif")
    back = read(tmp_path / "v.tif")
    assert isinstance(back, Volume)
    assert back.voxel_size_A == pytest.approx(2.5)
    np.testing.assert_array_equal(back.data, v.data)


def test_imagej_tiff_pixel_size(tmp_path: Path) -> None:
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, stack(), imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "nm", "axes": "ZYX"})
    ts = read_tilt_series(p, tilt_start=-60, tilt_step=10)
    assert ts.pixel_size_A == pytest.approx(2.5, rel=1e-4)


def test_writer_never_overwrites(tmp_path: Path, imod_stack: Path) -> None:
    ts = read_tilt_series(imod_stack)
    out = tmp_path / "copy.mrc"
    write_mrc(ts, out)
    before = file_state(out)
    with pytest.raises(TiltgenError, match="already exists"):
        write_mrc(ts, out)
    assert file_state(out) == before
    # the source file is refused even with overwrite=True
    src_before = file_state(imod_stack)
    with pytest.raises(TiltgenError, match="read from"):
        write_mrc(ts, imod_stack, overwrite=True)
    assert file_state(imod_stack) == src_before
    # explicit overwrite of another file works, and leaves no temporary file behind
    write_mrc(TiltSeries(stack(seed=5), tilt_angles=ANGLES), out, overwrite=True)
    assert file_state(out) != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_writer_refuses_existing_sidecar(tmp_path: Path) -> None:
    (tmp_path / "a.rawtlt").write_text("1\n")
    with pytest.raises(TiltgenError, match="a.rawtlt: already exists"):
        write_mrc(TiltSeries(stack(), tilt_angles=ANGLES), tmp_path / "a.mrc")
    assert not (tmp_path / "a.mrc").exists()


# ------------------------------------------------------------------ napari metadata round trip
def test_layer_metadata_round_trip() -> None:
    ts = TiltSeries(stack(), tilt_angles=ANGLES * 0.999, pixel_size_A=1.234,
                    tilt_axis_angle_deg=-84.7, shifts_px=np.arange(2 * N).reshape(N, 2) / 7,
                    acquisition_times_s=np.arange(N) * 12.5,
                    provenance={"source": "/x/y.st", "angles_source": "test"})
    data, kwargs, kind = ts.to_layer_data()
    assert kind == "image"
    assert kwargs["scale"] == (1.0, 1.234, 1.234)
    back = TiltSeries.from_metadata(data, kwargs["metadata"])
    np.testing.assert_array_equal(back.tilt_angles, ts.tilt_angles)  # bit-exact
    np.testing.assert_array_equal(back.shifts_px, ts.shifts_px)
    np.testing.assert_array_equal(back.acquisition_times_s, ts.acquisition_times_s)
    assert back.pixel_size_A == ts.pixel_size_A
    assert back.tilt_axis_angle_deg == ts.tilt_axis_angle_deg
    assert back.provenance == ts.provenance

    vol = Volume(np.ones((4, 5, 6)), voxel_size_A=0.7, provenance={"method": "sirt"})
    d, kw, _ = vol.to_layer_data()
    back_v = Volume.from_metadata(d, kw["metadata"])
    assert back_v.voxel_size_A == 0.7 and back_v.provenance["method"] == "sirt"


def test_vertical_tilt_axis_rotation() -> None:
    data = stack(n=3, ny=4, nx=6)
    ts = TiltSeries(data, tilt_angles=[-10, 0, 10], tilt_axis_angle_deg=85.3)
    v = ts.with_vertical_tilt_axis()
    assert v.shape == (3, 6, 4)
    assert v.tilt_axis_angle_deg == pytest.approx(-4.7)
    np.testing.assert_array_equal(v.data[1], np.rot90(data[1], k=1))
    # a point at (x, y) = (3, 0) from the centre goes to (0, -3): a clockwise quarter turn with
    # y up (IMOD), i.e. the image is rotated by minus the axis angle
    img = np.zeros((1, 7, 7), np.float32)
    img[0, 3, 6] = 1.0
    turned = TiltSeries(img, tilt_angles=[0.0], tilt_axis_angle_deg=90.0).with_vertical_tilt_axis()
    assert np.argwhere(turned.data[0] == 1.0).tolist() == [[0, 3]]  # row 0 = y of -3
    assert ts.with_vertical_tilt_axis() is not ts
    assert v.with_vertical_tilt_axis() is v  # already vertical


# ------------------------------------------------------------------ bad input
def _mrc_bytes(tmp_path: Path) -> bytes:
    p = write_plain_mrc(tmp_path / "src.mrc", stack())
    return p.read_bytes()


BAD_CASES = {
    "truncated": ("bad.mrc", lambda b, d: b[:-100], "truncated"),
    "size_mismatch": ("bad.mrc", lambda b, d: b + b"\0" * 512, "larger than its header says"),
    "empty": ("bad.mrc", lambda b, d: b"", "empty"),
    "garbage": ("bad.mrc", lambda b, d: b"\x01" * 3000, "not a readable MRC file"),
    "short_header": ("bad.st", lambda b, d: b[:500], "shorter than an MRC header"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_mrc_files(tmp_path: Path, case: str) -> None:
    name, mangle, message = BAD_CASES[case]
    p = tmp_path / name
    p.write_bytes(mangle(_mrc_bytes(tmp_path), tmp_path))
    before = file_state(p)
    with pytest.raises(TiltgenError, match=message) as info:
        read(p)
    assert str(p) in str(info.value)
    assert file_state(p) == before


def test_2d_image_refused(tmp_path: Path) -> None:
    p = tmp_path / "single.mrc"
    with mrcfile.new(p) as m:
        m.set_data(np.zeros((16, 16), np.float32))
    before = file_state(p)
    with pytest.raises(TiltgenError, match="single 2-D image"):
        read(p)
    assert file_state(p) == before


def test_4d_tiff_refused(tmp_path: Path) -> None:
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 8, 8), np.float32), photometric="minisblack")
    before = file_state(p)
    with pytest.raises(TiltgenError, match="4-D data"):
        read(p)
    assert file_state(p) == before


def test_angle_count_mismatch(imod_stack: Path) -> None:
    side = imod_stack.with_suffix(".rawtlt")
    side.write_text("".join(f"{a}\n" for a in ANGLES[:-2]))
    before = (file_state(imod_stack), file_state(side))
    with pytest.raises(TiltgenError, match=r"gives 11 tilt angles but the stack tomo.st has 13"):
        read(imod_stack)
    assert (file_state(imod_stack), file_state(side)) == before


def test_mdoc_count_mismatch(serialem_mdoc_stack: Path) -> None:
    mdoc = serialem_mdoc_stack.with_name("ts.mrc.mdoc")
    mdoc.write_text(mdoc.read_text().split("[ZValue = 12]")[0])
    with pytest.raises(TiltgenError, match="no TiltAngle for 1 of 13 frames"):
        read(serialem_mdoc_stack)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_frames(tmp_path: Path, value: float) -> None:
    data = stack()
    data[4, 2, 3] = value
    data[7, 0, 0] = value
    p = write_plain_mrc(tmp_path / "nan.mrc", data)
    before = file_state(p)
    with pytest.raises(TiltgenError, match=r"2 frame\(s\) contain NaN or infinite values "
                                           r"\(frame index 4, 7\)"):
        read(p)
    assert file_state(p) == before


@pytest.mark.parametrize("content,message", [
    (b"-60\n-50\nbanana\n", "line 3 of the tilt-angle file is not a number"),
    (b"\xff\xfe\x00\x81binary", "not text"),
    (b"\n\n", "contains no angles"),
])
def test_unreadable_sidecar(imod_stack: Path, content: bytes, message: str) -> None:
    side = imod_stack.with_suffix(".rawtlt")
    side.write_bytes(content)
    before = (file_state(imod_stack), file_state(side))
    with pytest.raises(TiltgenError, match=message) as info:
        read(imod_stack)
    assert "tomo.rawtlt" in str(info.value)
    assert (file_state(imod_stack), file_state(side)) == before


def test_angles_x100_are_mapped(imod_stack: Path) -> None:
    imod_stack.with_suffix(".rawtlt").write_text("".join(f"{a * 100:.0f}\n" for a in ANGLES))
    ts = read_tilt_series(imod_stack)
    np.testing.assert_allclose(ts.tilt_angles, ANGLES)
    assert any("x100" in n for n in ts.provenance["notes"])


def test_angles_out_of_range(imod_stack: Path) -> None:
    # not x100 (not whole numbers), not 0..180, not radians: refused with a clear message
    imod_stack.with_suffix(".rawtlt").write_text(
        "".join(f"{a * 2.5 + 0.25}\n" for a in ANGLES))
    with pytest.raises(TiltgenError, match="within \\[-90, 90\\] degrees"):
        read(imod_stack)


def test_unsupported_extension(tmp_path: Path) -> None:
    p = tmp_path / "x.xyz"
    p.write_bytes(b"1234")
    with pytest.raises(TiltgenError, match="unsupported file type"):
        read(p)


def test_dynamic_phantom_changes_and_records_times() -> None:
    from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom

    ts, truth = dynamic_sphere_phantom(size=24, n_tilts=12, scheme="dose-symmetric")
    assert truth.shape == (12, 24, 24, 24)
    t = ts.acquisition_times_s
    assert t.min() == 0.0 and t.max() == pytest.approx(3600.0)
    assert t[np.argmin(np.abs(ts.tilt_angles))] == 0.0  # dose-symmetric starts near 0 deg
    first, last = truth[np.argmin(t)], truth[np.argmax(t)]
    assert last.sum() > 1.2 * first.sum()  # the particle grows and gets denser
