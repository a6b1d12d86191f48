"""Self-supervised INR tomography with joint pose refinement.

The method of Lim et al., "Missing wedge inpainting and joint alignment in electron tomography
through implicit neural representations" (quantEM): a neural field ``(x, y, z) -> density`` is
fitted to the recorded pixels through differentiable rays, together with the per-tilt shifts,
tilt-angle offsets and the tilt-axis rotation. See ``docs/inr.md``.

Public API: :func:`fit_inr_iter` (progress generator for napari workers), :func:`fit_inr`,
:class:`INRResult`, :class:`FieldConfig`, :func:`load_checkpoint`.
"""

from napari_tiltgen.fits.inr.field import DensityField, FieldConfig
from napari_tiltgen.fits.inr.fit import SAMPLING, INRResult, fit_inr, fit_inr_iter, load_checkpoint
from napari_tiltgen.fits.inr.poses import POSE_PARAMETERS, PoseModel

__all__ = [
    "POSE_PARAMETERS",
    "SAMPLING",
    "DensityField",
    "FieldConfig",
    "INRResult",
    "PoseModel",
    "fit_inr",
    "fit_inr_iter",
    "load_checkpoint",
]
