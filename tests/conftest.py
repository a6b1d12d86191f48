"""Shared fixtures: real MRC/TIFF files written with mrcfile/tifffile in each microscope's style."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from mrcfile.dtypes import get_ext_header_dtype

# every test estimates its tilt axes afresh: no test may read an estimate another one (or an
# earlier run) left in the user's cache (align/axis_estimate.py); the cache's own tests turn
# it on in a temporary folder. Set here, it reaches the CLI subprocesses too.
os.environ["TILTGEN_CACHE"] = "off"

ANGLES = np.arange(-60.0, 60.1, 10.0)  # 13 tilts
N = ANGLES.size


def stack(n: int = N, ny: int = 16, nx: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, ny, nx)).astype(np.float32)


def write_plain_mrc(path: Path, data: np.ndarray, voxel_size: float | None = None,
                    image_stack: bool = True) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if image_stack:
            m.set_image_stack()
        if voxel_size:
            m.voxel_size = voxel_size
    return path


def set_imod_ext_flags(m, nint: int, nreal: int) -> None:
    raw = bytearray(m.header.extra2.tobytes())
    raw[16:20] = np.array([nint, nreal], "<i2").tobytes()
    m.header.extra2 = np.frombuffer(bytes(raw), dtype="V84")[0]


def file_state(path: Path) -> tuple[str, int]:
    """Content hash and mtime, to assert that a file was not touched."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def imod_stack(tmp_path: Path) -> Path:
    """IMOD style: tomo.st (mode 1 int16, ispg 0) + tomo.rawtlt."""
    p = tmp_path / "tomo.st"
    write_plain_mrc(p, (stack() * 100).astype(np.int16), voxel_size=2.7)
    p.with_suffix(".rawtlt").write_text("".join(f"{a:.2f}\n" for a in ANGLES))
    return p


@pytest.fixture
def serialem_mdoc_stack(tmp_path: Path) -> Path:
    """SerialEM style: ts.mrc + ts.mrc.mdoc with TiltAngle, PixelSpacing, tilt axis, times."""
    p = tmp_path / "ts.mrc"
    write_plain_mrc(p, stack(), voxel_size=None)
    lines = ["PixelSpacing = 3.42", "Voltage = 300", "ImageFile = ts.mrc", "DataMode = 2", "",
             "[T = SerialEM: Digitized on Titan   Tilt axis angle = 85.3, binning = 1]", ""]
    order = np.argsort(np.abs(ANGLES), kind="stable")  # dose-symmetric-ish acquisition order
    for z, a in enumerate(ANGLES):
        t = 100.0 + 30.0 * int(np.flatnonzero(order == z)[0])
        lines += [f"[ZValue = {z}]", f"TiltAngle = {a:.2f}", "StagePosition = 1.2 3.4",
                  "PixelSpacing = 3.42", f"TimeStamp = {t:.1f}",
                  "DateTime = 12-Feb-22  10:08:42", ""]
    p.with_name("ts.mrc.mdoc").write_text("\n".join(lines))
    return p


@pytest.fixture
def serialem_header_stack(tmp_path: Path) -> Path:
    """SerialEM extended header: exttyp SERI, nint=4, nreal=1|8 (tilt x100, magnification)."""
    p = tmp_path / "seri.mrc"
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(stack())
        m.set_image_stack()
        rec = np.zeros((N, 2), "<i2")
        rec[:, 0] = np.round(ANGLES * 100).astype(np.int16)
        rec[:, 1] = 2500
        m.set_extended_header(np.frombuffer(rec.tobytes(), dtype=np.uint8))
        set_imod_ext_flags(m, nint=4, nreal=1 | 8)
        m.header.exttyp = b"SERI"
        m.voxel_size = 1.8
    return p


@pytest.fixture
def fei_stack(tmp_path: Path) -> Path:
    """Thermo Fisher (FEI1) extended header with Alpha tilt, Pixel size X (m), tilt axis."""
    p = tmp_path / "fei.mrc"
    dt = get_ext_header_dtype(b"FEI1", "<")
    ext = np.zeros(N, dtype=dt)
    ext["Metadata size"] = dt.itemsize
    ext["Metadata version"] = 0
    ext["Alpha tilt"] = ANGLES
    ext["Pixel size X"] = 4.5e-10
    ext["Pixel size Y"] = 4.5e-10
    ext["Tilt axis angle"] = -2.5
    ext["Timestamp"] = 45000.0 + np.arange(N) * (20.0 / 86400.0)
    with mrcfile.new(p, overwrite=True) as m:
        m.set_data(stack())
        m.set_image_stack()
        m.set_extended_header(ext)
        m.header.exttyp = b"FEI1"
    return p


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that open a napari viewer are GUI tests (CI's gui lane): marked here, not by hand."""
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gui)


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    """``||a - ref|| / ||ref||`` (the NRMSE of ``a`` against the reference ``ref``)."""
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))
