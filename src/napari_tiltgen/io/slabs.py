"""Writing a volume slab by slab (the streamed reconstruction, :mod:`napari_tiltgen.recon.outofcore`).

:class:`MrcSlabWriter` (positioned writes into a float32 MRC file) and
:class:`~napari_tiltgen.io.ome_zarr.ZarrSlabWriter` take ``(nz, r, nx)`` slabs at any row
``y0`` and keep the statistics their headers need with :class:`SlabStats`, one plane at a time
so that no slab-sized temporary is made.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["MrcSlabWriter", "SlabStats"]


class SlabStats:
    """Running minimum, maximum, mean and RMS deviation of the values of the slabs seen."""

    def __init__(self) -> None:
        self.count, self.total, self.sq = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add_plane(self, plane: np.ndarray) -> None:
        if plane.size:
            p64 = plane.astype(np.float64).ravel()
            self.total += float(p64.sum())
            self.sq += float(np.dot(p64, p64))
            self.lo = min(self.lo, float(plane.min()))
            self.hi = max(self.hi, float(plane.max()))
        self.count += plane.size

    @property
    def mean(self) -> float:
        return self.total / max(1, self.count)

    @property
    def rms(self) -> float:
        """RMS deviation from the mean (the MRC header's ``rms``)."""
        m = self.mean
        return math.sqrt(max(0.0, self.sq / max(1, self.count) - m * m))


class MrcSlabWriter:
    """Positioned writes of ``(nz, r, nx)`` slabs into a float32 MRC file; header by mrcfile."""

    def __init__(self, path: Path, shape: tuple[int, int, int], voxel_size_A: float | None,
                 label: str):
        import mrcfile

        self.path, self.shape = path, shape
        with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as mrc:
            mrc.set_volume()
            if voxel_size_A:
                mrc.voxel_size = voxel_size_A
            mrc.add_label(label[:80])
            self.offset = int(mrc.data.offset)  # header + extended header bytes
        self.stats = SlabStats()

    def write(self, y0: int, slab: np.ndarray) -> None:
        nz, ny, nx = self.shape
        slab = np.asarray(slab, dtype="<f4")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for z in range(nz):  # one plane at a time: no slab-sized temporaries
                plane = np.ascontiguousarray(slab[z])
                os.pwrite(fd, plane.tobytes(), self.offset + ((z * ny + y0) * nx) * 4)
                self.stats.add_plane(plane)
        finally:
            os.close(fd)

    def finish(self) -> None:
        import mrcfile

        s = self.stats
        with mrcfile.mmap(self.path, mode="r+") as mrc:  # the data pages are not touched
            mrc.header.dmin, mrc.header.dmax = s.lo, s.hi
            mrc.header.dmean, mrc.header.rms = s.mean, s.rms
