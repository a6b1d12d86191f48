"""npe2 sample data: simulated HAADF-STEM tilt series with their ground truth, made on the fly.

Four samples, in the order napari's File > Open Sample menu lists them:

* :func:`sample_haadf_nanoparticle`: a noisy 128-px HAADF-STEM series of a 561-atom Au decahedron
  (about 2.7 nm) from -69 to +69 degrees, with the detector's read and scan-line noise, a vacuum
  offset and a background ramp, and the ground-truth volume;
* :func:`sample_missing_wedge`: a 128-px Au@Ag core-shell icosahedron recorded only from -60 to
  +60 degrees (a 60-degree missing wedge), for the Inpaint step;
* :func:`sample_changing_particle`: a growing Au particle recorded while it grows (each frame
  shows the particle at its own acquisition time), for the Time-resolved fit, with the ground
  truth at the first, middle and last frame's time;
* :func:`sample_phantom`: the small 64-px Au55@Ag92 cluster of earlier versions (fastest).

All use the fast incoherent HAADF model of :mod:`napari_tiltgen.simulate` (a few seconds on 2
cores, no torch import). Volumes (the ground truths) go to the volumes window when the sample is
opened in napari (:mod:`napari_tiltgen.gui.views`); the tilt series stays in the main window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Detector model of the "looks like data" samples (fractions of the clean stack's range; see
#: :class:`napari_tiltgen.simulate.degrade.DegradeParams`).
_DETECTOR = {"peak_counts": 400.0, "gaussian_sigma": 0.02, "scan_line_sigma": 0.008,
             "offset": 0.08, "gradient": 0.04}


def _use_workspace() -> None:
    """Route volumes to the volumes window of the viewer the sample is opened in."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - no napari / no Qt: plain data is returned anyway
        return
    if viewer is None:
        return
    from napari_tiltgen.gui.views import workspace

    workspace(viewer)


def _limits(data: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(data, (0.5, 99.8))
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _degrade(ts: Any, seed: int) -> Any:
    from napari_tiltgen.simulate.degrade import DegradeParams, degrade

    params = DegradeParams(**_DETECTOR)
    ts.data = degrade(ts.data, np.random.default_rng(seed), params).astype(np.float32)
    ts.provenance.setdefault("parameters", {})["detector"] = params.to_dict()
    return ts


def _layers(ts: Any, volumes: list[tuple[Any, str]], name: str) -> list[tuple]:
    _use_workspace()
    out = [ts.to_layer_data(name=f"{name} tilt series", contrast_limits=_limits(ts.data))]
    for vol, label in volumes:
        out.append(vol.to_layer_data(name=f"{name} {label}", contrast_limits=_limits(vol.data)))
    return out


def _cluster_series(atoms: Any, tilt_range: tuple[float, float], tilt_step: float, size: int,
                    seed: int, method: str) -> tuple[Any, Any]:
    from napari_tiltgen.simulate.series import simulate_tilt_series

    res = simulate_tilt_series(atoms, tilt_range=tilt_range, tilt_step=tilt_step, size=size,
                               optics="non_aberrated", dose_e_per_A2=None, seed=seed,
                               device="numpy")
    ts = _degrade(res.tilt_series, seed)
    ts.provenance["method"] = method
    return ts, res.volume


def sample_haadf_nanoparticle() -> list[tuple]:
    """Noisy HAADF-STEM series of a 561-atom Au decahedron, 128 px, +-69 deg, with ground truth.

    47 frames in 3-degree steps, 0.34 Å pixels (the particle fills three quarters of the frame),
    400 e- at the brightest pixels, 2 % read noise, scan-line noise, offset and background ramp.
    """
    from napari_tiltgen.simulate.clusters import build_cluster

    atoms = build_cluster("decahedron", "Au", shells=6, seed=3)
    ts, vol = _cluster_series(atoms, (-69.0, 69.0), 3.0, 128, 3, "simulated HAADF sample")
    return _layers(ts, [(vol, "ground truth")], "Au decahedron")


def sample_missing_wedge() -> list[tuple]:
    """Au@Ag core-shell icosahedron (309 atoms), 128 px, -60..+60 deg: a 60-degree missing wedge.

    41 frames in 3-degree steps, same detector model as :func:`sample_haadf_nanoparticle`.
    """
    from napari_tiltgen.simulate.clusters import build_cluster

    atoms = build_cluster("icosahedron", "Ag", shells=5, variant="core_shell", element2="Au",
                          fraction=147 / 309, seed=5)
    ts, vol = _cluster_series(atoms, (-60.0, 60.0), 3.0, 128, 5, "simulated missing-wedge sample")
    return _layers(ts, [(vol, "ground truth")], "Au@Ag wedge")


def sample_changing_particle() -> list[tuple]:
    """A growing Au particle recorded during its growth (29 frames, 96 px, +-70 deg, 20 s each).

    Each frame shows the particle as it was when that frame was recorded (sequential order, low
    to high angle). Ground truth at the first, middle and last frame's time.
    """
    from napari_tiltgen.simulate.dynamic import dynamic_cluster, simulate_dynamic

    phantom = dynamic_cluster("growth", "Au", shells=4, start_fraction=0.3, seed=0)
    res = simulate_dynamic(phantom, tilt_range=(-70.0, 70.0), tilt_step=5.0, size=96,
                           dose_e_per_A2=None, seed=0, device="numpy")
    ts = _degrade(res.tilt_series, 7)
    ts.provenance["method"] = "simulated growing particle"
    t = res.times_s
    when = [(float(t.min()), "ground truth, start"),
            (float(np.median(t)), "ground truth, middle"),
            (float(t.max()), "ground truth, end")]
    vols = [(res.volume_at(s), label) for s, label in when]
    return _layers(ts, vols, "growing Au")


def sample_phantom() -> list[tuple]:
    """Simulated HAADF-STEM tilt series of an Au55@Ag92 core-shell icosahedron, with ground truth.

    Fast incoherent model (:func:`napari_tiltgen.simulate.simulated_cluster_sample`): 64 x 64 px
    frames from -60 to +60 degrees in 3 degree steps (41 frames), 35 mrad non-aberrated probe at
    200 keV, Poisson noise for 2e4 e-/Å² per frame, and the ground-truth volume (64^3, same pixel
    size) as a hidden layer. Takes a fraction of a second once torch is imported.

    The layer names keep the word "phantom" (the sample's key) so that scripts that open it keep
    working.
    """
    from napari_tiltgen.simulate.series import simulated_cluster_sample

    ts, vol = simulated_cluster_sample(seed=0, size=64, tilt_range=(-60.0, 60.0), tilt_step=3.0,
                                       dose_e_per_A2=2e4)
    _use_workspace()
    return [
        ts.to_layer_data(name="phantom tilt series"),
        vol.to_layer_data(name="phantom ground truth", visible=False),
    ]
