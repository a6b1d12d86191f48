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
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.evaluate.arrays import _data_range, _pair, _voxel_size
from napari_tiltgen.evaluate.fsc import fsc, soft_mask
from napari_tiltgen.evaluate.surfaces import surface_distances

__all__ = ["compare_volumes", "mse", "nrmse", "psnr", "ssim", "ssim_per_slice"]


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
