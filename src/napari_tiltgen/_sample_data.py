"""npe2 sample data: a small synthetic tilt series with its ground truth, made on the fly."""

from __future__ import annotations


def sample_phantom() -> list[tuple]:
    """64 px sphere-cluster phantom, -60..+60 deg in 3 deg steps, plus ground-truth volume."""
    from napari_tiltgen.simulate.phantoms import sphere_phantom

    ts, vol = sphere_phantom(size=64, tilt_range=(-60.0, 60.0), tilt_step=3.0, seed=0)
    return [
        ts.to_layer_data(name="phantom tilt series"),
        vol.to_layer_data(name="phantom ground truth", visible=False),
    ]
