"""Tilt-frame interpolation: insert frames between the tilts of a sparse series.

One conditioned network (IFRNet family, 1-channel frames, conditioned on the position ``t`` of
the new frame and on the angular gap) serves every gap and inserts any number of frames; linear
interpolation and SIRT reprojection are baselines behind the same API.

Modules: :mod:`.network` (model, losses, safetensors I/O), :mod:`.data` (training triplets),
:mod:`.train` (resumable training), :mod:`.api` (inference, checks, leave-one-out QA),
:mod:`.context` (the four-frame network), :mod:`.adapt` (test-time fine-tuning on the user's stack and the choice pretrained / adapted /
linear by leave-one-out QA: ``interpolate_series(ts, method="auto")``; the choice itself in
:mod:`.select`, and :mod:`.transfer`, the check that fine-tuning carries to smaller gaps),
:mod:`.evaluate` (the benchmark of ``tiltgen eval-interpolation``).

Example
-------
>>> from napari_tiltgen.core.progress import run
>>> from napari_tiltgen.nets.interpolation import interpolate_series
>>> res = run(interpolate_series(ts, target_step_deg=1.0), show=False)  # doctest: +SKIP
>>> res.tilt_series.tilt_angles, res.predicted_indices                   # doctest: +SKIP
"""

from napari_tiltgen.nets.interpolation.adapt import AdaptConfig, AdaptResult, adapt_iter
from napari_tiltgen.nets.interpolation.api import (
                                                      InterpolationResult,
                                                      interpolate_series,
                                                      real_frames,
)
from napari_tiltgen.nets.interpolation.context import ContextInterpNet
from napari_tiltgen.nets.interpolation.frames import (
                                                      CONTEXT_WEIGHTS,
                                                      DEFAULT_WEIGHTS,
                                                      DENOISING_WEIGHTS,
                                                      METHODS,
                                                      SERIES_METHODS,
                                                      check_inputs,
                                                      insertion_plan,
                                                      interpolate_at,
                                                      linear_frames,
                                                      load_pretrained,
                                                      model_frames,
                                                      reprojection_frames,
)
from napari_tiltgen.nets.interpolation.network import (
                                                      NetConfig,
                                                      TiltInterpNet,
                                                      census_loss,
                                                      charbonnier,
                                                      interpolation_loss,
                                                      load_model,
                                                      save_model,
)
from napari_tiltgen.nets.interpolation.qa import LeaveOneOutResult, leave_one_out
from napari_tiltgen.nets.interpolation.select import Selection, adapt_and_select

__all__ = [
    "CONTEXT_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "DENOISING_WEIGHTS",
    "METHODS",
    "SERIES_METHODS",
    "AdaptConfig",
    "AdaptResult",
    "ContextInterpNet",
    "InterpolationResult",
    "LeaveOneOutResult",
    "NetConfig",
    "Selection",
    "TiltInterpNet",
    "adapt_and_select",
    "adapt_iter",
    "census_loss",
    "charbonnier",
    "check_inputs",
    "insertion_plan",
    "interpolate_at",
    "interpolate_series",
    "interpolation_loss",
    "leave_one_out",
    "linear_frames",
    "load_model",
    "load_pretrained",
    "model_frames",
    "real_frames",
    "reprojection_frames",
    "save_model",
]
