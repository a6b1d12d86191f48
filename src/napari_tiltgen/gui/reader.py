"""npe2 reader: tilt series / volumes from every supported format, and folders of per-tilt files.

Errors: a file that cannot be read shows ONE napari notification with our message (the
``TiltgenError`` text naming the file and the problem). The reader then returns napari's
"read, but no layers" sentinel ``[(None,)]`` instead of an empty list or an exception, because
either of those makes napari add its own generic "could not read" error with a traceback button
on top of ours.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.output import FOLDER_SUFFIXES
from napari_tiltgen.io.readers import PER_TILT_SUFFIXES, SUPPORTED_SUFFIXES

#: napari/npe2's "the reader handled the path but made no layers" value.
NO_LAYERS: list[tuple] = [(None,)]


def _accepts(p: str | Path) -> bool:
    p = Path(p)
    if str(p).lower().endswith(SUPPORTED_SUFFIXES + FOLDER_SUFFIXES):
        return True
    try:
        return p.is_dir() and any(c.suffix.lower() in PER_TILT_SUFFIXES for c in p.iterdir())
    except OSError:  # unreadable folder: take it, so that the user gets our clear message
        return p.is_dir()


def napari_get_reader(path: str | list[str]) -> Callable[..., list[tuple]] | None:
    """Return :func:`read_layers` for files and folders we read, else ``None``."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_accepts(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str], **_: Any) -> list[tuple]:
    """Read each file (or folder of per-tilt files) into a layer data tuple.

    A file that cannot be read does not crash napari: its problem is shown as one napari
    notification (the ``TiltgenError`` message naming the file) and the other files still load.
    """
    from napari_tiltgen.io.readers import read

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        try:
            if str(p).lower().rstrip("/").endswith(FOLDER_SUFFIXES):  # OME-Zarr: lazily, every level
                from napari_tiltgen.io.ome_zarr import layer_data

                layers.append(layer_data(p))
                continue
            obj = read(p)
        except TiltgenError as exc:
            _notify_error(str(exc))
            continue
        except OSError as exc:  # permission denied, symlink loop, I/O error: one notification
            from napari_tiltgen.io.output import os_problem

            _notify_error(f"{exc.filename or p}: cannot read ({os_problem(exc)}).")
            continue
        except MemoryError:
            _notify_error(f"{p}: not enough memory to open this file.")
            continue
        layers.append(obj.to_layer_data())
        name = Path(p).name
        if getattr(obj, "tilt_angles", 0) is None:
            _notify_warning(
                f"{name}: no tilt angles found (.rawtlt/.tlt, .mdoc, extended header, file "
                "metadata). Set start and step in the 'Tilt series' widget (Plugins > "
                "napari-tiltgen)."
            )
        elif getattr(obj, "tilt_axis_known", True) is False:
            _notify_warning(
                f"{name}: the file does not record the tilt axis direction; it is not assumed "
                "vertical. Estimate it (alignment) or set it in the 'Tilt series' widget."
            )
    return layers or NO_LAYERS


def _notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error
    except ImportError:  # pragma: no cover - napari is always there when npe2 calls us
        raise TiltgenError(message) from None
    show_error(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
