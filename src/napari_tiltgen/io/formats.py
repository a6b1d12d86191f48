"""Gatan DM3/DM4, Velox and NCEM EMD, FEI SER/EMI and HyperSpy/etspy ``.hspy`` via rosettasciio.

`rosettasciio <https://hyperspy.org/rosettasciio/>`_ (the HyperSpy project's maintained file-format
library, GPL-3.0-or-later) parses the files; this module only picks the image stack out of what it
returns and translates its axes and metadata into this package's terms:

* **stack**: the first signal with two image axes and one navigation axis (several in a file,
  e.g. Velox HAADF + BF: the HAADF one is preferred, the others named in a note). Data stay lazy
  (dask, memory-mapped where the reader can) and are converted to float32 frame by frame
  (:class:`~napari_tiltgen.io.lazy.LazyFrames`).
* **pixel size**: the image axes' ``scale`` and ``units`` (nm, µm, Å, pm, m) converted to Å;
  reciprocal units (diffraction) give none, with a note.
* **tilt angles**, first source that has them: the navigation axis when it is a tilt axis (its
  name or units say so: ``tilt``, ``alpha``, ``angle``; ``deg``/``rad``; a non-uniform axis'
  values are used as they are), etspy/HyperSpy ``metadata.Tomography.tilts``, a DM tag group named
  ``Tomography`` holding one angle per frame or a start and step, or a per-frame
  ``Stage Alpha``/``tilt_alpha`` array. A single stage alpha for a whole stack is not a series of
  angles (note).
* **tilt axis**: etspy's ``metadata.Tomography.tiltaxis`` is the rotation etspy has already
  applied to the frames, so a non-zero value means the axis is now vertical (0 deg, known; 0 means
  etspy never aligned the stack: not recorded); an ``axis`` entry of a DM ``Tomography`` group;
  otherwise not recorded.
* **times**: a navigation axis in seconds (Velox ``Time``) gives acquisition times.

For one image per tilt (a folder or glob of DM3/DM4/SER/EMD files), :func:`read_image` returns
each image with its stage alpha, and :mod:`~napari_tiltgen.io.readers` orders them by angle.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io import metadata as md
from napari_tiltgen.io.lazy import LazyFrames

SUFFIXES = (".dm3", ".dm4", ".emd", ".ser", ".emi", ".hspy")
_NAMES = {".dm3": "Gatan DM3", ".dm4": "Gatan DM4", ".emd": "EMD (Velox/NCEM)",
          ".ser": "FEI SER", ".emi": "FEI EMI/SER", ".hspy": "HyperSpy .hspy"}
_LENGTH_TO_A = {"nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "µm": 1e4, "μm": 1e4,
                "um": 1e4, "micron": 1e4, "microns": 1e4, "å": 1.0, "a": 1.0, "angstrom": 1.0,
                "angstroms": 1.0, "pm": 0.01, "m": 1e10, "mm": 1e7}
_TILT_NAMES = {"tilt", "tilts", "tilt angle", "tilt_angle", "tilt angles", "alpha", "angle",
               "angles", "projection angle", "theta", "stage alpha"}
_DEG_UNITS = {"deg", "degree", "degrees", "°", "º"}
_RAD_UNITS = {"rad", "radian", "radians"}


def _reader(suffix: str) -> Any:
    try:
        if suffix in (".dm3", ".dm4"):
            from rsciio.digitalmicrograph import file_reader
        elif suffix == ".emd":
            from rsciio.emd import file_reader
        elif suffix in (".ser", ".emi"):
            from rsciio.tia import file_reader
        else:
            from rsciio.hspy import file_reader
    except ImportError as exc:  # a dependency: only a broken install gets here
        raise TiltgenError(
            f"reading {_NAMES[suffix]} files needs rosettasciio ({exc}); install it with "
            "'pip install rosettasciio'.") from exc
    return file_reader


def load_signals(path: Path) -> list[dict[str, Any]]:
    """rosettasciio's signal dictionaries for ``path`` (lazy where the reader allows)."""
    suffix = path.suffix.lower()
    file_reader = _reader(suffix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                signals = file_reader(str(path), lazy=True)
            except TypeError:
                signals = file_reader(str(path))
        except PermissionError:
            raise
        except TiltgenError:
            raise
        except Exception as exc:
            raise TiltgenError(
                f"not a readable {_NAMES[suffix]} file ({type(exc).__name__}: {exc}).", path
            ) from exc
    if not signals:
        raise TiltgenError(f"the {_NAMES[suffix]} file holds no data.", path)
    return list(signals)


def _axes(sig: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    axes = list(sig.get("axes", []))
    nav = [a for a in axes if a.get("navigate")]
    img = [a for a in axes if not a.get("navigate")]
    if not nav and len(img) == 3:  # NCEM EMD: every dimension is a signal axis
        nav, img = img[:1], img[1:]
    return nav, img


def _title(sig: dict[str, Any]) -> str:
    return str(sig.get("metadata", {}).get("General", {}).get("title", "") or "")


def _pick_signal(signals: list[dict[str, Any]], path: Path, ndim: int) -> tuple[dict, list[str]]:
    notes: list[str] = []
    cands = []
    for s in signals:
        _, img = _axes(s)
        shape = tuple(np.shape(s["data"]))
        if len(img) == 2 and len(shape) == ndim:
            cands.append(s)
    if not cands:
        shapes = ", ".join(f"{tuple(np.shape(s['data']))} ({len(_axes(s)[1])} signal axes)"
                           for s in signals)
        what = "image stack (tilts x y x x)" if ndim == 3 else "2-D image"
        raise TiltgenError(f"the file holds no {what}: it holds {shapes}. Tilt series are "
                           "image stacks (spectra and 4-D data are not).", path)
    pick = next((s for s in cands if "haadf" in _title(s).lower()), cands[0])
    others = [_title(s) or "untitled" for s in cands if s is not pick]
    if others:
        notes.append(f"the file holds {len(cands)} image stacks; using "
                     f"{_title(pick) or 'the first'!r} (others: {', '.join(others)})")
    return pick, notes


def _pixel_size(img_axes: list[dict]) -> tuple[float | None, str, list[str]]:
    ax = img_axes[-1]
    units = str(ax.get("units") or "").strip()
    scale = float(ax.get("scale", 1.0) or 1.0)
    u = units.lower()
    if "/" in u or u.startswith("1"):
        return None, "", [(f"the images are calibrated in reciprocal units ({units}): no "
                           "pixel size (a diffraction pattern?)")]
    f = _LENGTH_TO_A.get(u)
    if f is None or scale <= 0:
        return None, "", []
    return scale * f, f"image axis scale ({scale:g} {units})", []


def _axis_values(ax: dict) -> np.ndarray:
    if ax.get("axis") is not None:
        return np.asarray(ax["axis"], dtype=np.float64).reshape(-1)
    n = int(ax["size"])
    return float(ax.get("offset", 0.0) or 0.0) + float(ax.get("scale", 1.0) or 1.0) * np.arange(n)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _as_vector(v: Any, n: int) -> np.ndarray | None:
    if isinstance(v, dict):  # a saved signal or array dictionary
        v = v.get("data", v.get("array"))
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if a.size != n or not np.all(np.isfinite(a)):
        return None
    return a


def _walk(d: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _walk(v, path + (str(k),))
    else:
        yield path, d


def tomography_tags(original: dict[str, Any], n: int) -> md.AngleInfo:
    """Tilt angles and axis from tag groups named ``Tomography`` (Gatan DM and others).

    Gatan's tomography acquisition writes ``ImageList.TagGroup0.ImageTags.Tomography.
    Tomography_setup.Tilt_angles`` with ``Minimum_tilt_angle_deg``, ``Maximum_tilt_angle_deg`` and
    ``Tilt_angle_step_deg`` (the frames run from the minimum up, as etspy also reads them). Also
    understood: one angle per frame (a list of ``n`` numbers under a key naming tilts/angles/alpha)
    and a start + step pair; an ``axis`` number gives the tilt axis. Returns an empty
    :class:`~napari_tiltgen.io.metadata.AngleInfo` when nothing fits, with a note when the
    minimum/maximum/step do not give ``n`` frames.
    """
    info = md.AngleInfo()
    groups: list[tuple[tuple[str, ...], dict]] = []

    def find(d: Any, path: tuple[str, ...]) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                if "tomography" in str(k).lower() and isinstance(v, dict):
                    groups.append((path + (str(k),), v))
                find(v, path + (str(k),))

    find(original, ())
    for gpath, group in groups:
        start = step = lo = hi = None
        for kpath, v in _walk(group):
            key = kpath[-1].lower() if kpath else ""
            full = ".".join(gpath + kpath)
            vec = _as_vector(v, n) if n > 1 and np.ndim(v) > 0 else None
            if info.tilt_angles is None and vec is not None and any(
                    t in key for t in ("tilt", "angle", "alpha")) and "axis" not in key:
                info.tilt_angles, info.source = vec, f"tag {full}"
            elif np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) \
                    and not isinstance(v, bool):
                if "axis" in key and info.tilt_axis_angle_deg is None:
                    info.tilt_axis_angle_deg, info.tilt_axis_source = float(v), f"tag {full}"
                elif "step" in key or "increment" in key:
                    step = (float(v), full)
                elif "start" in key or "first" in key or "initial" in key:
                    start = (float(v), full)
                elif "minimum" in key or key.startswith("min"):
                    lo = (float(v), full)
                elif "maximum" in key or key.startswith("max"):
                    hi = (float(v), full)
        if info.tilt_angles is not None or step is None or step[0] == 0:
            continue
        if start is not None:
            info.tilt_angles = start[0] + step[0] * np.arange(n)
            info.source = f"tags {start[1]} + {step[1]} x frame"
        elif lo is not None:
            count = (hi[0] - lo[0]) / abs(step[0]) + 1 if hi is not None else n
            if abs(count - n) < 0.01:
                info.tilt_angles = lo[0] + abs(step[0]) * np.arange(n)
                info.source = (f"tags {lo[1]} + {step[1]} x frame"
                               + (f" (up to {hi[1]})" if hi is not None else ""))
            else:
                info.notes.append(f"tags {lo[1]}..{hi[1]} step {step[0]:g} give "  # type: ignore[index]
                                  f"{count:.1f} tilts but the stack has {n} frames; not used")
    return info


def _stage_alpha(sig: dict[str, Any]) -> tuple[Any, str]:
    """Stage alpha from the mapped metadata (degrees) or DM's ``Stage Alpha`` tag."""
    v = _get(sig.get("metadata", {}), "Acquisition_instrument", "TEM", "Stage", "tilt_alpha")
    if v is not None:
        return v, "metadata Acquisition_instrument.TEM.Stage.tilt_alpha"
    for kpath, val in _walk(sig.get("original_metadata", {})):
        if kpath and kpath[-1] == "Stage Alpha":
            return val, "tag " + ".".join(kpath)
        if kpath[-2:] == ("Stage", "AlphaTilt"):  # Velox: radians
            try:
                return np.degrees(np.asarray(val, dtype=np.float64)), \
                    "Velox metadata " + ".".join(kpath) + " (radians)"
            except (TypeError, ValueError):
                continue
    return None, ""


def signal_info(sig: dict[str, Any], n: int) -> md.AngleInfo:
    """Angles, pixel size, tilt axis and times of a stack signal (see the module docstring)."""
    nav, img = _axes(sig)
    info = md.AngleInfo()
    px, src, notes = _pixel_size(img)
    info.notes.extend(notes)
    if px is not None:
        info.pixel_size_A, info.pixel_size_source = px, src
    meta = sig.get("metadata", {}) or {}
    if nav:
        ax = nav[0]
        name = str(ax.get("name") or "").strip()
        units = str(ax.get("units") or "").strip().lower()
        vals = _axis_values(ax)
        if name.lower() in _TILT_NAMES or units in _DEG_UNITS | _RAD_UNITS:
            if units in _RAD_UNITS:
                vals = np.degrees(vals)
            if vals.size == n and np.ptp(vals) > 0:
                info.tilt_angles = vals
                info.source = f"navigation axis {name or 'unnamed'!r} ({units or 'deg'})"
        elif units in ("s", "sec", "second", "seconds") and vals.size == n:
            info.acquisition_times_s = vals - vals.min()
    if info.tilt_angles is None:
        tomo = _get(meta, "Tomography")
        if isinstance(tomo, dict):
            a = _as_vector(tomo.get("tilts"), n)
            if a is not None:
                info.tilt_angles, info.source = a, "metadata Tomography.tilts (etspy/HyperSpy)"
    tomo = _get(meta, "Tomography")
    if isinstance(tomo, dict):
        # etspy records in ``tiltaxis`` the rotation it has ALREADY applied to the frames to make
        # the axis vertical (trans_stack(angle=...) adds it up); 0 means "never aligned".
        ax = tomo.get("tiltaxis", tomo.get("tilt_axis"))
        if isinstance(ax, (int, float, np.number)) and np.isfinite(ax) and ax != 0:
            info.tilt_axis_angle_deg = 0.0
            info.tilt_axis_source = (f"metadata Tomography.tiltaxis (etspy): frames already "
                                     f"rotated by {float(ax):.2f} deg to make the axis vertical")
        if tomo.get("shifts") is not None:
            info.notes.append("the file holds etspy alignment shifts (Tomography.shifts); they "
                              "are not applied (etspy stores them for its own aligned data)")
    tags = tomography_tags(sig.get("original_metadata", {}) or {}, n)
    info.notes.extend(tags.notes)
    if info.tilt_angles is None and tags.tilt_angles is not None:
        info.tilt_angles, info.source = tags.tilt_angles, tags.source
    if info.tilt_axis_angle_deg is None and tags.tilt_axis_angle_deg is not None:
        info.tilt_axis_angle_deg = tags.tilt_axis_angle_deg
        info.tilt_axis_source = tags.tilt_axis_source
    if info.tilt_angles is None:
        alpha, asrc = _stage_alpha(sig)
        vec = _as_vector(alpha, n) if alpha is not None and np.size(alpha) == n and n > 1 \
            else None
        if vec is not None and np.ptp(vec) > 0:
            info.tilt_angles, info.source = vec, asrc
        elif alpha is not None:
            info.notes.append(f"one stage alpha ({float(np.ravel(alpha)[0]):.2f} deg, {asrc}) for "
                              "the whole stack: not a series of tilt angles")
    return info


def read_signal(path: Path) -> tuple[Any, dict[str, Any]]:
    """The image stack of a rosettasciio-readable file with its metadata (readers' ``hdr``)."""
    signals = load_signals(path)
    # a single image is returned as 2-D so that the caller can say "one image, not a stack"
    has_stack = any(len(_axes(s)[1]) == 2 and np.ndim(s["data"]) == 3 for s in signals)
    sig, notes = _pick_signal(signals, path, 3 if has_stack else 2)
    raw = sig["data"]
    file_dtype = str(np.dtype(raw.dtype))
    if np.issubdtype(raw.dtype, np.complexfloating):
        raise TiltgenError("complex-valued data (an FFT) is not a tilt series.", path)
    if raw.ndim == 3:
        data: Any = LazyFrames(raw) if not isinstance(raw, np.ndarray) or \
            raw.dtype != np.float32 else raw
    else:
        data = np.asarray(raw, dtype=np.float32)
    n = int(raw.shape[0]) if raw.ndim == 3 else 1
    info = signal_info(sig, n)
    hdr: dict[str, Any] = {
        "file_dtype": file_dtype,
        "voxel_size_A": info.pixel_size_A,
        "pixel_size_source": f"{_NAMES[path.suffix.lower()]} {info.pixel_size_source}"
        if info.pixel_size_A else "",
        "notes": notes + info.notes,
        "format": f"{_NAMES[path.suffix.lower()]} (rosettasciio)",
        "format_info": info,
    }
    if info.source:
        info.source = f"{_NAMES[path.suffix.lower()]} {info.source}"
    if info.tilt_axis_source:
        info.tilt_axis_source = f"{_NAMES[path.suffix.lower()]} {info.tilt_axis_source}"
    info.pixel_size_A = None  # given through hdr["voxel_size_A"]
    return data, hdr


def read_image(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """One 2-D image (a per-tilt file) with its stage alpha, pixel size and metadata."""
    signals = load_signals(path)
    sig, _ = _pick_signal(signals, path, 2)
    img = np.asarray(sig["data"], dtype=np.float32)
    _, axes = _axes(sig)
    px, src, _ = _pixel_size(axes)
    alpha, asrc = _stage_alpha(sig)
    a = None
    if alpha is not None and np.size(alpha) == 1:
        a = float(np.ravel(alpha)[0])
    return img, {"alpha": a, "alpha_source": asrc, "pixel_size_A": px,
                 "pixel_size_source": src, "file_dtype": str(np.dtype(sig["data"].dtype))}
