"""Readers for tilt series and volumes: MRC family via mrcfile, TIFF via tifffile.

``read(path)`` returns a :class:`~napari_tiltgen.io.model.TiltSeries` or a
:class:`~napari_tiltgen.io.model.Volume`; :func:`read_tilt_series` and :func:`read_volume` insist
on one kind. Float32 MRC data is memory-mapped (read-only), so opening a multi-GB stack is instant
and costs no memory; other modes are converted to float32 in memory.

Every problem a file can have (truncated, header/data size mismatch, empty, not 3-D, wrong angle
count, NaN/inf frames, unreadable sidecar) raises :class:`~napari_tiltgen.errors.TiltgenError`
naming the file. Nothing is ever written next to or over the input.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".preali", ".rec", ".map")
TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES
#: Suffixes that always hold a reconstructed volume, never a tilt series.
VOLUME_SUFFIXES = (".rec", ".map")
Kind = Literal["auto", "tilt_series", "volume"]


def read(
    path: str | os.PathLike,
    kind: Kind = "auto",
    *,
    tilt_start: float | None = None,
    tilt_step: float | None = None,
    tilt_file: str | os.PathLike | None = None,
    pixel_size_A: float | None = None,
    check_finite: bool = True,
) -> TiltSeries | Volume:
    """Read a tilt series or a volume from an MRC-family or TIFF file.

    Parameters
    ----------
    path
        ``.mrc .mrcs .st .ali .preali .rec .map .tif .tiff``.
    kind
        ``"auto"``: ``.rec``/``.map`` and MRC files flagged as volumes (ispg 1) without tilt
        angles are volumes, everything else a tilt series.
    tilt_start, tilt_step
        Tilt angles ``start + step * i`` in degrees; override anything found in the files.
    tilt_file
        A text file with one angle per line; overrides sidecars and headers.
    pixel_size_A
        Pixel size in Å; overrides headers.
    check_finite
        Scan the data for NaN/inf (chunked; a memory map stays a memory map) and refuse them.

    Returns
    -------
    TiltSeries or Volume
    """
    path = Path(path)
    if not path.exists():
        raise TiltgenError("no such file.", path)
    if path.is_dir():
        raise TiltgenError("is a folder, not a tilt-series file.", path)
    if path.stat().st_size == 0:
        raise TiltgenError("the file is empty (0 bytes).", path)
    suffix = path.suffix.lower()
    if (tilt_start is None) != (tilt_step is None):
        raise TiltgenError("give both a tilt start and a tilt step (degrees), or neither.")

    if suffix in MRC_SUFFIXES:
        data, hdr = _read_mrc(path)
    elif suffix in TIFF_SUFFIXES:
        data, hdr = _read_tiff(path)
    else:
        raise TiltgenError(
            f"unsupported file type {suffix!r}; napari-tiltgen reads "
            f"{', '.join(SUPPORTED_SUFFIXES)}.",
            path,
        )

    if data.ndim != 3:
        what = {2: "a single 2-D image", 4: "4-D data", 5: "5-D data"}.get(
            data.ndim, f"{data.ndim}-D data")
        raise TiltgenError(
            f"the file holds {what} of shape {tuple(data.shape)}; a tilt series or volume must be "
            "a 3-D stack (n_tilts, ny, nx).",
            path,
        )
    if check_finite:
        _check_finite(data, path)

    n = data.shape[0]
    angles = _gather_angles(path, n, hdr, tilt_start, tilt_step, tilt_file)
    prov: dict[str, Any] = {
        "source": str(path.resolve()),
        "file_dtype": hdr["file_dtype"],
        "angles_source": angles.source or "not found",
        "pixel_size_source": "",
        "tilt_axis_source": angles.tilt_axis_source or "not recorded; assumed vertical (y)",
        "notes": list(hdr.get("notes", [])) + angles.notes,
    }
    px, prov["pixel_size_source"] = _choose_pixel_size(pixel_size_A, hdr, angles)

    if kind == "auto":
        if suffix in VOLUME_SUFFIXES:
            kind = "volume"
        elif hdr.get("is_volume") and angles.tilt_angles is None:
            kind = "volume"
        else:
            kind = "tilt_series"
    if kind == "volume":
        return Volume(data=data, voxel_size_A=px, provenance=prov)
    saved = hdr.get("tiltgen_metadata")
    return TiltSeries(
        data=data,
        tilt_angles=angles.tilt_angles,
        pixel_size_A=px,
        tilt_axis_angle_deg=angles.tilt_axis_angle_deg or 0.0,
        shifts_px=(saved or {}).get("shifts_px"),
        acquisition_times_s=angles.acquisition_times_s,
        provenance=prov,
    )


def read_tilt_series(path: str | os.PathLike, **kwargs: Any) -> TiltSeries:
    """Read ``path`` as a tilt series (see :func:`read` for the keyword arguments)."""
    return read(path, "tilt_series", **kwargs)  # type: ignore[return-value]


def read_volume(path: str | os.PathLike, **kwargs: Any) -> Volume:
    """Read ``path`` as a volume (see :func:`read`)."""
    return read(path, "volume", **kwargs)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- MRC
def _read_mrc(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import mrcfile
    from mrcfile.utils import data_dtype_from_header

    size = path.stat().st_size
    if size < 1024:
        raise TiltgenError(
            f"the file is {size} bytes, shorter than an MRC header (1024 bytes): truncated or "
            "not an MRC file.",
            path,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mrc = mrcfile.open(path, mode="r", header_only=True, permissive=False)
    except ValueError as exc:
        raise TiltgenError(f"not a readable MRC file ({exc}).", path) from exc
    with mrc:
        header = mrc.header
        nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
        nsymbt = int(header.nsymbt)
        try:
            dtype = data_dtype_from_header(header)
        except ValueError as exc:
            raise TiltgenError(f"unsupported MRC data mode {int(header.mode)} ({exc}).",
                               path) from exc
        if np.issubdtype(dtype, np.complexfloating):
            raise TiltgenError("complex-valued MRC data (FFT) is not a tilt series or volume.",
                               path)
        expected = 1024 + nsymbt + nx * ny * nz * dtype.itemsize
        if min(nx, ny, nz) < 1:
            raise TiltgenError(f"the MRC header gives an empty shape nx={nx} ny={ny} nz={nz}.",
                               path)
        if size != expected:
            what = "truncated: it" if size < expected else "larger than its header says: it"
            raise TiltgenError(
                f"the file is {what} holds {size} bytes but the header (nx={nx}, ny={ny}, "
                f"nz={nz}, mode {int(header.mode)}, extended header {nsymbt} bytes) needs "
                f"{expected}. Header and data do not match; the file may be incomplete.",
                path,
            )
        voxel = mrc.voxel_size
        exttyp = bytes(header.exttyp)
        ispg = int(header.ispg)
        mz = int(header.mz)

    with open(path, "rb") as f:
        raw_header = f.read(1024)
        ext = f.read(nsymbt)
    big = dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")
    byteorder = ">" if big else "<"
    shape: tuple[int, ...] = (nz, ny, nx)
    if nz == 1:
        shape = (ny, nx)  # a single image
    elif ispg >= 401 and 0 < mz < nz and nz % mz == 0:
        shape = (nz // mz, mz, ny, nx)  # a stack of volumes
    data = np.memmap(path, dtype=dtype, mode="r", offset=1024 + nsymbt, shape=shape)
    if not (dtype == np.float32 and dtype.isnative):
        data = np.asarray(data, dtype=np.float32)  # other modes: converted in memory

    hdr: dict[str, Any] = {
        "file_dtype": str(np.dtype(dtype).newbyteorder("=")),
        "voxel_size_A": float(voxel.x) if voxel.x > 0 else None,
        "is_volume": ispg == 1,
        "raw_header": raw_header,
        "ext": ext,
        "byteorder": byteorder,
        "exttyp": exttyp,
        "notes": [],
    }
    if exttyp in (b"FEI1", b"FEI2") and ext:
        from mrcfile.dtypes import get_ext_header_dtype

        edt = get_ext_header_dtype(exttyp, byteorder)
        if len(ext) >= edt.itemsize * nz:
            hdr["fei"] = np.frombuffer(ext, dtype=edt, count=nz)
            if int(hdr["fei"]["Metadata size"][0]) != edt.itemsize:
                hdr.pop("fei")
                hdr["notes"].append("FEI extended header present but not interpretable")
    return data, hdr


# ---------------------------------------------------------------------------- TIFF
def _read_tiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
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
    if data.dtype != np.float32:
        data = np.asarray(data, dtype=np.float32)

    hdr: dict[str, Any] = {"file_dtype": file_dtype, "voxel_size_A": None, "notes": []}
    saved = (shaped or {}).get(METADATA_KEY)
    if isinstance(saved, dict):
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


def _tiff_is_contiguous(tif: Any) -> bool:
    series = tif.series[0]
    return bool(getattr(series, "dataoffset", None)) and series.dtype == np.float32


def _unit_to_A(unit: str, xres: tuple[int, int]) -> float | None:
    factors = {"nm": 10.0, "nanometer": 10.0, "micron": 1e4, "um": 1e4, "\\u00B5m": 1e4,
               "µm": 1e4, "angstrom": 1.0, "a": 1.0, "å": 1.0, "pm": 0.01}
    f = factors.get(str(unit).strip().lower())
    num, den = xres
    if f is None or num <= 0 or den <= 0:
        return None
    return f * den / num


# ---------------------------------------------------------------------------- angles etc.
def _gather_angles(path: Path, n: int, hdr: dict[str, Any], tilt_start: float | None,
                   tilt_step: float | None, tilt_file: Any) -> md.AngleInfo:
    """Tilt angles and related metadata, from the first source that has them."""
    mdoc_path = md.mdoc_for(path)
    mdoc = md.read_mdoc(mdoc_path, n_frames=n) if mdoc_path else None
    fei = md.fei_info(hdr.get("fei"), n) if "fei" in hdr else None

    def check(a: np.ndarray, source: str, where: Path | None) -> np.ndarray:
        if a.size != n:
            raise TiltgenError(
                f"{source} gives {a.size} tilt angles but the stack {path.name} has {n} frames; "
                "the counts must match.",
                where or path,
            )
        return a

    info = md.AngleInfo()
    if tilt_start is not None:
        info.tilt_angles = tilt_start + tilt_step * np.arange(n)  # type: ignore[operator]
        info.source = f"user (start {tilt_start:g} deg, step {tilt_step:g} deg)"
    elif tilt_file is not None:
        tf = Path(tilt_file)
        info.tilt_angles = check(md.read_angle_file(tf), f"tilt file {tf.name}", tf)
        info.source = f"user tilt file ({tf.name})"
    elif (side := md.angle_sidecar_for(path)) is not None:
        info.tilt_angles = check(md.read_angle_file(side), f"IMOD {side.suffix}", side)
        info.source = f"IMOD {side.suffix} sidecar ({side.name})"
    elif mdoc is not None and mdoc.tilt_angles is not None:
        info.tilt_angles = check(mdoc.tilt_angles, "the .mdoc", mdoc_path)
        info.source = mdoc.source
    elif "tiff_angles" in hdr:
        info.tilt_angles = check(hdr["tiff_angles"], "the TIFF metadata", None)
        info.source = "TIFF (napari-tiltgen metadata)"
    elif "raw_header" in hdr and (a := md.serialem_angles(
            hdr["raw_header"], hdr["ext"], n, hdr["byteorder"], hdr["exttyp"])) is not None:
        info.tilt_angles = a
        info.source = "SerialEM extended header (tilt x 100)"
    elif fei is not None and fei.tilt_angles is not None:
        info.tilt_angles = fei.tilt_angles
        info.source = fei.source

    # Other fields: the first source that knows them.
    saved = hdr.get("tiltgen_metadata") or {}
    for src in (mdoc, fei):
        if src is None:
            continue
        if info.pixel_size_A is None and src.pixel_size_A:
            info.pixel_size_A, info.pixel_size_source = src.pixel_size_A, src.pixel_size_source
        if info.tilt_axis_angle_deg is None and src.tilt_axis_angle_deg is not None:
            info.tilt_axis_angle_deg = src.tilt_axis_angle_deg
            info.tilt_axis_source = src.tilt_axis_source
        if info.acquisition_times_s is None and src.acquisition_times_s is not None:
            if src.acquisition_times_s.size == n:
                info.acquisition_times_s = src.acquisition_times_s
    if info.tilt_axis_angle_deg is None and saved.get("tilt_axis_angle_deg") is not None:
        info.tilt_axis_angle_deg = float(saved["tilt_axis_angle_deg"])
        info.tilt_axis_source = "TIFF (napari-tiltgen metadata)"
    if info.acquisition_times_s is None and saved.get("acquisition_times_s") is not None:
        info.acquisition_times_s = np.asarray(saved["acquisition_times_s"], dtype=np.float64)
    return info


def _choose_pixel_size(user: float | None, hdr: dict[str, Any],
                       angles: md.AngleInfo) -> tuple[float | None, str]:
    header_px = hdr.get("voxel_size_A")
    header_src = hdr.get("pixel_size_source", "MRC header (voxel size)")
    if user is not None:
        return float(user), "user"
    if header_px and abs(header_px - 1.0) > 1e-6:
        return float(header_px), header_src
    if angles.pixel_size_A:
        return float(angles.pixel_size_A), angles.pixel_size_source
    if header_px:
        return float(header_px), f"{header_src}; 1.0 Å, which often means 'not set'"
    return None, "not found"


def _check_finite(data: np.ndarray, path: Path, chunk_bytes: int = 256 << 20) -> None:
    """Refuse NaN/inf, naming the first bad frames (chunked over frames for memory maps)."""
    frame_bytes = max(1, int(np.prod(data.shape[1:])) * data.dtype.itemsize)
    step = max(1, chunk_bytes // frame_bytes)
    bad: list[int] = []
    for start in range(0, data.shape[0], step):
        block = np.asarray(data[start:start + step])
        ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        bad.extend(int(i) + start for i in np.flatnonzero(~ok))
    if bad:
        shown = ", ".join(str(b) for b in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise TiltgenError(
            f"{len(bad)} frame(s) contain NaN or infinite values (frame index {shown}); remove or "
            "repair those frames (e.g. IMOD newstack -exclude) before loading.",
            path,
        )
