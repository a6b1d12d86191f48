"""TIFF tilt series and volumes read with ``tifffile``: pixel size from the resolution tags,
the package's own saved metadata checked, memory-mapped where the file is contiguous.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.lazy import LazyFrames
from napari_tiltgen.io.model import METADATA_KEY


# ---------------------------------------------------------------------------- TIFF
def _read_tiff(path: Path) -> tuple[Any, dict[str, Any]]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _refuse_tiff_kind(series, path)  # colour or complex: not a tilt series
            try:
                data = tifffile.memmap(path, mode="r") if _tiff_is_contiguous(tif) else None
            except (ValueError, OSError):
                data = None
            if data is None:
                data = series.asarray()
            shaped = tif.shaped_metadata[0] if tif.shaped_metadata else None
            ij = tif.imagej_metadata
            page = tif.pages.first
            xres = page.tags.get("XResolution")
            unit = page.tags.get("ResolutionUnit")
            file_dtype = str(series.dtype)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise TiltgenError(f"not a readable TIFF file ({exc}).", path) from exc

    if data.ndim == 4 and data.shape[-1] in (3, 4) and data.dtype == np.uint8:
        raise TiltgenError(
            f"the TIFF holds colour (RGB) images of shape {tuple(data.shape)}; tilt series must "
            "be grey-scale.", path)
    if data.dtype != np.float32 or not data.dtype.isnative:
        if data.ndim == 3 and isinstance(data, np.memmap):
            data = LazyFrames(data)  # stays memory-mapped, converted per frame
        else:
            data = np.asarray(data, dtype=np.float32)

    hdr: dict[str, Any] = {"file_dtype": file_dtype, "voxel_size_A": None, "notes": []}
    saved = (shaped or {}).get(METADATA_KEY)
    if isinstance(saved, dict):
        saved = _checked_saved_metadata(saved, path, int(data.shape[0]) if data.ndim else 0)
        hdr["tiltgen_metadata"] = saved
        hdr["voxel_size_A"] = saved.get("pixel_size_A") or saved.get("voxel_size_A")
        hdr["is_volume"] = saved.get("kind") == "volume"
        if saved.get("tilt_angles") is not None:
            hdr["tiff_angles"] = np.asarray(saved["tilt_angles"], dtype=np.float64)
        hdr["pixel_size_source"] = "TIFF (napari-tiltgen metadata)"
    elif ij and ij.get("unit") and xres is not None:
        px = _unit_to_A(ij.get("unit"), xres.value)
        if px:
            hdr["voxel_size_A"] = px
            hdr["pixel_size_source"] = "TIFF (ImageJ unit and resolution)"
    elif xres is not None and unit is not None and int(unit.value) in (2, 3):
        num, den = xres.value
        if num > 0 and den > 0:
            per_cm = (num / den) * (2.54 if int(unit.value) == 2 else 1.0) ** -1
            px = 1e8 / per_cm  # cm -> Å
            if 0.01 < px < 1e5:
                hdr["voxel_size_A"] = px
                hdr["pixel_size_source"] = "TIFF resolution tags"
    return data, hdr


def _checked_saved_metadata(saved: dict[str, Any], path: Path, n: int) -> dict[str, Any]:
    """The package's own TIFF metadata with every numeric field checked (hand-edited files)."""

    def bad(key: str, what: str) -> TiltgenError:
        return TiltgenError(f"the napari-tiltgen metadata in this TIFF has an invalid {key!r} "
                            f"({what}; got {str(saved.get(key))[:40]!r}). Fix or remove it.", path)

    out = dict(saved)
    for key in ("pixel_size_A", "voxel_size_A", "tilt_axis_angle_deg"):
        v = saved.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise bad(key, "expected a finite number")
        if key != "tilt_axis_angle_deg" and v <= 0:
            raise bad(key, "expected a positive number of Å")
    for key, per_frame in (("tilt_angles", 1), ("acquisition_times_s", 1), ("shifts_px", 2)):
        v = saved.get(key)
        if v is None:
            continue
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad(key, "expected a list of numbers") from None
        if a.dtype == object or (key == "shifts_px" and a.size != per_frame * n):
            raise bad(key, f"expected {per_frame * n} numbers for {n} frames")
        if key != "tilt_angles" and not np.all(np.isfinite(a)):
            raise bad(key, "NaN or infinite values")
    return out


def _refuse_tiff_kind(series: Any, path: Path) -> None:
    """Refuse colour (RGB/RGBA samples) and complex-valued TIFFs, as complex MRC is refused."""
    axes = str(getattr(series, "axes", ""))
    # Interleaved samples (..YXS) are colour pixels. Planar SYX is what tifffile makes of any
    # 3- or 4-frame grey stack written without photometric='minisblack': read as frames.
    if axes.endswith("S") and series.shape[-1] > 1:
        raise TiltgenError(
            f"the TIFF holds colour images (axes {axes}, shape {tuple(series.shape)}, "
            f"{series.shape[axes.index('S')]} samples per pixel); tilt series must be grey-scale. "
            "Convert it to one channel first.", path)
    if np.dtype(series.dtype).kind == "c":
        raise TiltgenError("complex-valued TIFF data (FFT) is not a tilt series or volume.", path)


def _tiff_is_contiguous(tif: Any) -> bool:
    series = tif.series[0]
    return bool(getattr(series, "dataoffset", None)) and series.dtype.kind in "iuf"


def _unit_to_A(unit: str, xres: tuple[int, int]) -> float | None:
    factors = {"nm": 10.0, "nanometer": 10.0, "micron": 1e4, "um": 1e4, "\\u00B5m": 1e4,
               "µm": 1e4, "angstrom": 1.0, "a": 1.0, "å": 1.0, "pm": 0.01}
    f = factors.get(str(unit).strip().lower())
    num, den = xres
    if f is None or num <= 0 or den <= 0:
        return None
    return f * den / num
