"""Segmentation and surfaces: Otsu threshold, surface points (marching cubes), chamfer and
surface distances between a reconstruction and its ground truth, in Angstrom.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.evaluate.arrays import _check_finite, _pair, _to_numpy, _voxel_size

__all__ = ["chamfer_distance", "otsu_segment", "surface_distances", "surface_points"]


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
