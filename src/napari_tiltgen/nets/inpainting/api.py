"""Fill the missing wedge of a volume with the pretrained inpainting network.

The network works on 2-D slices in the planes perpendicular to the tilt axis (``vol[:, y, :]``,
rows = z, columns = x), where the missing wedge is a double cone of missing Fourier directions
around ``k_z``. Its inputs are the WBP and SIRT reconstructions of the slice from a tilt range
``[-a, a]``, ``a = 90 - missing_wedge_deg / 2``, each divided by a per-slice scale, and the size
of the missing wedge (degrees); its output, times the same scale, is the inpainted slice.

* From a :class:`~napari_tiltgen.io.model.TiltSeries`: WBP and SIRT are computed from the
  measured frames (:func:`~napari_tiltgen.recon.api.reconstruct_iter`, shifts applied).
* From a :class:`~napari_tiltgen.io.model.Volume`: the volume is forward-projected over its tilt
  angles (from its provenance, ``tilt_angles=`` or, failing those, a symmetric range with a
  2 degree step built from ``missing_wedge_deg``), and WBP and SIRT are computed from those
  projections. For a WBP or SIRT volume these projections are close to the measured ones.

The network's output is then made consistent with the measured data, as a hard step
(:func:`enforce_consistency`). Where the data are consistent with the forward model (noise-free,
jitter-free: accelerated SIRT from the network's volume gets below 0.6 x the reference SIRT's
reprojection error within 30 iterations), they are fitted on to convergence
(:func:`~napari_tiltgen.nets.inpainting.consistency.converged_fit`, ``consistency="auto"``, the
default). Otherwise, the volume *nearest* the network's that reprojects at
the measured angles no worse than the reference SIRT (:data:`REFERENCE_SIRT_ITERATIONS`
iterations, the same projector with the series' per-tilt shifts, the same relative error
:func:`reprojection_error`), found by a Tikhonov solve ``min ||A x - b||^2 + mu ||x - x_net||^2``
with ``mu`` bisected to the largest that meets it (:func:`closest_consistent`). The change lies
in the span of ``A^T`` (the measured part of Fourier space), so what the network put into the
missing wedge stays, and being the smallest change that meets the bound it brings back less
measurement noise than SIRT iterations from the network's volume (``consistency="iterative"``,
the earlier rule: at least ``refine_iterations``, more until the bound holds, then a blend toward
SIRT). The errors (SIRT, network alone, final), the solver's ``mu`` and the blend are returned in
the volume's ``provenance["data_consistency"]`` and in a note. ``hard_consistency=False`` runs
exactly ``refine_iterations`` (0: the network's output as it is) and only reports.

The trained wedge range is stored with the weights: wedges outside it are refused
(:class:`~napari_tiltgen.core.errors.TiltgenError`) unless ``allow_out_of_range=True``, which turns
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

from napari_tiltgen.core.devices import num_threads, resolve_device
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.core.progress import scaled as _scaled
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.nets.inpainting.apply import (
    SYMMETRIC_DEFAULT,
    inpaint_slices,
    network_volume,
)
from napari_tiltgen.nets.inpainting.consistency import (
    CONSISTENCY_METHODS,
    MAX_REFINE_ITERATIONS,
    PROBE_SIRT_ITERATIONS,
    REFINE_ITERATIONS,
    enforce_consistency,
    reprojection_error,
)
from napari_tiltgen.nets.inpainting.data import wedge_angles
from napari_tiltgen.nets.inpainting.network import UNetPP, load_generator
from napari_tiltgen.nets.inpainting.scales import SCALE_CHOICES, network_at_scales
from napari_tiltgen.physics.projector import suggested_threads

__all__ = ["DEFAULT_WEIGHTS", "MAX_REFINE_ITERATIONS", "METHODS", "REFERENCE_SIRT_ITERATIONS", "REFINE_ITERATIONS", "check_wedge", "inpaint", "inpaint_iter", "inpaint_slices", "load_pretrained", "missing_wedge_of", "model_info", "network_volume", "trained_wedge_range"]


DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "inpainting.safetensors"


ProgressGen = Generator[Progress, None, Any]


#: Methods of :func:`inpaint_iter`: name -> one-line description.
METHODS: dict[str, str] = {
    "pretrained": "pretrained wedge-conditioned U-Net++ GAN (IRDM), slice by slice",
    "tv": "classical: total-variation regularised reconstruction (no learning)",
}


ASYMMETRY_WARN_DEG = 6.0






#: Iterations of the reference SIRT (the default of ``tiltgen reconstruct``).
REFERENCE_SIRT_ITERATIONS = 100


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


def model_info(weights: str | Path | None = None) -> dict[str, Any]:
    """The metadata of a weights file (training ranges, data, command) without loading the
    network: only the file's header is read (cheap enough for a widget's note)."""
    from napari_tiltgen.nets.weights import read_info

    return read_info(Path(weights) if weights is not None else DEFAULT_WEIGHTS)


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


def _geometry(source: TiltSeries | Volume, angles: np.ndarray, device: torch.device,
              thickness_px: int | None) -> tuple[Any, torch.Tensor]:
    """The projector and the measured projections of a series or of a volume.

    A tilt series: one projector over the whole volume with the series' per-tilt ``(dy, dx)``
    shifts, as :func:`~napari_tiltgen.recon.api.reconstruct_iter` builds it, and the frames
    as they are. (The step before this fix cut the volume into 32-slice chunks, each with the
    full ``dy`` shifts: rows near the chunk edges were matched against detector rows of their
    neighbours, or none, and the output fitted the wrong rows.) A volume: its own projections
    over ``angles`` (no shifts).
    """
    from napari_tiltgen.physics.projector import Projector

    if isinstance(source, TiltSeries):
        data, _ = source.checked_for_projection("the reconstruction")
        _, ny, nx = data.shape
        nz = int(thickness_px) if thickness_px else nx
        if nz < 1:
            raise TiltgenError(f"thickness must be at least 1 pixel; got {thickness_px}.")
        proj = Projector((nz, ny, nx), angles, source.shifts_px, 0.0, nx, device)
        return proj, torch.from_numpy(np.array(data, dtype=np.float32)).to(proj.device)
    vol = np.asarray(source.data, dtype=np.float32)
    proj = Projector(vol.shape, angles, device=device)
    return proj, proj.forward(torch.from_numpy(np.ascontiguousarray(vol)).to(proj.device))


def _inputs(proj: Any, b: torch.Tensor, channels: Sequence[str], sirt_iterations: int,
            reference_iterations: int) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """WBP and SIRT inputs of the network ``(nz, ny, nx)``, and the reference SIRT (``"ref"``,
    ``reference_iterations``; continued from the SIRT input, which is the same as running it
    from zero)."""
    from napari_tiltgen.recon.iterative import sirt_iter
    from napari_tiltgen.recon.wbp import wbp

    out: dict[str, torch.Tensor] = {}
    if "wbp" in channels:
        out["wbp"] = wbp(proj, b)
    yield Progress(0.05, "WBP of the measured frames")
    n_in = max(1, int(sirt_iterations))
    n_ref = max(n_in, int(reference_iterations))
    x = yield from _scaled(sirt_iter(proj, b, n_in, positivity=True, preview_every=0),
                           0.05, 0.05 + 0.95 * n_in / n_ref)
    out["sirt"] = x.clone()
    if n_ref > n_in:
        x = yield from _scaled(sirt_iter(proj, b, n_ref - n_in, positivity=True, x0=x,
                                         preview_every=0), 0.05 + 0.95 * n_in / n_ref, 1.0)
    out["ref"] = x
    for c in channels:
        if c not in out:
            raise TiltgenError(f"the weights ask for an unknown input channel {c!r}.")
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
    max_refine_iterations: int = MAX_REFINE_ITERATIONS,
    reference_iterations: int = REFERENCE_SIRT_ITERATIONS,
    hard_consistency: bool = True,
    consistency: str = "auto",
    network_scale: str | int = "auto",
    symmetric: bool = SYMMETRIC_DEFAULT,
) -> Generator[Progress, None, tuple[Volume, list[str]]]:
    """Inpaint the missing wedge of a volume, slice by slice (progress generator).

    Parameters
    ----------
    source
        A :class:`TiltSeries` with tilt angles (degrees; reconstructed first, its per-tilt
        shifts applied) or a reconstructed :class:`Volume` ``(nz, ny, nx)`` (y = tilt axis).
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
        Settings of ``method="tv"`` (see :func:`~napari_tiltgen.recon.tv.tv_iter`).
    refine_iterations
        SIRT iterations started from the network's output against the measured frames (or the
        volume's own projections): at least this many.
    max_refine_iterations
        With ``hard_consistency``: more iterations, up to this many in all, while the result
        reprojects worse than SIRT; then, if still worse, a blend toward the SIRT volume.
    reference_iterations
        Iterations of the reference SIRT whose reprojection error the result must not exceed
        (default 100, as ``tiltgen reconstruct``); also the fallback volume.
    consistency
        How the hard step meets SIRT's reprojection error: ``"auto"`` (default: where the
        data allow it, the data fitted to convergence from the network's volume,
        :func:`converged_fit`, else as ``"closest"``; for a volume, whose own projections
        always allow it, as ``"closest"``), ``"closest"`` (the volume nearest the
        network's that does, :func:`closest_consistent`) or ``"iterative"`` (SIRT
        iterations from the network's volume, at least ``refine_iterations``).
    hard_consistency
        Enforce "never reprojects worse than SIRT" (see :func:`enforce_consistency`). Off:
        exactly ``refine_iterations`` (0: the network's output as it is); the errors are
        still measured and reported.
    network_scale
        ``"auto"`` (default): slices much larger than the network's trained size are binned
        for it and its output upsampled (:mod:`~napari_tiltgen.nets.inpainting.scales`);
        1, 2, 4 or 8: that binning (1: full size).
    symmetric
        Average the network over the slice mirrored in z, in x and in both
        (:data:`~napari_tiltgen.nets.inpainting.apply.FLIPS`; four times its time). ``False``:
        one pass, as before 4 Dec 2026.

    Returns
    -------
    (Volume, list of str)
        The inpainted volume (same shape and voxel size, Å; provenance ``method="inpainting"``
        with ``parameters`` and ``data_consistency``: the reprojection errors of SIRT, of the
        network alone and of the result, the iterations run and the blend toward SIRT; one
        line for the user from :func:`consistency_note`), and warnings for the user.

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
    dev = resolve_device(device)
    notes: list[str] = []
    if consistency not in CONSISTENCY_METHODS:
        raise TiltgenError(f"unknown consistency step {consistency!r}; use one of "
                           f"{', '.join(CONSISTENCY_METHODS)}.")
    if str(network_scale) not in SCALE_CHOICES:
        raise TiltgenError(f"unknown network scale {network_scale!r}; use one of "
                           f"{', '.join(SCALE_CHOICES)}.")
    wedge, angles, how = missing_wedge_of(source, missing_wedge_deg, tilt_angles)
    if consistency == "auto" and isinstance(source, Volume):
        # a volume's own projections always look noise-free to the probe: the nearest volume
        consistency = "closest"
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
        voxel, prov_in, kind = source.pixel_size_A, source.provenance, "tilt series"
    else:
        if not np.all(np.isfinite(np.asarray(source.data))):
            raise TiltgenError("the volume contains NaN or infinite voxels; fix them first.",
                               source.provenance.get("source"))
        if angles is None:
            angles = wedge_angles(wedge, 2.0)
            notes.append(f"the volume records no tilt angles; assumed {angles.min():.0f} to "
                         f"{angles.max():.0f} degrees in 2 degree steps for a {wedge:.1f} "
                         "degree wedge.")
        voxel, prov_in, kind = source.voxel_size_A, source.provenance, "volume"
    proj, b = _geometry(source, angles, dev, thickness_px)
    ref_it = max(sirt_it, int(reference_iterations))
    with num_threads(suggested_threads(proj.volume_shape, proj.n_tilts)):
        recs = yield from _scaled(_inputs(proj, b, channels, sirt_it, ref_it), 0.0, 0.35)
    x_ref = recs.pop("ref")
    r_sirt = reprojection_error(proj, b, x_ref)
    r_probe, p_net = None, 0.35  # the auto rule's probe is held to SIRT-100's error
    if hard_consistency and consistency == "auto" and ref_it < PROBE_SIRT_ITERATIONS:
        from napari_tiltgen.recon.iterative import sirt_iter

        with num_threads(suggested_threads(proj.volume_shape, proj.n_tilts)):
            x100 = yield from _scaled(sirt_iter(proj, b, PROBE_SIRT_ITERATIONS - ref_it,
                                                x0=x_ref, preview_every=0), 0.35, 0.4)
        r_probe, p_net = reprojection_error(proj, b, x100), 0.4
        del x100
    noise_probe = None  # a volume's own projections always look noise-free: no probe
    if isinstance(source, TiltSeries):
        noise_probe = (proj, b, x_ref, r_sirt if r_probe is None else r_probe)
    net, scale_report = yield from _scaled(network_at_scales(
        lambda r: network_volume(model, r, channels, wedge, batch_size, dev, symmetric),
        recs, channels, scale=network_scale, probe=noise_probe), p_net, 0.75)
    del recs
    refine = max(0, int(refine_iterations))
    with num_threads(suggested_threads(proj.volume_shape, proj.n_tilts)):
        if hard_consistency:
            vol_t, report = yield from _scaled(
                enforce_consistency(proj, b, net, x_ref, refine, max_refine_iterations,
                                    sirt_error=r_sirt, method=consistency,
                                    probe_error=r_probe), 0.75, 1.0)
        else:
            vol_t, report = yield from _scaled(
                enforce_consistency(proj, b, net, x_ref, refine, refine, sirt_error=r_sirt,
                                    fallback=False, method="iterative"), 0.75, 1.0)
    report.update(hard=bool(hard_consistency), sirt_iterations=ref_it,
                  network_symmetric=bool(symmetric), **scale_report)
    arr = vol_t.detach().to("cpu", torch.float32).numpy()
    del vol_t, net, x_ref
    params = {"inpainting_method": "pretrained", "missing_wedge_deg": round(wedge, 3),
              "wedge_source": how, "input": kind,
              "weights": Path(weights).name if weights else DEFAULT_WEIGHTS.name,
              "trained_wedge_deg": list(trained_wedge_range(info)),
              "in_channels": channels, "sirt_iterations": sirt_it,
              "refine_iterations": refine, "max_refine_iterations": int(max_refine_iterations),
              "reference_iterations": ref_it, "hard_consistency": bool(hard_consistency),
              "consistency": consistency if hard_consistency else "iterative",
              "batch_size": int(batch_size), "network_scale": scale_report["network_scale"],
              "symmetric": bool(symmetric)}
    history = copy.deepcopy(prov_in.get("history", []))
    history.append({"step": "inpaint", **params})
    prov = {"method": "inpainting", "parameters": params, "device": str(dev),
            "seconds": round(time.perf_counter() - t0, 3), "input": prov_in.get("source"),
            "data_consistency": {k: (round(v, 6) if isinstance(v, float) else v)
                                 for k, v in report.items()},
            "history": history}
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
    from napari_tiltgen.recon.api import reconstruct_iter

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
