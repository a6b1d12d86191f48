"""Object families for training data built for transfer: 3-D volumes of many kinds of samples.

Every family is a generator ``f(size, rng) -> (volume, info)`` of a ``(size, size, size)``
float32 density volume ``(nz, ny, nx)`` (y = tilt axis, as in :mod:`napari_tiltgen.physics`)
and a small dict of facts (pixel size in Å, what was drawn). Tilt series of a volume come from
the package's one forward model, :func:`napari_tiltgen.physics.projector.forward_project`
(:func:`project`), optionally blurred by the probe; noise, jitter, tilt-axis error and
background come afterwards from :mod:`napari_tiltgen.simulate.degrade`.

Families
--------
=================== ======== ====================================================================
family              split    what it is
=================== ======== ====================================================================
``cluster``         train    atomic nanocluster (ase, :mod:`.clusters`, training elements), atoms
                             as Gaussians weighted by their HAADF cross-section, 0.15-1 Å pixels
``rods``            train    1-5 nanorods (sphero-cylinders), random orientation and density
``needle``          train    one long tapered needle (sometimes with a denser core), often
                             leaving the field of view along the tilt axis
``porous``          train    ellipsoid or sphere with many random pores
``hollow``          train    hollow shells / nanocages, sometimes with a core (yolk-shell)
``metaballs``       train    random smooth blobs (thresholded sums of Gaussians), graded density
``polyhedra``       train    1-4 faceted convex polyhedra (intersections of random half-spaces)
``texture``         train    a shape whose density is a texture from scikit-image's images
                             (camera, moon, coins, brick, text, grass, page, clock)
``decorated``       train    particles on a support, a generator of its own: small faceted or
                             ellipsoidal particles half sunk into a blob, grain or (hollow) tube
``film``            train    particles on a support film, a generator of its own: a thin to thick
                             (1.5-35 % of the field), curved, inclined, sometimes holey
                             amorphous film, particles (faceted or ellipsoidal) on one or both
                             faces or none
``supported``       held out catalyst: a large low-density support (sphere or slab, with
                             amorphous texture) decorated with many small dense particles
``aggregate``       held out sintered aggregate: a random chain of overlapping spheres
``texture_heldout`` held out the ``texture`` generator on images never used in training
                             (gravel, cell, hubble_deep_field) and other base shapes
=================== ======== ====================================================================

Pixel sizes (recorded in ``info["pixel_size_A"]``): atomic clusters 0.15-1 Å, particle families
1-100 Å (log-uniform), so the data span about three decades. The pixel size sets the probe blur
of :func:`project` (a 0.8 Å probe is several pixels at 0.2 Å, far below one pixel at 30 Å)
and, for particles, a random instrument resolution of 0.3-1.2 px.

Example
-------
>>> import numpy as np
>>> vol = make_volume("rods", 32, np.random.default_rng(0))
>>> vol.shape, vol.dtype.name
((32, 32, 32), 'float32')

A 128^3 volume takes about 0.05-0.3 s and its 61 projections about 1 s on one core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.simulate.shapes import add_particles as _add_particles
from napari_tiltgen.simulate.shapes import capsule_sd as _capsule_sd
from napari_tiltgen.simulate.shapes import ellipsoid_sd as _ellipsoid_sd
from napari_tiltgen.simulate.shapes import grid as _grid
from napari_tiltgen.simulate.shapes import place as _place
from napari_tiltgen.simulate.shapes import polyhedron_sd as _polyhedron_sd
from napari_tiltgen.simulate.shapes import px_particles as _px_particles
from napari_tiltgen.simulate.shapes import rot as _rot
from napari_tiltgen.simulate.shapes import smooth_noise as _smooth_noise
from napari_tiltgen.simulate.shapes import soft as _soft
from napari_tiltgen.simulate.shapes import sphere_sd as _sphere_sd
from napari_tiltgen.simulate.shapes import unit as _unit

__all__ = ["FAMILIES", "HELDOUT_FAMILIES", "TEXTURE_IMAGES_HELDOUT", "TEXTURE_IMAGES_TRAIN",
           "TRAIN_FAMILIES", "make_sample", "make_volume", "project", "tilt_series",
           "training_families"]

#: Thickness of the ``film`` family's film, fraction of the field (log-uniform). The first
#: inpainting fine-tune with films (stage 8a, models/inpainting.md) drew (0.01, 0.2).
FILM_THICKNESS: tuple[float, float] = (0.015, 0.35)
#: scikit-image images used as textures in training (``texture``).
TEXTURE_IMAGES_TRAIN: tuple[str, ...] = ("camera", "moon", "coins", "brick", "text", "grass",
                                         "page", "clock")
#: scikit-image images held out of training (``texture_heldout`` only).
TEXTURE_IMAGES_HELDOUT: tuple[str, ...] = ("gravel", "cell", "hubble_deep_field")


# ---------------------------------------------------------------------------- families
def _cluster(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    from napari_tiltgen.simulate.clusters import STRUCTURES, TRAIN_ELEMENTS, VARIANTS, build_cluster
    from napari_tiltgen.simulate.series import atoms_volume

    structure = str(rng.choice(STRUCTURES))
    element = str(rng.choice(TRAIN_ELEMENTS))
    variant = str(rng.choice(VARIANTS))
    others = [e for e in TRAIN_ELEMENTS if e != element]
    kw: dict[str, Any] = {}
    if variant in ("alloy", "core_shell"):
        kw["element2"] = str(rng.choice(others))
    diameter = float(rng.uniform(12.0, 40.0))
    atoms = build_cluster(structure, element, diameter_A=diameter, variant=variant,
                          seed=int(rng.integers(2**31)), **kw)
    pos = np.asarray(atoms.get_positions(), np.float64)
    pos -= pos.mean(axis=0)
    extent = float(np.max(np.linalg.norm(pos[:, [0, 2]], axis=1))) + 2.0
    fill = rng.uniform(0.35, 0.85)
    px = max(0.15, min(1.0, 2.0 * extent / (fill * size)))
    sigma = float(rng.uniform(0.25, 0.45))  # thermal smearing + part of the probe, Å
    vol = atoms_volume(atoms, (size, size, size), px, sigma)
    return vol, {"pixel_size_A": px, "structure": structure, "element": element,
                 "variant": variant, "n_atoms": len(atoms), "probe_sigma_A": 0.35}


def _rods(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    vol = np.zeros((size, size, size), np.float32)
    n = int(rng.integers(1, 6))
    for _ in range(n):
        r = float(rng.uniform(0.03, 0.12) * size)
        half = float(rng.uniform(1.5, 5.0) * r)
        half = min(half, 0.42 * size - r)
        c = _place(rng, size, half + r)
        d = _unit(rng)
        occ = _soft(_capsule_sd(z, y, x, c - half * d, c + half * d, r), rng.uniform(0.4, 1.2))
        vol = np.maximum(vol, occ * float(rng.uniform(0.4, 1.0)))
    return vol, {"pixel_size_A": _px_particles(rng), "n": n}


def _needle(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    # mostly along the tilt axis (as mounted needles are), sometimes inclined
    d = np.array([rng.normal(0, 0.25), 1.0, rng.normal(0, 0.25)], np.float32)
    d /= np.linalg.norm(d)
    r0 = float(rng.uniform(0.06, 0.2) * size)
    tip = float(rng.uniform(0.0, 0.4))  # relative radius at the tip
    length = float(rng.uniform(0.7, 1.6) * size)
    c = np.array([rng.uniform(-0.1, 0.1) * size, rng.uniform(-0.3, 0.3) * size,
                  rng.uniform(-0.1, 0.1) * size], np.float32)
    p0 = c - 0.5 * length * d
    s = ((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / length
    sc = np.clip(s, 0, 1)
    rad = r0 * (1.0 - (1.0 - tip) * sc ** rng.uniform(0.7, 2.0))
    dist = np.sqrt((z - p0[0] - sc * length * d[0]) ** 2 + (y - p0[1] - sc * length * d[1]) ** 2
                   + (x - p0[2] - sc * length * d[2]) ** 2)
    w = rng.uniform(0.5, 1.5)
    vol = _soft(dist - rad, w) * _soft(-s * length, w) * _soft((s - 1) * length, w)
    if rng.random() < 0.5:  # denser core (e.g. a different phase inside the needle)
        vol = vol + 0.8 * _soft(dist - rng.uniform(0.2, 0.6) * rad, w)
    if rng.random() < 0.5:  # facets: flatten with a few planes through the axis
        for _ in range(int(rng.integers(2, 4))):
            nrm = _unit(rng)
            nrm -= (nrm @ d) * d
            nrm /= np.linalg.norm(nrm) + 1e-9
            plane = (z - c[0]) * nrm[0] + (y - c[1]) * nrm[1] + (x - c[2]) * nrm[2]
            vol *= _soft(np.abs(plane) - rng.uniform(0.7, 0.95) * rad, w)
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng)}


def _porous(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    radii = rng.uniform(0.2, 0.38, 3) * size
    c = _place(rng, size, float(radii.max()))
    rot = _rot(rng)
    w = rng.uniform(0.5, 1.2)
    vol = _soft(_ellipsoid_sd(z, y, x, c, radii, rot), w)
    n_pores = int(rng.integers(8, 60))
    rmin = float(radii.min())
    pores = np.ones_like(vol)
    for _ in range(n_pores):
        pr = float(rng.uniform(0.05, 0.22) * rmin)
        pc = c + rng.uniform(-1, 1, 3).astype(np.float32) * radii.astype(np.float32) * 0.9
        lo = np.maximum(np.floor(pc - pr - 3).astype(int) + size // 2, 0)
        hi = np.minimum(np.ceil(pc + pr + 3).astype(int) + size // 2 + 1, size)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        pores[sl] *= 1.0 - _soft(_sphere_sd(z[sl[0]], y[:, sl[1]], x[:, :, sl[2]], pc, pr), w)
    vol *= pores
    vol *= float(rng.uniform(0.5, 1.0))
    return vol, {"pixel_size_A": _px_particles(rng), "n_pores": n_pores}


def _hollow(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    vol = np.zeros((size, size, size), np.float32)
    n = int(rng.integers(1, 4))
    for _ in range(n):
        r = float(rng.uniform(0.12, 0.36) * size / math.sqrt(n))
        c = _place(rng, size, r)
        w = rng.uniform(0.4, 1.2)
        if rng.random() < 0.5:
            sd = _sphere_sd(z, y, x, c, r)
        else:
            sd = _ellipsoid_sd(z, y, x, c, r * rng.uniform(0.6, 1.0, 3), _rot(rng))
        t = float(rng.uniform(0.08, 0.35) * r)
        shell = _soft(np.abs(sd + t) - t, w)
        if rng.random() < 0.35:  # yolk-shell: a dense core inside
            rc = float(rng.uniform(0.2, 0.5) * r)
            shell = shell + 1.3 * _soft(_sphere_sd(z, y, x, c + rng.normal(0, 0.1 * r, 3)
                                                   .astype(np.float32), rc), w)
        vol = np.maximum(vol, shell * float(rng.uniform(0.4, 1.0)))
    return vol, {"pixel_size_A": _px_particles(rng), "n": n}


def _metaballs(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    n = int(rng.integers(3, 12))
    field = np.zeros((size, size, size), np.float32)
    spread = rng.uniform(0.1, 0.25) * size
    centre = _place(rng, size, 2.0 * spread)
    for _ in range(n):
        s = float(rng.uniform(0.05, 0.14) * size)
        c = centre + rng.normal(0, spread, 3).astype(np.float32)
        field += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    level = float(rng.uniform(0.3, 0.6))
    vol = (0.5 + 0.5 * np.tanh((field - level) / rng.uniform(0.03, 0.12))).astype(np.float32)
    if rng.random() < 0.6:  # graded density inside
        vol *= np.clip(0.6 + 0.4 * field / max(float(field.max()), 1e-6), 0, 1)
    return vol * float(rng.uniform(0.5, 1.0)), {"pixel_size_A": _px_particles(rng), "n": n}


def _polyhedra(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    vol = np.zeros((size, size, size), np.float32)
    n = int(rng.integers(1, 5))
    for _ in range(n):
        r = float(rng.uniform(0.1, 0.3) * size / n ** 0.4)
        c = _place(rng, size, 1.6 * r)
        sd = _polyhedron_sd(z, y, x, c, r, int(rng.integers(6, 16)), rng)
        vol = np.maximum(vol, _soft(sd, rng.uniform(0.3, 1.0)) * float(rng.uniform(0.3, 1.0)))
    return vol, {"pixel_size_A": _px_particles(rng), "n": n}


def _decorated(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-only particles on a support, from a generator of its own (not ``supported``'s):
    the support is a smooth random blob, a large faceted grain or a (hollow) tube, at low
    density with an amorphous texture; the particles are small faceted polyhedra or
    ellipsoids, half sunk into its surface, denser than it."""
    z, y, x = _grid(size)
    w = float(rng.uniform(0.4, 1.0))
    kind = str(rng.choice(["blob", "grain", "tube"]))
    if kind == "blob":  # a thresholded smooth random field inside the cylinder seen at every tilt
        field = _smooth_noise((size, size, size), rng, rng.uniform(0.15, 0.35) * size)
        radial = np.sqrt(x * x + z * z + 0 * y) / (0.44 * size)
        sd = (rng.uniform(-0.3, 0.5) - field + 4.0 * np.maximum(radial - 0.7, 0)) * 0.1 * size
    elif kind == "grain":
        r = float(rng.uniform(0.25, 0.4) * size)
        sd = _polyhedron_sd(z, y, x, _place(rng, size, 1.1 * r), r, int(rng.integers(6, 14)),
                            rng)
    else:  # a tube, inclined to the tilt axis, sometimes hollow
        d = np.array([rng.normal(0, 0.6), 1.0, rng.normal(0, 0.6)], np.float32)
        d /= np.linalg.norm(d)
        r = float(rng.uniform(0.1, 0.25) * size)
        c = np.array([rng.uniform(-0.1, 0.1) * size, 0.0, rng.uniform(-0.1, 0.1) * size],
                     np.float32)
        sd = _capsule_sd(z, y, x, c - 2.0 * size * d, c + 2.0 * size * d, r)
        if rng.random() < 0.5:
            t = float(rng.uniform(0.15, 0.4) * r)
            sd = np.abs(sd + t) - t
    sd = np.maximum(sd, np.sqrt(x * x + z * z + 0 * y) - 0.46 * size)
    amorph = 1.0 + 0.3 * _smooth_noise((size, size, size), rng, rng.uniform(1.5, 6.0))
    vol = _soft(sd, w) * float(rng.uniform(0.08, 0.4)) * amorph
    band = np.argwhere(np.abs(sd) < 1.0)
    n = int(rng.integers(5, 60))
    if len(band):
        _add_particles(vol, (z, y, x), band[rng.integers(0, len(band), n)], rng,
                       radius=(0.015, 0.06), p_faceted=0.6, aspect=1.6, density=0.5)
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng), "support": kind,
                                    "n_particles": n}


def _film(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-only particles on a support film, a generator of its own (not
    ``supported``'s): an amorphous film across the field along the tilt axis, from a thin
    carbon film to a thick support or lamella (1.5-35 % of the field), gently curved (a smooth
    random height field), inclined by up to 30 degrees, sometimes holey (holey / lacey
    carbon), of low density; on one or both faces small faceted or ellipsoidal particles,
    denser than it, sometimes none."""
    z, y, x = _grid(size)
    w = float(rng.uniform(0.4, 1.0))
    # mid-surface z = h(y, x): a plane inclined about y (seen in every slice) and a little
    # about x, plus smooth waviness
    a = math.tan(math.radians(float(rng.uniform(-30.0, 30.0))))
    b = math.tan(math.radians(float(rng.normal(0.0, 5.0))))
    from scipy.ndimage import gaussian_filter

    wave = gaussian_filter(rng.normal(size=(size, size)), rng.uniform(0.1, 0.25) * size,
                           mode="wrap")
    wave = (wave / (wave.std() + 1e-12)).astype(np.float32)
    h = (a * x[0] + b * y[0] + float(rng.uniform(0.0, 0.05)) * size * wave
         + float(rng.uniform(-0.15, 0.15)) * size)[None]  # (1, ny, nx)
    lo, hi = FILM_THICKNESS
    t = 0.5 * float(np.exp(rng.uniform(math.log(lo), math.log(hi)))) * size + 0.6
    sd = np.abs(z - h) - t
    holes = int(rng.integers(0, 6)) if rng.random() < 0.4 else 0
    for _ in range(holes):  # cylinders through the film, along its normal (about z)
        r = float(rng.uniform(0.06, 0.25) * size)
        cy, cx = rng.uniform(-0.45, 0.45, 2) * size
        sd = np.maximum(sd, r - np.sqrt((y - cy) ** 2 + (x - cx) ** 2 + 0 * z))
    sd = np.maximum(sd, np.sqrt(x * x + z * z + 0 * y) - 0.46 * size)
    amorph = 1.0 + 0.3 * _smooth_noise((size, size, size), rng, rng.uniform(1.5, 6.0))
    vol = _soft(sd, w) * float(np.exp(rng.uniform(math.log(0.04), math.log(0.35)))) * amorph
    sides = str(rng.choice(["top", "bottom", "both"]))
    n = int(rng.integers(0, 50)) if rng.random() < 0.9 else 0
    shell = np.argwhere((np.abs(sd) < 1.0) & ((z - h >= 0) if sides == "top" else
                                              (z - h <= 0) if sides == "bottom" else True))
    if len(shell) and n:
        def rest(pc: np.ndarray, p: np.ndarray, pr: float) -> None:  # on the film's face
            pc[0] += np.sign(pc[0] - h[0, p[1], p[2]]) * 0.6 * pr

        _add_particles(vol, (z, y, x), shell[rng.integers(0, len(shell), n)], rng,
                       radius=(0.012, 0.06), p_faceted=0.5, aspect=1.5, density=0.45,
                       shift=rest)
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng), "support": "film",
                                    "thickness_px": 2 * t, "holes": holes, "sides": sides,
                                    "n_particles": n}


_TEXTURE_CACHE: dict[str, np.ndarray] = {}


def _texture_image(name: str) -> np.ndarray:
    if name not in _TEXTURE_CACHE:
        import skimage.data
        from skimage.color import rgb2gray

        im = getattr(skimage.data, name)()
        if im.ndim == 3:
            im = rgb2gray(im[..., :3])
        im = im.astype(np.float32)
        im = (im - im.min()) / max(float(im.max() - im.min()), 1e-6)
        _TEXTURE_CACHE[name] = im
    return _TEXTURE_CACHE[name]


def _texture_crop(name: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import zoom

    im = _texture_image(name)
    f = float(rng.uniform(0.4, 1.5))  # texture scale
    h = min(im.shape[0], max(8, int(shape[0] * f)))
    w = min(im.shape[1], max(8, int(shape[1] * f)))
    a = int(rng.integers(0, im.shape[0] - h + 1))
    b = int(rng.integers(0, im.shape[1] - w + 1))
    crop = im[a:a + h, b:b + w]
    if rng.random() < 0.5:
        crop = crop.T if crop.shape[0] == crop.shape[1] else crop[::-1]
    out = zoom(crop, (shape[0] / crop.shape[0], shape[1] / crop.shape[1]), order=1)
    return out[:shape[0], :shape[1]].astype(np.float32)


def _textured(size: int, rng: np.random.Generator, images: Sequence[str],
              shapes: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    name = str(rng.choice(list(images)))
    # 3-D texture: product/mix of two image crops on orthogonal planes, randomly rotated axes
    a = _texture_crop(name, (size, size), rng)
    b = _texture_crop(name, (size, size), rng)
    perm = rng.permutation(3)
    tex3 = 0.5 * (np.expand_dims(a, int(perm[0])) + np.expand_dims(b, int(perm[1])))
    tex3 = np.broadcast_to(tex3, (size, size, size))
    shape = str(rng.choice(list(shapes)))
    r = float(rng.uniform(0.22, 0.4) * size)
    c = _place(rng, size, r)
    w = rng.uniform(0.4, 1.2)
    if shape == "sphere":
        occ = _soft(_sphere_sd(z, y, x, c, r), w)
    elif shape == "ellipsoid":
        occ = _soft(_ellipsoid_sd(z, y, x, c, r * rng.uniform(0.5, 1.0, 3), _rot(rng)), w)
    elif shape == "cube":
        occ = _soft(_polyhedron_sd(z, y, x, c, 0.75 * r, 6, rng), w)
    elif shape == "slab":  # a thin film crossing the field along the tilt axis
        nrm = np.array([1.0, rng.normal(0, 0.1), rng.normal(0, 0.3)], np.float32)
        nrm /= np.linalg.norm(nrm)
        t = float(rng.uniform(0.05, 0.15) * size)
        plane = (z - c[0]) * nrm[0] + (y - c[1]) * nrm[1] + (x - c[2]) * nrm[2]
        occ = _soft(np.abs(plane) - t, w) * _soft(np.sqrt((z * 0 + x) ** 2) - 0.45 * size, w)
    else:  # cylinder along a random axis
        d = _unit(rng)
        occ = _soft(_capsule_sd(z, y, x, c - 0.6 * r * d, c + 0.6 * r * d, 0.6 * r), w)
    contrast = float(rng.uniform(0.3, 0.9))
    vol = occ * ((1.0 - contrast) + contrast * tex3)
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng), "image": name,
                                    "shape": shape}


def _texture(size, rng):
    return _textured(size, rng, TEXTURE_IMAGES_TRAIN, ("sphere", "ellipsoid", "cube"))


def _texture_heldout(size, rng):
    return _textured(size, rng, TEXTURE_IMAGES_HELDOUT, ("slab", "cylinder", "ellipsoid"))


def _supported(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Catalyst: a big amorphous support (sphere or slab) decorated with small dense particles."""
    z, y, x = _grid(size)
    w = float(rng.uniform(0.4, 1.0))
    amorph = 1.0 + 0.25 * _smooth_noise((size, size, size), rng, rng.uniform(2.0, 8.0))
    if rng.random() < 0.6:  # large support sphere, may extend beyond the field along y
        rs = float(rng.uniform(0.3, 0.6) * size)
        cs = np.array([rng.uniform(-0.05, 0.05) * size, rng.uniform(-0.3, 0.3) * size,
                       rng.uniform(-0.05, 0.05) * size], np.float32)
        rs = min(rs, 0.47 * size - float(np.hypot(cs[0], cs[2])))
        sd = _sphere_sd(z, y, x, cs, rs)
        kind = "sphere"
    else:  # slab (a support film) across the field along the tilt axis
        nrm = np.array([1.0, rng.normal(0, 0.1), rng.normal(0, 0.2)], np.float32)
        nrm /= np.linalg.norm(nrm)
        t = float(rng.uniform(0.06, 0.15) * size)
        plane = z * nrm[0] + y * nrm[1] + x * nrm[2] - rng.uniform(-0.05, 0.05) * size
        radial = np.sqrt(x * x + z * z + 0 * y) - 0.46 * size
        sd = np.maximum(np.abs(plane) - t, radial)
        kind = "slab"
    support_density = float(rng.uniform(0.1, 0.35))
    vol = _soft(sd, w) * support_density * amorph
    # particles on the surface: sample surface voxels of the support
    band = np.argwhere(np.abs(sd) < 1.0)
    n = int(rng.integers(10, 80))
    if len(band):
        pick = band[rng.integers(0, len(band), n)]
        for p in pick:
            pr = float(rng.uniform(0.012, 0.04) * size + 0.8)
            pc = p.astype(np.float32) - 0.5 * (size - 1)
            lo = np.maximum(np.floor(pc - pr - 3).astype(int) + size // 2, 0)
            hi = np.minimum(np.ceil(pc + pr + 3).astype(int) + size // 2 + 1, size)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            occ = _soft(_sphere_sd(z[sl[0]], y[:, sl[1]], x[:, :, sl[2]], pc, pr), w)
            vol[sl] = np.maximum(vol[sl], occ * float(rng.uniform(0.6, 1.0)))
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng), "support": kind,
                                    "n_particles": n}


def _aggregate(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    z, y, x = _grid(size)
    n = int(rng.integers(4, 20))
    r0 = float(rng.uniform(0.04, 0.1) * size)
    c = np.zeros(3, np.float32)
    centres, radii = [], []
    for _ in range(n):
        r = r0 * float(rng.uniform(0.7, 1.3))
        centres.append(c.copy())
        radii.append(r)
        c = c + _unit(rng) * (r + r0) * float(rng.uniform(0.6, 0.95))
        if centres and rng.random() < 0.3:  # branch from an earlier sphere
            c = centres[int(rng.integers(len(centres)))] + _unit(rng) * 1.6 * r0
    cs = np.array(centres)
    cs -= cs.mean(axis=0)
    ext = float(np.max(np.hypot(cs[:, 0], cs[:, 2])) + max(radii))
    lim = 0.46 * size
    if ext > lim:
        cs *= (lim - max(radii)) / (ext - max(radii) + 1e-6)
    w = float(rng.uniform(0.4, 1.0))
    sd = None
    for cc, r in zip(cs, radii):
        s = _sphere_sd(z, y, x, cc, r)
        sd = s if sd is None else np.minimum(sd, s)
    vol = _soft(sd, w) * float(rng.uniform(0.4, 1.0))
    return vol.astype(np.float32), {"pixel_size_A": _px_particles(rng), "n": n}


FAMILIES: dict[str, Callable[[int, np.random.Generator], tuple[np.ndarray, dict[str, Any]]]] = {
    "cluster": _cluster, "rods": _rods, "needle": _needle, "porous": _porous,
    "hollow": _hollow, "metaballs": _metaballs, "polyhedra": _polyhedra, "texture": _texture,
    "decorated": _decorated, "film": _film,
    "supported": _supported, "aggregate": _aggregate, "texture_heldout": _texture_heldout,
}
#: Families (and generators) used to make training data.
TRAIN_FAMILIES: tuple[str, ...] = ("cluster", "rods", "needle", "porous", "hollow", "metaballs",
                                   "polyhedra", "texture", "decorated", "film")
#: Families held out of training entirely (evaluation only): catalyst-like supported particles,
#: sintered aggregates, and the texture generator on held-out images and shapes.
HELDOUT_FAMILIES: tuple[str, ...] = ("supported", "aggregate", "texture_heldout")


# ---------------------------------------------------------------------------- public API
def training_families(families: Sequence[str] | None = None) -> tuple[str, ...]:
    """Families for training data: ``families`` checked (training families only, a name may
    repeat to be drawn more often) or, for ``None``, :data:`TRAIN_FAMILIES`.

    Raises
    ------
    TiltgenError
        A held-out or unknown family, or none.
    """
    if families is None:
        return TRAIN_FAMILIES
    fams = tuple(str(f).strip().lower() for f in families if str(f).strip())
    bad = [f for f in fams if f not in TRAIN_FAMILIES]
    if bad or not fams:
        raise TiltgenError(f"training families must be among {', '.join(TRAIN_FAMILIES)} "
                           f"(held-out families are for evaluation only); got "
                           f"{', '.join(bad) or 'none'}.")
    return fams


def make_sample(family: str, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """A random volume of ``family`` and its facts.

    Parameters
    ----------
    family
        One of :data:`FAMILIES` (:data:`TRAIN_FAMILIES` or :data:`HELDOUT_FAMILIES`).
    size
        Edge of the cubic volume, voxels (16 or more; 128-256 for training frames).
    rng
        Random generator (the volume is a function of its state).

    Returns
    -------
    (volume, info)
        ``(size, size, size)`` float32 ``(nz, ny, nx)`` density >= 0 (max about 1, clusters in
        1/Å²), and ``info`` with ``family`` and ``pixel_size_A`` (Å) among other facts.
    """
    if family not in FAMILIES:
        raise TiltgenError(f"unknown object family {family!r}; choose one of "
                           f"{', '.join(FAMILIES)}.")
    size = int(size)
    if size < 16:
        raise TiltgenError(f"volume size {size} is too small (16 voxels or more).")
    vol, info = FAMILIES[family](size, rng)
    vol = np.nan_to_num(np.clip(vol, 0.0, None), copy=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(vol), {"family": family, **info}


def make_volume(family: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size, size)`` float32 ``(nz, ny, nx)`` volume of ``family`` (see
    :func:`make_sample`)."""
    return make_sample(family, size, rng)[0]


def project(volume: np.ndarray, tilt_angles_deg: Sequence[float], pixel_size_A: float = 10.0,
            probe_sigma_A: float = 0.0, blur_px: float = 0.0) -> np.ndarray:
    """Tilt series of ``volume`` with the package's forward model, blurred by the probe.

    Parameters
    ----------
    volume
        ``(nz, ny, nx)``; y is the tilt axis.
    tilt_angles_deg
        Tilt angles, degrees (any values and order).
    pixel_size_A
        Voxel size, Å (sets the probe blur in pixels).
    probe_sigma_A
        Gaussian probe width, Å (0: none).
    blur_px
        Extra Gaussian blur (instrument resolution), pixels.

    Returns
    -------
    np.ndarray
        ``(n_tilts, ny, nx)`` float32 line integrals (density x voxels).
    """
    import torch

    from napari_tiltgen.physics.projector import forward_project

    with torch.no_grad():
        frames = forward_project(torch.from_numpy(np.ascontiguousarray(volume, np.float32)),
                                 np.asarray(tilt_angles_deg, np.float64)).numpy()
    s = math.hypot(probe_sigma_A / max(pixel_size_A, 1e-6), blur_px)
    if s > 0.05:
        from scipy.ndimage import gaussian_filter

        frames = gaussian_filter(frames, (0, s, s), mode="nearest")
    return frames.astype(np.float32, copy=False)


def tilt_series(family: str, size: int, tilt_angles_deg: Sequence[float],
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Clean tilt series of a random ``family`` volume: ``(n_tilts, size, size)`` float32 and
    the volume's facts (with the blur used, ``blur_px``)."""
    vol, info = make_sample(family, size, rng)
    if family == "cluster":
        blur = float(rng.uniform(0.0, 0.5))
        probe = float(rng.uniform(0.3, 0.8))
    else:
        blur = float(rng.uniform(0.3, 1.2))
        probe = 0.0
    frames = project(vol, tilt_angles_deg, info["pixel_size_A"], probe, blur)
    return frames, {**info, "blur_px": blur, "probe_sigma_A": probe}
