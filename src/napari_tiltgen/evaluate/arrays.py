"""Input handling shared by the metrics: arrays from volumes or tensors, finite and shape checks,
the voxel size from the objects or the caller, the data range of a reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError


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
