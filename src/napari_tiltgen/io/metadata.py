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
5. Old FEI ("Agard"-style) extended header, written by FEI/Inspect3D before FEI1 existed: one
   record of ``nint`` int32 + ``nreal`` float32 per section (usually 0 + 32 = 128 bytes, 1024
   records = 131072 bytes), told apart from IMOD's by ``nint``/``nreal`` not being IMOD's
   bytes-and-flags pair (IMOD ``header`` rule). Floats: 0 ``a_tilt`` (degrees), 1 ``b_tilt``,
   2-4 stage x/y/z, 5-6 image shift, 7 defocus, 8 exposure time, 9 mean intensity, 10 tilt axis
   (degrees), 11 pixel size (metres), 12 magnification.

Also here: IMOD ``.xf`` transforms (per-frame shifts and rotation), the angle-convention check
(:func:`normalise_angles`: 0..180 ranges, radians, x100 integers) and the multi-frame grouping
(:func:`duplicate_angle_groups`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_tiltgen.core.errors import TiltgenError

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
    shifts_px: np.ndarray | None = None
    shifts_source: str = ""


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
                    info.tilt_axis_source = (f"SerialEM mdoc title line 'Tilt axis angle' "
                                             f"({path.name})")
            continue
        if "=" not in line:
            continue
        ax = _AXIS.search(line)
        if ax and info.tilt_axis_angle_deg is None:
            info.tilt_axis_angle_deg = float(ax.group(1))
            where = "[ZValue] section" if current is not None else "header"
            info.tilt_axis_source = f"SerialEM mdoc {where} 'Tilt axis angle' ({path.name})"
            continue
        k, v = (s.strip() for s in line.split("=", 1))
        if current is not None:
            current[k] = v
        elif k == "PixelSpacing":
            global_px = v
        elif k in ("TiltAxisAngle", "Tilt axis angle") and info.tilt_axis_angle_deg is None:
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


def imod_nbytes_and_flags(nint: int, nreal: int) -> bool:
    """IMOD's test: ``nint`` is the byte count that the ``nreal`` flag bits add up to."""
    if nreal < 0 or nreal >= 1 << 16 or nint < 0:
        return False
    sizes = {1: 2, 2: 6, 4: 4, 8: 2, 16: 2, 32: 4}
    total = sum(b for bit, b in sizes.items() if nreal & bit)
    return nreal != 0 and total == nint and not (nreal & ~63)


def old_fei_info(raw_header: bytes, ext: bytes, n_frames: int, byteorder: str,
                 exttyp: bytes) -> AngleInfo | None:
    """Angles, tilt axis and pixel size from an old FEI / Agard-style extended header.

    ``None`` when the extended header is not of that kind or its values are not plausible
    (angles not finite or beyond 180 degrees in magnitude, all records zero).
    """
    if exttyp in (b"FEI1", b"FEI2", b"SERI", b"AGAR", b"CCP4", b"MRCO") or not ext:
        return None
    nint = _header_int16(raw_header, 128, byteorder)
    nreal = _header_int16(raw_header, 130, byteorder)
    if imod_nbytes_and_flags(nint, nreal):
        return None
    if nint < 0 or nreal < 12:
        if not (nint == 0 and nreal == 0 and len(ext) >= 128 * max(n_frames, 1024)):
            return None
        nint, nreal = 0, 32  # FEI files with the counts left at 0 and the 1024-record block
    rec = 4 * (nint + nreal)
    if len(ext) < rec * n_frames:
        return None
    recs = np.frombuffer(ext, dtype=np.uint8, count=rec * n_frames).reshape(n_frames, rec)
    floats = recs[:, 4 * nint:].copy().view(f"{byteorder}f4").astype(np.float64)
    alpha = floats[:, 0]
    if not np.all(np.isfinite(alpha)) or np.any(np.abs(alpha) > 180.0 + 1e-3):
        return None
    if np.any((alpha != 0.0) & (np.abs(alpha) < 1e-6)):  # denormal-like: not angles
        return None
    if n_frames > 2 and np.ptp(alpha) < 0.5:  # a tilt series' angles change
        return None
    info = AngleInfo(tilt_angles=alpha, source="old FEI extended header (a_tilt)")
    axis = float(floats[0, 10])
    if np.isfinite(axis) and axis != 0.0 and abs(axis) <= 360.0:
        info.tilt_axis_angle_deg = axis
        info.tilt_axis_source = "old FEI extended header (tilt_axis)"
    px = float(floats[0, 11])
    if np.isfinite(px) and 0 < px < 1e-6:
        info.pixel_size_A = px * 1e10
        info.pixel_size_source = "old FEI extended header (pixel_size, m)"
    return info


# ---------------------------------------------------------------------------- IMOD .xf
@dataclass
class XfInfo:
    """Per-frame transforms of an IMOD ``.xf`` file, turned into this package's terms."""

    shifts_px: np.ndarray  # (n, 2) (dy, dx) in the recorded frame
    rotation_deg: np.ndarray  # (n,) rotation that aligns each frame (counter-clockwise)
    source: str


def xf_for(stack: Path) -> Path | None:
    """IMOD ``stack.xf`` (final) or ``stack.prexf`` (coarse) for a raw stack; none for ``.ali``."""
    if stack.suffix.lower() in (".ali", ".preali", ".rec"):
        return None
    return find_sidecar(stack, (".xf", ".prexf"))


def read_xf(path: str | os.PathLike, n_frames: int) -> XfInfo:
    """Read an IMOD ``.xf``: one line ``A11 A12 A21 A22 DX DY`` per frame.

    IMOD maps a raw-frame position ``r`` (pixels from the centre, y up) to the aligned position
    ``A r + d``. The aligned frame has the tilt axis along y, and a projection of the volume
    sits there unshifted, so in the recorded frame it appears at ``A^-1 (p - d)``: the shift in
    the recorded frame (this package's ``shifts_px`` convention) is ``-A^-1 d``, and the
    rotation ``atan2(A21, A11)`` is minus the tilt-axis angle.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TiltgenError(f"cannot read the .xf file ({exc.strerror}).", path) from exc
    except UnicodeDecodeError as exc:
        raise TiltgenError("the .xf file is not text.", path) from exc
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            vals = [float(v) for v in parts[:6]]
        except ValueError:
            raise TiltgenError(f"line {lineno} of the .xf file is not 6 numbers: "
                               f"{line.strip()[:60]!r}.", path) from None
        if len(vals) != 6:
            raise TiltgenError(f"line {lineno} of the .xf file has {len(vals)} numbers, not 6 "
                               "(A11 A12 A21 A22 DX DY).", path)
        rows.append(vals)
    if len(rows) != n_frames:
        raise TiltgenError(f"the .xf file has {len(rows)} transforms but the stack has "
                           f"{n_frames} frames; the counts must match.", path)
    m = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise TiltgenError("the .xf file contains NaN or infinite values.", path)
    a = m[:, :4].reshape(-1, 2, 2)
    d = m[:, 4:6]
    try:
        inv = np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise TiltgenError("the .xf file has a singular transform.", path) from None
    s_xy = -np.einsum("nij,nj->ni", inv, d)  # (dx, dy) in the recorded frame
    rot = np.degrees(np.arctan2(a[:, 1, 0], a[:, 0, 0]))
    return XfInfo(shifts_px=s_xy[:, ::-1].copy(), rotation_deg=rot,
                  source=f"IMOD {path.suffix} transforms ({path.name})")


# ---------------------------------------------------------------------------- conventions
def normalise_angles(a: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Recognise tilt angles stored in other conventions and map them to degrees in [-90, 90].

    * **x100 integers** (SerialEM/IMOD store tilt x 100): all values whole numbers, some beyond
      180 in magnitude and none beyond 18000 -> divided by 100.
    * **radians**: more than 5 tilts, all ``|a| <= pi`` and a span above 1 (57 degrees as
      degrees would be a series of at most +-3.1 degrees, which no tomography holder records)
      -> converted to degrees.
    * **0..180 ranges** (some tools count from one end of the range): all values in [0, 180]
      with some above 90 -> 90 degrees subtracted, so that the file's 90 degrees is the
      reconstruction's 0 degrees (the frames keep their order and relative angles; only the
      volume's orientation about the tilt axis depends on the choice).
    * **descending order** is kept: every frame keeps its own angle, in file order.

    Returns the angles and notes saying what was done (empty when nothing).
    """
    a = np.asarray(a, dtype=np.float64)
    notes: list[str] = []
    if a.size == 0 or not np.all(np.isfinite(a)):
        return a, notes
    amax = float(np.max(np.abs(a)))
    if 180.0 < amax <= 18000.0 and np.allclose(a, np.round(a), atol=1e-6):
        a = a / 100.0
        notes.append("tilt angles were stored x100 (whole numbers up to "
                     f"{amax:.0f}); divided by 100")
        amax = float(np.max(np.abs(a)))
    span = float(a.max() - a.min())
    if a.size > 5 and amax <= np.pi + 1e-3 and span > 1.0:
        a = np.degrees(a)
        notes.append(f"tilt angles were in radians (all within +-pi, span {span:.3f}); "
                     "converted to degrees")
    if a.min() >= -1e-6 and a.max() > 90.0 + 1e-6 and a.max() <= 180.0 + 1e-6:
        lo, hi = float(a.min()), float(a.max())
        a = a - 90.0
        notes.append(f"tilt angles were given as {lo:g}..{hi:g} deg (a 0..180 convention); 90 "
                     "deg subtracted so they lie in -90..90 (give --tilt-start/--tilt-step to "
                     "override)")
    if a.size > 2:
        d = np.diff(a)
        if np.all(d <= 0) and np.any(d < 0):
            notes.append("tilt angles descend in file order; frames kept in file order, each "
                         "with its own angle")
    return a, notes


def duplicate_angle_groups(a: np.ndarray, tol_deg: float = 0.05) -> list[np.ndarray] | None:
    """Groups of frames recorded at the same tilt (within ``tol_deg``), in first-seen order.

    0.05 degrees: frames of one tilt read back from the stage differ by a few hundredths, while
    tilt steps below 0.1 degrees are not used for tomography.

    ``None`` when every frame has its own angle.
    """
    a = np.asarray(a, dtype=np.float64)
    groups: list[list[int]] = []
    reps: list[float] = []
    for i, v in enumerate(a):
        for g, r in zip(groups, reps):
            if abs(v - r) <= tol_deg:
                g.append(i)
                break
        else:
            groups.append([i])
            reps.append(float(v))
    if len(groups) == a.size:
        return None
    return [np.asarray(g, dtype=np.intp) for g in groups]
