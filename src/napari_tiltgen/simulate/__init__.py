"""Synthetic data with ground truth: analytic phantoms, ase clusters, HAADF-STEM simulation."""

from napari_tiltgen.simulate.phantoms import sphere_phantom

__all__ = ["sphere_phantom"]
