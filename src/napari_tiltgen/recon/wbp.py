"""Weighted (filtered) back-projection: angular weights for uneven tilt steps, the ramp filter
family, and WBP on a :class:`~napari_tiltgen.physics.projector.Projector`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.physics.projector import (
    Projector,
)
from napari_tiltgen.recon.common import _as_data, _preview

__all__ = ["FILTERS", "angular_weights", "filter_projections", "wbp", "wbp_iter"]


#: FBP/WBP filters: the ramp ``|f|`` times a window ``W(f)``, ``f`` in cycles per pixel.
FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ramp": lambda f: np.ones_like(f),
    "shepp-logan": lambda f: np.sinc(f),
    "cosine": lambda f: np.cos(np.pi * f),
    "hamming": lambda f: 0.54 + 0.46 * np.cos(2.0 * np.pi * f),
    "hann": lambda f: 0.5 + 0.5 * np.cos(2.0 * np.pi * f),
}


_FILTER_ALIASES = {"ram-lak": "ramp", "ramlak": "ramp", "shepp_logan": "shepp-logan",
                   "hanning": "hann"}


def _filter_name(name: str) -> str:
    f = str(name).lower().strip()
    f = _FILTER_ALIASES.get(f, f)
    if f not in FILTERS:
        raise TiltgenError(f"unknown filter {name!r}; choose one of {', '.join(FILTERS)}.")
    return f


# ---------------------------------------------------------------------------- WBP / FBP
def angular_weights(tilt_angles_deg: Any) -> np.ndarray:
    """Angular interval each tilt stands for, radians (for weighted backprojection).

    Interior tilts get half the distance between their neighbours, the first and last the full
    distance to their one neighbour, so uniform tilts over ``[0, 180)`` degrees sum to ``pi``.
    Works for any order and any spacing.
    """
    a = np.deg2rad(np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1))
    if a.size == 1:
        return np.array([np.pi])
    order = np.argsort(a, kind="stable")
    s = a[order]
    gaps = np.diff(s)
    w = np.empty_like(s)
    w[1:-1] = (s[2:] - s[:-2]) / 2.0
    w[0], w[-1] = gaps[0], gaps[-1]
    out = np.empty_like(w)
    out[order] = w
    return out


def filter_response(n_det: int, filter: str = "ramp") -> tuple[np.ndarray, int]:
    """Frequency response of the FBP filter on a padded grid.

    The ramp is the discrete (band-limited) ramp of Kak & Slaney, built in real space and Fourier
    transformed, so it has no DC offset; it is then multiplied by the window. The grid is padded
    to the next power of two at least ``2 * n_det`` so that the circular convolution does not
    wrap around.

    Returns
    -------
    (response, padded_length)
        ``response`` has ``padded_length // 2 + 1`` values (for ``torch.fft.rfft``).
    """
    f_name = _filter_name(filter)
    n_pad = max(64, 1 << math.ceil(math.log2(2 * n_det)))
    k = np.concatenate([np.arange(0, n_pad // 2 + 1), np.arange(-n_pad // 2 + 1, 0)])
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.real(np.fft.rfft(h))
    f = np.fft.rfftfreq(n_pad)  # cycles per pixel, 0 .. 0.5
    return ramp * FILTERS[f_name](f), n_pad


def filter_projections(data: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
    """Ramp-filter every detector row of ``data`` ``(n_tilts, ny, n_det)`` along ``u``.

    Rows are padded by repeating their edge values (so a non-zero background at the edges of
    the field of view does not ring) to a power of two at least twice their length.
    """
    n_t, ny, n_det = data.shape
    resp, n_pad = filter_response(n_det, filter)
    left = (n_pad - n_det) // 2
    right = n_pad - n_det - left
    rows = data.reshape(n_t * ny, 1, n_det)
    padded = torch.nn.functional.pad(rows, (left, right), mode="replicate")[:, 0, :]
    spec = torch.fft.rfft(padded, dim=-1)
    spec *= torch.as_tensor(resp, dtype=spec.real.dtype, device=data.device)
    out = torch.fft.irfft(spec, n=n_pad, dim=-1)[:, left:left + n_det]
    return out.reshape(n_t, ny, n_det).to(data.dtype)


def wbp_iter(projector: Projector, data: Any, filter: str = "ramp") -> ProgressGen[torch.Tensor]:
    """Weighted (filtered) backprojection.

    Parameters
    ----------
    projector
        Geometry (tilt angles in degrees, shifts, axis offset).
    data
        Projections ``(n_tilts, ny, n_det)``.
    filter
        One of :data:`FILTERS` (``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``,
        ``"hann"``).

    Returns
    -------
    torch.Tensor
        Volume ``(nz, ny, nx)`` in density units (uncorrected for the missing wedge).
    """
    b = _as_data(projector, data)
    yield Progress(0.05, "WBP: filtering projections")
    q = filter_projections(b, filter)
    yield Progress(0.3, "WBP: backprojecting")
    x = projector.fbp_backproject(q, angular_weights(projector.tilt_angles_deg))
    yield Progress(1.0, "WBP: done", preview=_preview(x))
    return x


# ---------------------------------------------------------------------------- plain wrappers
def wbp(projector: Projector, data: Any, filter: str = "ramp") -> torch.Tensor:
    """:func:`wbp_iter` run to completion."""
    return run(wbp_iter(projector, data, filter), show=False)
