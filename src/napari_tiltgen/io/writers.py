"""Writers: MRC (mrcfile) with an IMOD ``.rawtlt`` sidecar for tilt series, and TIFF (tifffile).

Every file goes through :mod:`napari_tiltgen.io.output` (the one output path of the package):

* an existing file (or sidecar) is never replaced unless ``overwrite=True``;
* the file a series or volume was read from, and its sidecars, are never replaced, even with
  ``overwrite=True`` (its data may be memory-mapped from it);
* the extension must match the format (``write_mrc`` refuses ``x.tif``; :func:`write` picks the
  format from the extension);
* data go to temporary files in the same folder that are renamed into place only once all are
  complete (a stack and its ``.rawtlt`` together), so a failed write leaves nothing half-written.

For a job, plan the outputs *before* the compute with :func:`plan_write` (or
:func:`napari_tiltgen.io.output.planned_outputs`) and pass the plan to :func:`write`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume
from napari_tiltgen.io.output import (
    DATA_SUFFIXES,
    FOLDER_SUFFIXES,
    MRC_SUFFIXES,
    TIFF_SUFFIXES,
    Content,
    OutputPlan,
    planned_outputs,
)


def _sources(obj: TiltSeries | Volume | None) -> list[str]:
    if obj is None:
        return []
    src = (obj.provenance or {}).get("source")
    return [src] if src else []


def sidecars_for(path: str | os.PathLike, kind: str) -> list[Path]:
    """Sidecars :func:`write` adds for ``kind`` ("tilt_series" or "volume") at ``path``."""
    path = Path(path)
    if kind == "tilt_series" and path.suffix.lower() in MRC_SUFFIXES:
        return [path.with_suffix(".rawtlt")]
    return []


def plan_write(path: str | os.PathLike, kind: str = "volume", *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = (),
               extra: Iterable[str | os.PathLike] = (), what: str | None = None) -> OutputPlan:
    """Validate, before any compute, the outputs of writing a ``kind`` to ``path``.

    ``extra``: more files written together with it (reports, ``.json``), all or nothing.
    """
    return planned_outputs(path, [*sidecars_for(path, kind), *extra], overwrite=overwrite,
                           inputs=inputs,
                           formats=DATA_SUFFIXES + (FOLDER_SUFFIXES if kind == "volume" else ()),
                           what=what or ("output tilt series" if kind == "tilt_series"
                                         else "output volume"))


def write(obj: TiltSeries | Volume, path: str | os.PathLike | None = None, *,
          overwrite: bool = False, plan: OutputPlan | None = None,
          inputs: Iterable[str | os.PathLike | None] = (),
          extra: Mapping[Path | str, Content] | None = None) -> Path:
    """Write by file extension (MRC family or TIFF), with sidecars and ``extra`` files.

    ``plan`` (from :func:`plan_write`) is the validated set of outputs; without it, one is made
    here. ``extra`` maps further planned paths to their contents (text, bytes or a writer).
    """
    kind = "tilt_series" if isinstance(obj, TiltSeries) else "volume"
    if plan is None:
        if path is None:
            raise ValueError("give a path or a plan")
        plan = plan_write(path, kind, overwrite=overwrite,
                          inputs=[*inputs, *_sources(obj)], extra=list(extra or {}))
    target = Path(path) if path is not None else plan.main
    contents = file_contents(obj, target)
    planned = {os.path.abspath(p) for p in plan.paths}
    contents = {p: c for p, c in contents.items() if os.path.abspath(p) in planned or p == target}
    contents.update(extra or {})
    plan.commit(contents)
    return target


def write_mrc(obj: TiltSeries | Volume, path: str | os.PathLike, *, overwrite: bool = False,
              sidecar: bool = True, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Write a tilt series or volume as MRC (mode 2, float32) with its voxel size in Å.

    A tilt series is flagged as an image stack (ispg 0) and gets an IMOD ``.rawtlt`` sidecar
    (unless ``sidecar=False``) so IMOD, AreTomo and this package read its angles back.
    A volume is flagged as a volume (ispg 1). The name must end in an MRC extension.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() not in MRC_SUFFIXES:
        raise TiltgenError(f"an MRC file must end in one of {', '.join(MRC_SUFFIXES)}; got "
                           f"{path.suffix or 'no extension'!r} (use write() or .tif for TIFF).",
                           path)
    contents = _mrc_contents(obj, path, sidecar=sidecar)
    plan = planned_outputs(path, [p for p in contents if p != path], overwrite=overwrite,
                           inputs=[*inputs, *_sources(obj)])
    plan.commit(contents)
    return path


def write_tiff(obj: TiltSeries | Volume, path: str | os.PathLike, *,
               overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Write a tilt series or volume as a float32 TIFF stack.

    The full napari-tiltgen metadata (angles, pixel size, tilt axis, shifts, provenance) is
    stored as JSON in the TIFF description, and the pixel size also in the resolution tags
    (pixels per cm) for other programs.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise TiltgenError(f"a TIFF file must end in .tif or .tiff; got "
                           f"{path.suffix or 'no extension'!r}.", path)
    plan = planned_outputs(path, overwrite=overwrite, inputs=[*inputs, *_sources(obj)])
    plan.commit({path: _tiff_writer(obj)})
    return path


def file_contents(obj: TiltSeries | Volume, path: str | os.PathLike) -> dict[Path, Content]:
    """The files (path -> writer) that :func:`write` makes for ``obj`` at ``path``.

    For several objects written all or nothing: merge their dicts and pass them to
    :meth:`~napari_tiltgen.io.output.OutputPlan.commit` of one plan.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return _mrc_contents(obj, path, sidecar=True)
    if suffix in TIFF_SUFFIXES:
        return {path: _tiff_writer(obj)}
    if suffix in FOLDER_SUFFIXES and isinstance(obj, Volume):
        return {path: _zarr_writer(obj)}
    raise TiltgenError(f"cannot write {suffix!r} files; use .mrc, .st, .rec, .tif (or .zarr "
                       "for a volume).", path)


def _zarr_writer(vol: Volume) -> Callable[[Path], None]:
    def write_store(tmp: Path) -> None:
        from napari_tiltgen.io.ome_zarr import ZarrSlabWriter

        w = ZarrSlabWriter(tmp, vol.shape, vol.voxel_size_A, _label(vol), chunk_rows=64)
        for y in range(0, vol.shape[1], 64):  # plane blocks: no second copy of the volume
            w.write(y, vol.data[:, y:y + 64, :])
        w.finish()

    return write_store


WRITERS: dict[str, Callable[..., Path]] = {
    **{s: write_mrc for s in MRC_SUFFIXES},
    **{s: write_tiff for s in TIFF_SUFFIXES},
}


# ---------------------------------------------------------------------------- helpers
def _label(obj: TiltSeries | Volume) -> str:
    p = obj.provenance
    what = p.get("method") or ("tilt series" if isinstance(obj, TiltSeries) else "volume")
    return f"napari-tiltgen: {what}"


def _mrc_contents(obj: TiltSeries | Volume, path: Path, sidecar: bool) -> dict[Path, Content]:
    px = obj.pixel_size_A if isinstance(obj, TiltSeries) else obj.voxel_size_A

    def write_data(tmp: Path) -> None:
        import mrcfile

        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(obj.data, dtype=np.float32))
            if isinstance(obj, TiltSeries):
                mrc.set_image_stack()
            else:
                mrc.set_volume()
            if px:
                mrc.voxel_size = px
            mrc.add_label(_label(obj)[:80])

    out: dict[Path, Content] = {path: write_data}
    angles = obj.tilt_angles if isinstance(obj, TiltSeries) else None
    if sidecar and angles is not None:
        out[path.with_suffix(".rawtlt")] = lambda tmp: md.write_angle_file(tmp, angles)
    return out


def _tiff_writer(obj: TiltSeries | Volume) -> Callable[[Path], None]:
    px = obj.pixel_size_A if isinstance(obj, TiltSeries) else obj.voxel_size_A

    def write_data(tmp: Path) -> None:
        import tifffile

        kwargs = {}
        if px:
            per_cm = 1e8 / px
            kwargs = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
        meta = {METADATA_KEY: obj.to_metadata()}
        # minisblack: a 3- or 4-frame stack is otherwise stored as one planar RGB image
        tifffile.imwrite(tmp, np.ascontiguousarray(obj.data, dtype=np.float32),
                         photometric="minisblack", metadata=meta, **kwargs)

    return write_data
