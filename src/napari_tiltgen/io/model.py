"""The data model: :class:`TiltSeries` and :class:`Volume`.

Geometry conventions (shared by every reader, projector and method)
-------------------------------------------------------------------
* A tilt series stack has shape ``(n_tilts, ny, nx)``. After loading, the **tilt axis runs along
  the image y axis** (rows). ``tilt_axis_angle_deg`` records the in-plane angle of the tilt axis as
  recorded by the microscope (IMOD/SerialEM convention: degrees counter-clockwise from the image Y
  axis). Readers leave pixels as recorded; :meth:`TiltSeries.with_vertical_tilt_axis` turns a
  stack whose axis is near horizontal by 90 degrees so that the axis is vertical.
* **Unknown tilt axis.** When no metadata gives the axis (a bare MRC/TIFF, most DM/EMD/SER
  files), readers do NOT claim it is vertical: they set ``tilt_axis_known = False``,
  ``tilt_axis_angle_deg = 0.0`` (a placeholder, not a measurement) and
  ``provenance["tilt_axis_source"] = "not recorded in the file (unknown)"``. Code that needs the
  axis checks ``tilt_axis_known`` and estimates it from the data (alignment) or asks the user;
  :meth:`TiltSeries.with_tilt_axis` records a value (given or estimated) and marks it known.
  Objects built in code (simulations) default to ``tilt_axis_known = True``, and layers saved
  before this flag existed read back as known (backward compatible).
* ``data`` may be a :class:`~napari_tiltgen.io.lazy.LazyFrames` view (float32 frames converted
  on access from an int8/int16/uint16 memory map, or several frames per tilt combined): index it
  per frame or call ``np.asarray(ts.data, np.float32)`` for the whole stack.
* A volume has shape ``(nz, ny, nx)``; z is the beam direction at 0 degrees tilt, y the tilt axis.
* Tilt angles are in degrees, pixel and voxel sizes in Ångström (Å).
* ``shifts_px`` holds per-tilt ``(dy, dx)`` in pixels that alignment found; they are applied by the
  projector (a projection of the volume appears shifted by ``+shift`` in the recorded image).

Both classes round-trip losslessly through napari layer metadata: :meth:`to_layer_data` returns a
``(data, kwargs, "image")`` layer data tuple and :meth:`from_layer` rebuilds the object from a
layer (or from ``(data, metadata)``), so widgets and methods exchange these objects, not loose
arrays.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError

__all__ = ["METADATA_KEY", "TiltSeries", "Volume", "per_frame_values"]


METADATA_KEY = "tiltgen"


_KIND_TS = "tilt_series"


_KIND_VOL = "volume"


def per_frame_values(values: Any, n: int, what: str, hint: str, where: str | None = None
                     ) -> np.ndarray:
    """One finite number per frame as float64, or one clear error (``hint`` says what to do)."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size != n:
        raise TiltgenError(f"{a.size} {what} were given for {n} frames; {hint}.", where)
    if not np.all(np.isfinite(a)):
        raise TiltgenError(f"the {what} contain NaN or infinite values.", where)
    return a


def require_ndim(data: Any, ndim: int, what: str, where: str | None = None) -> None:
    """Refuse data of another dimensionality: ``"<what>; got 4-D data of shape (...)."``."""
    if data.ndim != ndim:
        raise TiltgenError(f"{what}; got {data.ndim}-D data of shape {tuple(data.shape)}.",
                           where)


def positive_size(value: Any, what: str, where: str | None = None) -> float | None:
    """``None``, or ``value`` as a finite positive float (a pixel or voxel size in Å)."""
    if value is None:
        return None
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise TiltgenError(f"{what} must be positive; got {v}.", where)
    return v


def with_history(provenance: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``provenance`` (top level) that has a ``history`` list."""
    out = dict(provenance)
    out.setdefault("history", [])
    return out


def _image_layer(obj: Any, name: str, scale: tuple, labels: tuple, units: Any,
                 kwargs: dict[str, Any]) -> tuple:
    """napari layer data ``(data, kwargs, "image")`` of a data-model object; the object's
    metadata goes into ``metadata["tiltgen"]``; ``kwargs`` override the defaults."""
    kw: dict[str, Any] = {"name": name, "scale": scale,
                          "metadata": {METADATA_KEY: obj.to_metadata()}, "axis_labels": labels,
                          "colormap": "gray"}
    if units is not None:
        kw["units"] = units
    kw.update(kwargs)
    return (obj.data, kw, "image")


def _as_angles(tilt_angles: Any, n: int, where: str | None = None) -> np.ndarray | None:
    if tilt_angles is None:
        return None
    a = per_frame_values(tilt_angles, n, "tilt angles", "the counts must match (check the "
                         ".rawtlt/.tlt/.mdoc file or the start/step you entered)", where)
    if np.any(np.abs(a) > 90.0 + 1e-6):
        raise TiltgenError(
            f"tilt angles must lie within [-90, 90] degrees; got {a.min():.2f} to {a.max():.2f}. "
            "Are they in radians or x100 units?",
            where,
        )
    return a


@dataclass
class TiltSeries:
    """A tilt series: a stack of projections with their geometry.

    Parameters
    ----------
    data
        Stack ``(n_tilts, ny, nx)``, float32: an array, a read-only memory map (float32 MRC) or
        a :class:`~napari_tiltgen.io.lazy.LazyFrames` view converting stored integer frames to
        float32 per frame on access.
    tilt_angles
        Tilt angle of each frame in degrees, or ``None`` while unknown (the user must then give a
        start and step; methods that need angles call :meth:`require_angles`).
    pixel_size_A
        Pixel size in Å, or ``None`` if unknown.
    tilt_axis_angle_deg
        In-plane angle of the tilt axis, degrees counter-clockwise from the image Y axis
        (IMOD/SerialEM). 0 means the axis runs along y, which is what the projector expects.
        Only meaningful when ``tilt_axis_known``; otherwise 0.0 is a placeholder.
    shifts_px
        Per-tilt ``(dy, dx)`` alignment shifts in pixels, shape ``(n_tilts, 2)``.
    acquisition_times_s
        Time of each frame in seconds from the start of the series (for time-resolved work), or
        ``None`` if unknown.
    provenance
        Where things came from: ``source`` (file), ``angles_source``, ``pixel_size_source``,
        ``tilt_axis_source`` and a ``history`` list of processing steps; readers add
        ``notes`` (conventions recognised and mapped, frames combined) and ``shifts_source``.
    tilt_axis_known
        ``False`` when no metadata recorded the tilt axis (see the module docstring): the axis
        must be estimated from the data or given before it is trusted.
    """

    data: np.ndarray
    tilt_angles: np.ndarray | None = None
    pixel_size_A: float | None = None
    tilt_axis_angle_deg: float = 0.0
    shifts_px: np.ndarray | None = None
    acquisition_times_s: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    tilt_axis_known: bool = True

    def __post_init__(self) -> None:
        from napari_tiltgen.io.lazy import LazyFrames

        where = self.provenance.get("source")
        if not isinstance(self.data, (np.ndarray, LazyFrames)):
            self.data = np.asarray(self.data)
        require_ndim(self.data, 3, "a tilt series needs a 3-D stack (n_tilts, ny, nx)", where)
        if min(self.data.shape) < 1:
            raise TiltgenError(f"the stack is empty (shape {tuple(self.data.shape)}).", where)
        if self.data.dtype != np.float32:
            self.data = np.asarray(self.data, dtype=np.float32)
        n = self.data.shape[0]
        self.tilt_axis_known = bool(self.tilt_axis_known)
        self.tilt_angles = _as_angles(self.tilt_angles, n, where)
        if self.shifts_px is None:
            self.shifts_px = np.zeros((n, 2), dtype=np.float64)
        else:
            self.shifts_px = np.asarray(self.shifts_px, dtype=np.float64).reshape(n, 2)
        if self.acquisition_times_s is not None:
            self.acquisition_times_s = np.asarray(self.acquisition_times_s, np.float64).reshape(-1)
            if self.acquisition_times_s.size != n:
                raise TiltgenError(
                    f"{self.acquisition_times_s.size} acquisition times for {n} frames.", where
                )
        self.pixel_size_A = positive_size(self.pixel_size_A, "pixel size (Å)", where)
        self.tilt_axis_angle_deg = float(self.tilt_axis_angle_deg)
        self.provenance = with_history(self.provenance)

    # ------------------------------------------------------------------ properties
    @property
    def n_tilts(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def has_angles(self) -> bool:
        return self.tilt_angles is not None

    def require_angles(self) -> np.ndarray:
        """Return the tilt angles in degrees, or raise a clear error when they are unknown."""
        if self.tilt_angles is None:
            raise TiltgenError(
                "the tilt angles of this series are unknown. Give them with a .rawtlt/.tlt "
                "sidecar, or set start and step (Tilt series widget, or --tilt-start/--tilt-step).",
                self.provenance.get("source"),
            )
        return self.tilt_angles

    def checked_for_projection(self, purpose: str) -> tuple[np.ndarray, np.ndarray]:
        """``(frames as float32, angles)`` for a method that projects along y: the angles must
        be known, the tilt axis within 45 degrees of y, every pixel finite. ``purpose`` names
        the method in the errors ("the reconstruction", "the INR fit")."""
        angles = self.require_angles()
        where = self.provenance.get("source")
        axis = ((self.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
        if abs(axis) > 45.0:
            raise TiltgenError(
                f"the tilt axis is at {self.tilt_axis_angle_deg:.1f} deg from the image Y axis "
                f"(near horizontal); {purpose} needs it within 45 degrees of y. Rotate the "
                "stack first (Tilt series widget: 'Rotate stack so the tilt axis is vertical', "
                "or TiltSeries.with_vertical_tilt_axis()).", where)
        data = np.asarray(self.data, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise TiltgenError("the tilt series contains NaN or infinite pixels; fix or crop "
                               f"them before {purpose.removeprefix('the ')}.", where)
        return data, angles

    def angle_stats(self) -> dict[str, float]:
        """Range, mean step and count of the tilt angles (degrees)."""
        a = self.require_angles()
        steps = np.diff(np.unique(np.round(a, 4)))  # repeated angles do not make a 0 step
        return {
            "min": float(a.min()),
            "max": float(a.max()),
            "step": float(np.median(steps)) if steps.size else 0.0,
            "count": int(a.size),
            "missing_wedge_deg": float(180.0 - (a.max() - a.min())),
        }

    @property
    def missing_wedge_deg(self) -> float:
        """Width of the missing wedge in degrees: ``180 - (max angle - min angle)``."""
        return self.angle_stats()["missing_wedge_deg"]

    # ------------------------------------------------------------------ derived series
    def with_angles(
        self, tilt_angles: Any | None = None, *, start: float | None = None,
        step: float | None = None, source: str = "user",
    ) -> TiltSeries:
        """Return a copy with new tilt angles, given as a list or as ``start`` + ``step``."""
        if tilt_angles is None:
            if start is None or step is None:
                raise TiltgenError("give either the list of tilt angles or both start and step.")
            tilt_angles = start + step * np.arange(self.n_tilts)
        prov = copy.deepcopy(self.provenance)
        prov["angles_source"] = source
        return replace(self, tilt_angles=tilt_angles, provenance=prov)

    def with_tilt_axis(self, angle_deg: float, source: str = "user") -> TiltSeries:
        """Return a copy whose tilt axis is ``angle_deg`` (IMOD convention), marked as known.

        ``source`` says where the value came from (``"user"``, ``"estimated from the data
        (common lines, confidence 0.93)"``, ...) and goes into ``provenance["tilt_axis_source"]``.
        """
        prov = copy.deepcopy(self.provenance)
        prov["tilt_axis_source"] = source
        return replace(self, tilt_axis_angle_deg=float(angle_deg), tilt_axis_known=True,
                       provenance=prov)

    def with_vertical_tilt_axis(self) -> TiltSeries:
        """Turn the stack by a multiple of 90 degrees so that the tilt axis is closest to y.

        Exact (``np.rot90``, no interpolation). Frames are turned by ``-k * 90`` degrees (IMOD:
        the image is rotated by minus the axis angle), in MRC/IMOD image coordinates where the
        row index ``y`` points up; ``np.rot90(k=+1)`` on ``(y, x)`` arrays is exactly a
        clockwise quarter turn there, so the axis ends up along ``+y`` and the reconstruction
        keeps its handedness. The remaining small angle stays in ``tilt_axis_angle_deg``.
        """
        k = int(np.round(self.tilt_axis_angle_deg / 90.0))
        if k % 4 == 0:
            return self
        data = np.ascontiguousarray(np.rot90(self.data, k=k, axes=(1, 2)))
        prov = copy.deepcopy(self.provenance)
        prov["history"].append({"step": "rot90", "quarter_turns_clockwise": k % 4,
                                "reason": "make tilt axis vertical"})
        shifts = self.shifts_px.copy()
        for _ in range(k % 4):  # (dy, dx) turned with the image: (x, y) -> (y, -x)
            shifts = np.stack([-shifts[:, 1], shifts[:, 0]], axis=1)
        return replace(self, data=data, tilt_axis_angle_deg=self.tilt_axis_angle_deg - 90.0 * k,
                       shifts_px=shifts, provenance=prov)

    def subset(self, index: Any) -> TiltSeries:
        """Frames selected by ``index`` (slice, boolean mask or integer array), with their angles."""
        idx = np.arange(self.n_tilts)[index]
        return replace(
            self,
            data=np.asarray(self.data[idx]),
            tilt_angles=None if self.tilt_angles is None else self.tilt_angles[idx],
            shifts_px=self.shifts_px[idx],
            acquisition_times_s=None if self.acquisition_times_s is None
            else self.acquisition_times_s[idx],
            provenance=copy.deepcopy(self.provenance),
        )

    def sorted_by_angle(self) -> TiltSeries:
        """Frames reordered by increasing tilt angle (acquisition order is kept in times)."""
        order = np.argsort(self.require_angles(), kind="stable")
        if np.all(order == np.arange(self.n_tilts)):
            return self
        return self.subset(order)

    def summary(self) -> str:
        """Multi-line human-readable description (used by ``tiltgen info``)."""
        from napari_tiltgen.io.lazy import LazyFrames

        p = self.provenance
        conv = ""
        if p.get("file_dtype", "float32") != "float32":
            conv = (" (kept on disk, converted to float32 per frame)"
                    if isinstance(self.data, LazyFrames) else " (converted to float32)")
        lines = [
            "kind:        tilt series",
            (f"shape:       {self.n_tilts} tilts x {self.shape[1]} x {self.shape[2]} px "
             "(n_tilts, ny, nx)"),
            f"dtype:       {p.get('file_dtype', str(self.data.dtype))}{conv}",
        ]
        if self.tilt_angles is None:
            lines.append("tilt angles: UNKNOWN - give --tilt-start/--tilt-step or a .rawtlt file")
        else:
            s = self.angle_stats()
            if s["max"] - s["min"] < 1e-6:
                lines.append(
                    f"tilt angles: all {s['count']} frame(s) at {s['min']:.2f} deg - a single "
                    "view, not a tilt series (a reconstruction needs several tilts)")
            else:
                lines.append(
                    f"tilt angles: {s['count']} from {s['min']:.2f} to {s['max']:.2f} deg, step "
                    f"{s['step']:.2f} deg"
                )
                lines.append(f"  wedge:     {s['missing_wedge_deg']:.1f} deg missing")
        lines.append(f"  from:      {p.get('angles_source', 'unknown')}")
        px = "unknown" if self.pixel_size_A is None else f"{self.pixel_size_A:.4g} Å"
        lines.append(f"pixel size:  {px}")
        lines.append(f"  from:      {p.get('pixel_size_source', 'unknown')}")
        if self.tilt_axis_known:
            near = ("near vertical" if abs(((self.tilt_axis_angle_deg + 45) % 180) - 45) < 45
                    else "near horizontal")
            lines.append(f"tilt axis:   {self.tilt_axis_angle_deg:.2f} deg from image Y ({near})")
        else:
            lines.append("tilt axis:   UNKNOWN - not recorded in the file; estimate it (alignment) "
                         "or give --tilt-axis")
        lines.append(f"  from:      {p.get('tilt_axis_source', 'default (vertical, y)')}")
        if p.get("shifts_source"):
            lines.append(f"shifts:      {p['shifts_source']}")
        for note in p.get("notes", []):
            lines.append(f"note:        {note}")
        if self.acquisition_times_s is not None:
            lines.append(f"times:       0 to {self.acquisition_times_s.max():.1f} s")
        return "\n".join(lines)

    # ------------------------------------------------------------------ napari round-trip
    def to_metadata(self) -> dict[str, Any]:
        """JSON-compatible description of everything but the pixels (lossless)."""
        return {
            "kind": _KIND_TS,
            "tilt_angles": None if self.tilt_angles is None else self.tilt_angles.tolist(),
            "pixel_size_A": self.pixel_size_A,
            "tilt_axis_angle_deg": self.tilt_axis_angle_deg,
            "tilt_axis_known": self.tilt_axis_known,
            "shifts_px": self.shifts_px.tolist(),
            "acquisition_times_s": None if self.acquisition_times_s is None
            else self.acquisition_times_s.tolist(),
            "provenance": _jsonable(self.provenance),
        }

    def to_layer_data(self, name: str | None = None, **kwargs: Any) -> tuple:
        """napari layer data tuple ``(data, kwargs, "image")``.

        The scale is the pixel size in Å on y and x (1 on the tilt axis), and everything else
        goes into ``metadata["tiltgen"]``.
        """
        px = self.pixel_size_A or 1.0
        units = ("pixel", "angstrom", "angstrom") if self.pixel_size_A else "pixel"
        return _image_layer(self, name or _default_name(self.provenance, "tilt series"),
                            (1.0, px, px), ("tilt", "y", "x"), units, kwargs)

    @classmethod
    def from_metadata(cls, data: Any, metadata: dict[str, Any]) -> TiltSeries:
        m = metadata.get(METADATA_KEY, metadata)
        if m.get("kind") != _KIND_TS:
            raise TiltgenError(
                "this layer is not a tilt series (no tilt-series metadata). Open the stack with "
                "napari-tiltgen's reader or set its angles in the Tilt series widget."
            )
        from napari_tiltgen.io.lazy import LazyFrames

        return cls(
            data=data if isinstance(data, LazyFrames) else np.asarray(data),
            tilt_angles=m.get("tilt_angles"),
            pixel_size_A=m.get("pixel_size_A"),
            tilt_axis_angle_deg=m.get("tilt_axis_angle_deg", 0.0),
            shifts_px=m.get("shifts_px"),
            acquisition_times_s=m.get("acquisition_times_s"),
            provenance=copy.deepcopy(m.get("provenance", {})),
            tilt_axis_known=m.get("tilt_axis_known", True),
        )

    @classmethod
    def from_layer(cls, layer: Any) -> TiltSeries:
        """Rebuild from a napari image layer made by :meth:`to_layer_data` (or edited since)."""
        return cls.from_metadata(layer.data, dict(layer.metadata))


@dataclass
class Volume:
    """A reconstructed (or ground-truth) volume.

    Parameters
    ----------
    data
        Array ``(nz, ny, nx)`` float32; y is the tilt axis, z the beam direction at 0 degrees.
    voxel_size_A
        Voxel size in Å, or ``None`` if unknown.
    provenance
        ``source`` (file or layer), ``method`` and ``parameters`` that produced it, ``history``.
    """

    data: np.ndarray
    voxel_size_A: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.provenance.get("source")
        self.data = np.asarray(self.data)
        require_ndim(self.data, 3, "a volume needs 3-D data (nz, ny, nx)", where)
        if self.data.dtype != np.float32:
            self.data = self.data.astype(np.float32)
        self.voxel_size_A = positive_size(self.voxel_size_A, "voxel size", where)
        self.provenance = with_history(self.provenance)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def summary(self) -> str:
        p = self.provenance
        vs = "unknown" if self.voxel_size_A is None else f"{self.voxel_size_A:.4g} Å"
        lines = [
            "kind:        volume",
            f"shape:       {self.shape[0]} x {self.shape[1]} x {self.shape[2]} voxels (nz, ny, nx)",
            f"dtype:       {p.get('file_dtype', str(self.data.dtype))}",
            f"voxel size:  {vs}",
            f"  from:      {p.get('pixel_size_source', 'unknown')}",
        ]
        if "method" in p:
            lines.append(f"method:      {p['method']} {json.dumps(p.get('parameters', {}))}")
        return "\n".join(lines)

    def to_metadata(self) -> dict[str, Any]:
        return {"kind": _KIND_VOL, "voxel_size_A": self.voxel_size_A,
                "provenance": _jsonable(self.provenance)}

    def to_layer_data(self, name: str | None = None, **kwargs: Any) -> tuple:
        vs = self.voxel_size_A or 1.0
        return _image_layer(self, name or _default_name(self.provenance, "volume"),
                            (vs, vs, vs), ("z", "y", "x"),
                            "angstrom" if self.voxel_size_A else "pixel", kwargs)

    @classmethod
    def from_metadata(cls, data: Any, metadata: dict[str, Any]) -> Volume:
        m = metadata.get(METADATA_KEY, metadata)
        if m.get("kind") not in (_KIND_VOL, None):
            raise TiltgenError("this layer is a tilt series, not a volume; reconstruct it first.")
        return cls(data=np.asarray(data), voxel_size_A=m.get("voxel_size_A"),
                   provenance=copy.deepcopy(m.get("provenance", {})))

    @classmethod
    def from_layer(cls, layer: Any) -> Volume:
        """Rebuild from a napari image layer; a plain 3-D layer takes its voxel size from scale."""
        meta = dict(layer.metadata)
        if METADATA_KEY not in meta:
            scale = np.asarray(layer.scale, dtype=float)
            vs = float(scale[-1]) if scale.size and scale[-1] != 1.0 else None
            return cls(data=np.asarray(layer.data), voxel_size_A=vs,
                       provenance={"source": f"layer {layer.name!r}"})
        return cls.from_metadata(layer.data, meta)


def _default_name(provenance: dict[str, Any], fallback: str) -> str:
    src = provenance.get("source")
    if src:
        import os

        return os.path.basename(str(src))
    return provenance.get("method", fallback)


def _jsonable(obj: Any) -> Any:
    """Deep-convert numpy scalars/arrays so metadata survives JSON and napari's copying."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
