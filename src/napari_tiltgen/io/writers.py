"""Writers: MRC (mrcfile) with an IMOD ``.rawtlt`` sidecar for tilt series, and TIFF (tifffile).

Safety rules, for every writer:

* an existing file (or sidecar) is never replaced unless ``overwrite=True``;
* the file a series or volume was read from is never replaced, even with ``overwrite=True``
  (its data may be memory-mapped from it);
* data go to a temporary file in the same folder that is renamed into place only once complete,
  so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume


def write_mrc(obj: TiltSeries | Volume, path: str | os.PathLike, *, overwrite: bool = False,
              sidecar: bool = True) -> Path:
    """Write a tilt series or volume as MRC (mode 2, float32) with its voxel size in Å.

    A tilt series is flagged as an image stack (ispg 0) and gets an IMOD ``.rawtlt`` sidecar
    (unless ``sidecar=False``) so IMOD, AreTomo and this package read its angles back.
    A volume is flagged as a volume (ispg 1).

    Returns
    -------
    Path
        The path written.
    """
    import mrcfile

    path = Path(path)
    targets = [path]
    angles = obj.tilt_angles if isinstance(obj, TiltSeries) else None
    tlt = path.with_suffix(".rawtlt")
    if sidecar and angles is not None:
        targets.append(tlt)
    _check_targets(obj, targets, overwrite)

    px = obj.pixel_size_A if isinstance(obj, TiltSeries) else obj.voxel_size_A

    def write(tmp: Path) -> None:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(obj.data, dtype=np.float32))
            if isinstance(obj, TiltSeries):
                mrc.set_image_stack()
            else:
                mrc.set_volume()
            if px:
                mrc.voxel_size = px
            label = _label(obj)
            mrc.add_label(label[:80])

    with _atomic(path) as tmp:
        write(tmp)
    if sidecar and angles is not None:
        with _atomic(tlt) as tmp:
            md.write_angle_file(tmp, angles)
    return path


def write_tiff(obj: TiltSeries | Volume, path: str | os.PathLike, *,
               overwrite: bool = False) -> Path:
    """Write a tilt series or volume as a float32 TIFF stack.

    The full napari-tiltgen metadata (angles, pixel size, tilt axis, shifts, provenance) is
    stored as JSON in the TIFF description, and the pixel size also in the resolution tags
    (pixels per cm) for other programs.
    """
    import tifffile

    path = Path(path)
    _check_targets(obj, [path], overwrite)
    px = obj.pixel_size_A if isinstance(obj, TiltSeries) else obj.voxel_size_A
    kwargs = {}
    if px:
        per_cm = 1e8 / px
        kwargs = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    meta = {METADATA_KEY: obj.to_metadata()}
    with _atomic(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(obj.data, dtype=np.float32),
                         metadata=meta, **kwargs)
    return path


WRITERS: dict[str, Callable[..., Path]] = {
    ".mrc": write_mrc, ".mrcs": write_mrc, ".st": write_mrc, ".ali": write_mrc,
    ".preali": write_mrc, ".rec": write_mrc, ".map": write_mrc,
    ".tif": write_tiff, ".tiff": write_tiff,
}


def write(obj: TiltSeries | Volume, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write by file extension (MRC family or TIFF)."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise TiltgenError(f"cannot write {suffix!r} files; use .mrc, .st, .rec or .tif.", path)
    return WRITERS[suffix](obj, path, overwrite=overwrite)


# ---------------------------------------------------------------------------- helpers
def _label(obj: TiltSeries | Volume) -> str:
    p = obj.provenance
    what = p.get("method") or ("tilt series" if isinstance(obj, TiltSeries) else "volume")
    return f"napari-tiltgen: {what}"


def _check_targets(obj: TiltSeries | Volume, targets: list[Path], overwrite: bool) -> None:
    source = obj.provenance.get("source")
    for t in targets:
        if source and Path(source).exists() and t.exists() and os.path.samefile(source, t):
            raise TiltgenError(
                "refusing to write over the file this data was read from; choose another name.",
                t,
            )
        if t.exists() and not overwrite:
            raise TiltgenError(
                "already exists; choose another name or allow overwriting explicitly "
                "(--overwrite / overwrite=True).",
                t,
            )
        if not t.parent.is_dir():
            raise TiltgenError("the folder does not exist.", t.parent)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise TiltgenError(f"could not write the file ({exc.strerror or exc}).", path) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
