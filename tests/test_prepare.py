"""Intensity preparation (vacuum offset, bright field, normalisation) and the tilt-axis step of
:func:`napari_tiltgen.align.prepare.prepare`, on exact sphere-phantom projections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_tiltgen.align.axis import tilt_axis_known, with_known_tilt_axis, wrap_axis_deg
from napari_tiltgen.align.prepare import (
    detect_contrast,
    prepare,
    prepare_intensity,
    unprepare_frames,
    vacuum_levels,
)
from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.io.model import TiltSeries
from napari_tiltgen.simulate.phantoms import project_spheres, random_spheres

ANGLES = np.arange(-60.0, 60.1, 6.0)  # 21 tilts


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return project_spheres(random_spheres(24, 8, 1), ANGLES, (40, 40)).astype(np.float64)


def test_haadf_vacuum_offset_is_removed(clean):
    rng = np.random.default_rng(0)
    counts = rng.poisson(clean * 400.0 / clean.max())
    drift = np.linspace(-31900.0, -31880.0, ANGLES.size)  # vacuum level drifting by 20 counts
    raw = (counts + drift[:, None, None]).astype(np.int16)
    ts = TiltSeries(raw, tilt_angles=ANGLES, provenance={"source": None})
    out, notes = prepare_intensity(ts)
    assert detect_contrast(raw)[0] == "haadf"
    levels = out.provenance["intensity"]["vacuum_levels"]
    assert np.abs(np.asarray(levels) - drift).max() < 0.5  # measured < 0.1 counts
    border = np.concatenate([out.data[:, :2].ravel(), out.data[:, -2:].ravel()])
    assert abs(float(border.mean())) < 0.2  # vacuum at zero (Poisson noise of a zero mean)
    # the object keeps its counts: the offset-free frames are the noisy counts
    assert np.allclose(out.data, counts - (np.asarray(levels) - drift)[:, None, None], atol=1e-3)
    assert "HAADF" in notes[0] and "subtracted" in notes[0]
    assert out.provenance["history"][-1]["step"] == "prepare_intensity"
    assert np.asarray(ts.data).dtype == np.float32 and float(ts.data.min()) < -31000  # untouched


def test_noise_free_vacuum_level_is_exact(clean):
    levels = vacuum_levels(clean + 7.25)
    assert np.all(levels == 7.25)


def _support_series(angles: np.ndarray, vacuum_px: list[int], *, nx: int = 64, ny: int = 32,
                    offset: float = 100.0, seed: int = 0) -> np.ndarray:
    """HAADF frames of a support cylinder along the tilt axis (the same projection at every
    tilt, textured along y) with six particles on it, 200 counts of Poisson noise and read
    noise, plus a detector offset. ``vacuum_px`` per frame: the vacuum strip on each side of
    the support (negative: the support is wider than the frame)."""
    rng = np.random.default_rng(seed)
    x = np.arange(nx) - (nx - 1) / 2.0
    y = np.arange(ny)[:, None]
    phis, ys = rng.uniform(0, 2 * np.pi, 6), rng.uniform(4, ny - 4, 6)
    frames = []
    for a, vp in zip(np.deg2rad(angles), vacuum_px):
        r = nx / 2.0 - vp
        chord = 2.0 * np.sqrt(np.clip(r * r - x * x, 0, None)) / r
        f = 0.3 * chord[None, :] * (1.0 + 0.15 * np.sin(6 * np.pi * y / ny))
        for phi, yc in zip(phis, ys):
            xc = 0.9 * (nx / 2.0 - 5) * np.sin(phi + a)
            f = f + 2.0 * np.exp(-((x[None, :] - xc) ** 2 + (y - yc) ** 2) / 8.0)
        frames.append(rng.poisson(f * 200.0) / 200.0 + rng.normal(0.0, 0.02, f.shape))
    return np.asarray(frames) + offset


def test_narrow_vacuum_beside_a_support_is_the_level_not_the_support():
    # vacuum is 5 px on each side of a 64-px frame: the support's plateau holds most of the
    # darker pixels (the mode of the darker 60 % was 0.56 above the vacuum before)
    raw = _support_series(ANGLES, [5] * ANGLES.size)
    levels, found, clear = vacuum_levels(raw, details=True)
    assert np.abs(levels - 100.0).max() < 0.05  # measured 0.012; the support is 0.6 above
    assert found.all() and clear.all()
    out, notes = prepare_intensity(TiltSeries(raw.astype(np.float32), tilt_angles=ANGLES))
    assert len(notes) == 1 and "subtracted" in notes[0]
    assert out.provenance["intensity"]["frames_without_vacuum"] == []


def test_frames_the_specimen_fills_get_the_level_of_the_others():
    # beyond 36 degrees the support is wider than the frame: no vacuum in those 8 frames
    vac = [5 if abs(a) <= 36 else -4 for a in ANGLES]
    raw = _support_series(ANGLES, vac)
    out, notes = prepare_intensity(TiltSeries(raw.astype(np.float32), tilt_angles=ANGLES))
    rec = out.provenance["intensity"]
    filled = [i for i, a in enumerate(ANGLES) if abs(a) > 36]
    assert rec["frames_without_vacuum"] == filled
    assert np.abs(np.asarray(rec["vacuum_levels"]) - 100.0).max() < 0.05  # measured 0.012
    assert any("8 of 21 frames show no vacuum" in n for n in notes)
    # the filled frames keep their support: its thinnest part is above zero, not at it
    assert float(np.median(out.data[filled][:, :, :2])) > 0.1


def test_bright_field_is_detected_and_converted_to_minus_log(clean):
    rng = np.random.default_rng(1)
    path = 1.2 * clean / clean.max()  # up to 1.2 mean free paths
    i0 = 2000.0
    raw = rng.poisson(i0 * np.exp(-path)).astype(np.uint16)
    ts = TiltSeries(raw, tilt_angles=ANGLES)
    assert detect_contrast(raw)[0] == "bf"
    out, notes = prepare_intensity(ts)
    assert "bright field" in notes[0] and "-log(I/I0)" in notes[0]
    i0_found = np.asarray(out.provenance["intensity"]["i0_levels"])
    assert np.abs(i0_found / i0 - 1).max() < 0.01
    expected = -np.log(raw / i0_found[:, None, None])
    np.testing.assert_allclose(out.data, expected, atol=1e-4)
    assert abs(float(np.median(out.data[:, :2]))) < 0.01  # vacuum at 0
    r = np.corrcoef(out.data.ravel(), path.ravel())[0, 1]
    assert r > 0.98  # Poisson noise at 2000 counts is all that separates them
    # forcing HAADF on bright-field data gives a negative object: that is what "bf" is for
    forced, _ = prepare_intensity(ts, "haadf")
    assert float(np.median(forced.data[:, 20, 20])) < 0


def test_bright_field_with_a_negative_offset_is_refused(clean):
    raw = 1000.0 * np.exp(-clean / clean.max()) - 1500.0
    with pytest.raises(TiltgenError, match="above zero"):
        prepare_intensity(TiltSeries(raw.astype(np.float32), tilt_angles=ANGLES), "bf")
    with pytest.raises(TiltgenError, match="unknown intensity mode"):
        prepare_intensity(TiltSeries(raw.astype(np.float32), tilt_angles=ANGLES), "dark")


def test_per_frame_normalisation_restores_a_common_mass(clean):
    gains = np.random.default_rng(2).uniform(0.7, 1.3, ANGLES.size)
    ts = TiltSeries((clean * gains[:, None, None] + 100.0).astype(np.float32), tilt_angles=ANGLES)
    out, notes = prepare_intensity(ts, "haadf", normalise=True)
    totals = out.data.reshape(ANGLES.size, -1).sum(axis=1)
    assert totals.std() / totals.mean() < 1e-3
    assert out.provenance["intensity"]["normalise"]["model"] == "constant mass"
    assert any("normalised" in n for n in notes)
    # none: nothing changes, and it says so
    same, notes = prepare_intensity(ts, "none")
    assert same is ts and "as recorded" in notes[0]


def _unknown_axis_series(clean: np.ndarray) -> TiltSeries:
    # axis at 90 degrees (horizontal): the frames of a vertical-axis series turned a quarter
    data = np.rot90(clean, -1, axes=(1, 2)) - 500.0
    return TiltSeries(data.astype(np.float32), tilt_angles=ANGLES,
                      provenance={"source": None,
                                  "tilt_axis_source": "not recorded in the file (unknown)"})


def test_prepare_estimates_an_unknown_axis_and_turns_the_frames(clean):
    ts = _unknown_axis_series(clean)
    out, notes = prepare(ts)
    assert out.tilt_axis_angle_deg == 0.0 and tilt_axis_known(out)
    assert "estimated from the data" in out.provenance["tilt_axis_source"]
    est = out.provenance["tilt_axis_estimate"]
    assert wrap_axis_deg(est["angle_deg"] - 90.0) == pytest.approx(0.0, abs=0.5)
    assert any("not recorded" in n for n in notes) and any("quarter" in n for n in notes)
    # turned back to the vertical-axis frames by exact quarter turns (a rest below 0.3 deg is
    # not resampled). An axis at +90 and one at -90 degrees are the same line with opposite
    # tilt handedness, which no data can tell apart: at exactly 90 degrees either answer is
    # right, and they differ by a half turn of the frames (a point-mirrored volume).
    err = min(np.abs(out.data - clean).max(), np.abs(out.data - clean[:, ::-1, ::-1]).max())
    assert err < 1e-3


def test_user_axis_overrides_and_known_axis_is_used(clean):
    ts = _unknown_axis_series(clean)
    out, notes = prepare(ts, tilt_axis=90.0, intensity="none")
    assert notes[0] == "intensities left as recorded (--intensity none)"
    assert "given by the user" in notes[1]
    assert "user" in out.provenance["tilt_axis_source"]
    np.testing.assert_allclose(out.data, clean - 500.0, atol=1e-3)
    known = with_known_tilt_axis(ts, 90.0, "SerialEM mdoc (test)")
    out, notes = prepare(known, intensity="none")
    assert "SerialEM mdoc (test)" in notes[1]
    np.testing.assert_allclose(out.data, clean - 500.0, atol=1e-3)
    # estimation switched off: assumed vertical, and said
    out, notes = prepare(ts, intensity="none", estimate_axis=False)
    assert "assumed vertical" in notes[1] and out.data is ts.data


def test_an_uncertain_axis_estimate_leaves_the_frames_as_they_are():
    """A sphere has no preferred axis (confidence ~0.1): no guessed rotation, a loud warning."""
    ball = project_spheres(np.array([[0.0, 0.0, 0.0, 12.0, 1.0]]), ANGLES, (40, 40))
    ts = _unknown_axis_series(ball.astype(np.float64))
    out, notes = prepare(ts, intensity="none")
    assert out.provenance["tilt_axis_estimate"]["confidence"] < 0.3
    assert "assumed vertical" in out.provenance["tilt_axis_source"]
    assert any(n.startswith("WARNING: the tilt-axis estimate is too uncertain") for n in notes)
    np.testing.assert_allclose(out.data, np.asarray(ts.data), atol=1e-6)


@pytest.mark.parametrize("case", ["haadf quarter turn", "bf normalised", "haadf rotated 20"])
def test_unprepare_frames_maps_prepared_frames_back_to_the_recording(clean, case):
    """The prepared series' own frames, mapped back, are the recorded ones: the inverse of
    every step prepare took (vacuum level, -log(I/I0), normalisation, quarter turns, the
    residual rotation, in reverse)."""
    if case == "bf normalised":
        raw = 2000.0 * np.exp(-1.2 * clean / clean.max()) * np.linspace(0.9, 1.1, 21)[:, None, None]
        ts = TiltSeries(raw.astype(np.float32), tilt_angles=ANGLES)
        prep, _ = prepare(ts, tilt_axis=0.0, normalise=True)
        assert prep.provenance["intensity"]["detected"] == "bf"
    else:
        ts = _unknown_axis_series(clean)
        axis = 90.0 if case == "haadf quarter turn" else 110.0
        prep, _ = prepare(ts, tilt_axis=axis)
    back = unprepare_frames(prep.data, ANGLES, prep, ts)
    ref = np.asarray(ts.data, np.float64)
    err = np.abs(back - ref)
    span = float(ref.max() - ref.min())
    if case == "haadf rotated 20":  # resampled twice (cubic): compare inside the disc
        yy, xx = np.mgrid[0:40, 0:40] - 19.5
        inner = np.hypot(yy, xx) < 14
        rms = float(np.sqrt((err[:, inner] ** 2).mean()))
        assert rms < 0.01 * span  # measured 0.005 (cubic there and back; max 0.055 at edges)
        assert np.median(err) < 1e-3 * span
    else:
        assert err.max() < 1e-4 * span  # measured 1e-5: exact steps
    # between two frames the level (and I0, and scale) is interpolated in angle
    mid = unprepare_frames(prep.data[:2].mean(axis=0)[None], ANGLES[:2].mean()[None], prep, ts)
    assert mid.shape == (1, *ref.shape[1:])


def test_the_axis_estimate_is_remembered_for_the_same_frames_only(clean, tmp_path, monkeypatch):
    """The second ``prepare`` of the same frames reads the estimate (angle, notes, provenance)
    from the cache instead of estimating; other frames, an unreadable entry or
    ``TILTGEN_CACHE=off`` estimate afresh (align/axis_estimate.py)."""
    from napari_tiltgen.align import axis as axis_mod

    monkeypatch.setenv("TILTGEN_CACHE", "on")
    monkeypatch.setenv("TILTGEN_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = axis_mod.find_tilt_axis_iter

    def counted(ts, *a, **k):
        calls.append(1)
        return (yield from real(ts, *a, **k))

    monkeypatch.setattr(axis_mod, "find_tilt_axis_iter", counted)
    ts = _unknown_axis_series(clean)
    first, notes1 = prepare(ts)
    entries = list((tmp_path / "cache").glob("*.json"))
    assert len(calls) == 1 and len(entries) == 1
    again, notes2 = prepare(ts)
    assert len(calls) == 1  # not estimated again
    np.testing.assert_array_equal(again.data, first.data)
    assert again.provenance["tilt_axis_estimate"] == first.provenance["tilt_axis_estimate"]
    assert [n for n in notes2 if "from the cache" not in n] == notes1
    assert sum("from the cache" in n for n in notes2) == 1
    other = TiltSeries(np.asarray(ts.data) * 1.001, tilt_angles=ANGLES,
                       provenance=dict(ts.provenance))
    prepare(other)
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.json"))) == 2
    entries[0].write_text("{not json")
    _, notes3 = prepare(ts)
    assert len(calls) == 3 and not any("from the cache" in n for n in notes3)
    assert json.loads(entries[0].read_text())["angle"] == pytest.approx(
        first.provenance["tilt_axis_estimate"]["angle_deg"], abs=1e-9)
    from napari_tiltgen.io.output import stray_temporaries

    assert stray_temporaries(tmp_path / "cache") == []  # written by the one safe writer
    monkeypatch.setenv("TILTGEN_CACHE", "off")
    prepare(ts)
    assert len(calls) == 4
    # a cache that cannot be written (here a file where the folder should be) is skipped
    monkeypatch.setenv("TILTGEN_CACHE", "on")
    (tmp_path / "not_a_folder").write_text("x")
    monkeypatch.setenv("TILTGEN_CACHE_DIR", str(tmp_path / "not_a_folder"))
    out, _ = prepare(ts)
    assert len(calls) == 5 and out.provenance["tilt_axis_estimate"] == \
        first.provenance["tilt_axis_estimate"]
