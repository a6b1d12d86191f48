"""Degradations of clean tilt series: what a microscope adds to the projections.

:func:`degrade` turns clean frames ``(n, ny, nx)`` into realistic ones, in this order:

1. tilt-axis error: every frame rotated in-plane by the same small angle (the whole stack's
   axis is off y by ``axis_error_deg``);
2. vacuum offset and background gradient (a linear ramp whose direction drifts slowly across
   the frames) — steps 1-2 form the *clean reference* (``return_clean=True``): the frames a
   perfect detector would record at the stack's geometry, without noise or jitter;
3. residual jitter: every frame shifted by its own random ``(dy, dx)`` (normal, ``jitter_px``
   standard deviation per axis, cubic-spline interpolation);
4. Poisson (shot) noise at ``peak_counts`` electrons for the brightest pixels (the stack's
   99.9th percentile), with the background included;
5. Gaussian read noise (``gaussian_sigma`` x the stack's clean range) and scan-line noise (one
   random offset per detector row, ``scan_line_sigma`` x range; STEM rows are scanned along x).

Levels are relative to the clean stack's range (99.9th - 0.1th percentile), so they mean the
same at any intensity scale. :func:`sample_params` draws random parameters over the range the
training data use (``"train"``) or a fixed "realistic" setting for benchmarks.

Example
-------
>>> import numpy as np
>>> clean = np.zeros((3, 32, 32), np.float32); clean[:, 8:24, 8:24] = 1.0
>>> noisy = degrade(clean, np.random.default_rng(0), DegradeParams(gaussian_sigma=0.05))
>>> round(float((noisy - clean).std()), 2)
0.05
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError

__all__ = ["DegradeParams", "degrade", "sample_params"]


@dataclass
class DegradeParams:
    """Degradation levels (defaults: none; every step off).

    Attributes
    ----------
    peak_counts
        Electrons per pixel at the stack's 99.9th percentile (Poisson noise); ``None``: none.
    gaussian_sigma
        Gaussian noise standard deviation, fraction of the clean stack's range.
    scan_line_sigma
        Per-row offset standard deviation, fraction of the range.
    jitter_px
        Standard deviation of each frame's random shift, pixels per axis.
    axis_error_deg
        In-plane rotation of every frame, degrees (tilt-axis error).
    offset
        Vacuum offset added to every frame, fraction of the range.
    gradient
        Peak-to-peak amplitude of a linear background ramp, fraction of the range.
    """

    peak_counts: float | None = None
    gaussian_sigma: float = 0.0
    scan_line_sigma: float = 0.0
    jitter_px: float = 0.0
    axis_error_deg: float = 0.0
    offset: float = 0.0
    gradient: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_params(rng: np.random.Generator, level: str = "train") -> DegradeParams:
    """Random degradation parameters.

    Parameters
    ----------
    rng
        Random generator.
    level
        ``"train"``: wide ranges (peak dose 15-3000 e-, Gaussian 0-3 %, scan lines 0-1.5 %,
        jitter 0-1.5 px, axis error up to 1.5 degrees, offsets and gradients up to 30 % / 20 %;
        a fifth of the draws are noise-free). ``"realistic"``: the benchmark setting (dose
        100-1000 e-, Gaussian 0.5-2 %, scan lines 0.3-1 %, jitter 0.5-1.5 px, axis error up
        to 1 degree, offsets and gradients up to 20 % / 10 %). ``"clean"``: none.
    """
    if level == "clean":
        return DegradeParams()
    if level == "realistic":
        return DegradeParams(
            peak_counts=float(np.exp(rng.uniform(np.log(100.0), np.log(1000.0)))),
            gaussian_sigma=float(rng.uniform(0.005, 0.02)),
            scan_line_sigma=float(rng.uniform(0.003, 0.01)),
            jitter_px=float(rng.uniform(0.5, 1.5)),
            axis_error_deg=float(rng.uniform(-1.0, 1.0)),
            offset=float(rng.uniform(-0.1, 0.2)),
            gradient=float(rng.uniform(0.0, 0.1)))
    if level != "train":
        raise TiltgenError(f"unknown degradation level {level!r} (train, realistic, clean).")
    if rng.random() < 0.2:
        return DegradeParams(jitter_px=float(rng.uniform(0.0, 1.0)),
                             axis_error_deg=float(rng.uniform(-1.0, 1.0)))
    return DegradeParams(
        peak_counts=(float(np.exp(rng.uniform(np.log(15.0), np.log(3000.0))))
                     if rng.random() < 0.85 else None),
        gaussian_sigma=float(rng.uniform(0.0, 0.03)),
        scan_line_sigma=float(rng.uniform(0.0, 0.015)) if rng.random() < 0.6 else 0.0,
        jitter_px=float(rng.uniform(0.0, 1.5)),
        axis_error_deg=float(rng.uniform(-1.5, 1.5)),
        offset=float(rng.uniform(-0.2, 0.3)),
        gradient=float(rng.uniform(0.0, 0.2)) if rng.random() < 0.6 else 0.0)


def _range(frames: np.ndarray) -> tuple[float, float]:
    sample = frames.ravel()[:: max(1, frames.size // 200_000)]
    lo, hi = np.percentile(sample, [0.1, 99.9])
    return float(lo), float(max(hi - lo, 1e-12))


def degrade(frames: np.ndarray, rng: np.random.Generator, params: DegradeParams | None = None,
            *, return_clean: bool = False, **levels: Any) -> Any:
    """Degrade clean frames (see the module docstring for the steps and their order).

    Parameters
    ----------
    frames
        ``(n, ny, nx)`` (or ``(ny, nx)``) clean frames, any units (>= 0 for shot noise).
    rng
        Random generator (the noise, jitter and ramps are functions of its state).
    params
        Levels; default :class:`DegradeParams` with ``levels`` applied, e.g.
        ``degrade(f, rng, gaussian_sigma=0.02, jitter_px=1.0)``.
    return_clean
        Also return the clean reference (axis error and background, no noise, no jitter).

    Returns
    -------
    np.ndarray or (np.ndarray, np.ndarray)
        Degraded float32 frames of the input's shape (and the clean reference).
    """
    from scipy.ndimage import rotate, shift

    if params is None:
        params = DegradeParams(**levels)
    elif levels:
        params = DegradeParams(**{**params.to_dict(), **levels})
    a = np.asarray(frames, dtype=np.float32)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3 or not np.all(np.isfinite(a)):
        raise TiltgenError("degrade needs finite frames of shape (n, ny, nx).")
    lo, rng_span = _range(a)
    n, ny, nx = a.shape
    ref = a.copy()
    if abs(params.axis_error_deg) > 1e-3:
        for i in range(n):
            ref[i] = rotate(ref[i], params.axis_error_deg, reshape=False, order=1,
                            mode="nearest")
    if params.offset or params.gradient:
        yy = (np.arange(ny, dtype=np.float32) / max(ny - 1, 1) - 0.5)[:, None]
        xx = (np.arange(nx, dtype=np.float32) / max(nx - 1, 1) - 0.5)[None, :]
        phi0 = rng.uniform(0, 2 * np.pi)
        drift = rng.normal(0, 0.05)
        for i in range(n):
            phi = phi0 + drift * i
            ramp = np.cos(phi) * xx + np.sin(phi) * yy
            ref[i] += rng_span * (params.offset + params.gradient * ramp)
    out = ref.copy()
    if params.jitter_px > 0:
        for i in range(n):
            d = rng.normal(0.0, params.jitter_px, 2)
            out[i] = shift(out[i], d, order=3, mode="nearest")
    if params.peak_counts:
        base = min(lo, float(out.min()))
        scale = params.peak_counts / rng_span  # counts per unit intensity
        lam = np.clip((out - base) * scale, 0, None)
        out = rng.poisson(lam).astype(np.float32) / scale + base
    if params.gaussian_sigma > 0:
        out += rng.normal(0.0, params.gaussian_sigma * rng_span, out.shape).astype(np.float32)
    if params.scan_line_sigma > 0:
        out += rng.normal(0.0, params.scan_line_sigma * rng_span,
                          (n, ny, 1)).astype(np.float32)
    out = out.astype(np.float32)
    ref = ref.astype(np.float32)
    if single:
        out, ref = out[0], ref[0]
    return (out, ref) if return_clean else out
