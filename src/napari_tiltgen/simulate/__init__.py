"""Synthetic data with ground truth: analytic phantoms, ase clusters, HAADF-STEM simulation.

* :func:`sphere_phantom` — analytic sphere phantom (exact projections);
* :func:`build_cluster` — ase nanoclusters (icosahedra, decahedra, octahedra and their cuts;
  solid, alloy, core-shell, hollow; random orientation);
* :func:`simulate_tilt_series` — HAADF-STEM tilt series (fast incoherent model or abTEM) with a
  ground-truth volume; :func:`simulated_cluster_sample` for a quick example;
* :func:`dynamic_cluster` / :func:`simulate_dynamic` — clusters that change during acquisition;
* :func:`generate_dataset` — sharded HDF5 training/validation/test sets;
* :func:`make_volume` (:mod:`.families`) — many object families for transfer training, with
  :data:`TRAIN_FAMILIES` / :data:`HELDOUT_FAMILIES`; :func:`degrade` (:mod:`.degrade`) — noise,
  jitter, tilt-axis error, offsets and gradients.

Heavy modules (ase, abTEM, torch) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from napari_tiltgen.simulate.phantoms import sphere_phantom

_LAZY = {
    "build_cluster": "clusters", "ClusterSpec": "clusters", "cluster_diameter_A": "clusters",
    "rotation_matrix": "clusters", "STRUCTURES": "clusters", "VARIANTS": "clusters",
    "TRAIN_ELEMENTS": "clusters", "TEST_ELEMENTS": "clusters", "ELEMENTS": "clusters",
    "Optics": "haadf", "PRESETS": "haadf", "AbtemSettings": "abtem_haadf", "fast_haadf": "haadf",
    "fast_haadf_iter": "haadf", "abtem_haadf_iter": "abtem_haadf", "add_dose_noise": "haadf",
    "haadf_cross_section_A2": "haadf", "probe_intensity": "haadf",
    "electron_wavelength_A": "haadf",
    "SimulationResult": "series", "simulate_tilt_series": "series",
    "simulate_tilt_series_iter": "series", "ground_truth_volume": "series",
    "atoms_volume": "series",
    "simulated_cluster_sample": "series", "tilt_angles_from_range": "series",
    "auto_pixel_size_A": "series",
    "DynamicCluster": "dynamic", "dynamic_cluster": "dynamic", "simulate_dynamic": "dynamic",
    "simulate_dynamic_iter": "dynamic", "DynamicSimulationResult": "dynamic",
    "acquisition_times_s": "dynamic",
    "DatasetConfig": "dataset", "generate_dataset": "dataset",
    "generate_dataset_iter": "dataset", "iter_samples": "dataset",
    "make_volume": "families", "make_sample": "families", "TRAIN_FAMILIES": "families",
    "HELDOUT_FAMILIES": "families", "FAMILIES": "families", "degrade": "degrade",
    "DegradeParams": "degrade",
}

__all__ = ["sphere_phantom", *_LAZY.keys()]  # noqa: PLE0604


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"napari_tiltgen.simulate.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'napari_tiltgen.simulate' has no attribute {name!r}")
