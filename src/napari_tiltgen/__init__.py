"""napari-tiltgen: interactive electron tomography of nanomaterials.

The public API works without Qt or napari::

    from napari_tiltgen import read_tilt_series
    ts = read_tilt_series("tomo.st")      # angles from .rawtlt / .mdoc / extended header
    print(ts.summary())

Layers (dependencies point downwards only; docs/architecture.md, ``python tools/importgraph.py``):
``widgets`` (Qt/napari) -> ``cli`` -> ``fits`` / ``methods`` -> ``simulate`` -> ``physics`` ->
``io``. ``__version__`` below is the package's only version number (pyproject reads it).
"""

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io import (
    TiltSeries,
    Volume,
    read,
    read_tilt_series,
    read_volume,
    write_mrc,
    write_tiff,
)

__version__ = "0.1.0"

__all__ = [
    "TiltSeries",
    "TiltgenError",
    "Volume",
    "__version__",
    "read",
    "read_tilt_series",
    "read_volume",
    "write_mrc",
    "write_tiff",
]
