"""Physics: the acquisition geometry and every forward model of the package.

* :mod:`~napari_tiltgen.physics.geometry`: the coordinate convention and :class:`Geometry`;
* :mod:`~napari_tiltgen.physics.operators`: Joseph's per-tilt operator and sparse products;
* :mod:`~napari_tiltgen.physics.projector`: the batched projector (forward + exact adjoint);
* :mod:`~napari_tiltgen.physics.per_tilt`: its block-diagonal (one tilt per frame) mode;
* :mod:`~napari_tiltgen.physics.rays`: the differentiable-pose ray projector of neural fields;
* :mod:`~napari_tiltgen.physics.shifts`: the one policy for sub-pixel frame shifts.

Image formation (HAADF contrast, probe, noise and dose) is simulation, in
:mod:`napari_tiltgen.simulate`.
"""
