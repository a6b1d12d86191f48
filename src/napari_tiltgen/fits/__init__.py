"""Self-supervised per-dataset fits: :mod:`~napari_tiltgen.fits.inr` (neural field with joint
pose refinement) and :mod:`~napari_tiltgen.fits.dip` (time-resolved deep image prior).

Both project through :mod:`napari_tiltgen.physics` (the ray projector and the per-tilt operator),
so they are fitted against the same physics as SIRT.
"""
