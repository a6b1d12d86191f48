"""Readers for tilt series and volumes from every common microscope format.

``read(path)`` returns a :class:`~napari_tiltgen.io.model.TiltSeries` or a
:class:`~napari_tiltgen.io.model.Volume`; :func:`read_tilt_series` and :func:`read_volume` insist
on one kind.

* MRC family (``.mrc .mrcs .st .ali .preali .rec .map``) through mrcfile's header definition,
  also without the ``MAP `` stamp and with a zero machine stamp (FEI/Inspect3D): the header sizes
  are validated against the file size instead. Float32 data is memory-mapped; int8/int16/uint16
  (and other) modes stay memory-mapped too and are converted to float32 frame by frame on access
  (:class:`~napari_tiltgen.io.lazy.LazyFrames`).
* TIFF via tifffile; Gatan DM3/DM4, Velox and NCEM EMD, FEI SER/EMI and HyperSpy/etspy ``.hspy``
  via rosettasciio (:mod:`napari_tiltgen.io.formats`).
* A folder, or a glob pattern, of one image file per tilt opens as one series ordered by angle.

Metadata sources (angles, pixel size, tilt axis, shifts) and their order are described in
:mod:`napari_tiltgen.io.metadata`; each value's source is stored in ``provenance``. Angles stored
as 0..180 degrees, radians or x100 integers are recognised and mapped, with a note. Several
frames at one tilt are averaged (``multi_frame="mean"``, or ``"sum"``; ``"keep"`` leaves them).
When no metadata gives the tilt axis, the series says so (``tilt_axis_known = False``).

Every problem a file can have (truncated, header/data size mismatch, empty, not 3-D, wrong angle
count, NaN/inf frames, unreadable sidecar, no permission) raises
:class:`~napari_tiltgen.core.errors.TiltgenError` naming the file. Nothing is ever written next to or
over the input.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io import formats
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.lazy import LazyFrames
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.io.mrc import _read_mrc
from napari_tiltgen.io.output import FOLDER_SUFFIXES, MRC_SUFFIXES, TIFF_SUFFIXES
from napari_tiltgen.io.tiff import _read_tiff

__all__ = ["AXIS_NOT_RECORDED", "FORMAT_SUFFIXES", "MRC_SUFFIXES", "PER_TILT_SUFFIXES", "SUPPORTED_SUFFIXES", "TIFF_SUFFIXES", "VOLUME_SUFFIXES", "Kind", "MultiFrame", "read", "read_tilt_series", "read_volume"]


FORMAT_SUFFIXES = formats.SUFFIXES


SUPPORTED_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES + FORMAT_SUFFIXES


#: Suffixes of one-image-per-tilt files that a folder or glob may hold.
PER_TILT_SUFFIXES = (".dm3", ".dm4", ".tif", ".tiff", ".mrc", ".ser", ".emd")


#: Suffixes that always hold a reconstructed volume, never a tilt series.
VOLUME_SUFFIXES = (".rec", ".map")


Kind = Literal["auto", "tilt_series", "volume"]


MultiFrame = Literal["mean", "sum", "keep"]


AXIS_NOT_RECORDED = "not recorded in the file (unknown; estimate it or give --tilt-axis)"


def read(
    path: str | os.PathLike,
    kind: Kind = "auto",
    *,
    tilt_start: float | None = None,
    tilt_step: float | None = None,
    tilt_file: str | os.PathLike | None = None,
    pixel_size_A: float | None = None,
    check_finite: bool = True,
    tilt_axis_deg: float | None = None,
    multi_frame: MultiFrame = "mean",
) -> TiltSeries | Volume:
    """Read a tilt series or a volume from a file, a folder of per-tilt files or a glob.

    Parameters
    ----------
    path
        A file (``.mrc .mrcs .st .ali .preali .rec .map .tif .tiff .dm3 .dm4 .emd .ser .emi
        .hspy``), a folder of one image per tilt, or a glob pattern such as ``"ts/*.dm3"``.
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
        Scan float data for NaN/inf (chunked; a memory map stays a memory map) and refuse them.
    tilt_axis_deg
        Tilt-axis angle (degrees from image Y, IMOD convention); overrides metadata.
    multi_frame
        Frames sharing one tilt angle: ``"mean"`` (default) or ``"sum"`` them into one tilt,
        or ``"keep"`` them as separate frames. Said in ``provenance["notes"]``.

    Returns
    -------
    TiltSeries or Volume
    """
    if multi_frame not in ("mean", "sum", "keep"):
        raise TiltgenError(f"multi_frame must be 'mean', 'sum' or 'keep', not {multi_frame!r}.")
    if (tilt_start is None) != (tilt_step is None):
        raise TiltgenError("give both a tilt start and a tilt step (degrees), or neither.")
    text = os.fspath(path)
    opts: dict[str, Any] = {
        "kind": kind, "tilt_start": tilt_start, "tilt_step": tilt_step, "tilt_file": tilt_file,
        "pixel_size_A": pixel_size_A, "check_finite": check_finite,
        "tilt_axis_deg": tilt_axis_deg, "multi_frame": multi_frame}
    try:
        if isinstance(text, str) and any(c in text for c in "*?[") and not Path(text).exists():
            files = sorted(Path(f) for f in _glob.glob(text))
            if not files:
                raise TiltgenError("no files match this pattern.", text)
            data, hdr = _read_file_set(files, Path(text))
            return _assemble(Path(text), data, hdr, **opts)
        path = Path(path)
        if not path.exists():
            raise TiltgenError("no such file.", path)
        if not os.access(path, os.R_OK):
            raise PermissionError(13, "Permission denied", str(path))
        if path.is_dir() and path.suffix.lower() in FOLDER_SUFFIXES:  # OME-Zarr
            if kind == "tilt_series":
                raise TiltgenError("an OME-Zarr folder holds a volume, not a tilt series.", path)
            from napari_tiltgen.io.ome_zarr import read_ome_zarr_volume

            return read_ome_zarr_volume(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in PER_TILT_SUFFIXES)
            if not files:
                raise TiltgenError(
                    "the folder holds no per-tilt image files (" + ", ".join(PER_TILT_SUFFIXES)
                    + "); open a stack file, or a folder with one image per tilt.", path)
            data, hdr = _read_file_set(files, path)
            return _assemble(path, data, hdr, **opts)
        if path.stat().st_size == 0:
            raise TiltgenError("the file is empty (0 bytes).", path)
        suffix = path.suffix.lower()
        if suffix in MRC_SUFFIXES:
            data, hdr = _read_mrc(path)
        elif suffix in TIFF_SUFFIXES:
            data, hdr = _read_tiff(path)
        elif suffix in FORMAT_SUFFIXES:
            data, hdr = formats.read_signal(path)
        else:
            raise TiltgenError(
                f"unsupported file type {suffix!r}; napari-tiltgen reads "
                f"{', '.join(SUPPORTED_SUFFIXES)}, a folder of per-tilt images or a glob.",
                path,
            )
        return _assemble(path, data, hdr, **opts)
    except PermissionError as exc:
        where = exc.filename or text
        raise TiltgenError("permission denied: this account may not read it; check the "
                           "file's or folder's permissions (ls -l).", where) from None
    except IsADirectoryError as exc:
        raise TiltgenError("is a folder where a file was expected.", exc.filename or text) \
            from None


def _assemble(path: Path, data: Any, hdr: dict[str, Any], *, kind: Kind,
              tilt_start: float | None, tilt_step: float | None, tilt_file: Any,
              pixel_size_A: float | None, check_finite: bool, tilt_axis_deg: float | None,
              multi_frame: MultiFrame) -> TiltSeries | Volume:
    suffix = path.suffix.lower()
    if data.ndim != 3:
        what = {2: "a single 2-D image", 4: "4-D data", 5: "5-D data"}.get(
            data.ndim, f"{data.ndim}-D data")
        raise TiltgenError(
            f"the file holds {what} of shape {tuple(data.shape)}; a tilt series or volume must be "
            "a 3-D stack (n_tilts, ny, nx)"
            + (" (or a folder/glob of one image per tilt)." if data.ndim == 2 else "."),
            path,
        )
    if check_finite:
        _check_finite(data, path)

    n = data.shape[0]
    angles = _gather_angles(path, n, hdr, tilt_start, tilt_step, tilt_file)
    notes = list(hdr.get("notes", [])) + angles.notes
    prov: dict[str, Any] = {
        "source": str(path.resolve()) if path.exists() else str(path),
        "file_dtype": hdr["file_dtype"],
        "angles_source": angles.source or "not found",
        "pixel_size_source": "",
        "tilt_axis_source": "",
        "notes": notes,
    }
    if hdr.get("format"):
        prov["format"] = hdr["format"]
    px, prov["pixel_size_source"] = _choose_pixel_size(pixel_size_A, hdr, angles)

    if kind == "auto":
        if suffix in VOLUME_SUFFIXES or hdr.get("is_volume") and angles.tilt_angles is None:
            kind = "volume"
        else:
            kind = "tilt_series"
    if kind == "volume":
        prov.pop("tilt_axis_source")
        vol = data if isinstance(data, np.ndarray) else np.asarray(data, dtype=np.float32)
        return Volume(data=vol, voxel_size_A=px, provenance=prov)

    # tilt axis: user > metadata > unknown (never silently "vertical")
    axis_known = True
    if tilt_axis_deg is not None:
        axis, prov["tilt_axis_source"] = float(tilt_axis_deg), "user"
    elif angles.tilt_axis_angle_deg is not None:
        axis, prov["tilt_axis_source"] = float(angles.tilt_axis_angle_deg), angles.tilt_axis_source
    else:
        axis, axis_known, prov["tilt_axis_source"] = 0.0, False, AXIS_NOT_RECORDED

    shifts = None
    saved = hdr.get("tiltgen_metadata") or {}
    if angles.shifts_px is not None:
        shifts, prov["shifts_source"] = angles.shifts_px, angles.shifts_source
    elif saved.get("shifts_px") is not None:
        shifts = saved.get("shifts_px")
        prov["shifts_source"] = "TIFF (napari-tiltgen metadata)"

    tilt_angles = angles.tilt_angles
    times = angles.acquisition_times_s
    if tilt_angles is not None and multi_frame != "keep":
        groups = md.duplicate_angle_groups(tilt_angles)
        if groups is not None:
            sizes = sorted({len(g) for g in groups})
            src = data.source if isinstance(data, LazyFrames) and data._groups is None else data
            data = LazyFrames(src, groups, reduce="sum" if multi_frame == "sum" else "mean")
            tilt_angles = np.array([tilt_angles[g[0]] for g in groups])
            if times is not None:
                times = np.array([times[g].min() for g in groups])
            if shifts is not None:
                sh = np.asarray(shifts, dtype=np.float64).reshape(n, 2)
                shifts = np.array([sh[g].mean(axis=0) for g in groups])
            multi = sum(len(g) > 1 for g in groups)
            verb = "summed" if multi_frame == "sum" else "averaged"
            notes.append(
                f"{n} frames at {len(groups)} distinct tilt angles ({multi} tilt(s) with "
                f"{'/'.join(str(k) for k in sizes if k > 1)} frames each): the frames of each "
                f"tilt were {verb} (multi_frame='keep' keeps them)")
            prov["frames_per_tilt"] = [len(g) for g in groups]
    return TiltSeries(
        data=data,
        tilt_angles=tilt_angles,
        pixel_size_A=px,
        tilt_axis_angle_deg=axis,
        shifts_px=shifts,
        acquisition_times_s=times,
        provenance=prov,
        tilt_axis_known=axis_known,
    )


def read_tilt_series(path: str | os.PathLike, **kwargs: Any) -> TiltSeries:
    """Read ``path`` as a tilt series (see :func:`read` for the keyword arguments)."""
    return read(path, "tilt_series", **kwargs)  # type: ignore[return-value]


def read_volume(path: str | os.PathLike, **kwargs: Any) -> Volume:
    """Read ``path`` as a volume (see :func:`read`)."""
    return read(path, "volume", **kwargs)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- per-tilt files
_NAME_ANGLE = re.compile(r"(?<![\d.])([-+]\d+(?:\.\d+)?|\d+\.\d+)(?![\d.])")


def _angle_from_name(stem: str) -> float | None:
    found = _NAME_ANGLE.findall(stem)
    return float(found[-1]) if found else None


def _read_one_image(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in FORMAT_SUFFIXES:
        return formats.read_image(path)
    if suffix in MRC_SUFFIXES:
        data, h = _read_mrc(path)
    else:
        data, h = _read_tiff(path)
    img = np.asarray(data, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise TiltgenError(f"a folder/glob of per-tilt files needs one 2-D image per file; this "
                           f"file holds shape {tuple(img.shape)}.", path)
    return img, {"alpha": None, "alpha_source": "", "pixel_size_A": h.get("voxel_size_A"),
                 "pixel_size_source": h.get("pixel_size_source", "MRC header (voxel size)"),
                 "file_dtype": h["file_dtype"]}


def _read_file_set(files: list[Path], where: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """One image per tilt (a folder or glob) -> a stack ordered by tilt angle."""
    images, metas = [], []
    for f in files:
        img, meta = _read_one_image(f)
        if img.ndim != 2:
            raise TiltgenError(f"a per-tilt file must hold one 2-D image; it holds shape "
                               f"{tuple(img.shape)}.", f)
        if images and img.shape != images[0].shape:
            raise TiltgenError(f"its image is {img.shape[1]} x {img.shape[0]} px but "
                               f"{files[0].name} is {images[0].shape[1]} x {images[0].shape[0]} "
                               "px; every tilt must have the same size.", f)
        images.append(img)
        metas.append(meta)
    notes: list[str] = []
    kinds = sorted({f.suffix.lower() for f in files})
    info = md.AngleInfo()
    alphas = [m["alpha"] for m in metas]
    named = [_angle_from_name(f.stem) for f in files]
    if len(files) > 1 and all(a is not None for a in alphas) and len(set(alphas)) == 1:
        notes.append(f"every file has the same stage alpha ({alphas[0]:g} deg): not used as "
                     "tilt angles")
        alphas = [None] * len(files)
    if len(files) > 1 and all(a is not None for a in named) and len(set(named)) == 1:
        named = [None] * len(files)
    if all(a is not None for a in alphas):
        angles = np.asarray(alphas, dtype=np.float64)
        info.source = f"per-file {metas[0]['alpha_source']} ({len(files)} files)"
    elif all(a is not None for a in named):
        angles = np.asarray(named, dtype=np.float64)
        info.source = f"numbers in the {len(files)} file names (e.g. {files[0].name})"
    else:
        angles = None
        notes.append(f"{len(files)} files in name order; no tilt angle in their metadata or "
                     "names")
    order = np.arange(len(files))
    if angles is not None:
        order = np.argsort(angles, kind="stable")
        info.tilt_angles = angles[order]
        if np.any(order != np.arange(len(files))):
            notes.append(f"{len(files)} files ordered by tilt angle")
    stack = np.stack([images[i] for i in order]).astype(np.float32, copy=False)
    px = metas[0]["pixel_size_A"]
    pxs = [m["pixel_size_A"] for m in metas]
    if px and any(p is None or abs(p - px) > 1e-3 * px for p in pxs):
        notes.append("the files disagree on the pixel size; the first file's is used")
    hdr: dict[str, Any] = {
        "file_dtype": metas[0]["file_dtype"],
        "voxel_size_A": px,
        "pixel_size_source": f"{files[0].name}: {metas[0]['pixel_size_source']}" if px else "",
        "notes": notes,
        "format": f"{len(files)} per-tilt files ({', '.join(kinds)}) in {where}",
        "format_info": info,
        "per_tilt_files": [str(files[i]) for i in order],
    }
    return stack, hdr


# ---------------------------------------------------------------------------- angles etc.
def _gather_angles(path: Path, n: int, hdr: dict[str, Any], tilt_start: float | None,
                   tilt_step: float | None, tilt_file: Any) -> md.AngleInfo:
    """Tilt angles and related metadata, from the first source that has them."""
    is_file = path.is_file()
    mdoc_path = md.mdoc_for(path) if is_file else None
    mdoc = md.read_mdoc(mdoc_path, n_frames=n) if mdoc_path else None
    fei = md.fei_info(hdr.get("fei"), n) if "fei" in hdr else None
    old_fei: md.AngleInfo | None = hdr.get("old_fei")
    fmt: md.AngleInfo | None = hdr.get("format_info")

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
    elif is_file and (side := md.angle_sidecar_for(path)) is not None:
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
    elif old_fei is not None and old_fei.tilt_angles is not None:
        info.tilt_angles = old_fei.tilt_angles
        info.source = old_fei.source
    elif fmt is not None and fmt.tilt_angles is not None:
        info.tilt_angles = check(np.asarray(fmt.tilt_angles, np.float64), fmt.source, None)
        info.source = fmt.source

    if info.tilt_angles is not None and tilt_start is None:
        info.tilt_angles, notes = md.normalise_angles(info.tilt_angles)
        info.notes.extend(notes)

    # Other fields: the first source that knows them.
    saved = hdr.get("tiltgen_metadata") or {}
    xf_path = md.xf_for(path) if is_file else None
    xf = md.read_xf(xf_path, n) if xf_path else None
    for src in (mdoc, fei, old_fei, fmt):
        if src is None:
            continue
        if info.pixel_size_A is None and src.pixel_size_A:
            info.pixel_size_A, info.pixel_size_source = src.pixel_size_A, src.pixel_size_source
        if info.tilt_axis_angle_deg is None and src.tilt_axis_angle_deg is not None:
            info.tilt_axis_angle_deg = src.tilt_axis_angle_deg
            info.tilt_axis_source = src.tilt_axis_source
        if info.acquisition_times_s is None and src.acquisition_times_s is not None \
                and np.size(src.acquisition_times_s) == n:
            info.acquisition_times_s = np.asarray(src.acquisition_times_s, np.float64)
        if info.shifts_px is None and src.shifts_px is not None \
                and np.size(src.shifts_px) == 2 * n:
            info.shifts_px, info.shifts_source = src.shifts_px, src.shifts_source
    if info.tilt_axis_angle_deg is None and saved.get("tilt_axis_angle_deg") is not None \
            and saved.get("tilt_axis_known", True):
        info.tilt_axis_angle_deg = float(saved["tilt_axis_angle_deg"])
        info.tilt_axis_source = "TIFF (napari-tiltgen metadata)"
    if xf is not None:
        info.shifts_px = xf.shifts_px
        info.shifts_source = (f"{xf.source}: per-frame shifts applied by the projector "
                              "(recorded frame)")
        rot = float(np.mean(xf.rotation_deg))
        if info.tilt_axis_angle_deg is None:
            info.tilt_axis_angle_deg = -rot
            info.tilt_axis_source = f"{xf.source} (mean rotation {rot:.2f} deg, sign reversed)"
        spread = float(np.ptp(xf.rotation_deg))
        if spread > 0.5:
            info.notes.append(f"the {xf_path.name} rotations vary by {spread:.2f} deg between "  # type: ignore[union-attr]
                              "frames; only their mean is used (as the tilt axis)")
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


def _check_finite(data: Any, path: Path, chunk_bytes: int = 256 << 20) -> None:
    """Refuse NaN/inf, naming the first bad frames (chunked over frames for memory maps)."""
    if isinstance(data, LazyFrames) and not np.issubdtype(data.source_dtype, np.floating):
        return  # integers are always finite: no need to read the file
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
