"""Quality metrics: compare a volume (or image) with a reference, and two volumes with each other.

Everything here takes numpy arrays (torch tensors and :class:`~napari_tiltgen.io.model.Volume`
objects are accepted too) and returns plain floats, numpy arrays or small dataclasses. No Qt, no
napari, no torch needed at run time.

Argument order is ``(reference, test)`` everywhere (as in scikit-image's ``image_true,
image_test``); the reference defines the default data range.

Reference-based numbers (need a ground truth or a trusted reconstruction)
    :func:`mse`, :func:`psnr`, :func:`nrmse`, :func:`ssim` (2-D or 3-D), :func:`ssim_per_slice`,
    :func:`surface_distances` (Otsu segmentation -> surface points -> Chamfer / RMS / Hausdorff,
    as in the TSGNet paper), and :func:`compare_volumes` (all of them in one call).
Self-consistency (no ground truth)
    :func:`fsc` between two independent reconstructions, :func:`fsc_half_series` (even/odd tilt
    split), with resolutions at the 0.143 and 1/2-bit thresholds.

Units: distances are in voxels (``_px`` keys) and in Å (``_A`` keys) when a voxel size is known;
spatial frequencies in 1/px or 1/Å; resolutions in px or Å (resolution = 1 / frequency).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiltgen.errors import TiltgenError

if TYPE_CHECKING:  # metrics sits below io in the layer order; duck-typed at run time
    from napari_tiltgen.io.model import TiltSeries, Volume

__all__ = [
    "FSCResult",
    "chamfer_distance",
    "compare_volumes",
    "fsc",
    "fsc_half_series",
    "half_bit_threshold",
    "mse",
    "nrmse",
    "otsu_segment",
    "psnr",
    "resolution_at",
    "soft_mask",
    "ssim",
    "ssim_per_slice",
    "surface_distances",
    "surface_points",
]


# --------------------------------------------------------------------------- input handling
def _to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """numpy view/copy of an array, torch tensor, or object with ``.data`` (Volume/TiltSeries)."""
    if hasattr(x, "voxel_size_A") or hasattr(x, "pixel_size_A"):
        x = x.data
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TiltgenError(f"the {name} is not numeric (dtype {a.dtype}).")
    if np.iscomplexobj(a):
        raise TiltgenError(f"the {name} is complex; give real-valued images or volumes.")
    if a.size == 0:
        raise TiltgenError(f"the {name} is empty (shape {a.shape}).")
    return a


def _check_finite(a: np.ndarray, name: str) -> None:
    if a.dtype != bool and not np.all(np.isfinite(a)):
        n = int(np.count_nonzero(~np.isfinite(a)))
        raise TiltgenError(
            f"the {name} contains {n} NaN or infinite values; fix or mask them before "
            "computing metrics (e.g. replace them with the background value)."
        )


def _pair(reference: Any, test: Any, *, ndim: tuple[int, ...] | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    ref = _to_numpy(reference, "reference")
    tst = _to_numpy(test, "test image")
    if ref.shape != tst.shape:
        raise TiltgenError(
            f"the reference has shape {ref.shape} but the test has shape {tst.shape}; they must "
            "match voxel for voxel (reconstruct both at the same size, or crop/bin one of them)."
        )
    if ndim is not None and ref.ndim not in ndim:
        raise TiltgenError(
            f"expected a {' or '.join(f'{d}-D' for d in ndim)} array; got {ref.ndim}-D data "
            f"of shape {ref.shape}."
        )
    _check_finite(ref, "reference")
    _check_finite(tst, "test image")
    return ref.astype(np.float64, copy=False), tst.astype(np.float64, copy=False)


def _voxel_size(explicit: float | None, *objs: Any) -> float | None:
    """Explicit voxel size, else the first one carried by a Volume/TiltSeries argument."""
    vs = explicit
    if vs is None:
        for o in objs:
            vs = getattr(o, "voxel_size_A", None) or getattr(o, "pixel_size_A", None)
            if vs is not None:
                break
    if vs is None:
        return None
    vs = float(vs)
    if not np.isfinite(vs) or vs <= 0:
        raise TiltgenError(f"the voxel size must be a positive number of Å; got {vs}.")
    return vs


def _data_range(ref: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        if data_range <= 0:
            raise TiltgenError(
                "the reference is constant, so its data range is 0; give data_range explicitly."
            )
        return data_range
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise TiltgenError(f"data_range must be a positive number; got {data_range}.")
    return data_range


# --------------------------------------------------------------------------- pixel metrics
def mse(reference: Any, test: Any) -> float:
    """Mean squared error ``mean((test - reference)^2)``, in squared reference units.

    Examples
    --------
    >>> mse(np.zeros(4), np.full(4, 2.0))
    4.0
    """
    ref, tst = _pair(reference, test)
    return float(np.mean((tst - ref) ** 2))


def psnr(reference: Any, test: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Parameters
    ----------
    reference, test
        Arrays of the same shape (any dimension).
    data_range
        The "peak" value: the span of values the data can take. Default: the reference's range
        ``max - min`` (so the number does not depend on an arbitrary offset of the data). Give it
        explicitly to compare numbers across data sets (e.g. ``1.0`` for normalised images).

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the images are identical.

    Examples
    --------
    >>> round(psnr(np.array([0.0, 1.0]), np.array([0.1, 0.9])), 2)
    20.0
    """
    ref, tst = _pair(reference, test)
    dr = _data_range(ref, data_range)
    err = float(np.mean((tst - ref) ** 2))
    if err == 0.0:
        return math.inf
    return float(10.0 * np.log10(dr * dr / err))


def nrmse(reference: Any, test: Any) -> float:
    """Normalised root-mean-square error ``||test - reference||_2 / ||reference||_2``.

    The Euclidean normalisation (scikit-image's ``normalization="euclidean"``): 0 for a perfect
    match, 1 for an all-zero test, and ``|s - 1|`` for ``test = s * reference``. It is not
    invariant to an offset of the data; compare volumes in the same units (e.g. both
    background-subtracted).
    """
    ref, tst = _pair(reference, test)
    den = float(np.linalg.norm(ref.ravel()))
    if den == 0.0:
        raise TiltgenError("the reference is all zeros, so the NRMSE (relative to its norm) is "
                           "undefined; use mse() instead.")
    return float(np.linalg.norm((tst - ref).ravel()) / den)


def ssim(reference: Any, test: Any, data_range: float | None = None, *,
         gaussian_weights: bool = True, sigma: float = 1.5, win_size: int | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) of two 2-D images or two 3-D volumes.

    Built on :func:`skimage.metrics.structural_similarity`; a 3-D input uses a 3-D window (not a
    mean over slices; see :func:`ssim_per_slice` for that).

    Parameters
    ----------
    reference, test
        2-D or 3-D arrays of the same shape.
    data_range
        ``L`` in the stabilising constants ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``. Default:
        the reference's ``max - min`` (scikit-image refuses to guess for float data; we state
        the choice). Give it explicitly to compare numbers across data sets.
    gaussian_weights
        ``True`` (default): Gaussian window of standard deviation ``sigma`` (11 px wide for
        sigma 1.5) with population covariances, as in Wang et al. 2004 and most papers.
        ``False``: uniform ``win_size`` window (7 by default) with sample covariances
        (scikit-image's default).
    sigma
        Gaussian window width in pixels.
    win_size
        Uniform window size (odd); only used when ``gaussian_weights`` is ``False``.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical inputs.
    """
    from skimage.metrics import structural_similarity

    ref, tst = _pair(reference, test, ndim=(2, 3))
    dr = _data_range(ref, data_range)
    if gaussian_weights:
        need = 2 * int(3.5 * sigma + 0.5) + 1
        kw: dict[str, Any] = {"gaussian_weights": True, "sigma": float(sigma),
                              "use_sample_covariance": False}
    else:
        need = 7 if win_size is None else int(win_size)
        kw = {"win_size": need}
    if min(ref.shape) < need:
        raise TiltgenError(
            f"SSIM needs every side of the data to be at least {need} px for its window; the "
            f"shape is {ref.shape}. Use a smaller sigma/win_size or larger images."
        )
    return float(structural_similarity(ref, tst, data_range=dr, **kw))


def ssim_per_slice(reference: Any, test: Any, data_range: float | None = None, *,
                   axis: int = 0, gaussian_weights: bool = True, sigma: float = 1.5,
                   win_size: int | None = None) -> np.ndarray:
    """2-D SSIM of every slice along ``axis`` (e.g. every frame of a tilt series).

    One ``data_range`` (default: the range of the whole reference stack) is used for all slices
    so that the values are comparable. Returns an array of length ``shape[axis]``; take its mean
    for a single number.
    """
    ref, tst = _pair(reference, test, ndim=(3,))
    dr = _data_range(ref, data_range)
    ref = np.moveaxis(ref, axis, 0)
    tst = np.moveaxis(tst, axis, 0)
    return np.array([ssim(r, t, dr, gaussian_weights=gaussian_weights, sigma=sigma,
                          win_size=win_size) for r, t in zip(ref, tst)])


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


# --------------------------------------------------------------------------- segmentation / surfaces
def otsu_segment(volume: Any) -> tuple[np.ndarray, float]:
    """Object mask by Otsu's threshold (``skimage.filters.threshold_otsu``).

    Returns
    -------
    (mask, threshold)
        Boolean mask ``volume > threshold`` and the threshold (volume units).

    Raises
    ------
    TiltgenError
        If the volume is constant, or the mask is empty or covers every voxel.
    """
    from skimage.filters import threshold_otsu

    v = _to_numpy(volume, "volume").astype(np.float32, copy=False)
    _check_finite(v, "volume")
    if float(v.max()) == float(v.min()):
        raise TiltgenError("the volume is constant; there is no object to segment.")
    t = float(threshold_otsu(v))
    mask = v > t
    n = int(mask.sum())
    if n == 0 or n == mask.size:
        raise TiltgenError(
            f"Otsu segmentation found {'no' if n == 0 else 'only'} object voxels (threshold "
            f"{t:.4g}); the volume has no separable object and background."
        )
    return mask, t


def surface_points(volume: Any, threshold: float | None = None, method: str = "marching_cubes"
                   ) -> np.ndarray:
    """Points on the object surface, ``(n, 3)`` in voxel index coordinates ``(z, y, x)``.

    Parameters
    ----------
    volume
        3-D array.
    threshold
        Iso-level separating object and background; default: Otsu's threshold.
    method
        ``"marching_cubes"`` (default): vertices of the iso-surface at ``threshold`` through the
        grey values (:func:`skimage.measure.marching_cubes`), sub-voxel accurate, about one
        point per voxel edge crossed; the volume is padded with its minimum so surfaces touching
        the border are closed. ``"voxels"``: centres of the boundary voxels of the mask (object
        voxels with a 6-connected background neighbour); integer positions, biased half a voxel
        inwards.
    """
    v = _to_numpy(volume, "volume").astype(np.float32, copy=False)
    if v.ndim != 3:
        raise TiltgenError(f"surface points need a 3-D volume; got shape {v.shape}.")
    if threshold is None:
        mask, threshold = otsu_segment(v)
    else:
        _check_finite(v, "volume")
        mask = v > threshold
        if not mask.any() or mask.all():
            raise TiltgenError(f"the threshold {threshold:.4g} leaves no object/background "
                               "boundary in the volume.")
    if method == "marching_cubes":
        from skimage.measure import marching_cubes

        padded = np.pad(v, 1, mode="constant", constant_values=min(float(v.min()), threshold))
        verts, *_ = marching_cubes(padded, level=float(threshold))
        return verts.astype(np.float64) - 1.0
    if method == "voxels":
        from scipy.ndimage import binary_erosion

        inner = binary_erosion(mask, border_value=0)
        return np.argwhere(mask & ~inner).astype(np.float64)
    raise TiltgenError(f"unknown surface method {method!r}; use 'marching_cubes' or 'voxels'.")


def _directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(b).query(a, k=1, workers=-1)
    return d


def chamfer_distance(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric Chamfer distance ``(mean_a d(a, B) + mean_b d(b, A)) / 2``.

    ``d(p, S)`` is the Euclidean distance from ``p`` to the nearest point of ``S`` (scipy
    ``cKDTree``). In the units of the points. Two concentric sphere surfaces of radii ``r1`` and
    ``r2`` are ``|r1 - r2|`` apart. (Some papers use the sum of the two means, i.e. twice this,
    or squared distances; ours keeps the unit of length.)
    """
    a = np.asarray(points_a, dtype=np.float64)
    b = np.asarray(points_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) == 0 or len(b) == 0:
        raise TiltgenError(f"point clouds must be non-empty (n, d) arrays with the same d; got "
                           f"{a.shape} and {b.shape}.")
    return float(0.5 * (_directed(a, b).mean() + _directed(b, a).mean()))


def surface_distances(reference: Any, test: Any, voxel_size_A: float | None = None, *,
                      method: str = "marching_cubes", max_points: int | None = 1_000_000,
                      seed: int = 0) -> dict[str, Any]:
    """Surface agreement of two volumes after Otsu segmentation (as in the TSGNet paper).

    Each volume is thresholded with its own Otsu threshold (so that a different intensity scale
    does not matter), its surface is turned into points (:func:`surface_points`), and the
    nearest-neighbour distances between the two point clouds are summarised.

    Parameters
    ----------
    reference, test
        3-D volumes of the same shape (voxel grids must coincide).
    voxel_size_A
        Voxel size in Å (default: from a :class:`Volume` argument). Adds the ``*_A`` keys.
    method
        ``"marching_cubes"`` or ``"voxels"``, see :func:`surface_points`.
    max_points
        Randomly keep at most this many points per surface (the paper used 10^6); ``None``
        keeps all.
    seed
        Seed of that subsampling.

    Returns
    -------
    dict
        ``chamfer_px``: symmetric Chamfer distance (mean of the two directed mean distances);
        ``rms_surface_px``: ``sqrt`` of the mean squared distance over both directions (all
        points of both surfaces pooled); ``hausdorff_px``: largest distance in either direction;
        ``mean_ref_to_test_px`` and ``mean_test_to_ref_px``: the directed means (a surplus of
        surface in the test shows in the second, a lack in the first); ``threshold_ref`` and
        ``threshold_test``: Otsu thresholds (volume units); ``n_points_ref``,
        ``n_points_test``; and with a voxel size the same distances in Å (``chamfer_A``, ...).
    """
    vs = _voxel_size(voxel_size_A, reference, test)
    ref, tst = _pair(reference, test, ndim=(3,))
    _, t_ref = otsu_segment(ref)
    _, t_tst = otsu_segment(tst)
    pr = surface_points(ref, t_ref, method)
    pt = surface_points(tst, t_tst, method)
    rng = np.random.default_rng(seed)
    if max_points is not None:
        if len(pr) > max_points:
            pr = pr[rng.choice(len(pr), max_points, replace=False)]
        if len(pt) > max_points:
            pt = pt[rng.choice(len(pt), max_points, replace=False)]
    d_rt = _directed(pr, pt)
    d_tr = _directed(pt, pr)
    out: dict[str, Any] = {
        "chamfer_px": float(0.5 * (d_rt.mean() + d_tr.mean())),
        "rms_surface_px": float(np.sqrt((np.sum(d_rt**2) + np.sum(d_tr**2))
                                        / (d_rt.size + d_tr.size))),
        "hausdorff_px": float(max(d_rt.max(), d_tr.max())),
        "mean_ref_to_test_px": float(d_rt.mean()),
        "mean_test_to_ref_px": float(d_tr.mean()),
        "threshold_ref": t_ref,
        "threshold_test": t_tst,
        "n_points_ref": len(pr),
        "n_points_test": len(pt),
    }
    if vs is not None:
        for k in ("chamfer", "rms_surface", "hausdorff", "mean_ref_to_test", "mean_test_to_ref"):
            out[f"{k}_A"] = out[f"{k}_px"] * vs
    return out


# --------------------------------------------------------------------------- everything at once
def compare_volumes(reference: Any, test: Any, voxel_size_A: float | None = None, *,
                    fit_scale: bool = False, surface_method: str = "marching_cubes",
                    data_range: float | None = None) -> dict[str, Any]:
    """All reference-based numbers for a test volume against a reference, in one dict.

    Parameters
    ----------
    reference
        Ground truth (or trusted reconstruction), 3-D array or :class:`Volume`.
    test
        Volume to judge, same shape.
    voxel_size_A
        Voxel size in Å; default: from a :class:`Volume` argument. Without it, the ``*_A`` values
        are ``None``.
    fit_scale
        If ``True``, first replace ``test`` by ``a * test + b`` with ``a, b`` fitted by least
        squares to the reference (for methods whose output has arbitrary units, e.g. an INR);
        the surface metrics use their own thresholds and are not affected.
    surface_method
        ``"marching_cubes"`` or ``"voxels"`` (:func:`surface_points`).
    data_range
        Data range for PSNR and SSIM; default: the reference's ``max - min``.

    Returns
    -------
    dict
        Scalars (float, or ``None`` where not available):

        ``mse``, ``psnr_db``, ``nrmse``, ``ssim`` (3-D Gaussian window), ``data_range``;
        ``fsc_resolution_0.5_px`` / ``fsc_resolution_0.5_A``: resolution where the FSC between
        test and reference drops below 0.5 (the usual criterion against a noise-free reference;
        it corresponds to 0.143 between two half maps); ``fsc_resolution_0.143_px`` /
        ``fsc_resolution_0.143_A``; ``chamfer_px``, ``rms_surface_px``, ``hausdorff_px`` and
        their ``_A`` versions; ``threshold_ref``, ``threshold_test`` (Otsu);
        ``n_points_ref``, ``n_points_test``; ``scale`` and ``offset`` (1 and 0 unless
        ``fit_scale``); ``voxel_size_A``.

        Plus ``fsc_curve`` (an :class:`FSCResult`, for plotting) and ``warnings`` (a list of
        strings, e.g. when a volume has no separable object: the surface numbers are then NaN
        instead of failing the whole comparison).
    """
    vs = _voxel_size(voxel_size_A, reference, test)
    ref, tst = _pair(reference, test, ndim=(3,))
    a, b = 1.0, 0.0
    if fit_scale:
        x = tst.ravel()
        A = np.stack([x, np.ones_like(x)], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, ref.ravel(), rcond=None)
        tst = a * tst + b
    dr = _data_range(ref, data_range)
    out: dict[str, Any] = {
        "mse": mse(ref, tst),
        "psnr_db": psnr(ref, tst, dr),
        "nrmse": nrmse(ref, tst) if np.any(ref) else None,
        "ssim": ssim(ref, tst, dr) if min(ref.shape) >= 11 else None,
        "data_range": dr,
        "scale": float(a),
        "offset": float(b),
        "voxel_size_A": vs,
    }
    warnings: list[str] = []
    if out["ssim"] is None:
        warnings.append(f"SSIM skipped: volume {ref.shape} is smaller than its 11-voxel window.")
    curve = fsc(ref, tst, voxel_size_A=vs, mask=soft_mask(ref))  # the object, not the box
    for thr, key in ((0.5, "0.5"), (0.143, "0.143")):
        r = curve.resolution(thr)
        out[f"fsc_resolution_{key}_px"] = r / vs if vs else r
        out[f"fsc_resolution_{key}_A"] = r if vs else None
    try:
        out.update(surface_distances(ref, tst, vs, method=surface_method))
    except TiltgenError as exc:
        warnings.append(f"surface metrics skipped: {exc}")
        for k in ("chamfer", "rms_surface", "hausdorff", "mean_ref_to_test", "mean_test_to_ref"):
            out[f"{k}_px"] = math.nan
            out[f"{k}_A"] = math.nan if vs else None
    for k in ("chamfer", "rms_surface", "hausdorff", "mean_ref_to_test", "mean_test_to_ref"):
        out.setdefault(f"{k}_A", None)
    out["fsc_curve"] = curve
    out["warnings"] = warnings
    return out
