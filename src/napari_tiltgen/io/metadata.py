"""Tilt-series metadata from sidecar files and MRC extended headers.

Sources, in the order the readers try them for tilt angles:

1. IMOD ``.rawtlt`` / ``.tlt`` sidecar: one angle (degrees) per line, same base name as the stack
   (``.tlt`` first for an aligned ``.ali`` stack, whose refined angles it holds; ``.rawtlt``
   first otherwise).
2. SerialEM ``.mdoc`` (``stack.mrc.mdoc`` or ``stack.mdoc``): ``TiltAngle`` per ``[ZValue = i]``
   section, plus ``PixelSpacing`` (Å), the tilt axis angle from the ``[T = ...]`` title line and
   acquisition times (``TimeStamp`` seconds, else ``DateTime``).
3. SerialEM extended header (``exttyp = SERI``/``AGAR`` or IMOD ``nint/nreal`` flags): tilt angle
   x 100 as int16, first field of each section's record when flag bit 1 is set.
4. FEI1/FEI2 extended header (Thermo Fisher / Velox / Tomography): ``Alpha tilt`` (degrees),
   ``Pixel size X`` (m), ``Tilt axis angle`` (degrees), ``Timestamp`` (days).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_tiltgen.errors import TiltgenError

ANGLE_SIDECARS = (".rawtlt", ".tlt")


@dataclass
class AngleInfo:
    """What a metadata source told about a series (any field may be missing)."""

    tilt_angles: np.ndarray | None = None
    source: str = ""
    pixel_size_A: float | None = None
    pixel_size_source: str = ""
    tilt_axis_angle_deg: float | None = None
    tilt_axis_source: str = ""
    acquisition_times_s: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- text sidecars
#: Largest sidecar / angle / times file read (bytes): 16 MiB is ~1 million angles, and a device
#: such as /dev/zero given as a tilt file is refused instead of read without end.
MAX_SIDECAR_BYTES = 16 << 20


def read_small_file(path: str | os.PathLike, what: str, limit: int = MAX_SIDECAR_BYTES) -> bytes:
    """The bytes of a small text file (sidecar, angle list), refusing more than ``limit``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise TiltgenError(f"the {what} is a folder, not a file.", path)
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise TiltgenError(f"cannot read the {what} ({exc.strerror or exc}).", path) from None
    if len(data) > limit:
        raise TiltgenError(f"the {what} is larger than {limit >> 20} MiB (or endless, like a "
                           "device): not a list of numbers. Give a text file with one number "
                           "per line.", path)
    return data

def read_angle_file(path: str | os.PathLike) -> np.ndarray:
    """Read an IMOD-style angle file: one tilt angle in degrees per line.

    Blank lines are ignored. Any other non-numeric line is an error naming the line.
    """
    path = Path(path)
    try:
        text = read_small_file(path, "tilt-angle file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TiltgenError(
            "the tilt-angle file is not text (expected one angle in degrees per line).", path
        ) from exc
    angles = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            angles.append(float(s.split()[0]))
        except ValueError:
            raise TiltgenError(
                f"line {lineno} of the tilt-angle file is not a number: {s[:40]!r} "
                "(expected one angle in degrees per line).",
                path,
            ) from None
    if not angles:
        raise TiltgenError("the tilt-angle file contains no angles.", path)
    a = np.asarray(angles, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise TiltgenError("the tilt-angle file contains NaN or infinite values.", path)
    return a


def write_angle_file(path: str | os.PathLike, angles: np.ndarray) -> None:
    """Write one angle per line (IMOD ``.rawtlt`` format, 2 decimals like IMOD... but lossless)."""
    Path(path).write_text("".join(f"{float(a):.6g}\n" for a in angles), encoding="utf-8")


def find_sidecar(stack: Path, suffixes: tuple[str, ...]) -> Path | None:
    """First existing ``stack.with_suffix(s)`` for ``s`` in ``suffixes``."""
    for s in suffixes:
        p = stack.with_suffix(s)
        if p.is_file():
            return p
    return None


def angle_sidecar_for(stack: Path) -> Path | None:
    """The IMOD angle sidecar of ``stack``, if one exists (see module docstring for order)."""
    order = (".tlt", ".rawtlt") if stack.suffix.lower() == ".ali" else ANGLE_SIDECARS
    return find_sidecar(stack, order)


def mdoc_for(stack: Path) -> Path | None:
    """SerialEM's ``stack.mrc.mdoc`` (preferred) or ``stack.mdoc``."""
    for p in (stack.with_name(stack.name + ".mdoc"), stack.with_suffix(".mdoc")):
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------- SerialEM mdoc
_SECTION = re.compile(r"^\[\s*(\w+)\s*=\s*(.*?)\s*\]\s*$")
_AXIS = re.compile(r"Tilt\s*axis\s*angle\s*=\s*([-+0-9.eE]+)", re.IGNORECASE)


def read_mdoc(path: str | os.PathLike, n_frames: int | None = None) -> AngleInfo:
    """Parse a SerialEM ``.mdoc`` autodoc.

    Parameters
    ----------
    path
        The ``.mdoc`` file.
    n_frames
        Number of frames in the stack; when given, every ``ZValue`` 0..n-1 must have a
        ``TiltAngle``.
    """
    path = Path(path)
    try:
        text = read_small_file(path, ".mdoc file", 64 * MAX_SIDECAR_BYTES).decode(
            "utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise TiltgenError("the .mdoc file is not text.", path) from exc

    info = AngleInfo(source=f"SerialEM mdoc ({path.name})")
    global_px = None
    frames: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _SECTION.match(line)
        if m:
            key, value = m.group(1), m.group(2)
            if key == "ZValue":
                try:
                    z = int(value)
                except ValueError:
                    raise TiltgenError(f"line {lineno}: bad ZValue {value!r}.", path) from None
                current = frames.setdefault(z, {})
            else:
                current = None
                ax = _AXIS.search(value)
                if ax and info.tilt_axis_angle_deg is None:
                    info.tilt_axis_angle_deg = float(ax.group(1))
                    info.tilt_axis_source = f"SerialEM mdoc title ({path.name})"
            continue
        if "=" not in line:
            continue
        k, v = (s.strip() for s in line.split("=", 1))
        if current is not None:
            current[k] = v
        elif k == "PixelSpacing":
            global_px = v
        elif k == "TiltAxisAngle" and info.tilt_axis_angle_deg is None:
            info.tilt_axis_angle_deg = _float(v, k, path)
            info.tilt_axis_source = f"SerialEM mdoc ({path.name})"

    if not frames:
        raise TiltgenError("the .mdoc file has no [ZValue = ...] sections.", path)
    zs = sorted(frames)
    n = n_frames if n_frames is not None else zs[-1] + 1
    missing = [z for z in range(n) if z not in frames or "TiltAngle" not in frames[z]]
    if missing:
        raise TiltgenError(
            f"the .mdoc file has no TiltAngle for {len(missing)} of {n} frames "
            f"(first missing ZValue {missing[0]}); it does not match the stack.",
            path,
        )
    extra = [z for z in zs if z >= n]
    if extra:
        raise TiltgenError(
            f"the .mdoc file describes {zs[-1] + 1} frames but the stack has {n}.", path
        )
    info.tilt_angles = np.array([_float(frames[z]["TiltAngle"], "TiltAngle", path)
                                 for z in range(n)])
    px = frames[0].get("PixelSpacing", global_px)
    if px is not None:
        info.pixel_size_A = _float(px, "PixelSpacing", path)
        info.pixel_size_source = f"SerialEM mdoc PixelSpacing ({path.name})"
    info.acquisition_times_s = _mdoc_times([frames[z] for z in range(n)])
    return info


def _float(value: str, key: str, path: Path) -> float:
    try:
        return float(value.split()[0])
    except (ValueError, IndexError):
        raise TiltgenError(f"{key} = {value!r} is not a number.", path) from None


def _mdoc_times(frames: list[dict[str, str]]) -> np.ndarray | None:
    if all("TimeStamp" in f for f in frames):
        try:
            t = np.array([float(f["TimeStamp"]) for f in frames])
            return t - t.min()
        except ValueError:
            pass
    if all("DateTime" in f for f in frames):
        stamps = []
        for f in frames:
            s = " ".join(f["DateTime"].split())
            for fmt in ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S"):
                try:
                    stamps.append(_dt.datetime.strptime(s, fmt).timestamp())
                    break
                except ValueError:
                    continue
            else:
                return None
        t = np.asarray(stamps)
        return t - t.min()
    return None


# ---------------------------------------------------------------------------- MRC ext headers
def _header_int16(raw_header: bytes, offset: int, byteorder: str) -> int:
    return int(np.frombuffer(raw_header, dtype=f"{byteorder}i2", count=1, offset=offset)[0])


def serialem_angles(raw_header: bytes, ext: bytes, n_frames: int, byteorder: str,
                    exttyp: bytes) -> np.ndarray | None:
    """Tilt angles from a SerialEM/IMOD-style extended header, or ``None`` if there are none.

    IMOD keeps ``nint`` (bytes per section) and ``nreal`` (bit flags) as int16 at bytes 128 and
    130 of the main header; flag 1 means the first int16 of each record is tilt x 100.
    """
    nint = _header_int16(raw_header, 128, byteorder)
    nreal = _header_int16(raw_header, 130, byteorder)
    serialem_type = exttyp in (b"SERI", b"AGAR")
    # IMOD's nreal flags are only meaningful when nint is not a count of 4-byte integers.
    if not (nreal & 1) or nint <= 0 or (not serialem_type and exttyp not in (b"", b"\0" * 4)):
        return None
    if len(ext) < nint * n_frames:
        return None
    rec = np.frombuffer(ext, dtype=np.uint8, count=nint * n_frames).reshape(n_frames, nint)
    tilt = rec[:, :2].copy().view(f"{byteorder}i2").reshape(-1).astype(np.float64) / 100.0
    return tilt


def fei_info(indexed_ext_header: np.ndarray | None, n_frames: int) -> AngleInfo | None:
    """Angles, pixel size, tilt axis and times from an FEI1/FEI2 extended header."""
    if indexed_ext_header is None or len(indexed_ext_header) < n_frames:
        return None
    h = indexed_ext_header[:n_frames]
    info = AngleInfo()
    alpha = np.asarray(h["Alpha tilt"], dtype=np.float64)
    if np.all(np.isfinite(alpha)):
        info.tilt_angles = alpha
        info.source = "FEI extended header (Alpha tilt)"
    px = float(h["Pixel size X"][0])
    if np.isfinite(px) and px > 0:
        info.pixel_size_A = px * 1e10  # metres -> Å
        info.pixel_size_source = "FEI extended header (Pixel size X)"
    axis = float(h["Tilt axis angle"][0])
    if np.isfinite(axis) and axis != 0.0:
        info.tilt_axis_angle_deg = axis
        info.tilt_axis_source = "FEI extended header (Tilt axis angle)"
    ts = np.asarray(h["Timestamp"], dtype=np.float64)  # OLE date: days since 1899-12-30
    if np.all(np.isfinite(ts)) and np.ptp(ts) > 0:
        info.acquisition_times_s = (ts - ts.min()) * 86400.0
    return info
