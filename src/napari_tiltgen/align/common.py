"""Helpers shared by the alignment steps: frames as float arrays, centred pixel coordinates,
border statistics, binning, object weights, the history record and the shift gauge.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from scipy import ndimage

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries


# --------------------------------------------------------------------------- helpers
def _frames(ts: TiltSeries, min_tilts: int = 2) -> np.ndarray:
    """The stack (float32, not copied), after checking the frame count and for NaN/inf."""
    where = ts.provenance.get("source")
    if ts.n_tilts < min_tilts:
        raise TiltgenError(f"alignment needs at least {min_tilts} tilts; this series has "
                           f"{ts.n_tilts}.", where)
    data = np.asarray(ts.data, dtype=np.float32)
    bad = [i for i in range(data.shape[0]) if not np.isfinite(data[i]).all()]
    if bad:
        raise TiltgenError(f"frames {bad[:10]} contain NaN or infinite values; remove or repair "
                           "those frames before aligning.", where)
    return data


def _centred(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) - (n - 1) / 2.0


def _border_stats(frames: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame median and robust sigma (MAD) of the outer ``width``-pixel ring."""
    n, ny, nx = frames.shape
    w = max(1, min(width, ny // 4, nx // 4))
    ring = np.concatenate([frames[:, :w, :].reshape(n, -1), frames[:, -w:, :].reshape(n, -1),
                           frames[:, w:-w, :w].reshape(n, -1),
                           frames[:, w:-w, -w:].reshape(n, -1)], axis=1).astype(np.float64)
    med = np.median(ring, axis=1)
    mad = np.median(np.abs(ring - med[:, None]), axis=1) * 1.4826
    return med, mad


def _history(ts: TiltSeries, entry: dict[str, Any]) -> dict[str, Any]:
    prov = copy.deepcopy(ts.provenance)
    prov.setdefault("history", []).append(entry)
    return prov


def _gauge_basis(angles_deg: np.ndarray) -> np.ndarray:
    t = np.deg2rad(angles_deg)
    return np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)


def _axis_offset_of(dx: np.ndarray, angles_deg: np.ndarray) -> float:
    """Constant term of the least-squares fit ``dx ~ A + alpha cos + beta sin``."""
    coef, *_ = np.linalg.lstsq(_gauge_basis(angles_deg), dx, rcond=None)
    return float(coef[0])


def _bin_frames(frames: np.ndarray, max_size: int) -> tuple[np.ndarray, int]:
    b = math.ceil(max(frames.shape[1:]) / max_size) if max_size else 1
    if b <= 1:
        return frames, 1
    n, ny, nx = frames.shape
    ny2, nx2 = (ny // b) * b, (nx // b) * b
    oy, ox = (ny - ny2) // 2, (nx - nx2) // 2
    f = frames[:, oy:oy + ny2, ox:ox + nx2]
    return f.reshape(n, ny2 // b, b, nx2 // b, b).mean(axis=(2, 4)), b


# --------------------------------------------------------------------------- centre of mass
def _noise_sigma(frames: np.ndarray) -> np.ndarray:
    """Per-frame white-noise sigma from neighbouring-pixel differences (robust to structure)."""
    d = np.diff(frames, axis=2).reshape(frames.shape[0], -1)
    med = np.median(d, axis=1)
    return np.median(np.abs(d - med[:, None]), axis=1) * 1.4826 / math.sqrt(2.0)


def _object_mask(frame: np.ndarray, bg: float, smooth_px: float = 2.0, dilate_px: int = 3,
                 floor: float = 0.0) -> np.ndarray:
    """Where the Gaussian-smoothed, background-subtracted frame exceeds 5 white-noise sigmas
    (of the smoothed frame), 2 % of its peak and ``floor``; dilated by ``dilate_px``."""
    sm = ndimage.gaussian_filter(frame.astype(np.float64) - bg, smooth_px)
    sig = _noise_sigma(frame[None])[0] / (2.0 * math.sqrt(math.pi) * smooth_px)
    mask = sm > max(5.0 * sig, 0.02 * float(sm.max()), floor)
    if dilate_px > 0:
        mask = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(2, 1),
                                       iterations=dilate_px)
    return mask


def _object_weights(frame: np.ndarray, bg: float, smooth_px: float = 2.0, dilate_px: int = 3
                    ) -> np.ndarray:
    """Background-subtracted frame, zero outside a (dilated) mask of the bright object.

    The mask (:func:`_object_mask`) is where the Gaussian-smoothed frame exceeds the border
    median by 5 noise sigmas (of the smoothed frame) and by 2 % of its peak; it is dilated by
    ``dilate_px`` to keep the soft edges. Background noise outside the mask therefore cannot
    bias the centre of mass, and inside it is zero-mean.
    """
    w = frame.astype(np.float64) - bg
    return np.where(_object_mask(frame, bg, smooth_px, dilate_px), w, 0.0)


# --------------------------------------------------------------------------- vacuum background
def _line_offsets(r: np.ndarray, vac: np.ndarray, min_pixels: int) -> np.ndarray:
    """Wiener-shrunk per-row offsets of ``r`` measured on its vacuum pixels ``vac``.

    The raw offset of a row is the mean of its vacuum pixels; its noise variance is the pooled
    within-row variance over the row's pixel count. The offsets' own variance (scan-line noise)
    is what their spread has beyond that, and each row's offset is shrunk by
    ``tau^2 / (tau^2 + noise)``; unless tau^2 is 3 standard errors above zero nothing is
    subtracted (no new stripes from noisy means), with strong scan-line noise the measured
    offsets are.
    """
    cnt = vac.sum(axis=1)
    ok = cnt >= min_pixels
    if ok.sum() < 3:
        return np.zeros(r.shape[0])
    m = np.where(ok, (r * vac).sum(axis=1) / np.maximum(cnt, 1), 0.0)
    resid = np.where(vac, r - m[:, None], 0.0)[ok]
    var = float((resid ** 2).sum() / max(int(cnt[ok].sum() - ok.sum()), 1))
    noise = var / np.maximum(cnt, 1)
    tau2 = float(np.mean(m[ok] ** 2 - noise[ok]))
    # chance alone gives tau2 a standard error of sqrt(2 sum noise^2) / rows: below 3 of those
    # (or with a constant vacuum) there is no scan-line noise to speak of, nothing is subtracted
    if not tau2 > 3.0 * math.sqrt(2.0 * float(np.sum(noise[ok] ** 2))) / int(ok.sum()):
        return np.zeros(r.shape[0])
    return np.where(ok, m * tau2 / (tau2 + noise), 0.0)


def vacuum_flatten(frames: np.ndarray, *, max_size: int | None = None, min_pixels: int = 3,
                   mask_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Frames minus their vacuum background (a plane and scan-line offsets), and per frame the
    fraction of its outermost pixels that belong to the object.

    For each frame the bright object is masked (:func:`_object_mask` on the frame binned to at
    most ``mask_size`` px, above the vacuum level of the series, or, where the frame's border is
    mostly vacuum, above a plane fitted to that border (:func:`_border_plane`; a vacuum ramp
    otherwise hid faint object at the edges and passed half the vacuum for object: on a
    held-out catalyst with a 9 % ramp the tilt axis came out 4.8 degrees off, with confidence
    0.82, and was applied), scan lines roughly removed,
    threshold also above 4 robust sigmas of the smoothed border ring's spread), a plane is
    fitted to the remaining vacuum (a detector offset with a gradient; on the binned frame) and
    subtracted, then per-row and per-column offsets measured on the vacuum (scan-line noise: a
    STEM frame is scanned row by row, and a row's offset is constant along it) are subtracted,
    each Wiener-shrunk by :func:`_line_offsets` (nothing is subtracted where there are none;
    measured on at most 512 columns / rows, which is plenty for a constant). Rows with fewer
    than ``min_pixels`` vacuum pixels keep their offset. A frame with almost no vacuum (a
    laterally extended specimen) only has its border median removed. The edge fraction
    (undilated mask, binned) is 0 for an object that stays inside the frame.

    Frames are done one at a time (float64) and binned to at most ``max_size`` px when given
    (:func:`_bin_frames`), so a stack of 2048 px frames needs no full-size float64 copy.

    Why: integrating a frame along its rows sums a row's scan-line offset coherently, so a
    tilt-axis search by common lines sees extra noise exactly when its candidate axis runs along
    the image y axis; on the realistic held-out series this pulled the estimate by a median of
    4.8 degrees off the true axis (benchmarks/axis_transfer.py).
    """
    n, ny, nx = frames.shape
    edge = np.zeros(n)
    bg, _ = _border_stats(frames)
    # the mask's zero: the vacuum level of the frames that show vacuum at their border (a frame
    # the object fills edge to edge has its border median on the object)
    zero = float(np.percentile(bg, 10))
    sub_x, sub_y = max(1, nx // 512), max(1, ny // 512)
    out: list[np.ndarray] = []
    for i in range(n):
        full = np.asarray(frames[i], dtype=np.float64) - bg[i]
        binned, b = _bin_frames(full[None], mask_size)
        binned = binned[0]
        pre = binned + (bg[i] - zero)
        # for the mask only: a vacuum ramp removed first, where the border is mostly vacuum
        # (with a ramp, half the vacuum sits above the threshold and faint object at the edges
        # below it; the scan-line step below would also clip the ramp's y part into a kink)
        ramp, vacuum_border = _border_plane(ndimage.gaussian_filter(pre, 2.0))
        if vacuum_border >= 0.5:
            pre = pre - ramp
        # for the mask only: scan-line offsets from each row's 20th percentile (vacuum in any
        # row the object does not fill), clipped to 4 robust sigmas of their spread, or rows
        # with a high offset would pass for object
        p20 = np.percentile(pre, 20, axis=1)
        dev = p20 - np.median(p20)
        lim = 4.0 * 1.4826 * float(np.median(np.abs(dev)))
        pre = pre - np.clip(dev, -lim, lim)[:, None]
        sm = ndimage.gaussian_filter(pre, 2.0)
        ring = np.concatenate([sm[:2].ravel(), sm[-2:].ravel(), sm[:, :2].ravel(),
                               sm[:, -2:].ravel()])
        floor = 4.0 * 1.4826 * float(np.median(np.abs(ring - np.median(ring))))
        core = _object_mask(pre, 0.0, floor=floor, dilate_px=0)
        edge[i] = float(np.concatenate([core[0], core[-1], core[1:-1, 0],
                                        core[1:-1, -1]]).mean())
        vac_b = ~ndimage.binary_dilation(core, ndimage.generate_binary_structure(2, 1),
                                         iterations=3)
        if vac_b.sum() * b * b >= max(50, 0.02 * ny * nx):
            # plane a + c x + d y fitted on the binned vacuum, in full-size pixel coordinates
            oy, ox = (ny - (ny // b) * b) // 2, (nx - (nx // b) * b) // 2
            yb = oy + b * np.arange(binned.shape[0]) + (b - 1) / 2.0 - ny / 2.0
            xb = ox + b * np.arange(binned.shape[1]) + (b - 1) / 2.0 - nx / 2.0
            yy, xx = np.meshgrid(yb, xb, indexing="ij")
            design = np.stack([np.ones(int(vac_b.sum())), xx[vac_b], yy[vac_b]], axis=1)
            coef, *_ = np.linalg.lstsq(design, binned[vac_b], rcond=None)
            full -= coef[0] + coef[1] * (np.arange(nx) - nx / 2.0)[None, :] \
                + coef[2] * (np.arange(ny) - ny / 2.0)[:, None]
            vac = _upsample_mask(~vac_b, b, ny, nx)
            np.logical_not(vac, out=vac)
            full -= _line_offsets(full[:, ::sub_x], vac[:, ::sub_x], min_pixels)[:, None]
            full -= _line_offsets(full[::sub_y].T, vac[::sub_y].T, min_pixels)[None, :]
        out.append(_bin_frames(full[None], max_size)[0][0] if max_size else full)
    return np.stack(out), edge


def _border_plane(sm: np.ndarray, width: int = 2, iterations: int = 6
                  ) -> tuple[np.ndarray, float]:
    """A plane fitted to the ``width``-px border ring of the smoothed frame ``sm``, pixels above
    it by more than 3 robust sigmas (object) left out and the fit repeated; returns the plane
    over the whole frame and the fraction of the ring it was fitted to (near 1: a vacuum
    border; low: object on much of the border, the plane is then not a vacuum level)."""
    ny, nx = sm.shape
    ring = np.zeros((ny, nx), bool)
    ring[:width] = ring[-width:] = True
    ring[:, :width] = ring[:, -width:] = True
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    yy -= ny / 2.0
    xx -= nx / 2.0
    sel = ring.copy()
    plane = np.zeros_like(sm)
    for _ in range(iterations):
        design = np.stack([np.ones(int(sel.sum())), xx[sel], yy[sel]], axis=1)
        coef, *_ = np.linalg.lstsq(design, sm[sel], rcond=None)
        plane = coef[0] + coef[1] * xx + coef[2] * yy
        r = sm - plane
        s = 1.4826 * float(np.median(np.abs(r[sel] - np.median(r[sel])))) + 1e-30
        new = ring & (r < 3.0 * s)
        if np.array_equal(new, sel) or new.sum() < 3:
            break
        sel = new
    return plane, float(sel.sum()) / float(ring.sum())


def _upsample_mask(mask: np.ndarray, b: int, ny: int, nx: int) -> np.ndarray:
    """A mask of frames binned by ``b`` (:func:`_bin_frames`, centred crop) at full size."""
    if b <= 1:
        return mask
    big = np.repeat(np.repeat(mask, b, axis=0), b, axis=1)
    oy, ox = (ny - big.shape[0]) // 2, (nx - big.shape[1]) // 2
    full = np.ones((ny, nx), dtype=bool)  # the uncovered edge strips count as object (no use)
    full[oy:oy + big.shape[0], ox:ox + big.shape[1]] = big
    return full


def turn_frames(frames: np.ndarray, phi: float, order: int | None = None) -> np.ndarray:
    """Frames rotated as ``scipy.ndimage.rotate(f, phi, reshape=False)`` does, the corners
    filled with each frame's border median: band-limited (three Fourier shears,
    :func:`~napari_tiltgen.physics.shifts.rotate_frames`, no blur) when ``order`` is ``None``,
    else by a spline of that order."""
    from napari_tiltgen.physics.shifts import rotate_frames

    if order is None:
        return rotate_frames(frames, phi)
    bg, _ = _border_stats(frames)
    out = np.empty(np.shape(frames), np.float32)  # filled frame by frame: no second stack
    for i, (f, c) in enumerate(zip(frames, bg)):
        out[i] = ndimage.rotate(f, phi, reshape=False, order=int(order), mode="constant",
                                cval=float(c))
    return out
