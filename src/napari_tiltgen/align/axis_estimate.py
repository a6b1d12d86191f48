"""The tilt-axis estimate every command makes when the file records no axis, remembered per frames.

When neither the user nor the file gives the tilt axis, :func:`estimate_axis_iter` estimates it:
common lines over 0-180 degrees (:func:`~napari_tiltgen.align.axis.find_tilt_axis_iter`), then,
for a specimen that crosses the frame edges or an unsure estimate, the search by reprojection
(:func:`~napari_tiltgen.align.axis_search.axis_search_iter`). That costs 10-120 s on one core,
and ``tiltgen reconstruct``, ``tiltgen inpaint``, ``tiltgen interpolate`` and the widgets each
paid it again on the same file. The outcome (angle, whether to apply it and why, the notes and
the provenance records) is therefore kept in a small JSON file named by a hash of exactly what
it was computed from: the prepared frames and their angles, the confidence threshold, and the
source of the estimating code. The same frames give the same answer without the work; any change
of the data, of ``--intensity`` (other prepared frames) or of the code misses.

Where: ``$TILTGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/napari-tiltgen/tilt-axis``, else
``~/.cache/napari-tiltgen/tilt-axis``; ``TILTGEN_CACHE=off`` turns it off. Entries are written
atomically through :func:`napari_tiltgen.io.output.write_text`, a few KB each; an entry that
cannot be read is ignored and written anew, and a cache that cannot be written is skipped
without error.

Written by hand (``hashlib`` and ``json``): ``joblib.Memory`` would hash and pickle the whole
series for a record of a few numbers and strings.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.progress import Progress, scaled
from napari_tiltgen.io.model import TiltSeries

__all__ = ["AxisOutcome", "cache_dir", "cache_key", "estimate_axis_iter"]

@dataclass
class AxisOutcome:
    """What :func:`estimate_axis_iter` decided.

    ``angle`` and ``source``: the axis and where it came from; ``why``: empty when ``angle`` is
    to be applied, else why it is not (the frames then stay as they are); ``source_note``: the
    short reason for the provenance; ``notes``: sentences for the user; ``provenance``: the
    records to add to the series' provenance; ``cached``: read from the cache (``path``)."""

    angle: float
    source: str
    why: str
    source_note: str
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    path: str = ""


def cache_dir() -> Path | None:
    """The cache folder, or ``None`` when ``TILTGEN_CACHE=off`` (also ``0``, ``no``, ``false``)."""
    if os.environ.get("TILTGEN_CACHE", "").strip().lower() in ("off", "0", "no", "false"):
        return None
    if os.environ.get("TILTGEN_CACHE_DIR"):
        return Path(os.environ["TILTGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "napari-tiltgen" / "tilt-axis"


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """Hash of the source of the code an estimate depends on (the alignment, physics and
    reconstruction packages): a changed estimator never reads an old entry."""
    from importlib import metadata

    try:  # also the installed version, for an installation without sources
        version = metadata.version("napari-tiltgen")
    except metadata.PackageNotFoundError:
        version = ""
    root = Path(__file__).resolve().parents[1]  # the napari_tiltgen package
    h = hashlib.blake2b(f"napari_tiltgen {version}".encode(), digest_size=16)
    for pkg in ("align", "physics", "recon"):
        for f in sorted((root / pkg).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(ts: TiltSeries, low_confidence: float) -> str:
    """Hex key of an estimate: the frames (as float32, frame by frame), their angles and shape,
    ``low_confidence`` and :func:`_code_hash`."""
    h = hashlib.blake2b(b"tiltgen tilt-axis estimate v1", digest_size=20)
    h.update(_code_hash().encode())
    h.update(repr((tuple(int(s) for s in ts.shape), float(low_confidence))).encode())
    h.update(np.ascontiguousarray(ts.require_angles(), dtype=np.float64).tobytes())
    for frame in ts.data:
        h.update(np.ascontiguousarray(frame, dtype=np.float32).tobytes())
    return h.hexdigest()


def _load(path: Path) -> AxisOutcome | None:
    try:
        d = json.loads(path.read_text())
        out = AxisOutcome(float(d["angle"]), str(d["source"]), str(d["why"]),
                          str(d["source_note"]), [str(n) for n in d["notes"]],
                          dict(d["provenance"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, or unreadable: computed and written anew
    out.cached, out.path = True, str(path)
    return out


def _store(path: Path, out: AxisOutcome) -> None:
    """Write the entry through the project's one safe writer (atomic, no stray temporary)."""
    from napari_tiltgen.core.errors import TiltgenError
    from napari_tiltgen.io.output import write_text

    d = asdict(out)
    d.pop("cached")
    d.pop("path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(d, indent=1), overwrite=True)
    except (OSError, TypeError, ValueError, TiltgenError):
        return  # an optimisation only: a cache that cannot be written is skipped


def estimate_axis_iter(ts: TiltSeries, low_confidence: float = 0.3
                       ) -> Generator[Progress, None, AxisOutcome]:
    """Estimate the tilt axis of ``ts`` (prepared intensities) as a progress generator; the
    outcome comes from the cache when these frames were estimated before (see the module
    docstring). Raises :class:`~napari_tiltgen.core.errors.TiltgenError` when common lines
    cannot run (nothing is cached then)."""
    from napari_tiltgen.align.axis import find_tilt_axis_iter
    from napari_tiltgen.align.axis_search import axis_search_iter, needs_search

    folder = cache_dir()
    path = folder / f"{cache_key(ts, low_confidence)}.json" if folder is not None else None
    if path is not None:
        hit = _load(path)
        if hit is not None:
            yield Progress(1.0, "tilt axis: the estimate made earlier for these frames")
            return hit
    notes: list[str] = []
    # 0-0.3: common lines; 0.3-1: the reprojection search, run only for specimens that cross
    # the frame edges or an unsure estimate (align.axis_search)
    est = yield from scaled(find_tilt_axis_iter(ts), 0.0, 0.3)
    angle, source = est.angle_deg, est.describe()
    notes.append(f"tilt axis not recorded in the file: {source}")
    records: dict[str, Any] = {"tilt_axis_estimate": {
        "angle_deg": est.angle_deg, "confidence": est.confidence,
        "runner_up_deg": est.second_deg, "edge_fraction": est.edge_fraction,
        "needle_deg": est.needle_deg, "method": "common lines, full 0-180 deg"}}
    why, source_note = est.distrust(low_confidence)  # why it is not used, if it is not
    if needs_search(est, why):  # crosses the frame edges or unsure: search by reprojection
        dec = yield from scaled(axis_search_iter(ts, est, notes, why, source_note), 0.3, 1.0)
        angle, source, why, source_note = dec.angle, dec.source, dec.why, dec.source_note
        if "tilt_axis_reprojection" in dec.ts.provenance:
            records["tilt_axis_reprojection"] = copy.deepcopy(
                dec.ts.provenance["tilt_axis_reprojection"])
    out = AxisOutcome(float(angle), source, why, source_note, notes,
                      json.loads(json.dumps(records, default=_plain)))
    if path is not None:
        _store(path, out)
    yield Progress(1.0, "tilt axis estimated")
    return out


def _plain(v: Any) -> Any:
    """JSON form of numpy scalars and arrays in the provenance records."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")
