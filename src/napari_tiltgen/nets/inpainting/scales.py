"""Running the inpainting network at the scale it was trained for.

The network was trained on 96-px slices (and measured at 128 px). On larger slices of the same
kind of data it fills less of the missing wedge: on held-out families with realistic noise at
256 px the network alone went from 0.63-0.78 x SIRT-100's NRMSE at 128 px to 0.78-1.2 x
(models/inpainting.md, "Slice size"). The reconstructions it gets are noisier per voxel (the
same counts per detector pixel spread over twice as many voxels along each ray) and their
objects and streaks larger than any it saw. So slices much larger than that are binned
``f x f`` in the slice plane (WBP and SIRT inputs alike), the network runs on them and its
output is brought back to full size (bilinear); ``f`` is the power of two that brings the
shorter side of the slice nearest :data:`TARGET_PX` (on a log scale): 1 below 182 px, 2 up to
362 px, 4 up to 724 px, at most :data:`MAX_FACTOR`.

The hard data-consistency step that follows works on the full grid and puts back what the
measured directions say at full resolution, so binning costs only the finest detail of what
the network fills into the wedge. On noise-free, jitter-free data (simulations) that detail
matters more than the noise: there the data-consistency step fits the data to convergence
from the network's volume, and the full-size volume ended lower in 10 of 12 held-out cases at
256 px (by up to 0.07 x SIRT-100's NRMSE on supported catalysts; binned won on two textures;
means 0.477 x against 0.483 x). So for a tilt series whose slices would be
binned, the data are first asked whether they are noise-free: 30 accelerated SIRT iterations
from the SIRT-100 volume (:func:`~napari_tiltgen.recon.iterative.fista_sirt_iter`, as the
data-consistency probe) bring the reprojection error to 0.38-0.61 x SIRT-100's on noise-free
held-out series (0.69 on noise-free phantom faces) and only to 0.82-0.96 x on realistic ones;
at or below :data:`NOISE_FREE_RATIO` the network runs at full size.

Tried and not kept: choosing the factor by which network volume reprojects closest to the
frames (the only thing the data can judge): on 13 held-out cases at 192-256 px it picked a
worse factor than this size rule in 3 and a better one in 1 (mean 0.719 x against 0.712 x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from napari_tiltgen.core.progress import Progress, scaled
from napari_tiltgen.nets.inpainting.consistency import CONVERGE_PROBE, reprojection_error

__all__ = ["MAX_FACTOR", "NOISE_FREE_RATIO", "SCALE_CHOICES", "TARGET_PX", "auto_factor", "bin_slices",
           "network_at_scales", "upsample_slices"]

#: Probe ratio (reprojection error after 30 accelerated SIRT iterations from SIRT-100 / SIRT-100's)
#: at or below which the data count as noise-free and the network runs at full size (between
#: the 0.69 of the noise-free and the 0.82 of the noisy series measured, session 16).
NOISE_FREE_RATIO = 0.75
#: Slice size (px) the network is run nearest to.
TARGET_PX = 128
#: Largest binning (a 2048-px slice at 8 x is 256 px).
MAX_FACTOR = 8
#: ``scale`` values: ``"auto"`` (:func:`auto_factor`) or a fixed factor (1: full size).
SCALE_CHOICES = ("auto", "1", "2", "4", "8")


def auto_factor(shape: Sequence[int], target_px: int = TARGET_PX,
                max_factor: int = MAX_FACTOR) -> int:
    """The power of two ``f <= max_factor`` for which the shorter side of slices ``(nz, nx)``
    divided by ``f`` is nearest ``target_px`` on a log scale (ties: the smaller ``f``)."""
    short = max(1, min(int(shape[0]), int(shape[1])))
    best, f = 1, 2
    while f <= max_factor:
        if abs(math.log(short / f / target_px)) < abs(math.log(short / best / target_px)) - 1e-9:
            best = f
        f *= 2
    return best


def bin_slices(vol: torch.Tensor, f: int) -> torch.Tensor:
    """Mean over ``f x f`` blocks in the slice plane of ``(nz, ny, nx)``: ``(ceil(nz / f), ny,
    ceil(nx / f))`` (the last block row/column padded by repeating the edge)."""
    if f == 1:
        return vol
    s = vol.permute(1, 0, 2)[:, None]  # (ny, 1, nz, nx)
    pz, px = (-s.shape[2]) % f, (-s.shape[3]) % f
    if pz or px:
        s = F.pad(s, (0, px, 0, pz), mode="replicate")
    return F.avg_pool2d(s, f)[:, 0].permute(1, 0, 2).contiguous()


def upsample_slices(vol: torch.Tensor, f: int, shape: Sequence[int]) -> torch.Tensor:
    """Bilinear ``f x`` upsampling of binned ``(nz', ny, nx')`` back to ``shape`` ``(nz, ny,
    nx)`` (pixel centres aligned with :func:`bin_slices`)."""
    if f == 1:
        return vol
    s = F.interpolate(vol.permute(1, 0, 2)[:, None], scale_factor=f, mode="bilinear",
                      align_corners=False)[:, 0]
    return s[:, :shape[0], :shape[2]].permute(1, 0, 2).contiguous()


def network_at_scales(
    network: Callable[[dict[str, torch.Tensor]], Generator[Progress, None, torch.Tensor]],
    recs: dict[str, torch.Tensor], channels: Sequence[str], *, scale: str | int = "auto",
    probe: tuple[Any, torch.Tensor, torch.Tensor, float] | None = None,
) -> Generator[Progress, None, tuple[torch.Tensor, dict[str, Any]]]:
    """The network's volume ``(nz, ny, nx)`` (CPU), run on binned slices where they are large
    (progress generator). ``network(recs)`` is the network on input reconstructions
    (:func:`~napari_tiltgen.nets.inpainting.api.network_volume` with its model and wedge).
    ``scale="auto"``: :func:`auto_factor`; an integer (or its string) runs that factor (1: full
    size, as before 3 Dec 2026). Returns ``(volume, report)`` with ``network_scale`` (the
    factor), ``network_scale_rule`` (``"auto"``, ``"given"`` or ``"noise-free"``) and
    ``network_slice_px`` (the slice size the network saw, ``[nz, nx]``).

    ``probe = (projector, data, SIRT volume, SIRT-100's reprojection error)`` (a tilt series):
    with ``scale="auto"``, slices that would be binned are run at full size when the data look
    noise-free (rule ``"noise-free"``, ``network_scale_probe_ratio`` reported)."""
    shape = tuple(recs[channels[0]].shape)
    report: dict[str, Any] = {}
    lo = 0.0
    if str(scale) == "auto":
        f, rule = auto_factor((shape[0], shape[2])), "auto"
        if f > 1 and probe is not None:
            from napari_tiltgen.core.devices import num_threads
            from napari_tiltgen.physics.projector import suggested_threads
            from napari_tiltgen.recon.iterative import fista_sirt_iter

            proj, b, x_ref, r_ref = probe
            with num_threads(suggested_threads(proj.volume_shape, proj.n_tilts)):
                x = yield from scaled(fista_sirt_iter(proj, b, CONVERGE_PROBE, x0=x_ref), 0.0,
                                      0.2, prefix="are the data noise-free? ")
                ratio = float(reprojection_error(proj, b, x)) / max(float(r_ref), 1e-30)
            del x
            report["network_scale_probe_ratio"] = round(ratio, 4)
            lo = 0.2
            if ratio <= NOISE_FREE_RATIO:
                f, rule = 1, "noise-free"
    else:
        f, rule = int(scale), "given"
        if f < 1 or f > MAX_FACTOR or f & (f - 1):
            raise ValueError(f"network scale {scale!r}: use auto or one of 1, 2, 4, 8")
        if min(shape[0], shape[2]) // f < 16:
            raise ValueError(f"network scale {f}: the {shape[0]} x {shape[2]} slices would be "
                             "binned below 16 px")
    small = {ch: bin_slices(recs[ch], f) for ch in channels}
    seen = [int(small[channels[0]].shape[0]), int(small[channels[0]].shape[2])]
    x = yield from scaled(network(small), lo, 1.0,
                          prefix=f"{f} x {f} binned slices: " if f > 1 else "")
    del small
    report.update(network_scale=int(f), network_scale_rule=rule, network_slice_px=seen)
    return upsample_slices(x, f, shape), report
