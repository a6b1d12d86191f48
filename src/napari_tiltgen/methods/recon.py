"""Conventional tomographic reconstruction: WBP/FBP, SIRT, SART and TV-regularised.

Every algorithm is a generator that yields :class:`~napari_tiltgen.progress.Progress` events and
``return``-s its result (see :mod:`napari_tiltgen.progress`), so napari runs it in a thread worker
with a real cancel (closing the generator stops it between iterations), and the CLI and API drive
it with :func:`~napari_tiltgen.progress.run`. All of them use the one projector of
:mod:`napari_tiltgen.physics.projector`.

Two levels:

* tensor level: :func:`wbp_iter`, :func:`sirt_iter`, :func:`sart_iter`, :func:`tv_iter` take a
  :class:`~napari_tiltgen.physics.projector.Projector` and a data tensor ``(n_tilts, ny, n_det)``
  and return a tensor ``(nz, ny, nx)``; :func:`wbp`, :func:`sirt`, :func:`sart`,
  :func:`tv_reconstruct` run them to completion;
* data-model level: :func:`reconstruct_iter` / :func:`reconstruct` take a
  :class:`~napari_tiltgen.io.model.TiltSeries` and return a
  :class:`~napari_tiltgen.io.model.Volume` with provenance, on the ``"torch"`` backend (this
  module) or an external one (:mod:`napari_tiltgen.methods.backends`).

Units: volumes in density units per voxel, projections in density x pixel length, angles in
degrees, shifts and offsets in pixels.

Example
-------
>>> from napari_tiltgen.simulate.phantoms import sphere_phantom
>>> ts, truth = sphere_phantom(size=32, tilt_step=6.0)
>>> vol = reconstruct(ts, "sirt", iterations=20, show=False)
>>> vol.shape
(32, 32, 32)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.methods._torch import num_threads
from napari_tiltgen.methods.recon_names import BACKENDS, METHODS
from napari_tiltgen.physics.geometry import ordered_subsets
from napari_tiltgen.physics.projector import (
    DEFAULT_CHUNK_BYTES,
    Projector,
    resolve_device,
    suggested_threads,
)
from napari_tiltgen.progress import Progress, ProgressGen, run

__all__ = [
    "BACKENDS",
    "FILTERS",
    "METHODS",
    "angular_weights",
    "filter_projections",
    "reconstruct",
    "reconstruct_iter",
    "run_with_oom_fallback",
    "sart",
    "sart_iter",
    "sirt",
    "sirt_iter",
    "tv_iter",
    "tv_reconstruct",
    "wbp",
    "wbp_iter",
    "with_vertical_axis",
]

_ALIASES = {"fbp": "wbp", "os-sart": "sart", "tv-cp": "tv"}

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


# ---------------------------------------------------------------------------- helpers
def _method_name(method: str) -> str:
    m = str(method).lower().strip()
    m = _ALIASES.get(m, m)
    if m not in METHODS:
        raise TiltgenError(f"unknown reconstruction method {method!r}; choose one of "
                           f"{', '.join(METHODS)} (fbp is an alias of wbp).")
    return m


def _filter_name(name: str) -> str:
    f = str(name).lower().strip()
    f = _FILTER_ALIASES.get(f, f)
    if f not in FILTERS:
        raise TiltgenError(f"unknown filter {name!r}; choose one of {', '.join(FILTERS)}.")
    return f


def _preview(x: torch.Tensor) -> np.ndarray:
    """Central z-slice ``(ny, nx)`` of the current estimate, as numpy."""
    return x[x.shape[0] // 2].detach().float().cpu().numpy().copy()


def _safe_reciprocal(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 / t`` where ``t > eps * max(t)``, else 0 (rays or voxels that see nothing)."""
    thresh = eps * float(t.max()) if t.numel() else 0.0
    out = torch.zeros_like(t)
    mask = t > thresh
    out[mask] = 1.0 / t[mask]
    return out


def _as_data(projector: Projector, data: Any) -> torch.Tensor:
    """Data as a tensor on the projector's device; shares a writable float array (no copy)."""
    if isinstance(data, torch.Tensor):
        d = data
    else:
        a = np.asarray(data)
        d = torch.from_numpy(a) if a.flags.writeable and a.dtype.kind == "f" else \
            torch.tensor(a)
    if tuple(d.shape) != projector.projection_shape:
        raise ValueError(f"data must have shape {projector.projection_shape}; "
                         f"got {tuple(d.shape)}")
    return d.to(device=projector.device, dtype=projector.dtype).contiguous()


def _check_iterations(iterations: int) -> int:
    it = int(iterations)
    if it < 1:
        raise TiltgenError(f"the number of iterations must be at least 1; got {iterations}.")
    return it


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


# ---------------------------------------------------------------------------- SIRT
def sirt_iter(
    projector: Projector,
    data: Any,
    iterations: int = 100,
    relaxation: float = 1.0,
    positivity: bool = True,
    x0: torch.Tensor | None = None,
    preview_every: int = 10,
) -> ProgressGen[torch.Tensor]:
    """SIRT: ``x <- x + relaxation * C A^T R (b - A x)``, ``R = 1/(A 1)``, ``C = 1/(A^T 1)``.

    Parameters
    ----------
    projector, data
        Geometry and projections ``(n_tilts, ny, n_det)``.
    iterations
        Number of full iterations (each one forward and one back projection).
    relaxation
        Step length, in (0, 2); 1 is the classic SIRT.
    positivity
        Clip negative densities to 0 after every iteration.
    x0
        Starting volume (default zeros).
    preview_every
        Attach the central z-slice as a preview every this many iterations (0: never).

    Yields
    ------
    Progress
        One per iteration, with ``values["residual"]`` = ``||b - A x|| / ||b||``.
    """
    iterations = _check_iterations(iterations)
    b = _as_data(projector, data)
    row = _safe_reciprocal(projector.row_sums())  # builds the operator before x is allocated
    col = _safe_reciprocal(projector.column_sums()) * float(relaxation)
    x = (torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
         if x0 is None else torch.as_tensor(x0).to(projector.device, projector.dtype).clone())
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    chunked = not projector.has_row_shifts
    for it in range(iterations):
        if chunked:
            # y-slices are independent: update chunk by chunk, no full-size temporaries
            sq = torch.zeros((), dtype=torch.float64, device=x.device)  # no GPU sync per chunk
            for y0, y1 in projector.chunks():
                xc = x[:, y0:y1, :]
                res = projector.forward_slices(xc).neg_().add_(b[:, y0:y1, :])  # b - A x
                sq += torch.linalg.vector_norm(res).double() ** 2
                res.mul_(row)
                xc.addcmul_(col, projector.adjoint_slices(res))
                if positivity:
                    xc.clamp_(min=0.0)
            rel = math.sqrt(float(sq)) / b_norm
        else:
            res = b - projector.forward(x)
            rel = float(torch.linalg.vector_norm(res)) / b_norm
            res *= row
            x += col * projector.adjoint(res)
            if positivity:
                x.clamp_(min=0.0)
        show = preview_every > 0 and ((it + 1) % preview_every == 0 or it + 1 == iterations)
        yield Progress((it + 1) / iterations, f"SIRT iteration {it + 1}/{iterations}",
                       preview=_preview(x) if show else None, values={"residual": rel})
    return x


# ---------------------------------------------------------------------------- SART
def sart_iter(
    projector: Projector,
    data: Any,
    iterations: int = 10,
    n_subsets: int = 8,
    relaxation: float = 1.0,
    positivity: bool = True,
    x0: torch.Tensor | None = None,
    preview_every: int = 1,
) -> ProgressGen[torch.Tensor]:
    """Ordered-subset SART: a SIRT update with the tilts of one subset at a time.

    The tilts are sorted by angle and dealt into ``n_subsets`` interleaved subsets (every
    ``n_subsets``-th tilt), so that every subset spans the whole tilt range; ``n_subsets =
    n_tilts`` is classic SART with one tilt per update. One iteration visits every subset once,
    so it costs about one SIRT iteration but converges several times faster.

    Parameters
    ----------
    iterations
        Passes over all subsets.
    n_subsets
        Number of ordered subsets (clipped to ``[1, n_tilts]``).
    relaxation, positivity, x0, preview_every
        As for :func:`sirt_iter`.
    """
    iterations = _check_iterations(iterations)
    b = _as_data(projector, data)
    n_sub = int(min(max(1, n_subsets), projector.n_tilts))
    subsets = ordered_subsets(projector.tilt_angles_deg, n_sub)
    x = (torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
         if x0 is None else torch.as_tensor(x0).to(projector.device, projector.dtype).clone())
    ops = []
    for idx in subsets:
        sub = projector.subset(idx)
        ops.append((sub, torch.as_tensor(idx, device=projector.device),
                    _safe_reciprocal(sub.row_sums()),
                    _safe_reciprocal(sub.column_sums()) * float(relaxation)))
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    for it in range(iterations):
        sq = torch.zeros((), dtype=torch.float64, device=x.device)
        for sub, idx, row, col in ops:
            res = b.index_select(0, idx) - sub.forward(x)
            sq += torch.linalg.vector_norm(res).double() ** 2
            res *= row
            x += col * sub.adjoint(res)
            if positivity:
                x.clamp_(min=0.0)
        show = preview_every > 0 and ((it + 1) % preview_every == 0 or it + 1 == iterations)
        yield Progress((it + 1) / iterations,
                       f"SART iteration {it + 1}/{iterations} ({n_sub} subsets)",
                       preview=_preview(x) if show else None,
                       values={"residual": math.sqrt(float(sq)) / b_norm})
    return x


# ---------------------------------------------------------------------------- TV (Chambolle-Pock)
def _grad(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Forward differences along ``dims`` (zero at the far boundary), stacked on a new axis 0."""
    g = torch.zeros((len(dims),) + tuple(x.shape), dtype=x.dtype, device=x.device)
    for i, d in enumerate(dims):
        n = x.shape[d]
        g[i].narrow(d, 0, n - 1).copy_(x.narrow(d, 1, n - 1) - x.narrow(d, 0, n - 1))
    return g


def _grad_adjoint(g: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Exact adjoint of :func:`_grad` (minus the divergence)."""
    out = torch.zeros(g.shape[1:], dtype=g.dtype, device=g.device)
    for i, d in enumerate(dims):
        n = g.shape[d + 1]
        gi = g[i].narrow(d, 0, n - 1)
        out.narrow(d, 1, n - 1).add_(gi)
        out.narrow(d, 0, n - 1).sub_(gi)
    return out


def tv_iter(
    projector: Projector,
    data: Any,
    iterations: int = 100,
    tv_weight: float = 0.01,
    tv_dims: int = 3,
    positivity: bool = True,
    preview_every: int = 10,
) -> ProgressGen[torch.Tensor]:
    """Total-variation regularised reconstruction (preconditioned Chambolle-Pock).

    Minimises ``1/2 ||A x - b||^2_R + lam * TV(x)`` (with ``x >= 0`` if ``positivity``), where
    ``R = 1/(A 1)`` weights each ray by its inverse length as SIRT does and ``TV`` is the
    isotropic total variation. The weight is made independent of the data scale and the number
    of tilts: ``lam = tv_weight * n_tilts * s`` with ``s`` the typical density along a ray (99.9th
    percentile of ``b / (A 1)``). Uses the diagonal preconditioning of Pock & Chambolle (2011), so
    there is no step size to tune.

    Parameters
    ----------
    iterations
        Primal-dual iterations (each one forward and one back projection).
    tv_weight
        Strength of the TV term, dimensionless; about 0.005-0.05 for typical data (higher:
        smoother, fewer streaks and less noise, lower contrast of small features).
    tv_dims
        3: TV over (z, y, x); 2: TV within each slice perpendicular to the tilt axis (z, x).
    positivity, preview_every
        As for :func:`sirt_iter`.
    """
    iterations = _check_iterations(iterations)
    if tv_dims not in (2, 3):
        raise TiltgenError(f"tv_dims must be 2 (per slice) or 3; got {tv_dims}.")
    if tv_weight < 0:
        raise TiltgenError(f"tv_weight must be >= 0; got {tv_weight}.")
    dims = (0, 1, 2) if tv_dims == 3 else (0, 2)
    b = _as_data(projector, data)
    row_len = projector.row_sums()
    sigma = _safe_reciprocal(row_len)
    tau = 1.0 / (projector.column_sums() + 2.0 * len(dims))
    row_full = row_len.expand_as(b)
    long_rays = row_full > 0.25 * float(row_len.max())
    dens = (b[long_rays] / row_full[long_rays]).float()
    s = float(torch.quantile(dens[:: max(1, dens.numel() // 1_000_000)], 0.999)) if dens.numel() \
        else 1.0
    lam = float(tv_weight) * projector.n_tilts * max(s, 1e-12)
    x = torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
    x_bar = x.clone()
    p = torch.zeros_like(b)
    q = torch.zeros((len(dims),) + projector.volume_shape, dtype=x.dtype, device=x.device)
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    for it in range(iterations):
        res = projector.forward(x_bar) - b
        rel = float(torch.linalg.vector_norm(res)) / b_norm
        # dual of the R-weighted data term with sigma = R: p <- (p + sigma (A x_bar - b)) / 2
        p.add_(sigma * res).mul_(0.5)
        # dual of lam * TV: projection onto the ball of radius lam (sigma = 1/2 per difference)
        q.add_(_grad(x_bar, dims), alpha=0.5)
        scale = (torch.sqrt(torch.sum(q * q, dim=0)) / max(lam, 1e-30)).clamp_(min=1.0)
        q.div_(scale)
        x_old = x
        x = x - tau * (projector.adjoint(p) + _grad_adjoint(q, dims))
        if positivity:
            x.clamp_(min=0.0)
        x_bar = 2.0 * x - x_old
        show = preview_every > 0 and ((it + 1) % preview_every == 0 or it + 1 == iterations)
        yield Progress((it + 1) / iterations, f"TV iteration {it + 1}/{iterations}",
                       preview=_preview(x) if show else None, values={"residual": rel})
    return x


# ---------------------------------------------------------------------------- plain wrappers
def wbp(projector: Projector, data: Any, filter: str = "ramp") -> torch.Tensor:
    """:func:`wbp_iter` run to completion."""
    return run(wbp_iter(projector, data, filter), show=False)


def sirt(projector: Projector, data: Any, iterations: int = 100, **kwargs: Any) -> torch.Tensor:
    """:func:`sirt_iter` run to completion."""
    return run(sirt_iter(projector, data, iterations, **kwargs), show=False)


def sart(projector: Projector, data: Any, iterations: int = 10, **kwargs: Any) -> torch.Tensor:
    """:func:`sart_iter` run to completion."""
    return run(sart_iter(projector, data, iterations, **kwargs), show=False)


def tv_reconstruct(projector: Projector, data: Any, iterations: int = 100,
                   **kwargs: Any) -> torch.Tensor:
    """:func:`tv_iter` run to completion."""
    return run(tv_iter(projector, data, iterations, **kwargs), show=False)


# ---------------------------------------------------------------------------- devices, OOM
def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_with_oom_fallback(
    make_gen: Callable[[torch.device, int], ProgressGen[Any]],
    device: torch.device,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ProgressGen[tuple[Any, torch.device]]:
    """Run ``make_gen(device, chunk_bytes)``; on a GPU out-of-memory error retry smaller, then CPU.

    Attempts on a CUDA device: the given chunk size, one eighth of it, then the CPU. Each retry
    yields a :class:`Progress` whose message says what happened. On the CPU an out-of-memory
    error becomes a :class:`TiltgenError` asking for a smaller volume.

    Returns
    -------
    (result, device)
        The generator's result and the device it was computed on.
    """
    attempts = [(device, chunk_bytes)]
    if device.type == "cuda":
        attempts += [(device, max(1 << 20, chunk_bytes // 8)), (torch.device("cpu"), chunk_bytes)]
    for i, (dev, chunk) in enumerate(attempts):
        try:
            result = yield from make_gen(dev, chunk)
            return result, dev
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if i + 1 == len(attempts):
                raise TiltgenError(
                    f"out of memory on {dev}: the volume and its projector do not fit. Bin the "
                    "tilt series (2x2), crop it, or reconstruct a thinner volume.") from None
            nxt_dev, _nxt_chunk = attempts[i + 1]
            what = ("smaller chunks" if nxt_dev == dev else f"the {nxt_dev.type.upper()}")
            yield Progress(0.0, f"{dev.type.upper()} out of memory; retrying with {what}")
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- TiltSeries level
def with_vertical_axis(ts: TiltSeries) -> tuple[TiltSeries, str | None]:
    """The series with its tilt axis along y, and a note for the user if it had to be turned.

    A stack whose tilt axis is nearer to x than to y is turned by a multiple of 90 degrees
    (exact, :meth:`TiltSeries.with_vertical_tilt_axis`); the volume is then in the turned frame.
    """
    axis = ts.tilt_axis_angle_deg
    if abs(((axis + 90.0) % 180.0) - 90.0) <= 45.0:
        return ts, None
    turned = ts.with_vertical_tilt_axis()
    return turned, (f"tilt axis at {axis:.1f} deg from image Y: the stack was turned by "
                    f"{axis - turned.tilt_axis_angle_deg:.0f} deg so that the axis runs along y "
                    "(the volume's x and y follow the turned stack).")


def _checked_series(ts: TiltSeries) -> tuple[np.ndarray, np.ndarray]:
    angles = ts.require_angles()
    where = ts.provenance.get("source")
    axis = ((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
    if abs(axis) > 45.0:
        raise TiltgenError(
            f"the tilt axis is at {ts.tilt_axis_angle_deg:.1f} deg from the image Y axis (near "
            "horizontal); the reconstruction needs it along y. Rotate the stack first (Tilt "
            "series widget: 'Rotate stack so the tilt axis is vertical', or "
            "TiltSeries.with_vertical_tilt_axis()).", where)
    data = np.asarray(ts.data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; fix or crop them "
                           "before reconstructing.", where)
    return data, angles


def reconstruct_iter(
    ts: TiltSeries,
    method: str = "sirt",
    iterations: int = 100,
    *,
    backend: str = "torch",
    device: str = "auto",
    filter: str = "ramp",
    relaxation: float = 1.0,
    positivity: bool = True,
    n_subsets: int = 8,
    tv_weight: float = 0.01,
    tv_dims: int = 3,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    preview_every: int = 10,
    n_threads: int | None = None,
) -> ProgressGen[Volume]:
    """Reconstruct a tilt series into a volume, as a progress generator.

    Parameters
    ----------
    ts
        Tilt series with tilt angles (degrees); its ``shifts_px`` ``(dy, dx)`` are applied. The
        tilt axis must run along y (within 45 degrees; the small rest is ignored).
    method
        ``"wbp"`` (alias ``"fbp"``), ``"sirt"``, ``"sart"`` or ``"tv"``; see :data:`METHODS`.
    iterations
        SIRT/TV iterations, or SART passes over all subsets (ignored by WBP).
    backend
        ``"torch"`` (this package's projector), ``"astra"`` (astra-toolbox) or ``"tomopy"``.
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    filter
        WBP filter: ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"``.
    relaxation
        SIRT/SART step length (1 is classic).
    positivity
        Clip negative densities (SIRT, SART, TV).
    n_subsets
        SART ordered subsets.
    tv_weight, tv_dims
        TV strength (dimensionless, see :func:`tv_iter`) and 2-D (per slice) or 3-D TV.
    thickness_px
        Volume thickness ``nz`` along the beam, pixels (default: the frame width ``nx``).
    axis_offset_px
        Tilt-axis offset from the detector centre along x, pixels.
    preview_every
        Send the central z-slice as a preview every this many iterations (0: never).
    n_threads
        CPU threads for torch (or ASTRA workers) during the run; default: 1 for small problems
        (see :func:`~napari_tiltgen.physics.projector.suggested_threads`), else torch's setting.

    Returns
    -------
    Volume
        ``(nz, ny, nx)`` float32 in density units, voxel size = pixel size (Å), with provenance
        ``method``, ``parameters``, ``backend``, ``device``, ``seconds`` and the input's history.
    """
    m = _method_name(method)
    backend = str(backend).lower()
    if backend not in BACKENDS:
        raise TiltgenError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if m != "wbp":
        iterations = _check_iterations(iterations)
    filt = _filter_name(filter)
    if not 0.0 < float(relaxation) < 2.0:
        raise TiltgenError(f"relaxation must lie in (0, 2); got {relaxation}.")
    data, angles = _checked_series(ts)
    if backend != "torch":
        from napari_tiltgen.methods import backends

        backends.require_backend(backend, m)
    _, ny, nx = data.shape
    nz = int(thickness_px) if thickness_px else nx
    if nz < 1:
        raise TiltgenError(f"thickness must be at least 1 pixel; got {thickness_px}.")
    shape = (nz, ny, nx)
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise TiltgenError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiltgenError("device 'cuda' was asked for but no CUDA GPU is available; use "
                           "device 'auto' or 'cpu'.")
    params: dict[str, Any] = {"iterations": None if m == "wbp" else iterations,
                              "thickness_px": nz, "axis_offset_px": float(axis_offset_px)}
    if m == "wbp":
        params["filter"] = filt
    if m in ("sirt", "sart"):
        params.update(relaxation=float(relaxation), positivity=bool(positivity))
    if m == "sart":
        params["n_subsets"] = int(n_subsets)
    if m == "tv":
        params.update(tv_weight=float(tv_weight), tv_dims=int(tv_dims),
                      positivity=bool(positivity))

    t0 = time.perf_counter()
    shifts = ts.shifts_px
    if backend == "torch":
        def make(dev_: torch.device, chunk: int) -> ProgressGen[torch.Tensor]:
            proj = Projector(shape, angles, shifts, axis_offset_px, nx, dev_,
                             max_chunk_bytes=chunk)
            if m == "wbp":
                return wbp_iter(proj, data, filt)
            if m == "sirt":
                return sirt_iter(proj, data, iterations, relaxation, positivity,
                                 preview_every=preview_every)
            if m == "sart":
                return sart_iter(proj, data, iterations, n_subsets, relaxation, positivity,
                                 preview_every=preview_every)
            return tv_iter(proj, data, iterations, tv_weight, tv_dims, positivity,
                           preview_every=preview_every)

        threads = n_threads if n_threads else suggested_threads(shape, len(angles))
        with num_threads(threads):
            x, used = yield from run_with_oom_fallback(make, dev)
        arr = x.detach().to("cpu", torch.float32).numpy()
        used_device = str(used)
    else:
        from napari_tiltgen.methods import backends

        arr, used_device = yield from backends.reconstruct_external_iter(
            backend, data, angles, shifts, axis_offset_px, shape, m, iterations, filt,
            relaxation, positivity, n_subsets, dev, n_threads)

    prov_in = ts.provenance
    history = copy.deepcopy(prov_in.get("history", []))
    history.append({"step": "reconstruct", "method": m, "backend": backend, **params})
    provenance = {
        "method": m,
        "parameters": params,
        "backend": backend,
        "device": used_device,
        "seconds": round(time.perf_counter() - t0, 3),
        "input": prov_in.get("source"),
        # the angles the volume was reconstructed from: they define its missing wedge
        "tilt_angles": [round(float(a), 4) for a in angles],
        "history": history,
    }
    return Volume(np.ascontiguousarray(arr, dtype=np.float32), voxel_size_A=ts.pixel_size_A,
                  provenance=provenance)


def reconstruct(ts: TiltSeries, method: str = "sirt", iterations: int = 100, *,
                show: bool = True, callback: Callable[[Progress], Any] | None = None,
                **kwargs: Any) -> Volume:
    """:func:`reconstruct_iter` run to completion (tqdm bar on stderr when ``show``).

    Accepts every keyword of :func:`reconstruct_iter` (``backend``, ``device``, ``filter``...).
    """
    return run(reconstruct_iter(ts, method, iterations, **kwargs), show=show, callback=callback,
               desc=_method_name(method).upper())
