"""Training and test images for missing-wedge inpainting, and their wedge-limited reconstructions.

Everything is generated in code (nothing is downloaded):

* **phantom faces** (:func:`phantom_face`): random ellipses and polygons of varied intensity
  inside a head-like outline, as in the IRDM paper;
* **cluster slices** (:func:`cluster_slice`): a plane through the ground-truth volume of a random
  ase nanocluster (:mod:`napari_tiltgen.simulate.clusters`, Gaussian atoms weighted by their HAADF
  cross-section, as :func:`~napari_tiltgen.simulate.series.ground_truth_volume`);
* **natural images** (:func:`natural_image`): crops of the images bundled with scikit-image
  (only the ones shipped inside the wheel, see :data:`BUNDLED_SKIMAGE`).

Every image lies inside the disc inscribed in the square (outside it a parallel-beam tilt series
does not see the object at every angle), is non-negative and has its maximum at 1.

:func:`wedge_inputs` turns a batch of such images (the planes perpendicular to the tilt axis) into
the network's inputs: the sinogram over ``[-a, a]`` with ``a = 90 - missing_wedge_deg / 2`` from
the package's one projector, then its WBP and SIRT reconstructions.

Held-out sets draw from seed streams that training never uses (:data:`HELDOUT_SEED`), clusters
of the held-out elements of :mod:`~napari_tiltgen.simulate.clusters`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from napari_tiltgen.physics.projector import Projector
from napari_tiltgen.recon.iterative import sirt
from napari_tiltgen.recon.wbp import wbp

__all__ = [
    "BUNDLED_SKIMAGE",
    "HELDOUT_SEED",
    "SOURCES",
    "WedgeBatch",
    "cluster_slice",
    "degrade_sinogram",
    "disc_mask",
    "family_slices",
    "make_image",
    "natural_image",
    "normalise_inputs",
    "phantom_face",
    "wedge_angles",
    "wedge_inputs",
]

#: Images of ``skimage.data`` that ship inside the scikit-image wheel (no download).
BUNDLED_SKIMAGE: tuple[str, ...] = (
    "camera", "moon", "coins", "text", "page", "brick", "grass", "gravel", "astronaut",
    "coffee", "chelsea", "rocket", "horse", "clock", "hubble_deep_field",
    "immunohistochemistry", "cell", "logo", "microaneurysms", "cat",
)
#: Image sources and their default share of a training batch.
SOURCES: dict[str, float] = {"phantom": 0.5, "cluster": 0.25, "natural": 0.25}
#: First entry of the seed sequence of held-out images (training uses ``[seed, step, ...]``
#: with small seeds; these never coincide).
HELDOUT_SEED = 7_000_001


# ---------------------------------------------------------------------------- helpers
def disc_mask(size: int, radius_frac: float = 0.47, soft_px: float = 1.5) -> np.ndarray:
    """Soft-edged disc of radius ``radius_frac * size`` pixels (1 inside, 0 outside)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - c, xx - c)
    return np.clip((radius_frac * size - r) / soft_px + 0.5, 0.0, 1.0).astype(np.float32)


def _normalise(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0.0, None).astype(np.float32)
    m = float(img.max())
    return img / m if m > 0 else img


# ---------------------------------------------------------------------------- phantom faces
def phantom_face(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random "phantom face": a head-like ellipse with random ellipses and polygons inside.

    Parameters
    ----------
    size
        Edge of the square image, pixels.
    rng
        Random generator.

    Returns
    -------
    np.ndarray
        ``(size, size)`` float32 in [0, 1], zero outside the inscribed disc.
    """
    from skimage.draw import ellipse, polygon

    ss = 4  # draw at 4x and average down (anti-aliased edges)
    n = size * ss
    img = np.zeros((n, n), np.float32)
    c = n / 2.0
    # the head: one or two nested outlines
    ry, rx = rng.uniform(0.28, 0.44, 2) * n
    rot = rng.uniform(-np.pi, np.pi)
    rr, cc = ellipse(c + rng.uniform(-0.03, 0.03) * n, c + rng.uniform(-0.03, 0.03) * n, ry, rx,
                     shape=img.shape, rotation=rot)
    img[rr, cc] += rng.uniform(0.2, 0.6)
    if rng.random() < 0.6:  # a skull-like rim
        t = rng.uniform(0.04, 0.1)
        rr, cc = ellipse(c, c, ry * (1 - t), rx * (1 - t), shape=img.shape, rotation=rot)
        img[rr, cc] -= rng.uniform(0.0, 0.3)
    # features
    for _ in range(int(rng.integers(3, 12))):
        cy, cx = c + rng.uniform(-0.6, 0.6, 2) * np.array([ry, rx]) * 0.8
        value = rng.uniform(-0.3, 1.0)
        if rng.random() < 0.6:
            a, b = rng.uniform(0.02, 0.22, 2) * n
            rr, cc = ellipse(cy, cx, a, b, shape=img.shape, rotation=rng.uniform(-np.pi, np.pi))
        else:
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.03, 0.2, k) * n
            rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=img.shape)
        img[rr, cc] += value
    img = img.reshape(size, ss, size, ss).mean(axis=(1, 3))
    return _normalise(np.clip(img, 0.0, None) * disc_mask(size))


# ---------------------------------------------------------------------------- cluster slices
def cluster_slice(size: int, rng: np.random.Generator, elements: Sequence[str] | None = None
                  ) -> np.ndarray:
    """A plane perpendicular to the tilt axis through a random nanocluster's ground truth.

    The cluster (random structure, shell count, variant and orientation, see
    :func:`~napari_tiltgen.simulate.clusters.build_cluster`) fills 50-85 % of the field of view;
    atoms are Gaussians of 0.35-0.7 Å weighted by their HAADF cross-section, integrated over
    each pixel of the slice ``y = y0`` (a random plane through the inner half of the cluster).

    Parameters
    ----------
    size
        Edge of the slice, pixels.
    rng
        Random generator.
    elements
        Elements to draw from (default: the training elements of
        :mod:`~napari_tiltgen.simulate.clusters`).
    """
    from napari_tiltgen.simulate.clusters import STRUCTURES, TRAIN_ELEMENTS, VARIANTS, build_cluster
    from napari_tiltgen.simulate.haadf import haadf_cross_section_A2
    from napari_tiltgen.simulate.series import ground_truth_volume

    elements = tuple(elements or TRAIN_ELEMENTS)
    structure = str(rng.choice(STRUCTURES))
    shells = int(rng.integers(3, 6))
    variant = str(rng.choice(VARIANTS))
    el = str(rng.choice(elements))
    el2 = str(rng.choice([e for e in elements if e != el] or [el]))
    atoms = build_cluster(structure, el, shells=shells, variant=variant,
                          element2=el2 if variant in ("alloy", "core_shell") else None,
                          seed=int(rng.integers(0, 2**31 - 1)))
    pos = np.asarray(atoms.positions, dtype=np.float64)
    radius = float(np.max(np.linalg.norm(pos, axis=1))) + 1.0
    px = 2.0 * radius / (rng.uniform(0.5, 0.85) * size)
    y0 = rng.uniform(-0.5, 0.5) * radius
    pos = pos - np.array([0.0, y0, 0.0])
    w = haadf_cross_section_A2(np.asarray(atoms.numbers))
    sigma = rng.uniform(0.35, 0.7)
    sl = ground_truth_volume(pos, w, (size, 1, size), px, max(sigma, 0.4 * px))[:, 0, :]
    return _normalise(sl * disc_mask(size))


@functools.cache
def _skimage_gray(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    a = np.asarray(getattr(skimage.data, name)())
    if a.ndim == 3 and a.shape[-1] == 4:
        a = rgba2rgb(a)
    if a.ndim == 3:
        a = rgb2gray(a)
    a = a.astype(np.float32)
    return a / max(float(a.max()), 1e-12)


def natural_image(size: int, rng: np.random.Generator,
                  names: Sequence[str] = BUNDLED_SKIMAGE) -> np.ndarray:
    """A random crop of a scikit-image sample image, rotated, flipped, resized, in a disc.

    Parameters
    ----------
    size
        Edge of the output, pixels.
    rng
        Random generator.
    names
        ``skimage.data`` functions to draw from (default: the bundled ones).
    """
    from skimage.transform import resize, rotate

    src = _skimage_gray(str(rng.choice(list(names))))
    h, w = src.shape
    crop = int(rng.uniform(0.35, 1.0) * min(h, w))
    y0 = int(rng.integers(0, h - crop + 1))
    x0 = int(rng.integers(0, w - crop + 1))
    img = src[y0:y0 + crop, x0:x0 + crop]
    img = resize(img, (size, size), anti_aliasing=True, preserve_range=True)
    img = rotate(img, float(rng.uniform(0, 360)), mode="reflect", preserve_range=True)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.3:
        img = 1.0 - img  # dark features on a bright object as well as the reverse
    # a random smooth object boundary inside the disc
    r = rng.uniform(0.3, 0.47)
    return _normalise(img * disc_mask(size, r, soft_px=rng.uniform(1.0, 4.0)))


def family_slices(families: Sequence[str], size: int, n_volumes: int, per_volume: int,
                  rng: np.random.Generator, min_mass: float = 0.02) -> tuple[np.ndarray, list[str]]:
    """Planes perpendicular to the tilt axis through random volumes of object families.

    For each of ``n_volumes`` volumes (families drawn in turn from ``families``, see
    :mod:`napari_tiltgen.simulate.families`), ``per_volume`` random y-planes ``vol[:, y, :]``
    that hold at least ``min_mass`` of the mean plane's mass are kept, each normalised to a
    maximum of 1 and masked to the inscribed disc.

    Returns
    -------
    (slices, names)
        ``(n, size, size)`` float32 and the family of each slice.
    """
    from napari_tiltgen.simulate.families import make_sample

    out, names = [], []
    fams = list(families)
    for k in range(int(n_volumes)):
        fam = fams[k % len(fams)]
        vol, _ = make_sample(fam, size, rng)
        mass = vol.sum(axis=(0, 2))
        ok = np.flatnonzero(mass > min_mass * max(float(mass.mean()), 1e-12))
        if ok.size == 0:
            continue
        for y in rng.choice(ok, size=min(per_volume, ok.size), replace=False):
            sl = _normalise(vol[:, int(y), :] * disc_mask(size))
            if float(sl.max()) > 0:
                out.append(sl)
                names.append(fam)
    return np.stack(out).astype(np.float32), names


def degrade_sinogram(sino: torch.Tensor, rng: np.random.Generator, level: str = "train"
                     ) -> torch.Tensor:
    """A microscope's degradations on the sinograms of a group of slices ``(n_tilts, B, n_det)``.

    :func:`napari_tiltgen.simulate.degrade.degrade` with parameters from its
    ``sample_params(rng, level)``: Poisson noise over a dose range, Gaussian and scan-line
    noise, vacuum offset and background ramp; residual jitter only along the detector (``dx``,
    shared by the group as in one series: ``dy`` would mix the slices of different objects,
    which are stacked along y here) and no tilt-axis error (a 2-D slice cannot show it); then
    a Gaussian blur along the detector (probe and instrument, 0-1.2 px).
    """
    from scipy.ndimage import gaussian_filter1d

    from napari_tiltgen.simulate.degrade import degrade, sample_params

    params = sample_params(rng, level)
    jitter = float(params.jitter_px)
    params.jitter_px, params.axis_error_deg = 0.0, 0.0
    a = sino.detach().cpu().numpy().astype(np.float32)
    blur = float(rng.uniform(0.0, 1.2))
    if blur > 0.05:
        a = gaussian_filter1d(a, blur, axis=2, mode="constant")
    if jitter > 0:  # frame k moved by dx[k] along the detector (linear, zero outside)
        n_det = a.shape[2]
        grid = np.arange(n_det, dtype=np.float64)
        for k, d in enumerate(rng.normal(0.0, jitter, a.shape[0])):
            a[k] = np.stack([np.interp(grid - d, grid, row, left=0.0, right=0.0)
                             for row in a[k]])
    if a.max() > 0:
        a = degrade(a, rng, params)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def make_image(source: str, size: int, rng: np.random.Generator, heldout: bool = False
               ) -> np.ndarray:
    """One ``(size, size)`` ground-truth image from ``source`` (``"phantom"``, ``"cluster"``,
    ``"natural"``). ``heldout`` clusters use the held-out elements."""
    if source == "phantom":
        return phantom_face(size, rng)
    if source == "cluster":
        from napari_tiltgen.simulate.clusters import TEST_ELEMENTS, TRAIN_ELEMENTS

        return cluster_slice(size, rng, TEST_ELEMENTS if heldout else TRAIN_ELEMENTS)
    if source == "natural":
        return natural_image(size, rng)
    raise ValueError(f"unknown image source {source!r}; choose one of {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------- reconstructions
def wedge_angles(missing_wedge_deg: float, step_deg: float = 2.0) -> np.ndarray:
    """Symmetric tilt angles (degrees) ``-a, -a + step, ..., a`` with ``a = 90 - wedge / 2``.

    Examples
    --------
    >>> wedge_angles(60.0, 20.0).tolist()
    [-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0]
    """
    a = 90.0 - float(missing_wedge_deg) / 2.0
    n = math.floor(2 * a / step_deg + 1e-6) + 1
    first = -(n - 1) * step_deg / 2.0
    return first + step_deg * np.arange(n, dtype=np.float64)


@dataclass
class WedgeBatch:
    """Network inputs and targets for a batch of slices.

    Attributes
    ----------
    inputs
        ``(B, C, n, n)`` reconstructions (channels as requested, e.g. WBP and SIRT), divided by
        ``scale``.
    target
        ``(B, 1, n, n)`` ground truth divided by ``scale`` (``None`` at inference).
    wedge_deg
        ``(B,)`` missing-wedge size of each slice, degrees.
    scale
        ``(B,)`` the per-slice normalisation (see :func:`normalise_inputs`).
    """

    inputs: torch.Tensor
    target: torch.Tensor | None
    wedge_deg: torch.Tensor
    scale: torch.Tensor


def reconstructions(slices: torch.Tensor, tilt_angles_deg: np.ndarray,
                    channels: Sequence[str] = ("wbp", "sirt"), sirt_iterations: int = 30,
                    noise: float = 0.0, rng: np.random.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
    """Project slices ``(B, n, n)`` (each a ``(z, x)`` plane) over ``tilt_angles_deg`` and
    reconstruct them; returns ``{channel: (B, n, n)}``.

    ``noise`` is the standard deviation of Gaussian noise added to the sinogram, as a fraction of
    the sinogram's maximum, or a degradation level (``"train"``, ``"realistic"``) of
    :func:`degrade_sinogram`.
    """
    b, n, _ = slices.shape
    vol = slices.permute(1, 0, 2).contiguous()  # (nz, ny=B, nx): slices stacked along the axis
    proj = Projector((n, b, n), tilt_angles_deg)
    sino = proj.forward(vol)
    if isinstance(noise, str):  # a degradation level of simulate.degrade ("train", "realistic")
        sino = degrade_sinogram(sino, rng or np.random.default_rng(), noise)
    elif noise > 0:
        rng = rng or np.random.default_rng()
        sd = noise * float(sino.max())
        sino = sino + torch.from_numpy(rng.normal(0.0, sd, sino.shape).astype(np.float32))
    return sinogram_reconstructions(proj, sino, channels, sirt_iterations)


def sinogram_reconstructions(proj: Projector, sino: torch.Tensor, channels: Sequence[str],
                             sirt_iterations: int) -> dict[str, torch.Tensor]:
    """WBP and/or SIRT of a sinogram ``(n_tilts, ny, n_det)``, each as ``(ny, nz, nx)`` slices."""
    out: dict[str, torch.Tensor] = {}
    for ch in channels:
        if ch == "wbp":
            x = wbp(proj, sino)
        elif ch == "sirt":
            x = sirt(proj, sino, iterations=sirt_iterations, positivity=True, preview_every=0)
        else:
            raise ValueError(f"unknown input channel {ch!r} (wbp or sirt)")
        out[ch] = x.permute(1, 0, 2).contiguous()
    return out


def normalise_inputs(recs: dict[str, torch.Tensor], channels: Sequence[str],
                     floor: float | torch.Tensor = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the channels ``(B, C, n, n)`` and divide each slice by its scale.

    The scale is the 99.9th percentile of the slice's first channel, at least ``floor`` (so
    that nearly empty slices of a volume are not blown up) and at least 1e-8.
    """
    x = torch.stack([recs[c] for c in channels], dim=1).float()
    b = x.shape[0]
    s = torch.quantile(x[:, 0].reshape(b, -1), 0.999, dim=1)
    s = torch.maximum(s, torch.as_tensor(floor, dtype=s.dtype)).clamp_min(1e-8)
    return x / s[:, None, None, None], s


def wedge_inputs(images: np.ndarray | torch.Tensor, missing_wedge_deg: Sequence[float],
                 step_deg: Sequence[float] | float = 2.0, channels: Sequence[str] = ("wbp", "sirt"),
                 sirt_iterations: int = 30, noise: Sequence[float] | float = 0.0,
                 rng: np.random.Generator | None = None) -> WedgeBatch:
    """Inputs and targets for ground-truth images ``(B, n, n)``, each with its own wedge.

    Parameters
    ----------
    images
        Ground-truth slices ``(B, n, n)``, rows = z (beam at 0 degrees), columns = x.
    missing_wedge_deg
        Missing wedge of each slice, degrees (slices with the same wedge and step share one
        projector).
    step_deg
        Tilt increment, degrees (one value or one per slice).
    channels
        Reconstructions to feed the network (``"wbp"``, ``"sirt"``).
    sirt_iterations
        SIRT iterations.
    noise
        Sinogram noise, fraction of its maximum (one value or one per slice), or a degradation
        level of :func:`degrade_sinogram` for every group (``"train"``, ``"realistic"``).
    rng
        Random generator for the noise.
    """
    imgs = torch.as_tensor(np.asarray(images, dtype=np.float32))
    b, n, _ = imgs.shape
    wedges = np.asarray(missing_wedge_deg, dtype=np.float64).reshape(-1)
    steps = np.broadcast_to(np.asarray(step_deg, dtype=np.float64), (b,))
    noises = (np.full(b, noise, dtype=object) if isinstance(noise, str)
              else np.broadcast_to(np.asarray(noise, dtype=np.float64), (b,)))
    recs = {c: torch.empty((b, n, n)) for c in channels}
    groups: dict[tuple[float, float, Any], list[int]] = {}
    for i in range(b):
        nz_i = noises[i] if isinstance(noises[i], str) else float(noises[i])
        groups.setdefault((round(wedges[i], 4), round(steps[i], 4), nz_i), []).append(i)
    for (w, st, nz), idx in groups.items():
        r = reconstructions(imgs[idx], wedge_angles(w, st), channels, sirt_iterations, nz, rng)
        for c in channels:
            recs[c][idx] = r[c]
    x, s = normalise_inputs(recs, channels)
    return WedgeBatch(inputs=x, target=(imgs / s[:, None, None])[:, None],
                      wedge_deg=torch.as_tensor(wedges, dtype=torch.float32), scale=s)


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (pixels); a small helper for augmentation."""
    return ndimage.gaussian_filter(img, sigma) if sigma > 0 else img
