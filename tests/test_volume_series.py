"""VolumeSeries: the data model's time-resolved (4-D) result and its napari layer format."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.fits.dip import DIPResult
from napari_tiltgen.io.model import METADATA_KEY, Volume
from napari_tiltgen.io.volume_series import VolumeSeries


def _series() -> VolumeSeries:
    data = np.arange(3 * 4 * 5 * 6, dtype=np.float64).reshape(3, 4, 5, 6)
    return VolumeSeries(
        data,
        [0.0, 10.0, 25.0],
        [-30.0, 0.0, 12.0],
        2.5,
        provenance={"method": "dip", "parameters": {"steps": 5}},
    )


def test_layer_data_round_trips() -> None:
    vs = _series()
    assert vs.data.dtype == np.float32 and vs.n_times == 3
    data, kw, kind = vs.to_layer_data(name="DIP 4-D")
    assert kind == "image" and kw["scale"] == (1.0, 2.5, 2.5, 2.5)
    assert kw["axis_labels"] == ("time", "z", "y", "x")
    assert VolumeSeries.is_layer_metadata(kw["metadata"])
    assert not VolumeSeries.is_layer_metadata({METADATA_KEY: Volume(data[0]).to_metadata()})
    back = VolumeSeries.from_metadata(data, kw["metadata"])
    np.testing.assert_array_equal(back.data, vs.data)
    np.testing.assert_array_equal(back.times_s, [0.0, 10.0, 25.0])
    np.testing.assert_array_equal(back.tilt_angles, [-30.0, 0.0, 12.0])
    assert back.voxel_size_A == 2.5 and back.provenance["parameters"] == {"steps": 5}
    assert back.label(2) == "t = 25 s, tilt = +12.0 deg"
    v = back.volume(1)
    assert v.shape == (4, 5, 6)
    assert v.provenance["parameters"] == {"steps": 5, "time_s": 10.0, "tilt_angle_deg": 0.0}


def test_bad_series_are_refused() -> None:
    with pytest.raises(TiltgenError, match="4-D"):
        VolumeSeries(np.zeros((4, 5, 6)), [0.0] * 4)
    with pytest.raises(TiltgenError, match="needs 2 finite times"):
        VolumeSeries(np.zeros((2, 3, 3, 3)), [0.0])
    with pytest.raises(TiltgenError, match="must not decrease"):
        VolumeSeries(np.zeros((2, 3, 3, 3)), [5.0, 1.0])
    with pytest.raises(TiltgenError, match="tilt angles"):
        VolumeSeries(np.zeros((2, 3, 3, 3)), [0.0, 1.0], [3.0])
    with pytest.raises(TiltgenError, match="not a volume series"):
        VolumeSeries.from_metadata(
            np.zeros((2, 3, 3, 3)), {METADATA_KEY: Volume(np.zeros((3, 3, 3))).to_metadata()}
        )
    assert VolumeSeries(np.zeros((1, 2, 2, 2)), [3.0]).label(0) == "t = 3 s"


def test_dip_result_is_a_volume_series() -> None:
    res = DIPResult(
        volumes=np.ones((2, 3, 4, 5), np.float32),
        times_s=np.array([1.0, 2.0]),
        tilt_angles=np.array([-10.0, 10.0]),
        loss_history=np.zeros(1),
        voxel_size_A=1.5,
        provenance={"method": "dip"},
    )
    vs = res.volume_series()
    assert vs.n_times == 2 and vs.voxel_size_A == 1.5
    assert vs.label(1) == res.label(1)
    assert vs.volume(0).provenance["parameters"] == res.volume(0).provenance["parameters"]
