"""MRC files in every variant found in the wild (no MAP stamp, zero machine stamp, FEI1/FEI2
and old-FEI extended headers, int8/int16/uint16 kept memory-mapped), read with ``mrcfile``
in permissive mode; the header fields are turned into the reader's metadata dictionary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.lazy import LazyFrames

# ---------------------------------------------------------------------------- MRC
_MRC_MODES_HINT = "0 int8, 1 int16, 2 float32, 6 uint16, 12 float16"


def _parse_mrc_header(raw: bytes, size: int, path: Path) -> dict[str, Any]:
    """The MRC header, byte order found from the machine stamp or, when that is missing or
    zero, from which order gives a valid mode and sizes matching the file."""
    from mrcfile.dtypes import HEADER_DTYPE
    from mrcfile.utils import dtype_from_mode

    stamp = raw[212:216]
    if stamp[:1] == b"\x11":
        orders = [">", "<"]
    else:
        orders = ["<", ">"]
    found = []
    for bo in orders:
        h = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(bo), count=1).view(np.recarray)[0]
        try:
            dtype = dtype_from_mode(int(h.mode)).newbyteorder(bo)
        except ValueError:
            continue
        nx, ny, nz, nsymbt = int(h.nx), int(h.ny), int(h.nz), int(h.nsymbt)
        if min(nx, ny, nz) < 1 or nsymbt < 0 or max(nx, ny, nz) > 1 << 24:
            found.append((bo, h, dtype, None))
            continue
        expected = 1024 + nsymbt + nx * ny * nz * dtype.itemsize
        found.append((bo, h, dtype, expected))
    for bo, h, dtype, expected in found:
        if expected == size:
            return {"byteorder": bo, "header": h, "dtype": dtype, "expected": expected}
    if not found:
        raise TiltgenError(
            "not a readable MRC file (no valid data mode in the header in either byte order; "
            f"modes {_MRC_MODES_HINT}).", path)
    bo, h, dtype, expected = found[0]
    nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
    if np.issubdtype(dtype, np.complexfloating):
        raise TiltgenError("complex-valued MRC data (FFT) is not a tilt series or volume.", path)
    if expected is None:
        raise TiltgenError(
            f"not a readable MRC file (the header gives an impossible shape nx={nx} ny={ny} "
            f"nz={nz}, extended header {int(h.nsymbt)} bytes).", path)
    what = "truncated: it" if size < expected else "larger than its header says: it"
    raise TiltgenError(
        f"the file is {what} holds {size} bytes but the header (nx={nx}, ny={ny}, "
        f"nz={nz}, mode {int(h.mode)}, extended header {int(h.nsymbt)} bytes) needs "
        f"{expected}. Header and data do not match; the file may be incomplete.",
        path,
    )


def _read_mrc(path: Path) -> tuple[Any, dict[str, Any]]:
    size = path.stat().st_size
    if size < 1024:
        raise TiltgenError(
            f"the file is {size} bytes, shorter than an MRC header (1024 bytes): truncated or "
            "not an MRC file.",
            path,
        )
    with open(path, "rb") as f:
        raw_header = f.read(1024)
    parsed = _parse_mrc_header(raw_header, size, path)
    header, dtype, byteorder = parsed["header"], parsed["dtype"], parsed["byteorder"]
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    nsymbt, ispg, mz = int(header.nsymbt), int(header.ispg), int(header.mz)
    if np.issubdtype(dtype, np.complexfloating):
        raise TiltgenError("complex-valued MRC data (FFT) is not a tilt series or volume.", path)
    notes: list[str] = []
    if bytes(header.map) != b"MAP ":
        notes.append("MRC file without the 'MAP ' stamp (older FEI/Inspect3D style); read "
                     "after checking the header sizes against the file size")
    stamp = bytes(raw_header[212:216])
    if stamp[:2] not in (b"\x44\x44", b"\x44\x41", b"\x11\x11", b"\x44\x00", b"\x11\x00"):
        notes.append(f"machine stamp {stamp.hex()} not recognised; byte order "
                     f"{'little' if byteorder == '<' else 'big'}-endian found from the header")
    with open(path, "rb") as f:
        f.seek(1024)
        ext = f.read(nsymbt)
    shape: tuple[int, ...] = (nz, ny, nx)
    if nz == 1:
        shape = (ny, nx)  # a single image
    elif ispg >= 401 and 0 < mz < nz and nz % mz == 0:
        shape = (nz // mz, mz, ny, nx)  # a stack of volumes
    data: Any = np.memmap(path, dtype=dtype, mode="r", offset=1024 + nsymbt, shape=shape)
    if len(shape) == 3 and not (dtype == np.float32 and dtype.isnative):
        data = LazyFrames(data)  # int8/int16/uint16/float16/big-endian: converted per frame
    elif len(shape) != 3:
        data = np.asarray(data, dtype=np.float32)

    mx, cella = int(header.mx), float(header.cella.x)
    voxel = cella / mx if mx > 0 and cella > 0 else 0.0
    exttyp = bytes(header.exttyp)
    hdr: dict[str, Any] = {
        "file_dtype": str(np.dtype(dtype).newbyteorder("=")),
        "voxel_size_A": float(voxel) if voxel > 0 else None,
        "is_volume": ispg == 1,
        "raw_header": raw_header,
        "ext": ext,
        "byteorder": byteorder,
        "exttyp": exttyp,
        "notes": notes,
    }
    if exttyp in (b"FEI1", b"FEI2") and ext:
        from mrcfile.dtypes import get_ext_header_dtype

        edt = get_ext_header_dtype(exttyp, byteorder)
        if len(ext) >= edt.itemsize * nz:
            hdr["fei"] = np.frombuffer(ext, dtype=edt, count=nz)
            if int(hdr["fei"]["Metadata size"][0]) != edt.itemsize:
                hdr.pop("fei")
                hdr["notes"].append("FEI extended header present but not interpretable")
    elif ext and len(shape) == 3:
        old = md.old_fei_info(raw_header, ext, nz, byteorder, exttyp)
        if old is not None:
            hdr["old_fei"] = old
    return data, hdr
