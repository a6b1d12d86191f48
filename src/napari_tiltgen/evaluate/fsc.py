"""Fourier shell correlation: between two volumes (soft-masked), half-bit threshold,
resolution at a threshold, and the half-set FSC of a tilt series (even/odd tilts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError

if TYPE_CHECKING:  # metrics sits below io in the layer order; duck-typed at run time
    from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.evaluate.arrays import _pair, _to_numpy, _voxel_size

__all__ = ["FSCResult", "fsc", "fsc_half_series", "half_bit_threshold", "resolution_at", "soft_mask"]


# --------------------------------------------------------------------------- FSC
def half_bit_threshold(n_voxels: np.ndarray | float) -> np.ndarray:
    """The 1/2-bit information threshold of van Heel & Schatz (2005), eq. 17.

    ``T(n) = (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))`` where ``n`` is the
    number of Fourier voxels in the shell (full sphere, both Friedel mates counted). ``T(1) = 1``
    and ``T -> 0.1716`` for large shells.
    """
    n = np.maximum(np.asarray(n_voxels, dtype=np.float64), 1.0)
    s = 1.0 / np.sqrt(n)
    return (0.2071 + 1.9102 * s) / (1.2071 + 0.9102 * s)


@dataclass
class FSCResult:
    """A Fourier shell correlation curve and the resolutions read from it.

    Attributes
    ----------
    frequency
        Shell frequencies, 1/Å when ``voxel_size_A`` is known, else 1/px (cycles per pixel,
        Nyquist = 0.5). Shell ``i`` holds Fourier voxels with ``|k| * N`` rounding to ``i``,
        ``N`` the smallest side of the volume; its frequency is ``i / N`` (per px).
    fsc
        FSC value of each shell.
    n_voxels
        Number of Fourier voxels in each shell (full sphere).
    half_bit
        The 1/2-bit threshold curve for these shells (:func:`half_bit_threshold`).
    voxel_size_A
        Voxel size in Å, or ``None``.
    resolution_0143
        Resolution (Å, or px without a voxel size) where the FSC first drops below 0.143.
    resolution_half_bit
        Resolution where the FSC first drops below the 1/2-bit curve.
    """

    frequency: np.ndarray
    fsc: np.ndarray
    n_voxels: np.ndarray
    half_bit: np.ndarray
    voxel_size_A: float | None = None
    resolution_0143: float = field(init=False)
    resolution_half_bit: float = field(init=False)

    def __post_init__(self) -> None:
        self.resolution_0143 = self.resolution(0.143)
        self.resolution_half_bit = self.resolution("half-bit")

    @property
    def frequency_unit(self) -> str:
        return "1/Å" if self.voxel_size_A else "1/px"

    @property
    def resolution_unit(self) -> str:
        return "Å" if self.voxel_size_A else "px"

    def resolution(self, threshold: float | str | np.ndarray = 0.143) -> float:
        """Resolution (Å or px) at a threshold: a number, ``"half-bit"`` or a curve per shell.

        See :func:`resolution_at`.
        """
        if isinstance(threshold, str):
            if threshold.replace("_", "-").lower() not in ("half-bit", "1/2-bit", "halfbit"):
                raise TiltgenError(f"unknown FSC threshold {threshold!r}; give a number or "
                                   "'half-bit'.")
            threshold = self.half_bit
        return resolution_at(self.frequency, self.fsc, threshold)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists and floats)."""
        return {
            "frequency": self.frequency.tolist(), "frequency_unit": self.frequency_unit,
            "fsc": self.fsc.tolist(), "n_voxels": self.n_voxels.tolist(),
            "half_bit": self.half_bit.tolist(), "voxel_size_A": self.voxel_size_A,
            "resolution_0143": self.resolution_0143,
            "resolution_half_bit": self.resolution_half_bit,
            "resolution_unit": self.resolution_unit,
        }


def resolution_at(frequency: np.ndarray, fsc_values: np.ndarray,
                  threshold: float | np.ndarray) -> float:
    """Resolution ``1 / f`` where the FSC first falls below ``threshold``.

    The crossing is searched from the first non-zero shell outwards and located by linear
    interpolation between the two shells around it.

    Parameters
    ----------
    frequency
        Shell frequencies (1/Å or 1/px), increasing, starting at 0.
    fsc_values
        FSC per shell.
    threshold
        A constant (0.143, 0.5, ...) or a curve with one value per shell (1/2-bit).

    Returns
    -------
    float
        Resolution in the reciprocal unit of ``frequency`` (Å or px). If the FSC never drops
        below the threshold, the Nyquist resolution (``1 / frequency[-1]``, i.e. 2 voxels) is
        returned: the true resolution is at least that good. If it is already below at the first
        non-zero shell, ``1 / frequency[1]`` is returned.
    """
    f = np.asarray(frequency, dtype=np.float64)
    c = np.asarray(fsc_values, dtype=np.float64)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), c.shape)
    d = c - t
    below = np.flatnonzero(d[1:] < 0) + 1
    if below.size == 0:
        return float(1.0 / f[-1])
    i = int(below[0])
    if i == 1 and d[0] < 0:
        return float(1.0 / f[1])
    # d[i-1] >= 0 > d[i]: linear crossing
    w = d[i - 1] / (d[i - 1] - d[i])
    fc = f[i - 1] + w * (f[i] - f[i - 1])
    return float(1.0 / fc) if fc > 0 else math.inf


def soft_mask(volume: Any, *, margin_px: float | None = None, edge_px: float | None = None
              ) -> np.ndarray:
    """A soft mask around the object of ``volume``, falling smoothly to 0 at the box edges too.

    The object is what Otsu's threshold of the lightly smoothed volume keeps; the mask is 1 within
    ``margin_px`` of it and falls to 0 over ``edge_px`` voxels with a raised cosine. Independently,
    every box face gets the same raised-cosine taper, so the masked volume is smooth across the
    periodic boundary the FFT assumes (no correlated edge artefacts at high frequency). A volume
    with no separable object (flat, noise only) gets the box taper alone.

    Parameters
    ----------
    volume
        2-D or 3-D array (or :class:`Volume`); usually the mean of the two volumes compared.
    margin_px, edge_px
        Margin around the object and width of the soft edge, voxels. Defaults: ``N / 16`` and
        ``N / 10`` (at least 2 and 3 voxels), ``N`` the smallest side.

    Returns
    -------
    ndarray
        Float32 mask, same shape, values in [0, 1].
    """
    from scipy import ndimage

    v = _to_numpy(volume, "volume").astype(np.float32)
    n = min(v.shape)
    margin = max(2.0, n / 16.0) if margin_px is None else float(margin_px)
    edge = max(3.0, n / 10.0) if edge_px is None else float(edge_px)
    mask = np.ones(v.shape, np.float32)
    smooth = ndimage.gaussian_filter(v, 1.0)
    if float(smooth.max()) > float(smooth.min()):
        from skimage.filters import threshold_otsu

        obj = smooth > threshold_otsu(smooth)
        if 0 < obj.mean() < 0.9:
            d = ndimage.distance_transform_edt(~obj).astype(np.float32) - margin
            mask = np.where(d <= 0, 1.0,
                            np.where(d < edge, 0.5 * (1 + np.cos(np.pi * d / edge)), 0.0))
    for ax, m in enumerate(v.shape):  # taper at the box faces
        i = np.arange(m, dtype=np.float32)
        dist = np.minimum(i, m - 1 - i)
        w = np.where(dist < edge, 0.5 * (1 - np.cos(np.pi * dist / edge)), 1.0)
        shape = [1] * v.ndim
        shape[ax] = m
        mask = mask * w.reshape(shape)
    return mask.astype(np.float32)


def fsc(volume1: Any, volume2: Any, voxel_size_A: float | None = None, *,
        mask: Any = None) -> FSCResult:
    """Fourier shell correlation between two volumes (or two 2-D images: Fourier ring correlation).

    ``FSC(shell) = Re sum(F1 conj(F2)) / sqrt(sum|F1|^2 sum|F2|^2)`` over the Fourier voxels of the
    shell. Shells are one frequency sample wide (``1 / N`` cycles/px, ``N`` the smallest side) and
    run from 0 to Nyquist; corners beyond Nyquist are ignored.

    Unmasked (the default), empty background and the box edges take part: two reconstructions
    that agree on nothing but their sharp box edges or their zero background can give a curve
    that dips and climbs back towards 1 at high frequency. ``mask="auto"`` multiplies both
    volumes by :func:`soft_mask` of their mean (object plus margin, raised-cosine edges, tapered
    box faces) first: use it for real comparisons.

    Parameters
    ----------
    volume1, volume2
        Arrays (or Volumes, or torch tensors) of the same shape, 2-D or 3-D.
    voxel_size_A
        Voxel size in Å. Default: taken from a :class:`Volume` argument if it has one; otherwise
        frequencies are per pixel.
    mask
        ``None`` (no mask), ``"auto"`` (:func:`soft_mask` of the mean of both), or an array of
        the volumes' shape with values in [0, 1].

    Returns
    -------
    FSCResult
        Curve, shell voxel counts, 1/2-bit curve, and resolutions at 0.143 and 1/2-bit.
    """
    vs = _voxel_size(voxel_size_A, volume1, volume2)
    a, b = _pair(volume1, volume2, ndim=(2, 3))
    if isinstance(mask, str):
        if mask != "auto":
            raise TiltgenError(f"unknown FSC mask {mask!r}; use 'auto', an array or None.")
        mask = soft_mask(0.5 * (a + b))
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != a.shape:
            raise TiltgenError(f"the FSC mask has shape {m.shape}, the volumes {a.shape}.")
        # remove each volume's mean under the mask first: a background level both share would
        # otherwise correlate through the mask's own spectrum at every frequency
        wsum = float(m.sum()) or 1.0
        a = (a - float((a * m).sum()) / wsum) * m
        b = (b - float((b * m).sum()) / wsum) * m
    fa = np.fft.rfftn(a.astype(np.float32))
    fb = np.fft.rfftn(b.astype(np.float32))
    shape = a.shape
    n = min(shape)
    # |k| in cycles/px on the rfft grid
    k2 = np.zeros(fa.shape, dtype=np.float32)
    for ax, m in enumerate(shape):
        freq = np.fft.rfftfreq(m) if ax == len(shape) - 1 else np.fft.fftfreq(m)
        sl = [None] * len(shape)
        sl[ax] = slice(None)
        k2 = k2 + (freq.astype(np.float32) ** 2)[tuple(sl)]
    shell = np.rint(np.sqrt(k2) * n).astype(np.int64).ravel()
    n_shells = n // 2 + 1
    # weight 2 for voxels whose Friedel mate is not stored by rfft, 1 for the self-mated planes
    w = np.full(fa.shape[-1], 2.0)
    w[0] = 1.0
    if shape[-1] % 2 == 0:
        w[-1] = 1.0
    w = np.broadcast_to(w, fa.shape).ravel()
    keep = shell < n_shells
    shell, w = shell[keep], w[keep]
    fa, fb = fa.ravel()[keep], fb.ravel()[keep]
    num = np.bincount(shell, weights=w * (fa * np.conj(fb)).real, minlength=n_shells)
    pa = np.bincount(shell, weights=w * (np.abs(fa) ** 2), minlength=n_shells)
    pb = np.bincount(shell, weights=w * (np.abs(fb) ** 2), minlength=n_shells)
    count = np.bincount(shell, weights=w, minlength=n_shells)
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / den, 0.0)
    freq = np.arange(n_shells) / n
    if vs is not None:
        freq = freq / vs
    return FSCResult(frequency=freq, fsc=curve, n_voxels=count,
                     half_bit=half_bit_threshold(count), voxel_size_A=vs)


def fsc_half_series(ts: TiltSeries, reconstruct: Callable[[TiltSeries], Volume | np.ndarray],
                    voxel_size_A: float | None = None, *, mask: Any = "auto") -> FSCResult:
    """Resolution from one tilt series: FSC between reconstructions of its even and odd tilts.

    Even/odd convention: the frames are put in order of increasing tilt angle (not file or
    acquisition order); the "even" half is frames 0, 2, 4, ... of that order and the "odd" half
    frames 1, 3, 5, ... Each half is reconstructed with ``reconstruct`` and the two volumes are
    compared with :func:`fsc`.

    Caveats: each half has twice the angular step of the full series, so the FSC measures the
    agreement of two *half-data* reconstructions (no correction to the full series is applied;
    the full series is usually somewhat better). Apart from noise, the halves also differ by
    their angular sampling artefacts, which lower the FSC at high frequency; in the missing wedge
    both halves are empty. Use the 0.143 and 1/2-bit numbers to compare methods and settings on
    the same data rather than as absolute resolutions.

    Parameters
    ----------
    ts
        A tilt series with angles (at least 4 frames).
    reconstruct
        Callable ``TiltSeries -> Volume`` (or array), e.g.
        ``lambda t: recon.reconstruct(t, method="sirt", iterations=50)``. It must return volumes
        of the same shape for both halves.
    voxel_size_A
        Voxel size in Å; default: the volume's voxel size, else the series' pixel size.
    mask
        As in :func:`fsc`; default ``"auto"`` (soft mask around the object).

    Returns
    -------
    FSCResult
        Curve and resolutions (``resolution_0143``, ``resolution_half_bit``).
    """
    angles = ts.require_angles()
    if ts.n_tilts < 4:
        raise TiltgenError(f"an even/odd FSC needs at least 4 tilts; this series has {ts.n_tilts}.")
    order = np.argsort(angles, kind="stable")
    even = reconstruct(ts.subset(order[0::2]))
    odd = reconstruct(ts.subset(order[1::2]))
    vs = _voxel_size(voxel_size_A, even, odd, ts)
    return fsc(even, odd, voxel_size_A=vs, mask=mask)
