"""Names of the reconstruction methods, filters and backends, importable without torch.

The command line builds its parser on every ``tiltgen`` call, so its choices come from here rather
than from :mod:`napari_tiltgen.recon.api` (which imports torch).
"""

from __future__ import annotations

#: Methods of :func:`napari_tiltgen.recon.api.reconstruct`: name -> one-line description.
METHODS: dict[str, str] = {
    "wbp": "weighted (filtered) backprojection, one pass",
    "sirt": "simultaneous iterative reconstruction technique",
    "sart": "ordered-subset simultaneous algebraic reconstruction technique",
    "tv": "total-variation regularised least squares (Chambolle-Pock)",
}

#: WBP/FBP filter names (the windows themselves live in ``recon.FILTERS``).
FILTER_NAMES: tuple[str, ...] = ("ramp", "shepp-logan", "cosine", "hamming", "hann")

#: Reconstruction engines.
BACKENDS: tuple[str, ...] = ("torch", "astra", "tomopy")
