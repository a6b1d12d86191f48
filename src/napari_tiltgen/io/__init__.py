"""Tilt-series / volume data model and file I/O (MRC via mrcfile, TIFF via tifffile)."""

from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.io.readers import read, read_tilt_series, read_volume
from napari_tiltgen.io.writers import write_mrc, write_tiff

__all__ = ["TiltSeries", "Volume", "read", "read_tilt_series", "read_volume", "write_mrc",
           "write_tiff"]
