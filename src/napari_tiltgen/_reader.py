"""npe2 reader: MRC-family and TIFF tilt series / volumes as napari image layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.readers import SUPPORTED_SUFFIXES


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[tuple]] | None:
    """Return :func:`read_layers` for files we read, else ``None`` (napari tries other readers)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(SUPPORTED_SUFFIXES) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read each file into a layer data tuple.

    A file that cannot be read does not crash napari: its problem is shown as a napari
    notification (``TiltgenError`` message naming the file) and the other files still load.
    """
    from napari_tiltgen.io.readers import read

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        try:
            obj = read(p)
        except TiltgenError as exc:
            _notify_error(str(exc))
            continue
        layers.append(obj.to_layer_data())
        if getattr(obj, "tilt_angles", 0) is None:
            _notify_warning(
                f"{Path(p).name}: no tilt angles found (.rawtlt/.tlt, .mdoc, extended header). "
                "Set start and step in the 'Tilt series' widget (Plugins > napari-tiltgen)."
            )
    return layers


def _notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error
    except ImportError:  # pragma: no cover - napari is always there when npe2 calls us
        raise TiltgenError(message) from None
    show_error(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
