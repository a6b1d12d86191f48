"""``tiltgen align`` and ``tiltgen reconstruct`` on a raw-like stack: int16, vacuum offset,
jitter, tilt axis at an angle the file does not record."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from napari_tiltgen.cli import main
from napari_tiltgen.simulate.phantoms import project_spheres, random_spheres, voxelize_spheres

ANGLES = np.arange(-60.0, 60.1, 5.0)  # 25 tilts
SIZE = 40
PHI = 28.0  # tilt axis, degrees from image Y (IMOD convention)


def _raw(tmp_path: Path, seed: int = 3) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sph = random_spheres(22, 8, seed)
    big = 2 * SIZE
    proj = project_spheres(sph, ANGLES, (big, big), supersample=1).astype(np.float64)
    shifts = rng.uniform(-4.0, 4.0, (ANGLES.size, 2))
    o = (big - SIZE) // 2
    frames = []
    for f, s in zip(proj, shifts):
        f = ndimage.rotate(ndimage.shift(f, s, order=1), -PHI, reshape=False, order=1)
        frames.append(f[o:o + SIZE, o:o + SIZE])
    d = np.clip(np.array(frames), 0, None)
    d = rng.poisson(d * 800.0 / d.max()) - 31900
    path = tmp_path / "raw.mrc"
    with mrcfile.new(path) as m:
        m.set_data(d.astype(np.int16))
    path.with_suffix(".rawtlt").write_text("".join(f"{a:.1f}\n" for a in ANGLES))
    return path, sph, shifts


def test_align_writes_xf_and_tlt_and_refuses_to_overwrite(tmp_path, capsys):
    raw, _, _ = _raw(tmp_path)
    before = raw.read_bytes()
    out = tmp_path / "aligned.mrc"
    code = main(["align", str(raw), "--out", str(out), "--rounds", "1",
                 "--recon-iterations", "10"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "estimated from the data" in cap.err and "vacuum level" in cap.err
    assert "reprojection error:" in cap.out
    err_before, err_after = (float(v) for v in
                             cap.out.split("reprojection error: ")[1].split(" after")[0]
                             .replace(" before,", "").split())
    assert err_after < 0.6 * err_before  # measured 0.58 -> 0.19
    xf = np.loadtxt(out.with_suffix(".xf"))
    tlt = np.loadtxt(out.with_suffix(".tlt"))
    assert xf.shape == (ANGLES.size, 6) and np.allclose(tlt, ANGLES)
    assert np.allclose(xf[:, :4], [1, 0, 0, 1])  # the written frames are already turned
    assert np.abs(xf[:, 4:]).max() > 1.0  # real shifts (the jitter is +-4 px)
    with mrcfile.open(out) as m:
        assert m.data.shape == (ANGLES.size, SIZE, SIZE)
        assert abs(float(np.median(m.data[:, :2]))) < 2.0  # the offset is gone
    # a second run without --overwrite refuses, and writes nothing
    mtime = out.stat().st_mtime_ns
    code = main(["align", str(raw), "--out", str(out), "--rounds", "1"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == mtime
    # never over the input or its sidecars, even with --overwrite
    code = main(["align", str(raw), "--out", str(raw), "--overwrite"])
    assert code == 2
    assert raw.read_bytes() == before


@pytest.mark.slow
def test_reconstruct_raw_stack_end_to_end(tmp_path, capsys):
    raw, sph, _ = _raw(tmp_path, seed=4)
    out = tmp_path / "vol.mrc"
    code = main(["reconstruct", str(raw), "--out", str(out), "--method", "sirt",
                 "--iterations", "30", "--quiet", "--threads", "1"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "estimated from the data" in cap.err and "aligning" in cap.err
    with mrcfile.open(out) as m:
        vol = np.array(m.data)
    truth = voxelize_spheres(sph, vol.shape)
    # the object's position in the volume is unknowable from the data (alignment centres it):
    # register by the peak of the 3-D cross-correlation, then compare
    cc = np.fft.irfftn(np.fft.rfftn(truth) * np.conj(np.fft.rfftn(vol)), vol.shape, axes=(0, 1, 2))
    shift = np.array(np.unravel_index(np.argmax(cc), cc.shape))
    shift = np.where(shift > np.array(vol.shape) // 2, shift - np.array(vol.shape), shift)
    moved = np.roll(vol, tuple(int(s) for s in shift), axis=(0, 1, 2))
    r = np.corrcoef(moved.ravel(), truth.ravel())[0, 1]
    assert r > 0.85  # measured 0.9 (offset-free, oriented, aligned); a blob or a wrong axis < 0.5
    assert float(np.median(vol)) < 0.05 * float(vol.max())  # no offset blob
