"""npe2 writers: save an image layer (tilt series or volume) as MRC or TIFF.

Refuses to replace an existing file or the layer's own source file (see
:mod:`napari_tiltgen.io.writers`); choose a new name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tiltgen.io import writers
from napari_tiltgen.io.model import METADATA_KEY, TiltSeries, Volume


def _to_object(data: Any, meta: dict[str, Any]) -> TiltSeries | Volume:
    md = dict(meta.get("metadata") or {})
    if md.get(METADATA_KEY, {}).get("kind") == "tilt_series":
        return TiltSeries.from_metadata(data, md)
    if METADATA_KEY in md:
        return Volume.from_metadata(data, md)
    scale = np.asarray(meta.get("scale", [1.0]), dtype=float)
    vs = float(scale[-1]) if scale.size and scale[-1] != 1.0 else None
    return Volume(data=np.asarray(data), voxel_size_A=vs, provenance={"source": None})


def write_mrc(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    return [str(writers.write_mrc(_to_object(data, meta), path))]


def write_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    return [str(writers.write_tiff(_to_object(data, meta), path))]
