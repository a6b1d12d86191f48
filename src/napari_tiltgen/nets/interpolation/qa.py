"""Leave-one-out QA of frame interpolation on the user's own stack: each real frame predicted
from its real neighbours and scored (PSNR, SSIM) against the recorded frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_tiltgen.core.devices import resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import scaled
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.nets.interpolation.frames import (
    ProgressGen,
    interpolate_at,
    reprojection_frames,
)
from napari_tiltgen.nets.interpolation.network import (
    TiltInterpNet,
)

__all__ = ["LeaveOneOutResult", "clears_margin", "leave_one_out", "paired_gain"]


# ---------------------------------------------------------------------------- leave-one-out QA
@dataclass
class LeaveOneOutResult:
    """Real frames hidden one at a time and predicted from their neighbours.

    Attributes
    ----------
    indices
        Indices (in angle order) of the frames that were predicted (all but the first and last).
    tilt_angles
        Their angles, degrees.
    gaps_deg
        Angle between each frame's two neighbours, degrees (the gap the method bridged).
    real, predicted
        ``(n, ny, nx)`` real and predicted frames.
    psnr, ssim
        Per frame (data range: each real frame's ``max - min``).
    method
        The method used.
    warnings
        Out-of-range messages.
    """

    indices: np.ndarray
    tilt_angles: np.ndarray
    gaps_deg: np.ndarray
    real: np.ndarray
    predicted: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def difference(self) -> np.ndarray:
        """``predicted - real``."""
        return self.predicted - self.real

    def table(self) -> str:
        lines = [f"leave-one-out QA ({self.method}): {len(self.indices)} frames",
                 f"{'frame':>6} {'angle':>8} {'gap':>6} {'PSNR dB':>8} {'SSIM':>6}"]
        for i, a, g, p, s in zip(self.indices, self.tilt_angles, self.gaps_deg, self.psnr,
                                 self.ssim):
            lines.append(f"{i:6d} {a:8.2f} {g:6.2f} {p:8.2f} {s:6.3f}")
        lines.append(f"{'mean':>6} {'':8} {'':6} {np.mean(self.psnr):8.2f} "
                     f"{np.mean(self.ssim):6.3f}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "indices": self.indices.tolist(),
                "tilt_angles_deg": self.tilt_angles.tolist(), "gaps_deg": self.gaps_deg.tolist(),
                "psnr_db": self.psnr.tolist(), "ssim": self.ssim.tolist(),
                "mean_psnr_db": float(np.mean(self.psnr)), "mean_ssim": float(np.mean(self.ssim)),
                "warnings": list(self.warnings)}


def _scores(real: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame PSNR and SSIM, each frame's data range its own ``max - min``."""
    from napari_tiltgen.evaluate.metrics import psnr, ssim

    ps, ss = [], []
    for r, p in zip(real, pred):
        dr = float(r.max() - r.min()) or 1.0
        ps.append(psnr(r, p, dr))
        ss.append(ssim(r, p, dr) if min(r.shape) >= 11 else float("nan"))
    return np.asarray(ps), np.asarray(ss)


def paired_gain(psnr: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean per-frame PSNR gain of one method over another on the same frames, and its standard
    error (``inf`` from a single frame)."""
    d = np.asarray(psnr, float) - np.asarray(reference, float)
    se = float(np.std(d, ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("inf")
    return float(np.mean(d)), se


def clears_margin(gain: float, stderr: float, margin: float) -> bool:
    """The rule a QA gain must meet to count: at least ``margin`` dB and more than one standard
    error (``auto``'s choice against linear, and its transfer check)."""
    return math.isfinite(gain) and gain >= margin and gain - stderr > 0.0


def blend(a: LeaveOneOutResult, b: LeaveOneOutResult, method: str) -> LeaveOneOutResult:
    """The mean of two methods' predictions of the same frames, scored (an ensemble)."""
    if not np.array_equal(a.indices, b.indices):
        raise ValueError("blend needs two results on the same frames")
    pred = (0.5 * (a.predicted + b.predicted)).astype(np.float32)
    ps, ss = _scores(a.real, pred)
    return LeaveOneOutResult(a.indices, a.tilt_angles, a.gaps_deg, a.real, pred, ps, ss, method,
                             [*a.warnings, *b.warnings])


def leave_one_out(ts: TiltSeries, method: str = "pretrained", *,
                  indices: Sequence[int] | None = None, weights: str | Path | None = None,
                  device: str = "auto", allow_out_of_range: bool = False,
                  reprojection_iterations: int = 50, scale: str | int = "auto", k: int = 1,
                  model: tuple[TiltInterpNet, dict[str, Any]] | None = None,
                  quiet: bool = False, symmetric: bool | None = None) -> ProgressGen:
    """Leave-one-out QA for a real (experimental) stack (progress generator).

    Each interior frame ``i`` (in angle order) is hidden and predicted from frames ``i - 1`` and
    ``i + 1``: the model then bridges twice the series' step, so a series recorded every 2
    degrees tests the model at a 4 degree gap. For ``"reprojection"`` the frames are split into
    two interleaved halves; each half is predicted from a SIRT reconstruction of the other (two
    reconstructions instead of one per frame).

    Parameters
    ----------
    ts
        Tilt series with angles (degrees).
    method
        ``"pretrained"``, ``"linear"``, ``"reprojection"``, or ``"adapted"`` (with ``model``).
    indices
        Frames (angle order) to test; default every frame with neighbours at distance ``k``.
    weights, device, allow_out_of_range, reprojection_iterations, scale, model, quiet, symmetric
        See :func:`interpolate_at`.
    k
        Predict frame ``i`` from frames ``i - k`` and ``i + k`` (the gap is then about ``2 k``
        times the step; ``"reprojection"`` supports only ``k = 1``).

    Returns
    -------
    LeaveOneOutResult
    """
    ts = ts.sorted_by_angle()
    a = ts.require_angles()
    n = ts.n_tilts
    k = int(k)
    if k < 1:
        raise TiltgenError(f"the neighbour distance k must be >= 1; got {k}.")
    if n < 2 * k + 1:
        raise TiltgenError(f"leave-one-out at neighbour distance {k} needs at least {2 * k + 1} "
                           "tilts.")
    idx = np.arange(k, n - k) if indices is None else np.asarray(indices, dtype=int)
    if idx.size == 0 or idx.min() < k or idx.max() > n - 1 - k:
        raise TiltgenError(f"frames to test must be frames {k}..{n - 1 - k} (angle order), "
                           f"which have neighbours {k} frames away.")
    gaps = a[idx + k] - a[idx - k]
    if method == "reprojection" and k != 1:
        raise TiltgenError("reprojection leave-one-out supports only k = 1.")
    if method == "reprojection":
        pred = np.empty((idx.size,) + ts.data.shape[1:], np.float32)
        msgs: list[str] = []
        for half in (0, 1):
            sel = idx % 2 == half
            if not sel.any():
                continue
            keep = np.flatnonzero(np.arange(n) % 2 != half)
            frames = yield from scaled(
                reprojection_frames(ts.subset(keep), a[idx[sel]], reprojection_iterations,
                                    resolve_device(device)), 0.5 * half, 0.5 * half + 0.5,
                f"half {half + 1}/2 ")
            pred[sel] = frames
    else:
        pairs = [(int(i - k), int(i + k), [float((a[i] - a[i - k]) / (a[i + k] - a[i - k]))])
                 for i in idx]
        pred, _angles, msgs = yield from interpolate_at(
            ts, pairs, method, weights=weights, device=device,
            allow_out_of_range=allow_out_of_range, scale=scale, model=model, quiet=quiet,
            symmetric=symmetric)
    real = np.asarray(ts.data[idx], np.float32)
    ps, ss = _scores(real, pred)
    return LeaveOneOutResult(idx, a[idx], gaps, real, pred, ps, ss, method, msgs)
