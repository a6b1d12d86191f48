"""Helpers shared by the alignment steps: frames as float arrays, centred pixel coordinates,
border statistics, binning, object weights, the history record and the shift gauge.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from scipy import ndimage

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries


# --------------------------------------------------------------------------- helpers
def _frames(ts: TiltSeries, min_tilts: int = 2) -> np.ndarray:
    """The stack (float32, not copied), after checking the frame count and for NaN/inf."""
    where = ts.provenance.get("source")
    if ts.n_tilts < min_tilts:
        raise TiltgenError(f"alignment needs at least {min_tilts} tilts; this series has "
                           f"{ts.n_tilts}.", where)
    data = np.asarray(ts.data, dtype=np.float32)
    bad = [i for i in range(data.shape[0]) if not np.isfinite(data[i]).all()]
    if bad:
        raise TiltgenError(f"frames {bad[:10]} contain NaN or infinite values; remove or repair "
                           "those frames before aligning.", where)
    return data


def _centred(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) - (n - 1) / 2.0


def _border_stats(frames: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame median and robust sigma (MAD) of the outer ``width``-pixel ring."""
    n, ny, nx = frames.shape
    w = max(1, min(width, ny // 4, nx // 4))
    ring = np.concatenate([frames[:, :w, :].reshape(n, -1), frames[:, -w:, :].reshape(n, -1),
                           frames[:, w:-w, :w].reshape(n, -1),
                           frames[:, w:-w, -w:].reshape(n, -1)], axis=1).astype(np.float64)
    med = np.median(ring, axis=1)
    mad = np.median(np.abs(ring - med[:, None]), axis=1) * 1.4826
    return med, mad


def _history(ts: TiltSeries, entry: dict[str, Any]) -> dict[str, Any]:
    prov = copy.deepcopy(ts.provenance)
    prov.setdefault("history", []).append(entry)
    return prov


def _gauge_basis(angles_deg: np.ndarray) -> np.ndarray:
    t = np.deg2rad(angles_deg)
    return np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)


def _axis_offset_of(dx: np.ndarray, angles_deg: np.ndarray) -> float:
    """Constant term of the least-squares fit ``dx ~ A + alpha cos + beta sin``."""
    coef, *_ = np.linalg.lstsq(_gauge_basis(angles_deg), dx, rcond=None)
    return float(coef[0])


def _bin_frames(frames: np.ndarray, max_size: int) -> tuple[np.ndarray, int]:
    b = math.ceil(max(frames.shape[1:]) / max_size) if max_size else 1
    if b <= 1:
        return frames, 1
    n, ny, nx = frames.shape
    ny2, nx2 = (ny // b) * b, (nx // b) * b
    oy, ox = (ny - ny2) // 2, (nx - nx2) // 2
    f = frames[:, oy:oy + ny2, ox:ox + nx2]
    return f.reshape(n, ny2 // b, b, nx2 // b, b).mean(axis=(2, 4)), b


# --------------------------------------------------------------------------- centre of mass
def _noise_sigma(frames: np.ndarray) -> np.ndarray:
    """Per-frame white-noise sigma from neighbouring-pixel differences (robust to structure)."""
    d = np.diff(frames, axis=2).reshape(frames.shape[0], -1)
    med = np.median(d, axis=1)
    return np.median(np.abs(d - med[:, None]), axis=1) * 1.4826 / math.sqrt(2.0)


def _object_weights(frame: np.ndarray, bg: float, smooth_px: float = 2.0, dilate_px: int = 3
                    ) -> np.ndarray:
    """Background-subtracted frame, zero outside a (dilated) mask of the bright object.

    The mask is where the Gaussian-smoothed frame exceeds the border median by 5 noise sigmas
    (of the smoothed frame) and by 2 % of its peak; it is dilated by ``dilate_px`` to keep the
    soft edges. Background noise outside the mask therefore cannot bias the centre of mass,
    and inside it is zero-mean.
    """
    w = frame.astype(np.float64) - bg
    sm = ndimage.gaussian_filter(w, smooth_px)
    sig = _noise_sigma(frame[None])[0] / (2.0 * math.sqrt(math.pi) * smooth_px)
    mask = sm > max(5.0 * sig, 0.02 * float(sm.max()))
    if dilate_px > 0:
        mask = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(2, 1),
                                       iterations=dilate_px)
    return np.where(mask, w, 0.0)
