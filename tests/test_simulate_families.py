"""Object families and degradations for transfer training data (small volumes, fast)."""

import numpy as np
import pytest

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.simulate.degrade import DegradeParams, degrade, sample_params
from napari_tiltgen.simulate.families import (
    FAMILIES,
    HELDOUT_FAMILIES,
    TEXTURE_IMAGES_HELDOUT,
    TEXTURE_IMAGES_TRAIN,
    TRAIN_FAMILIES,
    make_sample,
    make_volume,
    tilt_series,
)


def test_split_is_disjoint_and_complete():
    assert set(TRAIN_FAMILIES).isdisjoint(HELDOUT_FAMILIES)
    assert set(TRAIN_FAMILIES) | set(HELDOUT_FAMILIES) == set(FAMILIES)
    assert "supported" in HELDOUT_FAMILIES
    assert set(TEXTURE_IMAGES_TRAIN).isdisjoint(TEXTURE_IMAGES_HELDOUT)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_makes_a_finite_nonempty_volume(family):
    vol, info = make_sample(family, 40, np.random.default_rng(3))
    assert vol.shape == (40, 40, 40) and vol.dtype == np.float32
    assert np.all(np.isfinite(vol)) and vol.min() >= 0
    occupied = (vol > 0.1 * vol.max()).mean()
    assert vol.max() > 0 and 0.0005 < occupied < 0.6
    assert info["family"] == family and info["pixel_size_A"] > 0


def test_decorated_training_family_is_dense_particles_on_a_lighter_support():
    """The training cousin of the held-out catalysts: two density levels, the particles the
    smaller and denser part, on a support of one of three shapes."""
    kinds = set()
    for seed in range(4):
        vol, info = make_sample("decorated", 48, np.random.default_rng(seed))
        kinds.add(info["support"])
        dense = (vol > 0.5).mean()
        support = ((vol > 0.02) & (vol < 0.45)).mean()
        assert 0 < dense < support, (seed, dense, support)
        assert info["n_particles"] >= 5
    assert kinds <= {"blob", "grain", "tube"} and len(kinds) >= 2


def test_film_training_family_is_a_thin_inclined_film_with_denser_particles():
    """The support-film family: most of the support mass within a thin layer around one
    surface z = h(y, x) across the field (seen as a line in every slice), the particles the
    denser part; holey or not, particles on one or both faces, or none."""
    seen = {"holes": set(), "sides": set()}
    for seed in range(8):
        vol, info = make_sample("film", 48, np.random.default_rng(seed))
        assert info["support"] == "film" and 0 < info["thickness_px"] < 0.4 * 48
        seen["holes"].add(info["holes"] > 0)
        seen["sides"].add(info["sides"])
        film = (vol > 0.01) & (vol < 0.4)
        # a film: in each slice perpendicular to the tilt axis, every column x crossing it
        # holds a short run of support voxels (thin), and it spans most of the field in x
        cols = film[:, 24, :].sum(axis=0)
        crossed = cols > 0
        assert crossed.mean() > 0.4, (seed, crossed.mean())
        # at most the thickness, widened by the soft edges (up to 2 x 2.3 px above 1 % of the
        # density) and by an inclination of up to 30 degrees (1 / cos 30 = 1.155)
        assert np.median(cols[crossed]) <= (info["thickness_px"] + 4.6) * 1.155 + 1, seed
        if info["n_particles"]:
            assert (vol > 0.45).sum() > 0
    assert seen["holes"] == {True, False} and len(seen["sides"]) >= 2


def test_families_are_deterministic_with_a_seed():
    for family in ("rods", "supported", "texture"):
        a = make_volume(family, 32, np.random.default_rng(7))
        b = make_volume(family, 32, np.random.default_rng(7))
        c = make_volume(family, 32, np.random.default_rng(8))
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_pixel_sizes_span_three_decades():
    px = [make_sample(f, 24, np.random.default_rng(s))[1]["pixel_size_A"]
          for f in ("cluster", "rods", "metaballs") for s in range(6)]
    assert min(px) < 1.0 and max(px) > 20.0


def test_tilt_series_projects_with_the_forward_model():
    frames, _ = tilt_series("polyhedra", 32, [-30.0, 0.0, 30.0], np.random.default_rng(1))
    assert frames.shape == (3, 32, 32)
    vol = make_volume("polyhedra", 32, np.random.default_rng(1))
    # line integrals: each frame's total equals the volume's total (object inside the field)
    assert np.allclose(frames.sum(axis=(1, 2)), vol.sum(), rtol=0.02)


def test_unknown_family_is_a_clear_error():
    with pytest.raises(TiltgenError, match="unknown object family"):
        make_volume("teapot", 32, np.random.default_rng(0))


def test_degrade_adds_noise_of_the_requested_level():
    clean = np.zeros((4, 64, 64), np.float32)
    clean[:, 16:48, 16:48] = 2.0
    for sigma in (0.01, 0.05):
        noisy = degrade(clean, np.random.default_rng(0), gaussian_sigma=sigma)
        assert abs((noisy - clean).std() / 2.0 - sigma) < 0.1 * sigma
    # scan lines: one offset per row
    lines = degrade(clean, np.random.default_rng(0), scan_line_sigma=0.02) - clean
    assert np.allclose(lines, lines[:, :, :1], atol=1e-6)
    assert abs(lines[:, :, 0].std() / 2.0 - 0.02) < 0.006
    # Poisson: variance = mean / scale at the requested peak dose
    flat = np.zeros((2, 64, 64), np.float32)
    flat[:, 32:] = 1.0
    shot = degrade(flat, np.random.default_rng(0), peak_counts=100.0)
    assert abs(shot[:, 32:].std() - 0.1) < 0.01 and shot[:, :32].std() < 1e-6


def test_degrade_is_deterministic_and_keeps_a_clean_reference():
    clean = np.zeros((3, 32, 32), np.float32)
    clean[:, 10:20, 12:22] = 1.0
    p = DegradeParams(peak_counts=200.0, gaussian_sigma=0.01, jitter_px=1.0, axis_error_deg=1.0,
                      offset=0.1, gradient=0.1)
    a, ref_a = degrade(clean, np.random.default_rng(5), p, return_clean=True)
    b, ref_b = degrade(clean, np.random.default_rng(5), p, return_clean=True)
    assert np.array_equal(a, b) and np.array_equal(ref_a, ref_b)
    # reference = geometry + background, no noise: offset 0.1 of the range on the mean
    assert abs((ref_a - clean).mean() - 0.1) < 0.02
    assert np.abs(a - ref_a).mean() > 0.02
    # jitter moves the object's centre of mass by about the requested amount
    shifted = degrade(clean, np.random.default_rng(1), jitter_px=1.5)
    com = [np.array(np.nonzero(f > 0.5)).mean(axis=1) for f in shifted]
    moved = np.linalg.norm(np.array(com) - [14.5, 16.5], axis=1)
    assert 0.2 < moved.mean() < 5.0


def test_sample_params_levels():
    rng = np.random.default_rng(0)
    real = [sample_params(rng, "realistic") for _ in range(20)]
    assert all(0.5 <= p.jitter_px <= 1.5 and 100 <= p.peak_counts <= 1000 for p in real)
    assert sample_params(rng, "clean") == DegradeParams()
    with pytest.raises(TiltgenError):
        sample_params(rng, "terrible")
