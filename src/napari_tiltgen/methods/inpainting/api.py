"""Fill the missing wedge of a volume with the pretrained inpainting network.

The network works on 2-D slices in the planes perpendicular to the tilt axis (``vol[:, y, :]``,
rows = z, columns = x), where the missing wedge is a double cone of missing Fourier directions
around ``k_z``. Its inputs are the WBP and SIRT reconstructions of the slice from a tilt range
``[-a, a]``, ``a = 90 - missing_wedge_deg / 2``, each divided by a per-slice scale, and the size
of the missing wedge (degrees); its output, times the same scale, is the inpainted slice.

* From a :class:`~napari_tiltgen.io.model.TiltSeries`: WBP and SIRT are computed from the
  measured frames (:func:`~napari_tiltgen.methods.recon.reconstruct_iter`, shifts applied).
* From a :class:`~napari_tiltgen.io.model.Volume`: the volume is forward-projected over its tilt
  angles (from its provenance, ``tilt_angles=`` or, failing those, a symmetric range with a
  2 degree step built from ``missing_wedge_deg``), and WBP and SIRT are computed from those
  projections. For a WBP or SIRT volume these projections are close to the measured ones.

The network's output is then made consistent with the measured data (``refine_iterations``,
default :data:`REFINE_ITERATIONS`): SIRT started from the network's volume. SIRT's updates
``A^T (b - A x)`` lie in the measured part of Fourier space, so they correct what the network
got wrong where data exist and leave what it put into the missing wedge (up to the positivity
clip). ``refine_iterations=0`` returns the network's output as it is.

The trained wedge range is stored with the weights: wedges outside it are refused
(:class:`~napari_tiltgen.errors.TiltgenError`) unless ``allow_out_of_range=True``, which turns
the refusal into a warning returned with the result.

Example
-------
>>> from napari_tiltgen.simulate.phantoms import sphere_phantom
>>> ts, truth = sphere_phantom(size=32, tilt_range=(-60, 60), tilt_step=3.0)  # doctest: +SKIP
>>> vol, notes = inpaint(ts)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiltgen.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.methods.inpainting.data import (
    normalise_inputs,
    sinogram_reconstructions,
    wedge_angles,
)
from napari_tiltgen.methods.inpainting.network import (
    UNetPP,
    crop_back,
    load_generator,
    pad_to_multiple,
)
from napari_tiltgen.methods._torch import flush_denormals
from napari_tiltgen.progress import Progress, run

__all__ = [
    "DEFAULT_WEIGHTS",
    "METHODS",
    "REFINE_ITERATIONS",
    "check_wedge",
    "inpaint",
    "inpaint_iter",
    "inpaint_slices",
    "load_pretrained",
    "missing_wedge_of",
    "trained_wedge_range",
]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "inpainting.safetensors"
"""The packaged weights (``napari_tiltgen/models/inpainting.safetensors``)."""

ProgressGen = Generator[Progress, None, Any]

#: Methods of :func:`inpaint_iter`: name -> one-line description.
METHODS: dict[str, str] = {
    "pretrained": "pretrained wedge-conditioned U-Net++ GAN (IRDM), slice by slice",
    "tv": "classical: total-variation regularised reconstruction (no learning)",
}
ASYMMETRY_WARN_DEG = 6.0
#: Default SIRT iterations of the data-consistency step after the network (0: none). Few on
#: purpose: on held-out phantoms with 1 % sinogram noise, 100 iterations fit the noise and lose
#: 1.6 dB against the network alone, 10 are neutral (+0.05 dB); noise-free, 10 gain 0.4 dB,
#: 100 gain 1.1 dB (see models/inpainting.md).
REFINE_ITERATIONS = 10

_CACHE: dict[tuple[str, str], tuple[UNetPP, dict[str, Any]]] = {}
_CACHE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------- model
def load_pretrained(weights: str | Path | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[UNetPP, dict[str, Any]]:
    """The inpainting generator and its metadata (cached per file and device).

    Parameters
    ----------
    weights
        A ``.safetensors`` file written by training; default :data:`DEFAULT_WEIGHTS`. Only
        safetensors are read (no pickle); nothing is downloaded.
    device
        Torch device.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise TiltgenError("the inpainting weights are missing; reinstall napari-tiltgen or "
                           "train them (tiltgen train-inpainting).", path)
    key = (str(path.resolve()), str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_generator(path, device)
        return _CACHE[key]


def trained_wedge_range(info: dict[str, Any]) -> tuple[float, float]:
    """The missing wedges (degrees) the model was trained on."""
    lo, hi = info.get("trained_wedge_deg", (20.0, 90.0))
    return float(lo), float(hi)


def check_wedge(missing_wedge_deg: float, info: dict[str, Any],
                allow_out_of_range: bool = False) -> list[str]:
    """Refuse (or, with ``allow_out_of_range``, warn about) a wedge outside the trained range.

    Returns
    -------
    list of str
        Warnings for the user (empty when the wedge is inside the range).

    Raises
    ------
    TiltgenError
        The wedge lies outside the trained range and ``allow_out_of_range`` is off, or it is
        not a number in [0, 180) degrees.
    """
    w = float(missing_wedge_deg)
    if not np.isfinite(w) or not 0.0 <= w < 180.0:
        raise TiltgenError(f"the missing wedge must be in [0, 180) degrees; got {w}.")
    lo, hi = trained_wedge_range(info)
    if lo - 1e-6 <= w <= hi + 1e-6:
        return []
    text = (f"the missing wedge is {w:.1f} degrees but the inpainting model was trained on "
            f"wedges of {lo:g}-{hi:g} degrees; outside that range it has never seen the "
            "artefacts it should remove")
    if not allow_out_of_range:
        raise TiltgenError(text + ". Use SIRT or TV instead, or allow out-of-range wedges "
                           "(--allow-out-of-range / allow_out_of_range=True) at your own risk.")
    return [text + "; the result may be wrong."]


def _find_angles(prov: dict[str, Any]) -> np.ndarray | None:
    """Tilt angles recorded in a provenance dict (top level, parameters, or history)."""
    places = [prov, prov.get("parameters") or {}]
    places += [h for h in reversed(prov.get("history") or []) if isinstance(h, dict)]
    for p in places:
        a = p.get("tilt_angles")
        if a is not None:
            arr = np.asarray(a, dtype=np.float64).reshape(-1)
            if arr.size >= 2 and np.all(np.isfinite(arr)):
                return arr
    return None


def _find_wedge(prov: dict[str, Any]) -> float | None:
    for p in [prov, prov.get("parameters") or {}] + list(reversed(prov.get("history") or [])):
        if isinstance(p, dict) and p.get("missing_wedge_deg") is not None:
            return float(p["missing_wedge_deg"])
    return None


def missing_wedge_of(source: TiltSeries | Volume, missing_wedge_deg: float | None = None,
                     tilt_angles: Sequence[float] | None = None
                     ) -> tuple[float, np.ndarray | None, str]:
    """The missing wedge (degrees) of a series or volume, its tilt angles if known, and where
    they came from.

    Order: explicit ``tilt_angles``; a tilt series' angles; angles in the volume's provenance;
    explicit ``missing_wedge_deg``; a ``missing_wedge_deg`` in the provenance.

    Raises
    ------
    TiltgenError
        Nothing tells the wedge.
    """
    angles: np.ndarray | None = None
    how = ""
    if tilt_angles is not None:
        angles, how = np.asarray(tilt_angles, dtype=np.float64).reshape(-1), "given tilt angles"
    elif isinstance(source, TiltSeries):
        angles, how = source.require_angles(), "tilt series angles"
    else:
        angles = _find_angles(source.provenance)
        how = "volume provenance (tilt angles)" if angles is not None else ""
    if angles is not None:
        if angles.size < 2:
            raise TiltgenError("at least two tilt angles are needed to know the missing wedge.")
        return float(180.0 - (angles.max() - angles.min())), angles, how
    if missing_wedge_deg is not None:
        return float(missing_wedge_deg), None, "given wedge"
    w = _find_wedge(source.provenance)
    if w is not None:
        return w, None, "volume provenance (missing wedge)"
    raise TiltgenError("the missing wedge of this volume is unknown: it records no tilt "
                       "angles. Give the wedge in degrees (--wedge / missing_wedge_deg) or the "
                       "tilt angles (--tilt-file / tilt_angles), or inpaint the tilt series.")


def _device(device: str | torch.device) -> torch.device:
    from napari_tiltgen.physics.projector import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise TiltgenError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiltgenError("device 'cuda' was asked for but no CUDA GPU is available; use "
                           "'auto' or 'cpu'.")
    return dev


# ---------------------------------------------------------------------------- slices
def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def inpaint_slices(model: UNetPP, inputs: torch.Tensor, missing_wedge_deg: float | torch.Tensor,
                   batch_size: int = 8, device: str | torch.device = "cpu"
                   ) -> Generator[Progress, None, torch.Tensor]:
    """Run the network over normalised slices ``(B, C, h, w)``; returns ``(B, h, w)`` on the CPU.

    Any ``h, w`` work (slices are zero-padded to multiples of 16). On a CUDA out-of-memory
    error the batch is halved, then the CPU is used, with a progress message saying so.
    Denormal floats are flushed to zero on the CPU during the forward pass: the shipped
    weights' deep activations reach that range, which made a 256 x 256 slice 4x slower
    (0.82 -> 0.21 s on one thread).
    """
    dev = torch.device(device)
    b = inputs.shape[0]
    wedge = torch.as_tensor(missing_wedge_deg, dtype=torch.float32).reshape(-1)
    wedge = wedge.expand(b) if wedge.numel() == 1 else wedge
    out = torch.empty((b,) + tuple(inputs.shape[-2:]))
    bs = max(1, int(batch_size))
    i = 0
    net = model.to(dev)
    while i < b:
        j = min(b, i + bs)
        try:
            x, hw = pad_to_multiple(inputs[i:j].to(dev))
            with torch.no_grad(), flush_denormals():
                y = net(x, wedge[i:j].to(dev))
            out[i:j] = crop_back(y, hw)[:, 0].float().cpu()
        except Exception as exc:
            if not _is_oom(exc) or dev.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if bs > 1:
                bs = max(1, bs // 2)
                yield Progress(i / b, f"GPU out of memory; retrying {bs} slices at a time")
            else:
                dev = torch.device("cpu")
                net = model.to(dev)
                yield Progress(i / b, "GPU out of memory; continuing on the CPU")
            continue
        i = j
        yield Progress(j / b, f"inpainting slice {j}/{b}", preview=out[j - 1].numpy().copy())
    return out


def _scaled(gen: Generator[Progress, None, Any], lo: float, hi: float
            ) -> Generator[Progress, None, Any]:
    """Re-yield a sub-generator's progress mapped into ``[lo, hi]``; return its result."""
    try:
        while True:
            ev = next(gen)
            yield Progress(lo + (hi - lo) * ev.fraction, ev.message, ev.preview, ev.values)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def _volume_inputs(vol: np.ndarray, angles: np.ndarray, channels: Sequence[str],
                   sirt_iterations: int, device: torch.device, chunk: int = 32
                   ) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """WBP and SIRT ``(ny, nz, nx)`` of a volume's own projections over ``angles``."""
    from napari_tiltgen.physics.projector import Projector

    nz, ny, nx = vol.shape
    recs = {c: torch.empty((ny, nz, nx)) for c in channels}
    for y0 in range(0, ny, chunk):
        y1 = min(ny, y0 + chunk)
        proj = Projector((nz, y1 - y0, nx), angles, device=device)
        part = torch.from_numpy(np.ascontiguousarray(vol[:, y0:y1, :])).to(device)
        r = sinogram_reconstructions(proj, proj.forward(part), channels, sirt_iterations)
        for c in channels:
            recs[c][y0:y1] = r[c].cpu()
        yield Progress(y1 / ny, f"re-projecting and reconstructing slices {y1}/{ny}")
    return recs


def _series_inputs(ts: TiltSeries, channels: Sequence[str], sirt_iterations: int,
                   device: str, thickness_px: int | None
                   ) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    from napari_tiltgen.methods.recon import reconstruct_iter

    recs: dict[str, torch.Tensor] = {}
    for k, c in enumerate(channels):
        gen = reconstruct_iter(ts, c, iterations=sirt_iterations, device=device,
                               thickness_px=thickness_px, preview_every=0)
        v = yield from _scaled(gen, k / len(channels), (k + 1) / len(channels))
        recs[c] = torch.from_numpy(v.data).permute(1, 0, 2).contiguous()
    return recs


def _refine(init: np.ndarray, source: TiltSeries | Volume, angles: np.ndarray,
            iterations: int, device: torch.device, chunk: int = 32
            ) -> Generator[Progress, None, np.ndarray]:
    """SIRT started from the network's volume ``init`` ``(nz, ny, nx)``: against the measured
    frames of a tilt series, or against a volume's own projections over ``angles``."""
    from napari_tiltgen.methods.recon import sirt_iter
    from napari_tiltgen.physics.projector import Projector

    nz, ny, nx = init.shape
    out = np.empty_like(init)
    for y0 in range(0, ny, chunk):
        y1 = min(ny, y0 + chunk)
        x0 = torch.from_numpy(np.ascontiguousarray(init[:, y0:y1, :]))
        if isinstance(source, TiltSeries):
            proj = Projector((nz, y1 - y0, nx), angles, source.shifts_px, n_det=nx,
                             device=device)
            sino = torch.from_numpy(np.array(source.data[:, y0:y1, :], dtype=np.float32)
                                    ).to(device)  # a copy: the frames may be read-only
        else:
            proj = Projector((nz, y1 - y0, nx), angles, device=device)
            vol = np.array(source.data[:, y0:y1, :], dtype=np.float32)
            sino = proj.forward(torch.from_numpy(vol).to(device))
        x = yield from _scaled(sirt_iter(proj, sino, iterations, x0=x0, preview_every=0),
                               y0 / ny, y1 / ny)
        out[:, y0:y1, :] = x.detach().cpu().numpy()
        yield Progress(y1 / ny, f"data consistency: slices {y1}/{ny}")
    return out


def inpaint_iter(
    source: TiltSeries | Volume,
    missing_wedge_deg: float | None = None,
    *,
    method: str = "pretrained",
    tilt_angles: Sequence[float] | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    allow_out_of_range: bool = False,
    thickness_px: int | None = None,
    tv_weight: float = 0.01,
    tv_iterations: int = 100,
    refine_iterations: int = REFINE_ITERATIONS,
) -> Generator[Progress, None, tuple[Volume, list[str]]]:
    """Inpaint the missing wedge of a volume, slice by slice (progress generator).

    Parameters
    ----------
    source
        A :class:`TiltSeries` with tilt angles (degrees; reconstructed first) or a reconstructed
        :class:`Volume` ``(nz, ny, nx)`` (y = tilt axis).
    missing_wedge_deg
        Missing wedge in degrees, used for a volume that records no tilt angles (ignored when
        angles are known).
    method
        ``"pretrained"`` (the network) or ``"tv"`` (a classical TV-regularised reconstruction
        of the series, or of the volume's own projections, for comparison); see
        :data:`METHODS`.
    tilt_angles
        Tilt angles of a volume, degrees (override its provenance).
    weights
        Weights file (default: the packaged model).
    device
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
    batch_size
        Slices per network call.
    allow_out_of_range
        Run (with a warning) on wedges outside the trained range instead of refusing.
    thickness_px
        Thickness ``nz`` of the volume reconstructed from a tilt series, pixels (default nx).
    tv_weight, tv_iterations
        Settings of ``method="tv"`` (see :func:`~napari_tiltgen.methods.recon.tv_iter`).
    refine_iterations
        SIRT iterations started from the network's output against the measured frames (or the
        volume's own projections), to make it consistent with the data; 0: the network's output
        as it is.

    Returns
    -------
    (Volume, list of str)
        The inpainted volume (same shape and voxel size, Å; provenance ``method="inpainting"``
        with ``parameters``), and warnings for the user.

    Raises
    ------
    TiltgenError
        Unknown wedge, wedge outside the trained range, NaNs, missing weights, bad device.
    """
    t0 = time.perf_counter()
    method = str(method).lower().strip()
    if method not in METHODS:
        raise TiltgenError(f"unknown inpainting method {method!r}; choose one of "
                           f"{', '.join(METHODS)}.")
    dev = _device(device)
    notes: list[str] = []
    wedge, angles, how = missing_wedge_of(source, missing_wedge_deg, tilt_angles)
    if method == "tv":
        return (yield from _tv_iter(source, wedge, angles, how, str(dev), tv_weight,
                                    tv_iterations, thickness_px, t0))
    model, info = load_pretrained(weights, "cpu")
    notes += check_wedge(wedge, info, allow_out_of_range)
    if angles is not None and abs(angles.max() + angles.min()) > ASYMMETRY_WARN_DEG:
        notes.append(f"the tilt range {angles.min():.1f} to {angles.max():.1f} degrees is not "
                     "symmetric about 0; the model was trained on symmetric ranges, so the "
                     "filled wedge may be slightly off its true direction.")
    channels = list(info.get("in_channels", model.config.in_channels))
    sirt_it = int(info.get("sirt_iterations", 20))
    yield Progress(0.0, f"missing wedge {wedge:.1f} deg ({how})")
    if isinstance(source, TiltSeries):
        recs = yield from _scaled(_series_inputs(source, channels, sirt_it, str(dev),
                                                 thickness_px), 0.0, 0.4)
        voxel, prov_in, kind = source.pixel_size_A, source.provenance, "tilt series"
    else:
        data = np.asarray(source.data, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            raise TiltgenError("the volume contains NaN or infinite voxels; fix them first.",
                               source.provenance.get("source"))
        if angles is None:
            angles = wedge_angles(wedge, 2.0)
            notes.append(f"the volume records no tilt angles; assumed {angles.min():.0f} to "
                         f"{angles.max():.0f} degrees in 2 degree steps for a {wedge:.1f} "
                         "degree wedge.")
        recs = yield from _scaled(_volume_inputs(data, angles, channels, sirt_it, dev),
                                  0.0, 0.4)
        voxel, prov_in, kind = source.voxel_size_A, source.provenance, "volume"
    first = recs[channels[0]]
    floor = 0.05 * float(torch.quantile(first.flatten()[:: max(1, first.numel() // 2_000_000)],
                                        0.999))
    x, scale = normalise_inputs(recs, channels, floor)
    del recs
    refine = max(0, int(refine_iterations))
    net_end = 0.8 if refine else 1.0
    out = yield from _scaled(inpaint_slices(model, x, wedge, batch_size, dev), 0.4, net_end)
    arr = (out * scale[:, None, None]).permute(1, 0, 2).contiguous().numpy()
    del out, x
    if refine:
        if angles is None:  # a tilt series always has angles; a volume got assumed ones above
            raise TiltgenError("internal error: no tilt angles for the data-consistency step.")
        arr = yield from _scaled(_refine(arr, source, angles, refine, dev), net_end, 1.0)
    params = {"inpainting_method": "pretrained", "missing_wedge_deg": round(wedge, 3), "wedge_source": how, "input": kind,
              "weights": Path(weights).name if weights else DEFAULT_WEIGHTS.name,
              "trained_wedge_deg": list(trained_wedge_range(info)),
              "in_channels": channels, "sirt_iterations": sirt_it,
              "refine_iterations": refine, "batch_size": int(batch_size)}
    history = copy.deepcopy(prov_in.get("history", []))
    history.append({"step": "inpaint", **params})
    prov = {"method": "inpainting", "parameters": params, "device": str(dev),
            "seconds": round(time.perf_counter() - t0, 3), "input": prov_in.get("source"),
            "history": history}
    if angles is not None:
        prov["tilt_angles"] = [float(a) for a in angles]
    if notes:
        prov["warnings"] = list(notes)
    yield Progress(1.0, "inpainting done", preview=arr[:, arr.shape[1] // 2, :].copy())
    return Volume(np.ascontiguousarray(arr, dtype=np.float32), voxel_size_A=voxel,
                  provenance=prov), notes


def _tv_iter(source: TiltSeries | Volume, wedge: float, angles: np.ndarray | None, how: str,
             device: str, tv_weight: float, iterations: int, thickness_px: int | None,
             t0: float) -> Generator[Progress, None, tuple[Volume, list[str]]]:
    """The classical alternative: TV reconstruction of the series (or the volume's projections)."""
    from napari_tiltgen.methods.recon import reconstruct_iter

    notes: list[str] = []
    if isinstance(source, TiltSeries):
        ts = source
    else:
        from napari_tiltgen.physics.projector import Projector

        if angles is None:
            angles = wedge_angles(wedge, 2.0)
            notes.append(f"the volume records no tilt angles; assumed {angles.min():.0f} to "
                         f"{angles.max():.0f} degrees in 2 degree steps.")
        data = np.asarray(source.data, dtype=np.float32)
        proj = Projector(data.shape, angles, device=device)
        sino = proj.forward(torch.from_numpy(data).to(proj.device)).cpu().numpy()
        ts = TiltSeries(sino, tilt_angles=angles, pixel_size_A=source.voxel_size_A,
                        provenance=copy.deepcopy(source.provenance))
        thickness_px = data.shape[0]
    vol = yield from reconstruct_iter(ts, "tv", iterations, device=device, tv_weight=tv_weight,
                                      thickness_px=thickness_px)
    vol.provenance["method"] = "inpainting"
    vol.provenance["parameters"] = {"inpainting_method": "tv", "missing_wedge_deg": wedge,
                                    "wedge_source": how, "tv_weight": float(tv_weight),
                                    "iterations": int(iterations)}
    vol.provenance["seconds"] = round(time.perf_counter() - t0, 3)
    if angles is not None:
        vol.provenance["tilt_angles"] = [float(a) for a in angles]
    return vol, notes


def inpaint(source: TiltSeries | Volume, missing_wedge_deg: float | None = None, *,
            show: bool = False, **kwargs: Any) -> tuple[Volume, list[str]]:
    """:func:`inpaint_iter` run to completion (same parameters); ``show``: tqdm bar.

    The warnings returned with the volume are also emitted as ``UserWarning``.
    """
    vol, notes = run(inpaint_iter(source, missing_wedge_deg, **kwargs), show=show,
                     desc="inpaint")
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    return vol, notes
