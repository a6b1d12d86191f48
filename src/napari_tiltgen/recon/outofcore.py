"""Out-of-core WBP and SIRT: volumes larger than memory, streamed slab by slab along y.

With a single tilt axis along y, every y-row of the volume is reconstructed from the same detector
row of every tilt (a 2-D problem). :func:`reconstruct_to_file_iter` therefore

1. plans slabs of rows whose working set (input rows, filtered rows, volume slab, temporaries,
   and for SIRT the projector's operator, which does not depend on the slab height) fits
   ``memory_budget`` bytes (:func:`plan_slabs`);
2. reads only those rows of the tilt series (``ts.data[:, y0:y1, :]``: a memory map or
   :class:`~napari_tiltgen.io.lazy.LazyFrames` reads just them);
3. reconstructs the sub-stack ``(n_tilts, rows, nx)`` with the existing per-slice algorithms
   (:func:`~napari_tiltgen.recon.iterative.sirt_iter` on a :class:`Projector` of the slab; WBP with
   :func:`~napari_tiltgen.recon.wbp.filter_projections` and the matrix-free
   :func:`~napari_tiltgen.physics.backproject.voxel_backproject`), locally or as tasks on a
   Dask ``distributed.Client`` (each task gets its rows and returns its slab, so no shared file
   system is needed);
4. writes each slab into an MRC file (float32, header made by mrcfile) with positioned writes,
   in a temporary file of the output folder that :mod:`napari_tiltgen.io.output` renames into
   place only when every slab is in (all or nothing).

Without per-tilt ``dy`` shifts the result equals the in-memory reconstruction (slices are
independent). ``dy`` shifts couple neighbouring rows: each slab is then computed with a halo of
``ceil(max |dy|) + 1`` rows on both sides, which makes WBP exact and SIRT agree to the effect of
the slab edges' zero padding inside the halo (far below the noise).

Example
-------
>>> from napari_tiltgen.simulate.phantoms import sphere_phantom
>>> ts, _ = sphere_phantom(size=16, tilt_step=10.0)
>>> res = reconstruct_to_file(ts, tmp_path / "v.mrc", "wbp", memory_budget=1 << 20)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.devices import num_threads
from napari_tiltgen.core.errors import Cancelled, TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.io.lazy import release_pages
from napari_tiltgen.io.model import TiltSeries

__all__ = [
    "STREAM_METHODS",
    "StreamResult",
    "in_memory_peak_bytes",
    "plan_slabs",
    "reconstruct_slab",
    "reconstruct_to_file",
    "reconstruct_to_file_iter",
    "streaming_peak_bytes",
]

#: Methods that can be streamed (every y-row is an independent 2-D problem).
STREAM_METHODS = ("wbp", "sirt")
#: Fixed allowance (bytes) for the interpreter, torch and numpy themselves is NOT counted: the
#: budget is for the data-dependent working set.
_F32 = 4


def _size(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**29 else f"{b / 2**20:.1f} MiB"


def _method(method: str) -> str:
    m = str(method).lower()
    m = {"fbp": "wbp"}.get(m, m)
    if m not in STREAM_METHODS:
        raise TiltgenError(f"out-of-core reconstruction supports {', '.join(STREAM_METHODS)}; "
                           f"got {method!r}.")
    return m


# ---------------------------------------------------------------------------- memory model
def wbp_uses_matrix(n_tilts: int, nz: int, nx: int, memory_budget: float | None) -> bool:
    """Whether streamed WBP keeps the sparse FBP matrix (fast) within the budget.

    The matrix has ``2 * nz * nx * n_tilts`` non-zeros (8 bytes each; twice that while it is
    built: 254 MB, 1.15 GB resident peak measured for 61 x 1024 x 256). It is used when that
    fits in half the budget; otherwise :func:`~napari_tiltgen.physics.backproject.voxel_backproject`
    computes the same sums tilt by tilt (no operator; about 7x slower, measured under load).
    """
    return memory_budget is not None and 32.0 * nz * nx * n_tilts <= 0.5 * float(memory_budget)


def operator_bytes(method: str, n_tilts: int, nz: int, nx: int, n_det: int | None = None,
                   memory_budget: float | None = None) -> float:
    """Bytes of the projector's sparse operators (independent of the number of rows).

    WBP: the FBP matrix when :func:`wbp_uses_matrix`, else 0. SIRT stores Joseph's operator
    and its transpose: measured 479 MB for 61 tilts, nz 256, nx 1024 (symmetric tilts, half
    stored), i.e. about ``16 * n_tilts * n_det * max(nz, nx) / 2`` bytes; 1.5x that is allowed
    for building.
    """
    if _method(method) == "wbp":
        return 32.0 * nz * nx * n_tilts if wbp_uses_matrix(n_tilts, nz, nx, memory_budget) \
            else 0.0
    n_det = int(n_det or nx)
    return 1.5 * 16.0 * n_tilts * n_det * max(nz, nx) * 0.5


def row_bytes(method: str, n_tilts: int, nz: int, nx: int, n_det: int | None = None) -> float:
    """Working-set bytes per y-row of a slab (input row, filtered rows, volume row, temporaries)."""
    n_det = int(n_det or nx)
    data, vol = _F32 * n_tilts * n_det, _F32 * nz * nx
    if _method(method) == "wbp":
        # rows read + float copy, padded FFT (complex, 2x padded) , weighted copy; slab,
        # two gathered temporaries, the written copy
        return 8.0 * data + 5.0 * vol
    # b, residual, forward/adjoint temporaries; x, adjoint result, update, written copy
    return 5.0 * data + 6.0 * vol


def in_memory_peak_bytes(method: str, n_tilts: int, ny: int, nx: int, nz: int) -> float:
    """The in-memory reconstruction's peak estimate (as :mod:`napari_tiltgen.core.resources` has it)."""
    from napari_tiltgen.core.resources import job_peak_bytes

    return job_peak_bytes("reconstruct", n_tilts, ny, nx, thickness=nz, method=method)


def plan_slabs(method: str, n_tilts: int, ny: int, nx: int, nz: int, memory_budget: float, *,
               halo: int = 0, in_flight: int = 1) -> list[tuple[int, int]]:
    """``(y0, y1)`` slabs whose working set fits ``memory_budget`` bytes.

    ``in_flight`` slabs are held at once (one per Dask worker on this machine). Raises
    :class:`TiltgenError` when not even one row fits (for SIRT: when the operator alone does not).
    """
    op = operator_bytes(method, n_tilts, nz, nx, memory_budget=memory_budget)
    per_row = row_bytes(method, n_tilts, nz, nx)
    free = float(memory_budget) / max(1, in_flight) - op
    rows = int(free // per_row) - 2 * halo if free > 0 else 0
    if rows < 1:
        need = (op + per_row * (1 + 2 * halo)) * max(1, in_flight)
        raise TiltgenError(
            f"a memory budget of {_size(memory_budget)} is too small for out-of-core "
            f"{_method(method).upper()} of {nx} x {nz} px slices from {n_tilts} tilts: one slab "
            f"needs about {_size(need)}"
            + (" (most of it the projector's operator; WBP needs none)" if op else "")
            + ". Give a larger --memory-budget, bin the stack or use a thinner volume.")
    rows = min(rows, ny)
    n = -(-ny // rows)
    step = -(-ny // n)  # equal slabs
    return [(y0, min(ny, y0 + step)) for y0 in range(0, ny, step)]


def streaming_peak_bytes(method: str, n_tilts: int, ny: int, nx: int, nz: int,
                         memory_budget: float) -> float:
    """Estimated working set of the streamed reconstruction (at most about the budget)."""
    slabs = plan_slabs(method, n_tilts, ny, nx, nz, memory_budget)
    rows = max(b - a for a, b in slabs)
    return (operator_bytes(method, n_tilts, nz, nx, memory_budget=memory_budget)
            + rows * row_bytes(method, n_tilts, nz, nx))


def _check_series(ts: TiltSeries) -> np.ndarray:
    """Angles of ``ts`` after the checks of the in-memory path that need no pixels."""
    angles = ts.require_angles()
    axis = ((ts.tilt_axis_angle_deg + 90.0) % 180.0) - 90.0
    if abs(axis) > 45.0:
        raise TiltgenError(
            f"the tilt axis is at {ts.tilt_axis_angle_deg:.1f} deg from the image Y axis (near "
            "horizontal); the reconstruction needs it along y. Rotate the stack first "
            "(TiltSeries.with_vertical_tilt_axis()).", ts.provenance.get("source"))
    return np.asarray(angles, dtype=np.float64)


def _check_disk(out: Path, need: float) -> None:
    """Refuse an output the output folder's file system has no room for."""
    import shutil

    try:
        free = shutil.disk_usage(out.parent if str(out.parent) else ".").free
    except OSError:
        return
    if need > free:
        raise TiltgenError(f"the volume needs {_size(need)} of disk space but the output folder "
                           f"has only {_size(free)} free; write it elsewhere, bin the stack or "
                           "reconstruct a thinner volume.", out)


def halo_rows(shifts_px: np.ndarray) -> int:
    """Rows of halo each slab needs for its ``dy`` shifts (0 without)."""
    dy = np.abs(np.asarray(shifts_px, dtype=np.float64)[:, 0])
    return int(math.ceil(float(dy.max()))) + 1 if dy.size and np.any(dy) else 0


# ---------------------------------------------------------------------------- one slab
_PROJECTORS: OrderedDict[tuple, Any] = OrderedDict()


def _projector(shape: tuple[int, int, int], angles: np.ndarray, shifts: np.ndarray,
               offset: float, device: str) -> Any:
    """A :class:`Projector` per slab shape, kept (at most 2) so its operator is built once."""
    from napari_tiltgen.physics.projector import Projector

    key = (shape, angles.tobytes(), shifts.tobytes(), float(offset), str(device))
    p = _PROJECTORS.get(key)
    if p is None:
        p = Projector(shape, angles, shifts, offset, shape[2], device)
        _PROJECTORS[key] = p
        while len(_PROJECTORS) > 2:
            _PROJECTORS.popitem(last=False)
    return p


def reconstruct_slab(rows: np.ndarray, tilt_angles_deg: Any, nz: int, method: str = "wbp", *,
                     iterations: int = 100, filter: str = "ramp", relaxation: float = 1.0,
                     positivity: bool = True, shifts_px: Any = None, axis_offset_px: float = 0.0,
                     keep: tuple[int, int] | None = None, device: str = "cpu",
                     n_threads: int | None = None, use_matrix: bool = False) -> np.ndarray:
    """Reconstruct the rows ``(n_tilts, r, nx)`` of a tilt series into ``(nz, r, nx)`` float32.

    ``keep = (a, b)`` returns only rows ``a:b`` of the slab (the rest is halo); ``use_matrix``:
    WBP through the projector's sparse FBP matrix (kept between slabs). This is the task
    each Dask worker runs; it is a plain function of arrays.
    """
    from napari_tiltgen.physics.backproject import voxel_backproject
    from napari_tiltgen.recon.iterative import sirt_iter
    from napari_tiltgen.recon.wbp import angular_weights, filter_projections

    m = _method(method)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n_t, r, nx = rows.shape
    angles = np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    shifts = (np.zeros((n_t, 2)) if shifts_px is None
              else np.asarray(shifts_px, dtype=np.float64).reshape(n_t, 2))
    with num_threads(n_threads), torch.no_grad():
        b = torch.from_numpy(rows).to(device)
        if m == "wbp":
            q = filter_projections(b, filter)
            del b
            if use_matrix:
                proj = _projector((nz, r, nx), angles, shifts, axis_offset_px, device)
                x = proj.fbp_backproject(q, angular_weights(angles))
            else:
                x = voxel_backproject(q, angles, nz, nx, weights=angular_weights(angles),
                                      shifts_px=shifts, axis_offset_px=axis_offset_px)
        else:
            proj = _projector((nz, r, nx), angles, shifts, axis_offset_px, device)
            x = run(sirt_iter(proj, b, iterations, relaxation, positivity, preview_every=0),
                    show=False)
        if keep is not None:
            x = x[:, keep[0]:keep[1], :]
        return np.ascontiguousarray(x.to("cpu", torch.float32).numpy())


# ---------------------------------------------------------------------------- the driver
@dataclass
class StreamResult:
    """What :func:`reconstruct_to_file` wrote."""

    path: Path
    shape: tuple[int, int, int]
    slabs: list[tuple[int, int]]
    seconds: float
    device: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def slab_rows(self) -> int:
        return max(b - a for a, b in self.slabs)

    def open(self) -> np.ndarray:
        """The volume, read lazily: a read-only memory map (MRC) or the Zarr array of level 0."""
        from napari_tiltgen.io.output import FOLDER_SUFFIXES

        if self.path.suffix.lower() in FOLDER_SUFFIXES:
            import zarr

            return zarr.open_group(str(self.path), mode="r")["0"]
        import mrcfile

        return mrcfile.mmap(self.path, mode="r").data


def reconstruct_to_file_iter(
    ts: TiltSeries,
    out: str | os.PathLike,
    method: str = "wbp",
    iterations: int = 100,
    *,
    memory_budget: float = 2 * 2**30,
    thickness_px: int | None = None,
    axis_offset_px: float = 0.0,
    filter: str = "ramp",
    relaxation: float = 1.0,
    positivity: bool = True,
    device: str = "cpu",
    n_threads: int | None = None,
    client: Any = None,
    overwrite: bool = False,
    plan: Any = None,
) -> ProgressGen[StreamResult]:
    """Reconstruct ``ts`` into the MRC file (or OME-Zarr folder) ``out`` slab by slab.

    Parameters
    ----------
    ts
        Tilt series, tilt axis along y (within 45 degrees), angles in degrees; its data may be a
        memory map or lazy frames (only each slab's rows are read).
    out
        Output ``.mrc``/``.rec`` file, or ``.zarr`` (OME-Zarr with a 2x pyramid,
        :mod:`napari_tiltgen.io.ome_zarr`); written atomically through
        :mod:`napari_tiltgen.io.output`.
    method, iterations
        ``"wbp"`` or ``"sirt"``; SIRT iterations.
    memory_budget
        Bytes the working set may use (per worker when ``client`` runs on this machine).
    thickness_px, axis_offset_px, filter, relaxation, positivity
        As in :func:`napari_tiltgen.recon.api.reconstruct_iter`.
    device, n_threads
        Torch device and CPU threads of each slab's computation.
    client
        A ``distributed.Client``: slabs become tasks on its workers (at most two per worker in
        flight); ``None``: computed here, one after the other.
    overwrite, plan
        Replace an existing output; a plan from :func:`napari_tiltgen.io.writers.plan_write`
        made before the work (else one is made here).
    """
    from napari_tiltgen.io.output import FOLDER_SUFFIXES, MRC_SUFFIXES, planned_outputs

    m = _method(method)
    out = Path(out)
    if out.suffix.lower() not in MRC_SUFFIXES + FOLDER_SUFFIXES:
        raise TiltgenError(f"out-of-core reconstruction writes MRC or OME-Zarr; the output must "
                           f"end in one of {', '.join(MRC_SUFFIXES + FOLDER_SUFFIXES)}.", out)
    if plan is None:
        src = ts.provenance.get("source")
        plan = planned_outputs(out, overwrite=overwrite, inputs=[src] if src else [],
                               what="output volume")
    angles = _check_series(ts)
    n_t, ny, nx = (int(s) for s in ts.shape)
    nz = int(thickness_px) if thickness_px else nx
    shifts = np.asarray(ts.shifts_px, dtype=np.float64)
    halo = halo_rows(shifts)
    workers = 1
    if client is not None:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
    slabs = plan_slabs(m, n_t, ny, nx, nz, memory_budget, halo=halo)
    shape = (nz, ny, nx)
    _check_disk(out, 4.0 * nz * ny * nx)
    params = {"iterations": iterations if m == "sirt" else None, "thickness_px": nz,
              "axis_offset_px": float(axis_offset_px), "memory_budget_bytes": int(memory_budget),
              "slab_rows": max(b - a for a, b in slabs), "n_slabs": len(slabs)}
    if m == "wbp":
        params["filter"] = filter
    else:
        params.update(relaxation=float(relaxation), positivity=bool(positivity))
    use_matrix = m == "wbp" and wbp_uses_matrix(n_t, nz, nx, memory_budget)
    if m == "wbp":
        params["backprojection"] = "sparse matrix" if use_matrix else "matrix-free"
    kwargs = dict(iterations=iterations, filter=filter, relaxation=relaxation,
                  positivity=positivity, axis_offset_px=axis_offset_px, device=device,
                  n_threads=n_threads, use_matrix=use_matrix)
    t0 = time.perf_counter()
    yield Progress(0.0, f"{m.upper()} out of core: {len(slabs)} slabs of "
                        f"{params['slab_rows']} rows" + (f" on {workers} Dask workers"
                                                        if client is not None else ""))

    def task_args(y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        a, b = max(0, y0 - halo), min(ny, y1 + halo)
        rows = np.asarray(ts.data[:, a:b, :], dtype=np.float32)
        release_pages(ts.data)  # the rows read stay in the page cache, not in this process
        if not np.all(np.isfinite(rows)):
            raise TiltgenError(f"the tilt series has NaN or infinite pixels (rows {a}-{b}); fix "
                               "or crop them before reconstructing.", ts.provenance.get("source"))
        return rows, shifts, (y0 - a, y1 - a)

    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def write_all(tmp: Path) -> None:
        label = f"napari-tiltgen: {m} (streamed)"
        if out.suffix.lower() in FOLDER_SUFFIXES:
            from napari_tiltgen.io.ome_zarr import ZarrSlabWriter

            writer: Any = ZarrSlabWriter(tmp, shape, ts.pixel_size_A, label,
                                         chunk_rows=params["slab_rows"])
        else:
            from napari_tiltgen.io.slabs import MrcSlabWriter

            writer = MrcSlabWriter(tmp, shape, ts.pixel_size_A, label)
        done = 0
        if client is None:
            for y0, y1 in slabs:
                if stop.is_set():
                    raise Cancelled()
                rows, sh, keep = task_args(y0, y1)
                writer.write(y0, reconstruct_slab(rows, angles, nz, m, shifts_px=sh, keep=keep,
                                                  **kwargs))
                del rows
                done += 1
                events.put(Progress(done / len(slabs), f"slab {done}/{len(slabs)}"))
        else:
            from distributed import as_completed

            pending = list(slabs)
            futures: dict[Any, int] = {}
            ac = as_completed()

            def submit() -> None:
                y0, y1 = pending.pop(0)
                rows, sh, keep = task_args(y0, y1)
                fut = client.submit(reconstruct_slab, rows, angles, nz, m, shifts_px=sh,
                                    keep=keep, pure=False, **kwargs)
                futures[fut] = y0
                ac.add(fut)

            for _ in range(min(len(pending), 2 * workers)):
                submit()
            for fut in ac:
                if stop.is_set():
                    for f in futures:
                        f.cancel()
                    raise Cancelled()
                y0 = futures.pop(fut)
                writer.write(y0, fut.result())
                fut.release()
                done += 1
                events.put(Progress(done / len(slabs), f"slab {done}/{len(slabs)}"))
                if pending:
                    submit()
        writer.finish()

    failure: list[BaseException] = []

    def work() -> None:
        try:
            plan.commit({plan.main: write_all})
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            events.put(None)

    worker = threading.Thread(target=work, name="tiltgen-outofcore", daemon=True)
    worker.start()
    try:
        while True:
            ev = events.get()
            if ev is None:
                break
            yield ev
    finally:  # generator closed (cancel) or done: stop the writer and wait for its clean-up
        stop.set()
        worker.join()
    if failure:
        raise failure[0]
    seconds = time.perf_counter() - t0
    prov = {"method": m, "parameters": params, "backend": "torch (out of core)",
            "device": str(device), "seconds": round(seconds, 3),
            "input": ts.provenance.get("source"),
            "tilt_angles": [round(float(a), 4) for a in angles]}
    yield Progress(1.0, f"{m.upper()} out of core: done")
    return StreamResult(plan.main, shape, slabs, seconds, str(device), prov)


def reconstruct_to_file(ts: TiltSeries, out: str | os.PathLike, method: str = "wbp",
                        iterations: int = 100, *, show: bool = False, **kwargs: Any
                        ) -> StreamResult:
    """:func:`reconstruct_to_file_iter` run to completion."""
    return run(reconstruct_to_file_iter(ts, out, method, iterations, **kwargs), show=show,
               desc=f"{_method(method).upper()} (out of core)")


# ---------------------------------------------------------------------------- choosing it
def default_budget() -> int:
    """Default memory budget: 70 % of the memory available now (:mod:`napari_tiltgen.core.resources`)."""
    from napari_tiltgen.core.resources import available_memory

    return int(0.7 * available_memory())


def choose(method: str, backend: str, n_tilts: int, ny: int, nx: int, nz: int, *,
           mode: str = "auto", memory_budget: float | None = None
           ) -> tuple[bool, float, str]:
    """Whether to stream: ``(stream, budget_bytes, reason)``.

    ``mode``: ``"auto"`` streams WBP/SIRT on the torch backend when the in-memory estimate
    exceeds the budget; ``"yes"`` always (those methods only); ``"no"`` never.
    """
    budget = float(memory_budget) if memory_budget else float(default_budget())
    m = {"fbp": "wbp"}.get(str(method).lower(), str(method).lower())
    need = in_memory_peak_bytes(m, n_tilts, ny, nx, nz)
    can = m in STREAM_METHODS and str(backend).lower() == "torch"
    gib = 2.0**30
    if mode == "no":
        return False, budget, "out of core: off (--out-of-core no)"
    if mode == "yes":
        if not can:
            raise TiltgenError(f"--out-of-core yes: only {', '.join(STREAM_METHODS)} on the "
                               f"torch backend stream; got {m} on {backend}.")
        return True, budget, "out of core: asked (--out-of-core yes)"
    if need <= budget:
        return False, budget, ""
    if not can:
        return False, budget, ""
    return True, budget, (f"the in-memory {m.upper()} needs about {need / gib:.1f} GiB, above "
                          f"the memory budget of {budget / gib:.1f} GiB: streaming slabs "
                          "(out of core)")


def streamed_job_bytes(method: str, n_tilts: int, ny: int, nx: int, nz: int,
                       memory_budget: float) -> float:
    """Peak estimate of a streamed CLI job: the prepared input in memory + the working set."""
    return 2.0 * _F32 * n_tilts * ny * nx + streaming_peak_bytes(method, n_tilts, ny, nx, nz,
                                                                 memory_budget)
