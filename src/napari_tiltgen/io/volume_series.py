"""``VolumeSeries``: the volumes of a changing sample over time (the 4-D result of the
time-resolved fit), with their times and the tilt recorded nearest to each, as one napari layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import (
    METADATA_KEY,
    Volume,
    _default_name,
    _image_layer,
    _jsonable,
    positive_size,
    require_ndim,
    with_history,
)

__all__ = ["VolumeSeries"]


_KIND_SERIES = "volume_series"


@dataclass
class VolumeSeries:
    """Volumes of one sample at several times: a time-resolved (4-D) reconstruction.

    Parameters
    ----------
    data
        Array ``(n_times, nz, ny, nx)`` float32; each ``data[i]`` is a volume as in
        :class:`Volume`.
    times_s
        Time of each volume, seconds from the start of the acquisition, increasing.
    tilt_angles
        Tilt angle (degrees) recorded at, or nearest to, each time; ``None`` if unknown.
    voxel_size_A
        Voxel size in Å, or ``None`` if unknown.
    provenance
        ``method``, ``parameters``, ``input`` and ``history``, as for :class:`Volume`.

    The napari layer is one 4-D image ``(time, z, y, x)`` whose metadata (key
    :data:`METADATA_KEY`, ``kind = "volume_series"``) carries the times and angles, so the
    layer round-trips through :meth:`to_layer_data` / :meth:`from_layer`.
    """

    data: np.ndarray
    times_s: np.ndarray
    tilt_angles: np.ndarray | None = None
    voxel_size_A: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.provenance.get("source")
        self.data = np.asarray(self.data)
        require_ndim(self.data, 4, "a volume series needs 4-D data (n_times, nz, ny, nx)", where)
        if self.data.dtype != np.float32:
            self.data = self.data.astype(np.float32)
        n = self.data.shape[0]
        self.times_s = np.asarray(self.times_s, dtype=np.float64).reshape(-1)
        if self.times_s.size != n or not np.all(np.isfinite(self.times_s)):
            raise TiltgenError(f"a volume series of {n} volumes needs {n} finite times (s); got "
                               f"{self.times_s.size}.", where)
        if np.any(np.diff(self.times_s) < 0):
            raise TiltgenError("the times of a volume series must not decrease.", where)
        if self.tilt_angles is not None:
            self.tilt_angles = np.asarray(self.tilt_angles, dtype=np.float64).reshape(-1)
            if self.tilt_angles.size != n:
                raise TiltgenError(f"{self.tilt_angles.size} tilt angles for {n} volumes.", where)
        self.voxel_size_A = positive_size(self.voxel_size_A, "voxel size", where)
        self.provenance = with_history(self.provenance)

    @property
    def n_times(self) -> int:
        return int(self.data.shape[0])

    def label(self, i: int) -> str:
        """``"t = 812 s, tilt = +12.0 deg"`` for volume ``i`` (no tilt part when unknown)."""
        text = f"t = {self.times_s[i]:.0f} s"
        if self.tilt_angles is not None:
            text += f", tilt = {self.tilt_angles[i]:+.1f} deg"
        return text

    def volume(self, i: int) -> Volume:
        """Volume ``i`` as a :class:`Volume` with its time (and angle) in the provenance."""
        prov = copy.deepcopy(self.provenance)
        extra: dict[str, Any] = {"time_s": float(self.times_s[i])}
        if self.tilt_angles is not None:
            extra["tilt_angle_deg"] = float(self.tilt_angles[i])
        prov["parameters"] = {**prov.get("parameters", {}), **extra}
        return Volume(self.data[i], self.voxel_size_A, provenance=prov)

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": _KIND_SERIES, "times_s": self.times_s.tolist(),
                "tilt_angles": None if self.tilt_angles is None else self.tilt_angles.tolist(),
                "voxel_size_A": self.voxel_size_A, "provenance": _jsonable(self.provenance)}

    def to_layer_data(self, name: str | None = None, **kwargs: Any) -> tuple:
        vs = self.voxel_size_A or 1.0
        return _image_layer(self, name or _default_name(self.provenance, "volume series"),
                            (1.0, vs, vs, vs), ("time", "z", "y", "x"), None, kwargs)

    @staticmethod
    def is_layer_metadata(metadata: Any) -> bool:
        """True when napari layer ``metadata`` holds a volume series."""
        return ((metadata or {}).get(METADATA_KEY) or {}).get("kind") == _KIND_SERIES

    @classmethod
    def from_metadata(cls, data: Any, metadata: dict[str, Any]) -> VolumeSeries:
        m = metadata.get(METADATA_KEY, metadata)
        if m.get("kind") != _KIND_SERIES:
            raise TiltgenError("this layer is not a volume series (a 4-D time-resolved result).")
        return cls(data=np.asarray(data), times_s=m["times_s"], tilt_angles=m.get("tilt_angles"),
                   voxel_size_A=m.get("voxel_size_A"),
                   provenance=copy.deepcopy(m.get("provenance", {})))

    @classmethod
    def from_layer(cls, layer: Any) -> VolumeSeries:
        """Rebuild from a napari image layer made by :meth:`to_layer_data`."""
        return cls.from_metadata(layer.data, dict(layer.metadata))
