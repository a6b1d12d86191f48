"""npe2 sample data: a simulated nanocluster tilt series with its ground truth, made on the fly."""

from __future__ import annotations


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
    return [
        ts.to_layer_data(name="phantom tilt series"),
        vol.to_layer_data(name="phantom ground truth", visible=False),
    ]
