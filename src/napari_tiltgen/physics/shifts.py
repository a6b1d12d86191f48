"""The one policy for sub-pixel shifts of frames (``TiltSeries.shifts_px``).

A shift ``(dy, dx)`` of frame ``k`` means the projection of the volume appears moved by
``+shift`` in the recorded frame (:mod:`~napari_tiltgen.physics.geometry`). Shifting a signal
``a`` by ``s`` pixels along one axis is, everywhere in this package::

    out[i] = a(i - s)   with linear interpolation and a = 0 outside [0, n - 1]

and the interpolation runs across the frame edge too (a sample 0.3 px before the first pixel
is ``0.7 * a[0]``; SciPy calls this mode ``"grid-constant"``). This is what the batched
projector does for ``dy`` (its volume is zero outside the grid), what the external back-ends
(ASTRA, tomopy) see when ``dy`` (and for FBP ``dx``) is taken out of the data first, and what
the time-resolved DIP fit reads, so SIRT, ASTRA and DIP see the same numbers near frame edges
(before this module there were three edge rules: ``grid-constant``, ``constant`` and
``nearest``).

:func:`linear_taps` gives the two taps and weights, :func:`shift_frames` applies them to a stack
and :func:`unshift_frames` undoes recorded shifts (shifts by ``-shift``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "apply_taps",
    "apply_taps_adjoint",
    "linear_taps",
    "rotate_frames",
    "shift_frames",
    "unshift_frames",
]


def linear_taps(n: int, shifts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Taps of ``out[k, i] = a(i - shifts[k])`` on a grid of ``n`` samples.

    Returns
    -------
    (lo, hi, w_lo, w_hi)
        Each ``(n_shifts, n)``: ``out[k, i] = w_lo[k, i] * a[lo[k, i]] + w_hi[k, i] *
        a[hi[k, i]]``. Indices are clipped into ``[0, n - 1]``; a tap that falls outside has
        weight 0 (zero outside the grid).
    """
    s = np.asarray(shifts, dtype=np.float64).reshape(-1)
    pos = np.arange(n)[None, :] - s[:, None]
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64)
    hi = lo + 1
    w_lo = np.where((lo >= 0) & (lo < n), 1.0 - frac, 0.0)
    w_hi = np.where((hi >= 0) & (hi < n), frac, 0.0)
    return np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1), w_lo, w_hi


def _shift_axis(data: np.ndarray, shifts: np.ndarray, axis: int) -> np.ndarray:
    """Frame ``k`` of ``data`` ``(n, ny, nx)`` shifted by ``shifts[k]`` along ``axis`` (1 or 2)."""
    n_pix = data.shape[axis]
    lo, hi, w_lo, w_hi = linear_taps(n_pix, shifts)
    shape = [data.shape[0], 1, 1]
    shape[axis] = n_pix
    lo, hi = lo.reshape(shape), hi.reshape(shape)
    w_lo, w_hi = (w.reshape(shape).astype(data.dtype, copy=False) for w in (w_lo, w_hi))
    return np.take_along_axis(data, lo, axis) * w_lo + np.take_along_axis(data, hi, axis) * w_hi


def shift_frames(data: Any, dy: Any = None, dx: Any = None, *, order: int = 1) -> np.ndarray:
    """Move the content of frame ``k`` of ``data`` ``(n, ny, nx)`` by ``+(dy[k], dx[k])`` pixels.

    Linear interpolation with zero outside the frame (module docstring). ``None`` or all-zero
    shifts along an axis leave that axis alone; with no shift at all ``data`` is returned as is.
    Floating-point input keeps its dtype. ``order`` > 1 (spline interpolation, for frames that
    are looked at, such as an aligned ``.ali`` stack) keeps the same edge rule (SciPy's
    ``grid-constant``: zero outside).
    """
    out = np.asarray(data)
    if not np.issubdtype(out.dtype, np.floating):
        out = out.astype(np.float32)
    if out.ndim != 3:
        raise ValueError(f"frames must be a stack (n, ny, nx); got shape {out.shape}")
    if order != 1:
        return _spline_shift(out, dy, dx, int(order))
    for axis, s in ((1, dy), (2, dx)):
        if s is None:
            continue
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.size != out.shape[0]:
            raise ValueError(f"{s.size} shifts for {out.shape[0]} frames")
        if np.any(s):
            out = _shift_axis(out, s, axis)
    return out


def _spline_shift(data: np.ndarray, dy: Any, dx: Any, order: int) -> np.ndarray:
    from scipy import ndimage

    n = data.shape[0]
    sy = np.zeros(n) if dy is None else np.asarray(dy, dtype=np.float64).reshape(-1)
    sx = np.zeros(n) if dx is None else np.asarray(dx, dtype=np.float64).reshape(-1)
    if sy.size != n or sx.size != n:
        raise ValueError(f"{max(sy.size, sx.size)} shifts for {n} frames")
    return np.stack(
        [
            ndimage.shift(f, (a, b), order=order, mode="grid-constant", cval=0.0)
            for f, a, b in zip(data, sy, sx)
        ]
    ).astype(data.dtype, copy=False)


def unshift_frames(data: Any, dy: Any = None, dx: Any = None, *, order: int = 1) -> np.ndarray:
    """Undo recorded shifts: frame ``k`` moved by ``-(dy[k], dx[k])`` (same policy)."""
    neg = [None if s is None else -np.asarray(s, dtype=np.float64) for s in (dy, dx)]
    return shift_frames(data, *neg, order=order)


def apply_taps(taps: tuple[torch.Tensor, ...], p: torch.Tensor) -> torch.Tensor:
    """Rows of each frame of ``p`` ``(n, ny, nx)`` shifted by :func:`linear_taps` (as tensors)."""
    lo, hi, w_lo, w_hi = taps
    out = torch.empty_like(p)
    for i in range(p.shape[0]):
        out[i] = (
            p[i].index_select(0, lo[i]) * w_lo[i, :, None]
            + p[i].index_select(0, hi[i]) * w_hi[i, :, None]
        )
    return out


def apply_taps_adjoint(taps: tuple[torch.Tensor, ...], p: torch.Tensor) -> torch.Tensor:
    """Transpose of :func:`apply_taps` (the adjoint of the row shift)."""
    lo, hi, w_lo, w_hi = taps
    out = torch.zeros_like(p)
    for i in range(p.shape[0]):
        out[i].index_add_(0, lo[i], p[i] * w_lo[i, :, None])
        out[i].index_add_(0, hi[i], p[i] * w_hi[i, :, None])
    return out


def _shear_ramp(n: int, shifts: np.ndarray, axis: int) -> np.ndarray:
    """Fourier phase ramp (single precision) that shifts every line along ``axis`` (length
    ``n``) by its own amount; for :func:`_fft_shear`."""
    from scipy import fft as sfft

    k = sfft.rfftfreq(n)
    ph = k[None, :] * shifts[:, None] if axis == 1 else k[:, None] * shifts[None, :]
    return np.exp(-2j * np.pi * ph).astype(np.complex64)


def _fft_shear(img: np.ndarray, ramp: np.ndarray, axis: int) -> np.ndarray:
    """Shift every line of ``img`` along ``axis`` by the :func:`_shear_ramp` ``ramp`` (real
    FFTs in single precision: the ramp is exact, the rounding about 1e-7 of the range)."""
    from scipy import fft as sfft

    n = img.shape[axis]
    return sfft.irfft(sfft.rfft(img, axis=axis) * ramp, n=n, axis=axis)


def _shear_padding(ny: int, nx: int, a: float, b: float) -> tuple[int, int]:
    """Padded ``(py, px)`` that hold a ``ny x nx`` frame through the three shears ``a``, ``b``,
    ``a`` without any content wrapping round (plus 16 px for the ringing), as fast FFT sizes."""
    from scipy import fft as sfft

    ta, sb = abs(a), abs(b)
    py = ny + sb * (nx + ta * ny) + 16
    px = nx + ta * (ny + sb * (nx + ta * ny)) + 16
    return sfft.next_fast_len(int(np.ceil(py)), real=True), sfft.next_fast_len(
        int(np.ceil(px)), real=True
    )


def rotate_frames(data: Any, angle_deg: float) -> np.ndarray:
    """Each frame of ``(n, ny, nx)`` rotated by ``angle_deg`` about its centre, without blur.

    The same sense and centre as ``scipy.ndimage.rotate(frame, angle_deg, reshape=False)``
    (the content turns by ``-angle_deg`` in ``(x = column, y = row)`` coordinates about pixel
    ``((ny - 1) / 2, (nx - 1) / 2)``), but band-limited: three shears, each a sub-pixel shift
    of every row or column by a Fourier phase ramp, on the frame (less its border median)
    padded with zeros just enough that nothing wraps around; the corners brought in get the
    border median. A spline rotation smooths the frames by an amount that depends on the angle
    (a cubic spline there and back cost a noisy needle 0.2-0.3 dB in the frames an
    interpolation inserts, docs/alignment.md); this one does not.
    """
    out = np.asarray(data, dtype=np.float32)
    if out.ndim != 3:
        raise ValueError(f"frames must be a stack (n, ny, nx); got shape {out.shape}")
    n, ny, nx = out.shape
    t = np.radians(-float(angle_deg))
    a, b = -np.tan(t / 2.0), np.sin(t)
    py, px = _shear_padding(ny, nx, a, b)
    y0, x0 = (py - ny) // 2, (px - nx) // 2
    yc = np.arange(py) - (y0 + (ny - 1) / 2.0)
    xc = np.arange(px) - (x0 + (nx - 1) / 2.0)
    ramp_x = _shear_ramp(px, a * yc, 1)  # the same two ramps for every frame
    ramp_y = _shear_ramp(py, b * xc, 0)
    res = np.empty((n, ny, nx), dtype=np.float32)
    pad = np.zeros((py, px), np.float32)
    for i, f in enumerate(out):
        edge = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
        bg = float(np.median(edge))
        pad[:] = 0.0
        pad[y0 : y0 + ny, x0 : x0 + nx] = f - bg
        sheared = _fft_shear(pad, ramp_x, 1)
        sheared = _fft_shear(sheared, ramp_y, 0)
        sheared = _fft_shear(sheared, ramp_x, 1)
        res[i] = sheared[y0 : y0 + ny, x0 : x0 + nx] + bg
    return res
