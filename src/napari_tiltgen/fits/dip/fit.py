"""Time-resolved (4-D) tomography with a deep image prior (DIP).

A sample that changes during the acquisition (sintering, growth, alloying under in-situ heating)
is seen by each frame of the tilt series in a different state. A static reconstruction blurs the
states together; a reconstruction from a short window of tilts is sharp in time but suffers from
the missing angles. Following Craig, Kadu, Batenburg & Bals ("3D visualization of in situ
nanoscale dynamics in TEM via self-supervised deep learning", after the time-dependent DIP of Yoo
et al., IEEE TMI 2021), a network maps a *slice coordinate* ``y`` (along the tilt axis) and a
*time* ``t`` to a 2-D orthoslice ``(nz, nx)`` of the volume at that time. The network is trained
on the one data set alone (self-supervised): the slice predicted at the time ``t_k`` when frame
``k`` was recorded is forward-projected at that frame's tilt angle and compared with detector row
``y`` of frame ``k``. Stacking the slices gives a full volume at every time, ``(t, z, y, x)``.

The network (:class:`DIPNetwork`)
---------------------------------
Designed so that a fit of 64^3 voxels x 100 time points runs on a 2-core CPU::

    x(y, t) = softplus(B_0(y) + sum_r w_r(y, t) B_r(y))

* ``B(y) = G(c(y))``: ``R + 1`` basis images ``(nz, nx)`` decoded by a small convolutional
  decoder ``G`` (the image prior) from a learned latent code ``c(y)``; the codes live on knots
  every ``latent_stride`` slices and are interpolated linearly in ``y``, so neighbouring slices
  share their code;
* ``w(y, t)``: ``R`` mixing weights from a small MLP of Fourier features of ``y`` and of the
  normalised time ``s = (t - t_first) / (t_last - t_first)`` in [0, 1] (frequencies ``1 ..
  time_frequencies`` half-periods over the series).

The decoder runs once per slice, not once per (slice, time): the time dependence costs ``R``
multiply-adds per voxel, which is what makes the fit cheap. ``R`` (``n_components``) bounds how
complex the change may be; ``temporal_smoothness`` is the one knob for how fast it may happen.

Training (:func:`fit_dip_iter`)
-------------------------------
1. Static SIRT of all tilts (:func:`napari_tiltgen.methods.recon.sirt`) sets the intensity scale
   and is the *warm start*: the network is first fitted to output the SIRT slices at every time
   (``warm_start_steps``).
2. Self-supervised fit (``steps``): each step takes ``slices_per_step`` slices and
   ``frames_per_step`` frames (default all), predicts each slice at each frame's time, projects it
   at that frame's angle with the package's projector (:mod:`napari_tiltgen.physics.projector`,
   the same Joseph operator SIRT uses) and minimises::

       ||P x - b||^2 / ||b||^2  +  temporal_smoothness * ||dx/ds||^2 / ||x_SIRT||^2

   where ``dx/ds`` is the change of the slices per unit of normalised time (a finite difference
   over one frame interval) and the norms are means over voxels/pixels. The Adam step size ramps
   up over 20 steps, then halves every ``lr_half_life_steps``; it depends on the step number
   only, so that a resumed fit reproduces an uninterrupted one. ``temporal_smoothness =
   0`` leaves only the network's own bias; 0.1 (default) is mild; 1-10 gives slow changes only.
3. The volumes are evaluated at the frame times (or any ``output_times_s``).

Per-tilt shifts ``(dy, dx)`` of the series are honoured: ``dx`` and the tilt-axis offset enter the
projector, ``dy`` is removed from the data (linear interpolation along the tilt axis).

Units: times in seconds, angles in degrees, shifts in pixels, voxel size in Å; volumes in the
density units of SIRT (projections / pixel length).

Example
-------
>>> from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom
>>> ts, truth = dynamic_sphere_phantom(size=16, n_tilts=20)
>>> res = fit_dip(ts, steps=20, warm_start_steps=10, sirt_iterations=10, device="cpu")
>>> res.volumes.shape
(20, 16, 16, 16)
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.methods._torch import flush_denormals, num_threads
from napari_tiltgen.physics.projector import Projector, resolve_device
from napari_tiltgen.progress import Progress, ProgressGen, run

__all__ = [
    "CHECKPOINT_FORMAT",
    "DIPModel",
    "DIPNetwork",
    "DIPResult",
    "FrameProjector",
    "acquisition_times",
    "fit_dip",
    "fit_dip_iter",
    "load_dip_model",
    "sliding_window_sirt",
    "sliding_window_sirt_iter",
]

#: Tag stored in every checkpoint file (``torch.save`` of tensors and plain types only, read back
#: with ``weights_only=True``).
CHECKPOINT_FORMAT = "napari-tiltgen DIP checkpoint v1"

#: Default bound on the memory of the returned volumes, bytes.
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30

_SOFTPLUS_BETA = 10.0  # sharpness of the positivity at the output (in units of 1/scale)
_SMOOTH_TIMES = 16  # times per step at which the temporal-smoothness penalty is evaluated
_LR_WARMUP_STEPS = 20  # linear learning-rate warm-up after the warm start


# ============================================================================ times and angles
def acquisition_times(
    ts: TiltSeries,
    times_s: Sequence[float] | np.ndarray | None = None,
    *,
    order: str | None = None,
    frame_time_s: float = 1.0,
) -> np.ndarray:
    """Acquisition time of every frame of ``ts``, seconds, checked for consistency.

    Parameters
    ----------
    ts
        The tilt series; it must have tilt angles.
    times_s
        Times given by the user, one per frame in stack order (seconds). Default: the series'
        recorded ``acquisition_times_s`` (read from a SerialEM ``.mdoc`` or a simulation), or, when
        there are none, uniform times in the acquisition ``order``.
    order
        How the frames were acquired, when no times are known: ``"angle"`` (from the lowest to
        the highest tilt angle; the default) or ``"stack"`` (in the order stored in the file).
        When times are known and ``order`` is given too, the times must increase in that order.
    frame_time_s
        Time between consecutive frames for uniform times, seconds.

    Returns
    -------
    ndarray
        ``(n_tilts,)`` float64 seconds, in stack order.

    Raises
    ------
    TiltgenError
        No tilt angles; a wrong number of times; NaN, infinite or repeated times; times that do
        not increase in the given acquisition order; an unknown order; a non-positive frame time.
    """
    where = ts.provenance.get("source")
    if ts.tilt_angles is None:
        raise TiltgenError(
            "the time-resolved fit needs the tilt angle of every frame, and this series has none. "
            "Give them with a .rawtlt/.tlt/.mdoc file or a start and step (Tilt series widget, "
            "or --tilt-start/--tilt-step).", where)
    angles = ts.tilt_angles
    n = ts.n_tilts
    if order is not None and order not in ("angle", "stack"):
        raise TiltgenError(f"unknown acquisition order {order!r}; use 'angle' (lowest to highest "
                           "tilt) or 'stack' (the order of the frames in the file).", where)
    given = times_s if times_s is not None else ts.acquisition_times_s
    if given is None:
        if not (np.isfinite(frame_time_s) and frame_time_s > 0):
            raise TiltgenError(f"the time per frame must be a positive number of seconds; got "
                               f"{frame_time_s}.", where)
        rank = (np.argsort(np.argsort(angles, kind="stable"), kind="stable")
                if order in (None, "angle") else np.arange(n))
        return rank.astype(np.float64) * float(frame_time_s)
    t = np.asarray(given, dtype=np.float64).reshape(-1)
    if t.size != n:
        raise TiltgenError(f"{t.size} acquisition times were given for {n} frames; give one time "
                           "(seconds) per frame, in the order of the stack.", where)
    if not np.all(np.isfinite(t)):
        raise TiltgenError("the acquisition times contain NaN or infinite values.", where)
    if np.unique(t).size != n:
        raise TiltgenError("two or more frames have the same acquisition time; every frame needs "
                           "its own time (seconds). Check the .mdoc file or the times you gave.",
                           where)
    if order is not None:
        seq = np.argsort(angles, kind="stable") if order == "angle" else np.arange(n)
        if np.any(np.diff(t[seq]) <= 0):
            raise TiltgenError(
                f"the acquisition times do not increase in the acquisition order '{order}' "
                f"({'lowest to highest tilt' if order == 'angle' else 'stack order'}); leave the "
                "order unset to use the times as they are, or fix the times.", where)
    return t


def _nearest_frame(times_s: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
    """Index of the frame recorded nearest in time to each of ``times_s``."""
    return np.abs(np.asarray(times_s)[:, None] - frame_times[None, :]).argmin(axis=1)


# ============================================================================ forward model
def _tilt_operator(theta_deg: float, nz: int, nx: int, n_det: int,
                   u_shift_px: float) -> sp.csr_matrix:
    """One tilt's operator ``(n_det, nz * nx)`` (slice -> detector row) as SciPy CSR.

    Built by the projector module's own per-tilt builder (Joseph's method), so the DIP fit
    projects with exactly the matrix elements that :class:`Projector` (and so SIRT) uses; a test
    checks the two against each other.
    """
    from napari_tiltgen.physics import projector as _projector_module

    r, c, w = _projector_module._joseph_triplets(float(theta_deg), nz, nx, n_det, u_shift_px)
    m = sp.csr_matrix((w.astype(np.float32), (r, c)), shape=(n_det, nz * nx))
    m.sum_duplicates()
    m.sort_indices()
    return m


class _BlockProject(torch.autograd.Function):
    """``y = S x`` with a sparse ``S`` (SciPy on the CPU, torch CSR on CUDA) and its adjoint."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, op: tuple) -> torch.Tensor:
        ctx.op = op
        return _apply_sparse(op, x, transpose=False)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _apply_sparse(ctx.op, grad.contiguous(), transpose=True), None


def _apply_sparse(op: tuple, x: torch.Tensor, transpose: bool) -> torch.Tensor:
    kind, m, mt = op
    if kind == "scipy":  # torch's CPU CSR product is 5-8x slower for few columns
        a = x.detach().numpy()
        out = (m.T @ a) if transpose else (m @ a)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
    return torch.mm(mt if transpose else m, x)


class FrameProjector:
    """Each frame's slice projected at that frame's tilt only: a block-diagonal operator.

    Frame ``k`` maps an ``(nz, nx)`` slice to one detector row ``(n_det,)`` with the operator of
    :class:`~napari_tiltgen.physics.projector.Projector` at angle ``theta_k`` (with the frame's
    ``dx`` shift and the tilt-axis offset). Applied to many slices at once (columns).

    Parameters
    ----------
    slice_shape
        ``(nz, nx)``, voxels.
    tilt_angles_deg
        Angle of each frame, degrees.
    dx_px
        Per-frame detector shift along x, pixels (``TiltSeries.shifts_px[:, 1]``).
    axis_offset_px
        Tilt-axis offset from the detector centre, pixels.
    n_det
        Detector width, pixels.
    device
        Torch device of the inputs and outputs.
    """

    def __init__(self, slice_shape: tuple[int, int], tilt_angles_deg: np.ndarray,
                 dx_px: np.ndarray | None = None, axis_offset_px: float = 0.0,
                 n_det: int | None = None, device: str | torch.device = "cpu"):
        nz, nx = (int(s) for s in slice_shape)
        angles = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
        self.n_frames = angles.size
        self.slice_shape = (nz, nx)
        self.n_det = int(n_det or nx)
        self.device = torch.device(device)
        dx = (np.zeros(self.n_frames) if dx_px is None
              else np.asarray(dx_px, dtype=np.float64).reshape(-1))
        # per-frame CSR pieces, to assemble block-diagonal operators of any subset of frames
        self._blocks = [_tilt_operator(a, nz, nx, self.n_det, float(d) + float(axis_offset_px))
                        for a, d in zip(angles, dx)]
        self._cache: tuple[bytes, tuple] | None = None

    def _operator(self, frames: np.ndarray) -> tuple:
        key = np.asarray(frames, dtype=np.int64).tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        nd, npx = self.n_det, self.slice_shape[0] * self.slice_shape[1]
        indptr, data, indices = [np.zeros(1, np.int64)], [], []
        offset = 0
        for i, k in enumerate(frames):  # block i of the result is frame k's operator
            blk = self._blocks[k]
            indptr.append(blk.indptr[1:].astype(np.int64) + offset)
            indices.append(blk.indices.astype(np.int64) + i * npx)
            data.append(blk.data)
            offset += blk.nnz
        m = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
                          shape=(len(frames) * nd, len(frames) * npx))
        if self.device.type == "cpu":
            op: tuple = ("scipy", m, None)
        else:
            op = ("torch", _torch_csr(m, self.device), _torch_csr(m.T.tocsr(), self.device))
        self._cache = (key, op)
        return op

    def __call__(self, images: torch.Tensor, frames: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Project ``images`` ``(n_slices, n_sel, nz, nx)`` of the frames ``frames`` (``n_sel``).

        Returns ``(n_sel, n_slices, n_det)``; differentiable.
        """
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        b, f, nz, nx = images.shape
        if f != frames.size or (nz, nx) != self.slice_shape:
            raise ValueError(f"images of shape {tuple(images.shape)} do not match {frames.size} "
                             f"frames of {self.slice_shape} slices")
        cols = images.permute(1, 2, 3, 0).reshape(f * nz * nx, b)
        out = _BlockProject.apply(cols.contiguous(), self._operator(frames))
        return out.view(f, self.n_det, b).permute(0, 2, 1)


def _torch_csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                   torch.from_numpy(m.indices.astype(np.int64)),
                                   torch.from_numpy(m.data.astype(np.float32)),
                                   size=m.shape).to(device)


def _remove_dy(data: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Data with frame ``k`` moved by ``-dy_k`` rows, so row ``y`` sees slice ``y``."""
    if not np.any(dy):
        return data
    from scipy.ndimage import shift

    out = np.empty_like(data)
    for k in range(data.shape[0]):
        out[k] = shift(data[k], (-float(dy[k]), 0.0), order=1, mode="nearest")
    return out


# ============================================================================ network
def _fourier(s: torch.Tensor, n_freq: int) -> torch.Tensor:
    """``[sin(pi j s), cos(pi j s)]`` for ``j = 1..n_freq``: shape ``s.shape + (2 n_freq,)``."""
    j = torch.arange(1, n_freq + 1, dtype=s.dtype, device=s.device)
    a = math.pi * s[..., None] * j
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class DIPNetwork(nn.Module):
    """Maps (slice ``y``, normalised time ``s``) to an orthoslice ``(nz, nx)``.

    Parameters
    ----------
    slice_shape
        ``(nz, nx)`` of the orthoslices, voxels.
    ny
        Number of slices along the tilt axis.
    n_components
        ``R``: number of time-varying basis images per slice (besides the static one).
    channels
        Width of the convolutional decoder.
    time_frequencies
        Fourier features of time: ``1 .. time_frequencies`` half-periods over the series (a
        bandwidth limit on how fast things can change).
    latent_stride
        Slices between latent knots along ``y``.
    hidden
        Width of the mixing MLP.
    """

    def __init__(self, slice_shape: tuple[int, int], ny: int, n_components: int = 8,
                 channels: int = 32, time_frequencies: int = 8, latent_stride: int = 2,
                 hidden: int = 64):
        super().__init__()
        nz, nx = (int(s) for s in slice_shape)
        self.slice_shape = (nz, nx)
        self.ny = int(ny)
        self.n_components = int(n_components)
        self.time_frequencies = int(time_frequencies)
        self.y_frequencies = 4
        self.latent_stride = max(1, int(latent_stride))
        n_knots = (self.ny - 1) // self.latent_stride + 2
        h0, w0 = max(2, math.ceil(nz / 4)), max(2, math.ceil(nx / 4))
        c = int(channels)
        self.latent = nn.Parameter(torch.randn(n_knots, c, h0, w0))
        self._sizes = [(2 * h0, 2 * w0), (nz, nx)]
        self.convs = nn.ModuleList([
            nn.Conv2d(c, c, 3, padding=1),
            nn.Conv2d(c, c // 2, 3, padding=1),
        ])
        self.head = nn.Conv2d(c // 2, self.n_components + 1, 1)
        n_in = 2 * (self.time_frequencies + self.y_frequencies)
        self.mixer = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                   nn.SiLU(), nn.Linear(hidden, self.n_components))
        with torch.no_grad():
            self.mixer[-1].weight.mul_(0.1)
            self.mixer[-1].bias.zero_()

    def _y_norm(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.latent.dtype) / max(self.ny - 1, 1)

    def basis(self, y: torch.Tensor) -> torch.Tensor:
        """Basis images ``(n_slices, R + 1, nz, nx)`` of the slices ``y`` (integer indices)."""
        pos = y.to(self.latent.dtype) / self.latent_stride
        lo = pos.floor().long()
        frac = (pos - lo)[:, None, None, None]
        h = self.latent[lo] * (1 - frac) + self.latent[lo + 1] * frac
        for conv, size in zip(self.convs, self._sizes):
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2)
        return self.head(h)

    def weights(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Mixing weights ``(n_slices, n_times, R)`` of slices ``y`` at normalised times ``s``."""
        fy = _fourier(self._y_norm(y), self.y_frequencies)  # (B, 2Fy)
        ft = _fourier(s.to(self.latent.dtype), self.time_frequencies)  # (T, 2Ft)
        feats = torch.cat([fy[:, None, :].expand(-1, ft.shape[0], -1),
                           ft[None, :, :].expand(fy.shape[0], -1, -1)], dim=-1)
        return self.mixer(feats)

    @staticmethod
    def images(basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Slices ``(n_slices, n_times, nz, nx)`` from basis images and mixing weights."""
        mixed = basis[:, None, 0] + torch.einsum("btr,brzx->btzx", weights, basis[:, 1:])
        return F.softplus(mixed, beta=_SOFTPLUS_BETA)

    def forward(self, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Slices ``(n_slices, n_times, nz, nx)`` of slices ``y`` at normalised times ``s``."""
        return self.images(self.basis(y), self.weights(y, s))


# ============================================================================ evaluation
@dataclass
class DIPModel:
    """A fitted network with what is needed to evaluate volumes at any time.

    Attributes
    ----------
    network
        The :class:`DIPNetwork`.
    scale
        Density that the network's output 1.0 stands for (from the static SIRT).
    t_first_s, t_last_s
        Times of the first and last frame, seconds (they map to ``s = 0`` and ``s = 1``).
    frame_times_s, frame_angles_deg
        Time (s) and tilt angle (degrees) of every frame, sorted by time.
    volume_shape
        ``(nz, ny, nx)``.
    voxel_size_A
        Voxel size, Å (or ``None``).
    """

    network: DIPNetwork
    scale: float
    t_first_s: float
    t_last_s: float
    frame_times_s: np.ndarray
    frame_angles_deg: np.ndarray
    volume_shape: tuple[int, int, int]
    voxel_size_A: float | None = None

    @property
    def device(self) -> torch.device:
        return self.network.latent.device

    def normalized_time(self, times_s: Any) -> np.ndarray:
        """``s = (t - t_first) / (t_last - t_first)`` of times in seconds."""
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        return (t - self.t_first_s) / max(self.t_last_s - self.t_first_s, 1e-12)

    def angles_at(self, times_s: Any) -> np.ndarray:
        """Tilt angle (degrees) of the frame recorded nearest in time to each of ``times_s``."""
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        return self.frame_angles_deg[_nearest_frame(t, self.frame_times_s)]

    def _check_times(self, times_s: Any) -> np.ndarray:
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        if t.size == 0:
            raise TiltgenError("no output times were given.")
        if not np.all(np.isfinite(t)):
            raise TiltgenError("the output times contain NaN or infinite values.")
        span = self.t_last_s - self.t_first_s
        tol = 1e-6 * max(span, 1.0)
        if t.min() < self.t_first_s - tol or t.max() > self.t_last_s + tol:
            raise TiltgenError(
                f"output times must lie within the acquisition, {self.t_first_s:g} to "
                f"{self.t_last_s:g} s; got {t.min():g} to {t.max():g} s (the fit cannot "
                "extrapolate).")
        return t

    def iter_volumes(self, times_s: Any, slices_per_chunk: int = 16
                     ) -> Iterator[tuple[slice, np.ndarray]]:
        """Evaluate in chunks of slices: yields ``(y_slice, array (T, nz, chunk, nx))``.

        Memory per chunk: ``T * nz * chunk * nx`` floats; the caller assembles what it needs.
        """
        t = self._check_times(times_s)
        ny = self.volume_shape[1]
        dev = self.device
        s = torch.as_tensor(self.normalized_time(t), dtype=torch.float32, device=dev)
        self.network.eval()
        with torch.no_grad():
            for y0 in range(0, ny, slices_per_chunk):
                y1 = min(ny, y0 + slices_per_chunk)
                y = torch.arange(y0, y1, device=dev)
                img = self.network(y, s) * self.scale  # (B, T, nz, nx)
                yield slice(y0, y1), img.permute(1, 2, 0, 3).float().cpu().numpy()

    def volumes_at(self, times_s: Any, *, max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                   slices_per_chunk: int = 16) -> np.ndarray:
        """Volumes ``(T, nz, ny, nx)`` float32 at times ``times_s`` (seconds).

        Raises :class:`TiltgenError` when the result would exceed ``max_bytes``; ask for fewer
        times per call then (the network can be evaluated at any time).
        """
        t = self._check_times(times_s)
        nz, ny, nx = self.volume_shape
        need = t.size * nz * ny * nx * 4
        if need > max_bytes:
            raise TiltgenError(
                f"{t.size} volumes of {nz}x{ny}x{nx} need {need / 2**30:.2f} GiB, more than the "
                f"limit of {max_bytes / 2**30:.2f} GiB; ask for fewer output times (e.g. every "
                "n-th frame) or evaluate them in batches with DIPModel.volumes_at().")
        out = np.empty((t.size, nz, ny, nx), dtype=np.float32)
        for ys, part in self.iter_volumes(t, slices_per_chunk):
            out[:, :, ys, :] = part
        return out

    def volume_at(self, time_s: float) -> Volume:
        """The volume at one time (seconds) as a :class:`Volume`."""
        data = self.volumes_at([time_s])[0]
        return Volume(data, self.voxel_size_A,
                      provenance={"method": "dip", "parameters": {"time_s": float(time_s)}})


@dataclass
class DIPResult:
    """Result of :func:`fit_dip_iter`.

    Attributes
    ----------
    volumes
        ``(n_times, nz, ny, nx)`` float32, density units (as SIRT).
    times_s
        Time of each volume, seconds from the start of the series (increasing).
    tilt_angles
        Tilt angle (degrees) recorded at (or nearest to) each time.
    loss_history
        Total loss after each self-supervised step (warm start not included).
    loss_terms
        ``{"data": ..., "smoothness": ...}`` per step (the two parts of the loss).
    model
        The fitted :class:`DIPModel`; ``model.volumes_at(times)`` evaluates any other times.
    static_sirt
        The static SIRT of all tilts ``(nz, ny, nx)`` (warm start; ``None`` after a resume).
    voxel_size_A
        Voxel size, Å.
    provenance
        Method, parameters, device, seconds, input history.
    """

    volumes: np.ndarray
    times_s: np.ndarray
    tilt_angles: np.ndarray
    loss_history: np.ndarray
    loss_terms: dict[str, np.ndarray] = field(default_factory=dict)
    model: DIPModel | None = None
    static_sirt: np.ndarray | None = None
    voxel_size_A: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return int(self.volumes.shape[0])

    def label(self, i: int) -> str:
        """``"t = 812 s, tilt = +12.0 deg"`` for volume ``i``."""
        return f"t = {self.times_s[i]:.0f} s, tilt = {self.tilt_angles[i]:+.1f} deg"

    def volume(self, i: int) -> Volume:
        """Volume ``i`` as a :class:`Volume` with its time and angle in the provenance."""
        prov = copy.deepcopy(self.provenance)
        prov["parameters"] = {**prov.get("parameters", {}), "time_s": float(self.times_s[i]),
                              "tilt_angle_deg": float(self.tilt_angles[i])}
        return Volume(self.volumes[i], self.voxel_size_A, provenance=prov)


# ============================================================================ checkpoints
def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file
        raise TiltgenError(f"cannot read this checkpoint ({type(exc).__name__}: {exc}); delete "
                           "it or choose another file.", path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TiltgenError("this file is not a napari-tiltgen DIP checkpoint.", path)
    return state


def load_dip_model(path: str | os.PathLike, device: str = "cpu") -> DIPModel:
    """The fitted model stored in a checkpoint of :func:`fit_dip_iter`, to evaluate any time.

    Parameters
    ----------
    path
        Checkpoint file (read with ``torch.load(weights_only=True)``: tensors and plain values
        only, no code).
    device
        Torch device to evaluate on.
    """
    path = Path(path)
    st = _load_checkpoint(path)
    arch = st["architecture"]
    net = DIPNetwork(**arch)
    net.load_state_dict(st["network"])
    net.to(resolve_device(device))
    m = st["model"]
    return DIPModel(net, float(m["scale"]), float(m["t_first_s"]), float(m["t_last_s"]),
                    np.asarray(m["frame_times_s"]), np.asarray(m["frame_angles_deg"]),
                    tuple(m["volume_shape"]), m["voxel_size_A"])


# ============================================================================ the fit

def _check_int(name: str, value: Any, lo: int) -> int:
    v = int(value)
    if v < lo:
        raise TiltgenError(f"{name} must be at least {lo}; got {value}.")
    return v


def _resolve_device(device: str) -> torch.device:
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise TiltgenError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiltgenError("device 'cuda' was asked for but no CUDA GPU is available; use "
                           "device 'auto' or 'cpu'.")
    if dev.type not in ("cpu", "cuda"):
        raise TiltgenError(f"device {device!r} is not supported; use auto, cpu or cuda.")
    return dev


def _fingerprint(data: np.ndarray, angles: np.ndarray, times: np.ndarray, shifts: np.ndarray,
                 config: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for a in (data, angles, times, shifts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()


def _preview(model: DIPModel, times: np.ndarray) -> np.ndarray:
    """Central z-plane ``(ny, nx)`` at the first, middle and last time, side by side."""
    nz, ny, nx = model.volume_shape
    picks = times[[0, times.size // 2, -1]]
    vols = np.zeros((3, ny, nx), dtype=np.float32)
    net = model.network
    with torch.no_grad():
        s = torch.as_tensor(model.normalized_time(picks), dtype=torch.float32, device=model.device)
        for y0 in range(0, ny, 16):
            y = torch.arange(y0, min(ny, y0 + 16), device=model.device)
            basis = net.basis(y)[..., nz // 2: nz // 2 + 1, :]
            img = net.images(basis, net.weights(y, s))[:, :, 0, :]  # (B, 3, nx)
            vols[:, y0:y0 + y.numel(), :] = img.permute(1, 0, 2).cpu().numpy() * model.scale
    return np.concatenate(list(vols), axis=1)


def fit_dip_iter(
    ts: TiltSeries,
    *,
    steps: int = 1500,
    temporal_smoothness: float = 0.1,
    times_s: Sequence[float] | np.ndarray | None = None,
    order: str | None = None,
    frame_time_s: float = 1.0,
    output_times_s: Sequence[float] | np.ndarray | None = None,
    n_components: int = 8,
    channels: int = 32,
    time_frequencies: int = 8,
    latent_stride: int = 2,
    slices_per_step: int = 16,
    frames_per_step: int | None = None,
    learning_rate: float = 5e-3,
    lr_half_life_steps: int = 500,
    warm_start_steps: int = 200,
    sirt_iterations: int = 50,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    device: str = "auto",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    preview_every: int = 50,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    n_threads: int | None = None,
) -> ProgressGen[DIPResult]:
    """Fit a time-resolved volume series to a tilt series of a changing sample (generator).

    Parameters
    ----------
    ts
        Tilt series ``(n_tilts, ny, nx)`` with tilt angles (degrees), tilt axis along y; its
        ``shifts_px`` are applied. One frame per time point.
    steps
        Self-supervised optimisation steps (Adam), after the warm start.
    temporal_smoothness
        Weight of the penalty on change per unit of normalised time (0: none; 0.1 mild; 1-10:
        only slow changes). The one knob for temporal regularisation.
    times_s, order, frame_time_s
        Acquisition times (seconds); see :func:`acquisition_times`. Default: the series'
        recorded times, else uniform in angle order, ``frame_time_s`` apart.
    output_times_s
        Times (seconds, within the acquisition) at which to return volumes. Default: the time
        of every frame, i.e. ``n_tilts`` volumes.
    n_components
        Time-varying basis images per slice (``R``): how complex the change may be.
    channels, time_frequencies, latent_stride
        Network size, see :class:`DIPNetwork`.
    slices_per_step, frames_per_step
        Slices (along y) and frames (default: all) in each step's batch; lower them to save
        memory (``slices x frames x nz x nx`` floats, a few times over).
    learning_rate
        Adam step size. It ramps up linearly over the first 20 steps after the warm start, then
        halves every ``lr_half_life_steps`` steps, down to a tenth; the schedule depends on the
        step number only, so a resumed fit follows an uninterrupted one exactly.
    lr_half_life_steps
        Steps per halving of the step size (0: no decay).
    warm_start_steps
        Steps fitting the network to the static SIRT before the self-supervised fit (0: none).
    sirt_iterations
        Iterations of the static SIRT (warm start and intensity scale).
    thickness_px
        Volume thickness ``nz`` along the beam, pixels (default: frame width).
    axis_offset_px
        Tilt-axis offset from the detector centre along x, pixels.
    device
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``. A CUDA out-of-memory error
        restarts the fit on the CPU with a message.
    seed
        Seed of the network initialisation and of the batch order: equal seeds, equal results.
    checkpoint
        File to save the fit to every ``checkpoint_every`` steps, at the end and on cancel.
    checkpoint_every
        Steps between checkpoints.
    resume
        Continue from ``checkpoint`` if it exists (it must belong to the same data and network
        settings); ``steps`` is the total, including the steps already done.
    preview_every
        Attach a preview (central z-plane at the first, middle and last time, side by side)
        every this many steps (0: never).
    max_output_bytes
        Refuse to return volumes larger than this (bytes); ask for fewer ``output_times_s``.
    n_threads
        CPU threads for torch during the fit (default: torch's setting).

    Yields
    ------
    Progress
        Per step, with ``values`` ``loss``, ``data``, ``smoothness`` and ``step``.

    Returns
    -------
    DIPResult
    """
    dev = _resolve_device(device)
    steps = _check_int("the number of steps", steps, 0)
    warm_start_steps = _check_int("warm_start_steps", warm_start_steps, 0)
    sirt_iterations = _check_int("sirt_iterations", sirt_iterations, 1)
    n_components = _check_int("n_components", n_components, 1)
    channels = _check_int("channels", channels, 4)
    slices_per_step = _check_int("slices_per_step", slices_per_step, 1)
    checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
    lr_half_life_steps = _check_int("lr_half_life_steps", lr_half_life_steps, 0)
    if not (np.isfinite(temporal_smoothness) and temporal_smoothness >= 0):
        raise TiltgenError(f"temporal_smoothness must be 0 or positive; got "
                           f"{temporal_smoothness}.")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise TiltgenError(f"learning_rate must be positive; got {learning_rate}.")
    where = ts.provenance.get("source")
    times = acquisition_times(ts, times_s, order=order, frame_time_s=frame_time_s)
    axis = ((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
    if abs(axis) > 45.0:
        raise TiltgenError(
            f"the tilt axis is at {ts.tilt_axis_angle_deg:.1f} deg from the image Y axis (near "
            "horizontal); the fit needs it along y. Rotate the stack first (Tilt series widget, "
            "or TiltSeries.with_vertical_tilt_axis()).", where)
    if ts.n_tilts < 2:
        raise TiltgenError("a time-resolved fit needs at least 2 frames.", where)
    data = np.asarray(ts.data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise TiltgenError("the tilt series contains NaN or infinite pixels; fix or crop them "
                           "first.", where)
    n_frames, ny, nx = data.shape
    nz = int(thickness_px) if thickness_px else nx
    if nz < 4 or nx < 4:
        raise TiltgenError(f"the volume must be at least 4 voxels wide and thick; got nz={nz}, "
                           f"nx={nx}.", where)
    angles = ts.tilt_angles
    order_t = np.argsort(times, kind="stable")  # frames sorted by time
    f_times, f_angles = times[order_t], angles[order_t]
    f_shifts = ts.shifts_px[order_t]
    t_first, t_last = float(f_times[0]), float(f_times[-1])
    s_frames = (f_times - t_first) / (t_last - t_first)
    out_times = f_times if output_times_s is None else np.sort(
        np.asarray(output_times_s, dtype=np.float64).reshape(-1))
    frames_per_step = n_frames if frames_per_step is None else min(
        _check_int("frames_per_step", frames_per_step, 1), n_frames)
    slices_per_step = min(slices_per_step, ny)

    arch = {"slice_shape": [nz, nx], "ny": ny, "n_components": n_components,
            "channels": channels, "time_frequencies": int(time_frequencies),
            "latent_stride": int(latent_stride)}
    params = {"steps": steps, "temporal_smoothness": float(temporal_smoothness),
              "warm_start_steps": warm_start_steps, "sirt_iterations": sirt_iterations,
              "slices_per_step": slices_per_step, "frames_per_step": frames_per_step,
              "learning_rate": float(learning_rate),
              "lr_half_life_steps": lr_half_life_steps, "thickness_px": nz,
              "axis_offset_px": float(axis_offset_px), "seed": int(seed),
              "checkpoint_every": checkpoint_every, **arch}
    # what a checkpoint must agree on to be resumed (not the step count)
    same = {k: v for k, v in params.items() if k not in ("steps", "checkpoint_every")}
    fingerprint = _fingerprint(data, angles, times, ts.shifts_px, same)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.parent.is_dir():
        raise TiltgenError("the folder of the checkpoint file does not exist.", ckpt.parent)
    state = None
    if resume:
        if ckpt is None:
            raise TiltgenError("resume needs a checkpoint file.")
        if ckpt.exists():
            state = _load_checkpoint(ckpt)
            if state.get("fingerprint") != fingerprint:
                raise TiltgenError(
                    "this checkpoint belongs to other data or other fit settings (only 'steps' "
                    "may change when resuming); use another checkpoint file or start afresh.",
                    ckpt)
    elif ckpt is not None and ckpt.exists():
        raise TiltgenError("the checkpoint file already exists; resume from it, delete it or "
                           "choose another name.", ckpt)

    def make(dev_: torch.device) -> ProgressGen[DIPResult]:
        return _fit(data, f_angles, f_shifts, order_t, s_frames, f_times, out_times, nz, arch,
                    params, state, fingerprint, ckpt, dev_, ts, max_output_bytes, preview_every)

    t0 = time.perf_counter()
    with num_threads(n_threads), flush_denormals():
        try:
            result = yield from make(dev)
        except Exception as exc:
            oom = isinstance(exc, torch.cuda.OutOfMemoryError) or (
                isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
            if not oom:
                raise
            if dev.type != "cuda":
                raise TiltgenError("out of memory: lower slices_per_step or frames_per_step, "
                                   "or bin the tilt series.") from None
            torch.cuda.empty_cache()
            yield Progress(0.0, "GPU out of memory; restarting the fit on the CPU")
            result = yield from make(torch.device("cpu"))
    result.provenance["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _fit(data: np.ndarray, f_angles: np.ndarray, f_shifts: np.ndarray, order_t: np.ndarray,
         s_frames: np.ndarray, f_times: np.ndarray, out_times: np.ndarray, nz: int,
         arch: dict[str, Any], params: dict[str, Any], state: dict[str, Any] | None,
         fingerprint: str, ckpt: Path | None, dev: torch.device, ts: TiltSeries,
         max_output_bytes: int, preview_every: int) -> ProgressGen[DIPResult]:
    """The fit proper, on one device (see :func:`fit_dip_iter`)."""
    from napari_tiltgen.methods.recon import sirt_iter

    n_frames, ny, nx = data.shape
    steps, warm_steps = params["steps"], params["warm_start_steps"]
    lam = params["temporal_smoothness"]
    n_batch, n_sel = params["slices_per_step"], params["frames_per_step"]
    seed = params["seed"]
    w_sirt = 0.0 if state is not None else 0.1
    w_warm = 0.0 if state is not None or warm_steps == 0 else 0.1
    w_out = 0.03
    w_main = 1.0 - w_sirt - w_warm - w_out

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DIPNetwork(**arch)
    net.to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=params["learning_rate"])
    half_life = params["lr_half_life_steps"]

    def lr_at(step: int) -> float:
        # A schedule of the step number alone (not of the total ``steps``), so that a fit
        # resumed with more steps follows the same path as one run straight through: a short
        # linear warm-up (fresh Adam moments must not kick the network off its warm start),
        # then halving every ``lr_half_life_steps`` down to a tenth.
        warm = min(1.0, (step + 1) / _LR_WARMUP_STEPS)
        decay = max(0.1, 0.5 ** (step / half_life)) if half_life > 0 else 1.0
        return params["learning_rate"] * warm * decay

    sirt_vol = None
    done = 0
    history: list[list[float]] = []
    if state is not None:
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        scale, ms_sirt = float(state["model"]["scale"]), float(state["ms_sirt"])
        done = int(state["step"])
        history = [list(map(float, h)) for h in state["history"].tolist()]
        yield Progress(w_sirt + w_warm, f"resumed from step {done}")
    else:
        proj = Projector((nz, ny, nx), ts.tilt_angles, ts.shifts_px, params["axis_offset_px"],
                         nx, dev)
        it = sirt_iter(proj, data, params["sirt_iterations"], preview_every=0)
        while True:
            try:
                ev = next(it)
            except StopIteration as stop:
                sirt_t = stop.value
                break
            yield Progress(w_sirt * ev.fraction, f"warm start: static {ev.message}")
        sirt_vol = sirt_t.detach().float().cpu().numpy()
        scale = float(np.percentile(sirt_vol, 99.9))
        if not scale > 0:
            raise TiltgenError("the static SIRT of this series is empty (all zero or negative): "
                               "are the frames inverted or all background?",
                               ts.provenance.get("source"))
        target = (sirt_t / scale).permute(1, 0, 2).contiguous().to(dev)  # (ny, nz, nx)
        ms_sirt = float((target ** 2).mean())
        for i in range(warm_steps):
            y = torch.randperm(ny, generator=gen)[:n_batch].to(dev)
            s = torch.rand(8, generator=gen).to(dev)
            x = net(y, s)
            loss = ((x - target[y][:, None]) ** 2).mean() / ms_sirt
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield Progress(w_sirt + w_warm * (i + 1) / warm_steps,
                           f"warm start: fitting the static SIRT {i + 1}/{warm_steps}",
                           values={"warm_loss": loss.detach().item()})
        opt = torch.optim.Adam(net.parameters(), lr=params["learning_rate"])

    model = DIPModel(net, scale, float(f_times[0]), float(f_times[-1]), f_times, f_angles,
                     (nz, ny, nx), ts.pixel_size_A)
    op = FrameProjector((nz, nx), f_angles, f_shifts[:, 1], params["axis_offset_px"], nx, dev)
    b = _remove_dy(data[order_t], f_shifts[:, 0]) / scale
    b_t = torch.from_numpy(np.ascontiguousarray(b)).to(dev)  # (n_frames, ny, n_det)
    ms_data = float((b_t ** 2).mean()) or 1.0
    s_all = torch.as_tensor(s_frames, dtype=torch.float32, device=dev)
    ds = float(np.median(np.diff(s_frames)))  # one frame interval in normalised time

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": step,
            "architecture": {**arch, "slice_shape": tuple(arch["slice_shape"])},
            "network": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": _to_cpu(opt.state_dict()), "generator": gen.get_state(),
            "slice_queue": perm.clone(),
            "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 3),
            "ms_sirt": ms_sirt, "params": params,
            "model": {"scale": scale, "t_first_s": float(f_times[0]),
                      "t_last_s": float(f_times[-1]), "frame_times_s": f_times.tolist(),
                      "frame_angles_deg": f_angles.tolist(), "volume_shape": [nz, ny, nx],
                      "voxel_size_A": ts.pixel_size_A},
        }

    # slices not yet visited in the current pass over y (saved in checkpoints, so that a resumed
    # fit draws the same batches as an uninterrupted one)
    perm = (state["slice_queue"].long() if state is not None and "slice_queue" in state
            else torch.empty(0, dtype=torch.long))
    step = done
    try:
        net.train()
        while step < steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if perm.numel() < n_batch:
                perm = torch.cat([perm, torch.randperm(ny, generator=gen)])
            y, perm = perm[:n_batch].to(dev), perm[n_batch:]
            if n_sel < n_frames:
                frames = torch.randperm(n_frames, generator=gen)[:n_sel].sort().values
            else:
                frames = torch.arange(n_frames)
            fr = frames.to(dev)
            basis = net.basis(y)
            x = net.images(basis, net.weights(y, s_all[fr]))  # (B, F, nz, nx)
            pred = op(x, frames.numpy())  # (F, B, n_det)
            d_loss = ((pred - b_t[fr][:, y]) ** 2).mean() / ms_data
            loss = d_loss
            sm = torch.zeros((), device=dev)
            if lam > 0:  # a random subset of the batch's times is enough for the penalty
                sub = torch.randperm(frames.numel(), generator=gen)[:_SMOOTH_TIMES].to(dev)
                x2 = net.images(basis, net.weights(y, s_all[fr][sub] + ds))
                sm = ((x2 - x[:, sub]) ** 2).mean() / ms_sirt
                loss = loss + lam * sm
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv, dv, sv = (v.detach().item() for v in (loss, d_loss, sm))
            history.append([lv, dv, sv])
            show = preview_every > 0 and (step % preview_every == 0 or step == steps)
            pv = None
            if show:
                net.eval()
                pv = _preview(model, f_times)
                net.train()
            if ckpt is not None and (step % params["checkpoint_every"] == 0):
                _save_checkpoint(ckpt, checkpoint_state(step))
            yield Progress(w_sirt + w_warm + w_main * step / max(steps, 1),
                           f"DIP step {step}/{steps}: loss {lv:.4g}", preview=pv,
                           values={"loss": lv, "data": dv, "smoothness": sv,
                                   "step": float(step)})
    except GeneratorExit:  # cancelled: keep what was done, to resume later
        if ckpt is not None and step > done:
            _save_checkpoint(ckpt, checkpoint_state(step))
        raise
    if ckpt is not None:
        _save_checkpoint(ckpt, checkpoint_state(step))

    yield Progress(1.0 - w_out, f"evaluating {out_times.size} volumes")
    volumes = model.volumes_at(out_times, max_bytes=max_output_bytes)
    h = np.asarray(history, dtype=np.float64).reshape(-1, 3)
    prov_in = ts.provenance
    history_in = copy.deepcopy(prov_in.get("history", []))
    history_in.append({"step": "fit_dip", **params})
    provenance = {"method": "dip", "parameters": params, "device": str(dev),
                  "input": prov_in.get("source"), "history": history_in}
    yield Progress(1.0, "done")
    return DIPResult(volumes=volumes, times_s=out_times.copy(),
                     tilt_angles=model.angles_at(out_times), loss_history=h[:, 0].copy(),
                     loss_terms={"data": h[:, 1].copy(), "smoothness": h[:, 2].copy()},
                     model=model, static_sirt=sirt_vol, voxel_size_A=ts.pixel_size_A,
                     provenance=provenance)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def fit_dip(ts: TiltSeries, *, show: bool = False,
            callback: Callable[[Progress], Any] | None = None, **kwargs: Any) -> DIPResult:
    """:func:`fit_dip_iter` run to completion (tqdm bar on stderr when ``show``).

    Accepts every keyword of :func:`fit_dip_iter`.
    """
    return run(fit_dip_iter(ts, **kwargs), show=show, callback=callback, desc="DIP")


# ============================================================================ baseline
def sliding_window_sirt_iter(
    ts: TiltSeries,
    window: int = 25,
    *,
    times_s: Sequence[float] | np.ndarray | None = None,
    order: str | None = None,
    frame_time_s: float = 1.0,
    output_times_s: Sequence[float] | np.ndarray | None = None,
    iterations: int = 50,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    device: str = "auto",
) -> ProgressGen[np.ndarray]:
    """Baseline: a SIRT of the ``window`` frames recorded nearest in time to each output time.

    Parameters
    ----------
    ts
        Tilt series with angles (degrees).
    window
        Number of frames per reconstruction (e.g. 20-30 of 100).
    times_s, order, frame_time_s
        Acquisition times, see :func:`acquisition_times`.
    output_times_s
        Times (seconds) to reconstruct (default: every frame's time).
    iterations
        SIRT iterations per window.
    thickness_px, axis_offset_px, device
        As for :func:`~napari_tiltgen.methods.recon.reconstruct_iter`.

    Returns
    -------
    ndarray
        ``(n_times, nz, ny, nx)`` float32, in the order of the sorted output times.
    """
    from napari_tiltgen.methods.recon import sirt

    times = acquisition_times(ts, times_s, order=order, frame_time_s=frame_time_s)
    window = _check_int("the window", window, 2)
    window = min(window, ts.n_tilts)
    dev = _resolve_device(device)
    data = np.asarray(ts.data, dtype=np.float32)
    _, ny, nx = data.shape
    nz = int(thickness_px) if thickness_px else nx
    out_times = times[np.argsort(times)] if output_times_s is None else np.sort(
        np.asarray(output_times_s, dtype=np.float64).reshape(-1))
    out = np.empty((out_times.size, nz, ny, nx), dtype=np.float32)
    for i, t in enumerate(out_times):
        idx = np.sort(np.argsort(np.abs(times - t), kind="stable")[:window])
        proj = Projector((nz, ny, nx), ts.tilt_angles[idx], ts.shifts_px[idx], axis_offset_px,
                         nx, dev)
        out[i] = sirt(proj, data[idx], iterations).detach().float().cpu().numpy()
        yield Progress((i + 1) / out_times.size,
                       f"sliding-window SIRT {i + 1}/{out_times.size} ({window} frames)")
    return out


def sliding_window_sirt(ts: TiltSeries, window: int = 25, **kwargs: Any) -> np.ndarray:
    """:func:`sliding_window_sirt_iter` run to completion."""
    return run(sliding_window_sirt_iter(ts, window, **kwargs), show=False)
