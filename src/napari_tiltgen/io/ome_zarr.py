"""Volumes as OME-Zarr (NGFF 0.4: Zarr v2 arrays, a 2x mean pyramid), written slab by slab.

The streamed reconstruction (:mod:`napari_tiltgen.recon.outofcore`) writes ``--out vol.zarr``
through :class:`ZarrSlabWriter`: level ``0`` takes the slabs as they come (chunks of whole slab
rows, so no chunk is read back), :meth:`ZarrSlabWriter.finish` adds levels ``1, 2, ...`` (each
the 2 x 2 x 2 mean of the one before, computed a few planes at a time) down to about 64 voxels,
and the ``multiscales`` metadata with the voxel size in ångström. napari opens the result lazily
(:func:`layer_data`: one dask array per level, ``multiscale=True``), so an 8 GiB volume shows at
once and only the visible chunks are read.

Written by hand on top of ``zarr`` (not ``ome-zarr-py``): the metadata is a dozen lines and the
writes must follow the slab stream, which ``ome-zarr``'s writers (whole arrays or dask graphs)
do not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.io.slabs import SlabStats

__all__ = ["ZarrSlabWriter", "layer_data", "read_ome_zarr_volume"]

#: Stop the pyramid when a level's smallest edge would fall below this (voxels).
MIN_LEVEL_EDGE = 64
#: Most levels (level 0 included).
MAX_LEVELS = 6


class ZarrSlabWriter:
    """Positioned writes of ``(nz, r, nx)`` slabs into a new OME-Zarr volume at ``path``."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int],
                 voxel_size_A: float | None, label: str, chunk_rows: int) -> None:
        import zarr

        nz, ny, nx = (int(s) for s in shape)
        self.path, self.shape, self.label = Path(path), (nz, ny, nx), label
        self.voxel_size_A = voxel_size_A
        self.root = zarr.open_group(str(self.path), mode="w", zarr_format=2)
        self.level0 = self.root.create_array(
            "0", shape=(nz, ny, nx), dtype="float32", fill_value=0.0,
            chunks=(min(nz, 128), max(1, min(ny, int(chunk_rows))), min(nx, 512)))
        self.stats = SlabStats()

    def write(self, y0: int, slab: np.ndarray) -> None:
        slab = np.asarray(slab, dtype=np.float32)
        self.level0[:, y0:y0 + slab.shape[1], :] = slab
        for plane in slab:  # one plane at a time: no slab-sized float64 copy
            self.stats.add_plane(plane)

    def finish(self, budget_bytes: float = 64 * 2**20) -> None:
        """Add the pyramid and the metadata (reads level 0 back about ``budget_bytes`` at a time)."""
        levels = [self.level0]
        while len(levels) < MAX_LEVELS and min(levels[-1].shape) // 2 >= MIN_LEVEL_EDGE:
            src = levels[-1]
            nz, ny, nx = (s // 2 for s in src.shape)
            dst = self.root.create_array(
                str(len(levels)), shape=(nz, ny, nx), dtype="float32", fill_value=0.0,
                chunks=(min(nz, 128), min(ny, 128), min(nx, 512)))
            rows = max(1, int(budget_bytes // max(1, 4 * src.shape[0] * src.shape[2] * 2)))
            for y in range(0, ny, rows):
                y1 = min(ny, y + rows)
                block = np.asarray(src[: 2 * nz, 2 * y: 2 * y1, : 2 * nx], dtype=np.float32)
                dst[:, y:y1, :] = block.reshape(nz, 2, y1 - y, 2, nx, 2).mean(axis=(1, 3, 5))
            levels.append(dst)
        v = float(self.voxel_size_A) if self.voxel_size_A else 1.0
        unit = "angstrom" if self.voxel_size_A else None
        axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
        datasets = []
        for k in range(len(levels)):
            f = 2.0**k
            datasets.append({"path": str(k), "coordinateTransformations": [
                {"type": "scale", "scale": [v * f] * 3},
                {"type": "translation", "translation": [v * (f - 1) / 2] * 3}]})
        st = self.stats
        self.root.attrs["multiscales"] = [{"version": "0.4", "name": self.label, "axes": axes,
                                           "datasets": datasets, "type": "mean (2x2x2)"}]
        self.root.attrs["napari_tiltgen"] = {
            "kind": "volume", "voxel_size_A": self.voxel_size_A, "label": self.label,
            "dmin": st.lo, "dmax": st.hi, "dmean": st.mean, "rms": st.rms}


def _open(path: str | os.PathLike) -> tuple[Any, dict[str, Any], list[str], float | None]:
    import zarr

    from napari_tiltgen.core.errors import TiltgenError

    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
        ms = (attrs.get("ome") or attrs)["multiscales"][0]  # NGFF 0.5 nests it under "ome"
        paths = [d["path"] for d in ms["datasets"]]
    except Exception as exc:  # noqa: BLE001 - any unreadable store gets one message
        raise TiltgenError(f"not a readable OME-Zarr image ({type(exc).__name__}: {exc}).",
                           path) from None
    own = attrs.get("napari_tiltgen", {})
    vs = own.get("voxel_size_A")
    if vs is None:
        axes = ms.get("axes", [])
        unit = axes[-1].get("unit") if axes and isinstance(axes[-1], dict) else None
        scale = next((t["scale"] for t in ms["datasets"][0].get("coordinateTransformations", [])
                      if t.get("type") == "scale"), None)
        factor = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4}.get(unit or "")
        vs = float(scale[-1]) * factor if scale and factor else None
    return root, attrs, paths, vs


def layer_data(path: str | os.PathLike) -> tuple:
    """napari layer data of an OME-Zarr volume: every level as a lazy dask array."""
    import dask.array as da

    root, attrs, paths, vs = _open(path)
    levels = [da.from_zarr(root[p]) for p in paths]
    if levels[0].ndim != 3:
        from napari_tiltgen.core.errors import TiltgenError

        raise TiltgenError(f"expected a 3-D volume, found {levels[0].ndim} dimensions.", path)
    meta = {"napari_tiltgen": {"kind": "volume", "voxel_size_A": vs,
                               "provenance": {"source": str(path), "format": "OME-Zarr"}}}
    own = attrs.get("napari_tiltgen", {})
    kw: dict[str, Any] = {"name": Path(path).name, "metadata": meta,
                          "multiscale": len(levels) > 1, "scale": [vs or 1.0] * 3}
    if own.get("dmin") is not None and own.get("dmax") is not None and own["dmax"] > own["dmin"]:
        kw["contrast_limits"] = [own["dmin"], own["dmax"]]
    return (levels if len(levels) > 1 else levels[0], kw, "image")


def read_ome_zarr_volume(path: str | os.PathLike) -> Any:
    """Level 0 of an OME-Zarr volume as a :class:`~napari_tiltgen.io.model.Volume` (in memory)."""
    from napari_tiltgen.io.model import Volume

    root, _, paths, vs = _open(path)
    data = np.asarray(root[paths[0]], dtype=np.float32)
    return Volume(data=data, voxel_size_A=vs,
                  provenance={"source": str(path), "pixel_size_source": "OME-Zarr metadata"})
