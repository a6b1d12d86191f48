"""Missing-wedge inpainting with a pretrained, wedge-conditioned U-Net++ GAN (IRDM).

Wang, Ding, Liu & Xin, "0.71-Å resolution electron tomography enabled by deep learning aided
information recovery": a U-Net++ generator trained adversarially (relativistic least-squares GAN
plus a pixel loss) to turn a missing-wedge-limited reconstruction of a slice into the full one.
Here one network covers wedges of 20-90 degrees: the wedge size conditions every block (FiLM).

Modules
-------
:mod:`~napari_tiltgen.nets.inpainting.api`
    :func:`inpaint` / :func:`inpaint_iter` on a :class:`~napari_tiltgen.io.model.TiltSeries` or
    :class:`~napari_tiltgen.io.model.Volume`, the wedge checks, the packaged weights.
:mod:`~napari_tiltgen.nets.inpainting.network`
    Generator, discriminator, losses, safetensors I/O.
:mod:`~napari_tiltgen.nets.inpainting.data`
    Training images (phantom faces, cluster slices, scikit-image samples) and their
    wedge-limited WBP / SIRT reconstructions.
:mod:`~napari_tiltgen.nets.inpainting.train`, :mod:`~napari_tiltgen.nets.inpainting.evaluate`
    Training (``tiltgen train-inpainting``) and the benchmark (``tiltgen eval-inpainting``).
"""

from napari_tiltgen.nets.inpainting.api import (
    DEFAULT_WEIGHTS,
    METHODS,
    check_wedge,
    inpaint,
    inpaint_iter,
    inpaint_slices,
    load_pretrained,
    missing_wedge_of,
    trained_wedge_range,
)
from napari_tiltgen.nets.inpainting.consistency import (
    consistency_note,
    enforce_consistency,
    reprojection_error,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "METHODS",
    "check_wedge",
    "consistency_note",
    "enforce_consistency",
    "inpaint",
    "inpaint_iter",
    "inpaint_slices",
    "load_pretrained",
    "missing_wedge_of",
    "reprojection_error",
    "trained_wedge_range",
]
