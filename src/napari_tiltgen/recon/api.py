"""Conventional tomographic reconstruction: WBP/FBP, SIRT, SART and TV-regularised.

Every algorithm is a generator that yields :class:`~napari_tiltgen.core.progress.Progress` events and
``return``-s its result (see :mod:`napari_tiltgen.core.progress`), so napari runs it in a thread worker
with a real cancel (closing the generator stops it between iterations), and the CLI and API drive
it with :func:`~napari_tiltgen.core.progress.run`. All of them use the one projector of
:mod:`napari_tiltgen.physics.projector`.

Two levels:

* tensor level: :func:`wbp_iter`, :func:`sirt_iter`, :func:`sart_iter`, :func:`tv_iter` take a
  :class:`~napari_tiltgen.physics.projector.Projector` and a data tensor ``(n_tilts, ny, n_det)``
  and return a tensor ``(nz, ny, nx)``; :func:`wbp`, :func:`sirt`, :func:`sart`,
  :func:`tv_reconstruct` run them to completion;
* data-model level: :func:`reconstruct_iter` / :func:`reconstruct` take a
  :class:`~napari_tiltgen.io.model.TiltSeries` and return a
  :class:`~napari_tiltgen.io.model.Volume` with provenance, on the ``"torch"`` backend (this
  module) or an external one (:mod:`napari_tiltgen.recon.backends`).

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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.devices import is_oom, num_threads, resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.physics.projector import (
    DEFAULT_CHUNK_BYTES,
    Projector,
    suggested_threads,
)
from napari_tiltgen.recon.common import _check_iterations
from napari_tiltgen.recon.iterative import sart_iter, sirt_iter
from napari_tiltgen.recon.names import BACKENDS, METHODS
from napari_tiltgen.recon.tv import tv_iter
from napari_tiltgen.recon.wbp import _filter_name, wbp_iter

__all__ = ["reconstruct", "reconstruct_iter", "run_with_oom_fallback", "with_vertical_axis"]


_ALIASES = {"fbp": "wbp", "os-sart": "sart", "tv-cp": "tv"}




# ---------------------------------------------------------------------------- helpers
def _method_name(method: str) -> str:
    m = str(method).lower().strip()
    m = _ALIASES.get(m, m)
    if m not in METHODS:
        raise TiltgenError(f"unknown reconstruction method {method!r}; choose one of "
                           f"{', '.join(METHODS)} (fbp is an alias of wbp).")
    return m


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
            if not is_oom(exc):
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
    data, angles = ts.checked_for_projection("the reconstruction")
    if backend != "torch":
        from napari_tiltgen.recon import backends
        backends.require_backend(backend, m)
    _, ny, nx = data.shape
    nz = int(thickness_px) if thickness_px else nx
    if nz < 1:
        raise TiltgenError(f"thickness must be at least 1 pixel; got {thickness_px}.")
    shape = (nz, ny, nx)
    dev = resolve_device(device)
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
        from napari_tiltgen.recon import backends
        job = backends.ExternalJob(
            data, angles, shape, method=m, iterations=iterations, shifts_px=shifts,
            axis_offset_px=axis_offset_px, filter=filt, relaxation=relaxation,
            positivity=positivity, n_subsets=n_subsets, use_cuda=dev.type == "cuda",
            n_workers=n_threads)
        arr, used_device = yield from backends.reconstruct_external_iter(backend, job)

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
