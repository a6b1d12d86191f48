"""External reconstruction engines behind :func:`napari_tiltgen.recon.api.reconstruct`.

* ``"astra"`` (astra-toolbox): on the CPU, 2-D reconstructions of every slice perpendicular to
  the tilt axis, run by a pool of worker threads (ASTRA releases the GIL); with CUDA, SIRT runs as
  one 3-D reconstruction (``SIRT3D_CUDA``) and the other methods as 2-D CUDA slices.
* ``"tomopy"``: when importable (it installs from conda-forge, not PyPI).

Geometry mapping (ASTRA, 2-D)
-----------------------------
A slice ``(nz, nx)`` of our volume is ASTRA's image with rows = z and columns = x. ASTRA's world
y axis points up the rows, i.e. ``y_astra = -z``, and ASTRA projects a point to ``u = x cos(a) +
y_astra sin(a)``; with ``a = -theta`` that is our ``u = x cos(theta) + z sin(theta)``. The
per-tilt ``dx`` and the axis offset move ASTRA's detector centre by ``-(dx + offset)`` along its
``u`` direction (``parallel_vec`` geometry). ASTRA's ``linear`` CPU projector is Joseph's method,
like ours, and the two forward projections agree to about 1e-5 (see ``tests/test_recon.py``).
ASTRA's 2-D geometry cannot shift along the tilt axis, so ``dy`` shifts are taken out of the data
first (:mod:`napari_tiltgen.physics.shifts`, the projector's policy), as is everything for FBP,
which ASTRA only runs in the plain ``parallel`` geometry.

The 3-D CUDA mapping is checked at run time: a small asymmetric test volume is projected with
ASTRA and with our projector, and the 3-D path is used only if the two agree (otherwise the 2-D
CUDA path is used, with a message).
"""

from __future__ import annotations

import importlib
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, ProgressGen
from napari_tiltgen.physics.geometry import interleaved_order
from napari_tiltgen.physics.shifts import unshift_frames

__all__ = [
    "ExternalJob",
    "astra_proj_geom_2d",
    "astra_reconstruct_iter",
    "available_backends",
    "orient_slices",
    "reconstruct_external_iter",
    "require_backend",
    "tomopy_reconstruct_iter",
    "unshift",
]

_ASTRA_FILTERS = {"ramp": "ram-lak", "shepp-logan": "shepp-logan", "cosine": "cosine",
                  "hamming": "hamming", "hann": "hann"}
_TOMOPY_FILTERS = {"ramp": "ramlak", "shepp-logan": "shepp", "cosine": "cosine",
                   "hamming": "hamming", "hann": "hann"}


def available_backends() -> dict[str, bool]:
    """Which backends can run here: ``{"torch": True, "astra": bool, "tomopy": bool}``."""
    out = {"torch": True}
    for name in ("astra", "tomopy"):
        try:
            __import__(name)
            out[name] = True
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            out[name] = False
    return out


def require_backend(backend: str, method: str) -> None:
    """Raise :class:`TiltgenError` now if ``backend`` cannot run ``method`` here."""
    if backend == "astra":
        _import_backend("astra")
        if method not in ("wbp", "sirt", "sart"):
            raise TiltgenError(f"the astra backend has no {method!r} reconstruction; use wbp, "
                               "sirt or sart there, or backend 'torch' for tv.")
    elif backend == "tomopy":
        _import_backend("tomopy")
        if method not in ("wbp", "sirt"):
            raise TiltgenError(f"the tomopy backend runs wbp and sirt only, not {method!r}.")
    elif backend != "torch":
        raise TiltgenError(f"unknown backend {backend!r}; choose torch, astra or tomopy.")


_HOW_TO_GET = {
    "tomopy": ("tomopy", (
        "tomopy is distributed through conda-forge only (`conda install -c conda-forge "
        "tomopy`); use backend 'torch' or 'astra' instead.")),
    "astra": ("astra-toolbox", (
        "Install it with `pip install astra-toolbox` (or the napari-tiltgen[astra] extra), or "
        "use backend 'torch'.")),
}


def _import_backend(module: str) -> Any:
    """Import an optional backend's module, or say how to get it."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        package, how = _HOW_TO_GET[module]
        raise TiltgenError(f"the '{module}' backend needs {package}, which could not be imported "
                           f"({exc}). {how}") from None


def unshift(data: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Undo per-tilt shifts: frame ``i`` moved by ``(-dy[i], -dx[i])`` pixels, by the package's
    one shift policy (:func:`napari_tiltgen.physics.shifts.unshift_frames`: linear, zero outside
    the frame, interpolated across the edge as the projector does)."""
    return unshift_frames(data, dy, dx)


def astra_proj_geom_2d(astra: Any, tilt_angles_deg: np.ndarray, n_det: int,
                       u_shift_px: np.ndarray | None = None) -> dict:
    """ASTRA 2-D ``parallel_vec`` geometry equal to ours for one slice (see module notes).

    Parameters
    ----------
    tilt_angles_deg
        Our tilt angles, degrees.
    n_det
        Detector pixels along u.
    u_shift_px
        Per-tilt ``dx + axis_offset``, pixels (``None``: none).
    """
    pg = astra.create_proj_geom("parallel", 1.0, int(n_det), np.deg2rad(-tilt_angles_deg))
    vec = astra.geom_2vec(pg)["Vectors"].copy()
    if u_shift_px is not None:
        vec[:, 2:4] -= np.asarray(u_shift_px, dtype=np.float64)[:, None] * vec[:, 4:6]
    return astra.create_proj_geom("parallel_vec", int(n_det), vec)


def _astra_proj_geom_3d(astra: Any, angles: np.ndarray, ny: int, n_det: int, dy: np.ndarray,
                        u_shift: np.ndarray, sy: float, sz: float) -> dict:
    """3-D ``parallel3d_vec`` geometry for our volume passed as ASTRA's (slices=z, rows=y, cols=x).

    ``sy``, ``sz`` (+-1) are the directions of ASTRA's world y/z along increasing row/slice index,
    which :func:`_astra3d_orientation` determines by experiment.
    """
    t = np.deg2rad(angles)
    c, s = np.cos(t), np.sin(t)
    zero = np.zeros_like(t)
    ray = np.stack([-s, zero, sz * c], axis=1)
    u = np.stack([c, zero, sz * s], axis=1)
    v = np.stack([zero, sy + zero, zero], axis=1)
    d = -u_shift[:, None] * u - dy[:, None] * v
    return astra.create_proj_geom("parallel3d_vec", int(ny), int(n_det),
                                  np.concatenate([ray, d, u, v], axis=1))


_ORIENTATION_3D: tuple[float, float] | None = None


def _astra3d_orientation(astra: Any) -> tuple[float, float] | None:
    """Find ASTRA 3-D axis directions that reproduce our projector; ``None`` if none does."""
    global _ORIENTATION_3D
    if _ORIENTATION_3D is not None:
        return _ORIENTATION_3D
    from napari_tiltgen.physics.projector import Projector

    nz, ny, nx = 20, 18, 24
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in (nz, ny, nx)), indexing="ij")
    vol = (np.exp(-((x - 5) ** 2 + (y + 3) ** 2 + (z - 4) ** 2) / 8.0)
           + 0.5 * np.exp(-((x + 6) ** 2 + (y - 4) ** 2 + (z + 2) ** 2) / 5.0)).astype(np.float32)
    angles = np.array([-50.0, -10.0, 25.0, 60.0])
    dy, dxo = np.array([0.5, -1.0, 0.0, 1.5]), np.array([1.0, 0.0, -2.0, 0.5])
    ours = Projector(vol.shape, angles, np.stack([dy, dxo], 1), 0.0, nx).forward(
        torch.from_numpy(vol)).numpy()
    vg = astra.create_vol_geom(ny, nx, nz)
    for sy in (1.0, -1.0):
        for sz in (1.0, -1.0):
            pg = _astra_proj_geom_3d(astra, angles, ny, nx, dy, dxo, sy, sz)
            sid, sino = astra.create_sino3d_gpu(vol, pg, vg)
            astra.data3d.delete(sid)
            err = np.linalg.norm(sino.transpose(1, 0, 2) - ours) / np.linalg.norm(ours)
            if err < 0.05:
                _ORIENTATION_3D = (sy, sz)
                return _ORIENTATION_3D
    return None


def _astra_slice(astra: Any, sino: np.ndarray, algorithm: str, proj_geom: dict,
                 vol_geom: dict, iterations: int, options: dict, cuda: bool) -> np.ndarray:
    """Reconstruct one slice with ASTRA; frees every ASTRA object it made."""
    pid = None if cuda else astra.create_projector("linear", proj_geom, vol_geom)
    sid = astra.data2d.create("-sino", proj_geom, sino)
    rid = astra.data2d.create("-vol", vol_geom, 0.0)
    aid = None
    try:
        cfg = astra.astra_dict(algorithm)
        if pid is not None:
            cfg["ProjectorId"] = pid
        cfg["ProjectionDataId"] = sid
        cfg["ReconstructionDataId"] = rid
        cfg["option"] = dict(options)
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid, iterations)
        return astra.data2d.get(rid)
    finally:
        if aid is not None:
            astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        if pid is not None:
            astra.projector.delete(pid)


@dataclass(frozen=True)
class ExternalJob:
    """One reconstruction for an external backend, in our geometry.

    Attributes
    ----------
    data
        Projections ``(n_tilts, ny, n_det)``.
    tilt_angles_deg, volume_shape, shifts_px, axis_offset_px
        Geometry as for :class:`~napari_tiltgen.physics.projector.Projector` (degrees, voxels,
        pixels, pixels).
    method
        ``"wbp"`` (ASTRA ``FBP``), ``"sirt"`` (``SIRT``) or ``"sart"`` (ASTRA's ``SART``, one tilt
        per update, tilts in the interleaved order of our ordered subsets).
    iterations
        SIRT iterations, or SART passes over all tilts.
    filter
        WBP filter name (ours; mapped to the backend's).
    relaxation, positivity
        SIRT/SART step and non-negativity (ASTRA).
    n_subsets
        SART visits the tilts subset after subset of this interleaving (see
        :func:`~napari_tiltgen.recon.iterative.sart_iter`), one tilt per update.
    use_cuda
        ``None``: CUDA when ASTRA has it. CUDA runs SIRT in 3-D, the rest per slice.
    n_workers
        Worker threads for CPU slices (default: CPU count).
    """

    data: np.ndarray
    tilt_angles_deg: np.ndarray
    volume_shape: tuple[int, int, int]
    method: str = "sirt"
    iterations: int = 100
    shifts_px: np.ndarray | None = None
    axis_offset_px: float = 0.0
    filter: str = "ramp"
    relaxation: float = 1.0
    positivity: bool = True
    n_subsets: int = 8
    use_cuda: bool | None = None
    n_workers: int | None = None

    def shifts(self) -> np.ndarray:
        """Per-tilt ``(dy, dx)`` shifts, zeros when none are given."""
        n_t = self.data.shape[0]
        return (np.zeros((n_t, 2)) if self.shifts_px is None
                else np.asarray(self.shifts_px, np.float64).reshape(n_t, 2))

    def workers(self) -> int:
        return max(1, int(self.n_workers or os.cpu_count() or 1))


def astra_reconstruct_iter(job: ExternalJob) -> ProgressGen[tuple[np.ndarray, str]]:
    """Reconstruct ``job`` with astra-toolbox in our geometry.

    Returns
    -------
    (volume, device)
        ``(nz, ny, nx)`` float32 and a label of what ran (``"astra-cpu-2d"``...).
    """
    astra = _import_backend("astra")
    method, data, volume_shape = job.method, job.data, job.volume_shape
    require_backend("astra", method)
    nz, ny, nx = volume_shape
    n_t, ny_d, n_det = data.shape
    if ny_d != ny:
        raise ValueError("data rows must equal the volume's ny")
    angles = np.asarray(job.tilt_angles_deg, dtype=np.float64)
    shifts = job.shifts()
    u_shift = shifts[:, 1] + float(job.axis_offset_px)
    cuda = bool(astra.use_cuda()) if job.use_cuda is None else bool(job.use_cuda)
    if cuda and not astra.use_cuda():
        raise TiltgenError("ASTRA was built without CUDA or sees no GPU; use device 'cpu'.")

    if cuda and method == "sirt":
        orient = _astra3d_orientation(astra)
        if orient is not None:
            result = yield from _astra_sirt3d(astra, data, angles, volume_shape, shifts[:, 0],
                                              u_shift, orient, job.iterations,
                                              job.relaxation, job.positivity)
            return result, "astra-cuda-3d"
        yield Progress(0.0, "ASTRA 3-D geometry check failed; using 2-D CUDA slices")

    vol_geom = astra.create_vol_geom(nz, nx)
    options: dict[str, Any] = {}
    n_iter = job.iterations
    if method == "wbp":
        stack = unshift(data, shifts[:, 0], u_shift)
        proj_geom = astra.create_proj_geom("parallel", 1.0, n_det, np.deg2rad(-angles))
        algorithm = "FBP_CUDA" if cuda else "FBP"
        options["FilterType"] = _ASTRA_FILTERS[job.filter]
        n_iter = 1
    else:
        stack = unshift(data, shifts[:, 0], np.zeros(n_t))
        proj_geom = astra_proj_geom_2d(astra, angles, n_det, u_shift)
        if job.positivity:
            options["MinConstraint"] = 0.0
        options["Relaxation"] = float(job.relaxation)
        if method == "sirt":
            algorithm = "SIRT_CUDA" if cuda else "SIRT"
        else:
            algorithm = "SART_CUDA" if cuda else "SART"
            options["ProjectionOrder"] = "custom"
            order = interleaved_order(angles, job.n_subsets)
            options["ProjectionOrderList"] = order.astype(np.int32)
            n_iter = job.iterations * n_t
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    out = np.zeros(volume_shape, dtype=np.float32)
    workers = 1 if cuda else job.workers()
    label = f"astra-{'cuda' if cuda else 'cpu'}-2d"
    ex = ThreadPoolExecutor(max_workers=workers)
    pending: dict[Future, int] = {}
    try:
        for y in range(ny):
            fut = ex.submit(_astra_slice, astra, np.ascontiguousarray(stack[:, y, :]), algorithm,
                            proj_geom, vol_geom, n_iter, options, cuda)
            pending[fut] = y
        done_count = 0
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                y = pending.pop(fut)
                out[:, y, :] = fut.result()
                done_count += 1
            yield Progress(done_count / ny, f"ASTRA {method.upper()}: slice {done_count}/{ny}")
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return out, label


def _astra_sirt3d(astra: Any, data: np.ndarray, angles: np.ndarray,
                  volume_shape: tuple[int, int, int], dy: np.ndarray, u_shift: np.ndarray,
                  orient: tuple[float, float], iterations: int, relaxation: float,
                  positivity: bool) -> ProgressGen[np.ndarray]:
    nz, ny, nx = volume_shape
    n_det = data.shape[2]
    vg = astra.create_vol_geom(ny, nx, nz)
    pg = _astra_proj_geom_3d(astra, angles, ny, n_det, dy, u_shift, *orient)
    sid = astra.data3d.create("-sino", pg, np.ascontiguousarray(data.transpose(1, 0, 2)))
    rid = astra.data3d.create("-vol", vg, 0.0)
    cfg = astra.astra_dict("SIRT3D_CUDA")
    cfg["ProjectionDataId"] = sid
    cfg["ReconstructionDataId"] = rid
    cfg["option"] = {"Relaxation": float(relaxation)}
    if positivity:
        cfg["option"]["MinConstraint"] = 0.0
    aid = astra.algorithm.create(cfg)
    try:
        done = 0
        while done < iterations:
            step = min(10, iterations - done)
            astra.algorithm.run(aid, step)
            done += step
            yield Progress(done / iterations, f"ASTRA SIRT3D_CUDA iteration {done}/{iterations}")
        return np.asarray(astra.data3d.get(rid), dtype=np.float32)
    finally:
        astra.algorithm.delete(aid)
        astra.data3d.delete([sid, rid])


# ---------------------------------------------------------------------------- tomopy
def orient_slices(rec: np.ndarray, data: np.ndarray, tilt_angles_deg: np.ndarray,
                  volume_shape: tuple[int, int, int], n_check: int = 4) -> tuple[np.ndarray, str]:
    """Put an external engine's square slices into our orientation, chosen by the data.

    ``rec`` is ``(ny, n, n)`` (one ``n x n`` slice per detector row, in the engine's own
    orientation). Each of the 8 flips/90-degree turns of the slices is projected with our
    projector on ``n_check`` central slices, and the one that best reproduces ``data`` is kept,
    then cropped or zero-padded along z to ``nz``. This makes the mapping right by construction,
    whatever the engine's conventions.

    Returns
    -------
    (volume, transform)
        Volume ``(nz, ny, nx)`` and the chosen transform as ``"rot90 k=K[, flipped]"``.
    """
    from napari_tiltgen.physics.projector import Projector

    nz, ny, nx = volume_shape
    n = rec.shape[1]
    if rec.shape != (ny, n, n) or n != nx:
        raise ValueError(f"expected slices (ny, nx, nx) = ({ny}, {nx}, {nx}); got {rec.shape}")
    ys = np.arange(ny)[max(0, ny // 2 - n_check // 2):][:n_check]
    proj = Projector((n, len(ys), n), tilt_angles_deg, n_det=data.shape[2])
    target = torch.from_numpy(np.ascontiguousarray(data[:, ys, :], dtype=np.float32))
    best = (np.inf, 0, False)
    for flip in (False, True):
        for k in range(4):
            s = rec[ys]
            s = np.flip(s, axis=2) if flip else s
            s = np.rot90(s, k=k, axes=(1, 2))  # (ny', z, x)
            vol = torch.from_numpy(np.ascontiguousarray(s.transpose(1, 0, 2), dtype=np.float32))
            err = float(torch.linalg.vector_norm(proj.forward(vol) - target))
            if err < best[0]:
                best = (err, k, flip)
    _, k, flip = best
    s = np.flip(rec, axis=2) if flip else rec
    vol = np.rot90(s, k=k, axes=(1, 2)).transpose(1, 0, 2)  # (n, ny, nx)
    out = np.zeros(volume_shape, dtype=np.float32)
    src0, dst0 = max(0, (n - nz) // 2), max(0, (nz - n) // 2)
    m = min(n, nz)
    out[dst0:dst0 + m] = vol[src0:src0 + m]
    return out, f"rot90 k={k}" + (", flipped" if flip else "")


def tomopy_reconstruct_iter(job: ExternalJob) -> ProgressGen[tuple[np.ndarray, str]]:
    """Reconstruct ``job`` with tomopy (``fbp`` or ``sirt``), put into our geometry by :func:`orient_slices`.

    Shifts and the axis offset are undone on the data first (linear interpolation); the result
    is then oriented by the data fit. Raises :class:`TiltgenError` when tomopy is missing.
    """
    tomopy = _import_backend("tomopy")
    require_backend("tomopy", job.method)
    shifts = job.shifts()
    stack = unshift(job.data, shifts[:, 0], shifts[:, 1] + float(job.axis_offset_px))
    yield Progress(0.05, f"tomopy {job.method.upper()}: running")
    kwargs: dict[str, Any] = {"ncore": job.workers(), "center": (job.data.shape[2] - 1) / 2.0}
    if job.method == "wbp":
        kwargs.update(algorithm="fbp", filter_name=_TOMOPY_FILTERS[job.filter])
    else:
        kwargs.update(algorithm="sirt", num_iter=int(job.iterations))
    rec = tomopy.recon(np.ascontiguousarray(stack, dtype=np.float32),
                       np.deg2rad(np.asarray(job.tilt_angles_deg, dtype=np.float64)), **kwargs)
    yield Progress(0.95, "tomopy: matching orientation")
    vol, _ = orient_slices(np.asarray(rec, dtype=np.float32), job.data, job.tilt_angles_deg,
                           job.volume_shape)
    return vol, "tomopy-cpu"


# ---------------------------------------------------------------------------- dispatcher
def reconstruct_external_iter(backend: str,
                              job: ExternalJob) -> ProgressGen[tuple[np.ndarray, str]]:
    """Run ``job`` on ``backend`` (``"astra"`` or ``"tomopy"``)."""
    if backend == "astra":
        return (yield from astra_reconstruct_iter(job))
    if backend == "tomopy":
        return (yield from tomopy_reconstruct_iter(job))
    raise TiltgenError(f"unknown backend {backend!r}.")
