"""Time-resolved (4-D) tomography with a deep image prior (DIP).

A sample that changes during the acquisition (sintering, growth, alloying under in-situ heating)
is seen by each frame of the tilt series in a different state. A static reconstruction blurs the
states together; a reconstruction from a short window of tilts is sharp in time but suffers from
the missing angles. Following Craig, Kadu, Batenburg & Bals ("3D visualization of in situ
nanoscale dynamics in TEM via self-supervised deep learning", after the time-dependent DIP of Yoo
et al., IEEE TMI 2021), a network maps a *slice coordinate* ``y`` (along the tilt axis) and a
*time* ``t`` to a 2-D orthoslice ``(nz, nx)`` of the volume at that time. The network is trained
on the one data set alone (self-supervised): the slice predicted at the time ``t_k`` when frame
``k`` was recorded is forward-projected at that frame's tilt angle and compared with detector row
``y`` of frame ``k``. Stacking the slices gives a full volume at every time, ``(t, z, y, x)``.

The network (:class:`DIPNetwork`)
---------------------------------
Designed so that a fit of 64^3 voxels x 100 time points runs on a 2-core CPU::

    x(y, t) = softplus(B_0(y) + sum_r w_r(y, t) B_r(y))

* ``B(y) = G(c(y))``: ``R + 1`` basis images ``(nz, nx)`` decoded by a small convolutional
  decoder ``G`` (the image prior) from a learned latent code ``c(y)``; the codes live on knots
  every ``latent_stride`` slices and are interpolated linearly in ``y``, so neighbouring slices
  share their code;
* ``w(y, t)``: ``R`` mixing weights from a small MLP of Fourier features of ``y`` and of the
  normalised time ``s = (t - t_first) / (t_last - t_first)`` in [0, 1] (frequencies ``1 ..
  time_frequencies`` half-periods over the series).

The decoder runs once per slice, not once per (slice, time): the time dependence costs ``R``
multiply-adds per voxel, which is what makes the fit cheap. ``R`` (``n_components``) bounds how
complex the change may be; ``temporal_smoothness`` is the one knob for how fast it may happen.

Training (:func:`fit_dip_iter`)
-------------------------------
1. Static SIRT of all tilts (:func:`napari_tiltgen.recon.iterative.sirt`) sets the intensity scale
   and is the *warm start*: the network is first fitted to output the SIRT slices at every time
   (``warm_start_steps``).
2. Self-supervised fit (``steps``): each step takes ``slices_per_step`` slices and
   ``frames_per_step`` frames (default all), predicts each slice at each frame's time, projects it
   at that frame's angle with the per-tilt mode of the package's projector
   (:class:`napari_tiltgen.physics.per_tilt.FrameProjector`, the same Joseph operator SIRT uses)
   and minimises::

       ||P x - b||^2 / ||b||^2  +  temporal_smoothness * ||dx/ds||^2 / ||x_SIRT||^2

   where ``dx/ds`` is the change of the slices per unit of normalised time (a finite difference
   over one frame interval) and the norms are means over voxels/pixels. The Adam step size ramps
   up over 20 steps, then halves every ``lr_half_life_steps``; it depends on the step number
   only, so that a resumed fit reproduces an uninterrupted one. ``temporal_smoothness =
   0`` leaves only the network's own bias; 0.1 (default) is mild; 1-10 gives slow changes only.
3. The volumes are evaluated at the frame times (or any ``output_times_s``).

Per-tilt shifts ``(dy, dx)`` of the series are honoured: ``dx`` and the tilt-axis offset enter the
projector, ``dy`` is removed from the data by the package's one shift policy
(:func:`napari_tiltgen.physics.shifts.unshift_frames`: linear, zero outside the frame, as the
batched projector), so DIP and SIRT see the same data near frame edges.

Modules: :mod:`.times` (acquisition times), :mod:`.plan` (checks before the fit), :mod:`.network`
(:class:`DIPNetwork`), :mod:`.model`
(:class:`DIPModel`, :class:`DIPResult`, checkpoints), :mod:`.fit` (the fit), :mod:`.baseline`
(sliding-window SIRT).

Units: times in seconds, angles in degrees, shifts in pixels, voxel size in Å; volumes in the
density units of SIRT (projections / pixel length).

Example
-------
>>> from napari_tiltgen.simulate.phantoms import dynamic_sphere_phantom
>>> ts, truth = dynamic_sphere_phantom(size=16, n_tilts=20)
>>> res = fit_dip(ts, steps=20, warm_start_steps=10, sirt_iterations=10, device="cpu")
>>> res.volumes.shape
(20, 16, 16, 16)
"""

from napari_tiltgen.fits.dip.baseline import sliding_window_sirt, sliding_window_sirt_iter
from napari_tiltgen.fits.dip.fit import fit_dip, fit_dip_iter
from napari_tiltgen.fits.dip.model import (
    CHECKPOINT_FORMAT,
    DEFAULT_MAX_OUTPUT_BYTES,
    DIPModel,
    DIPResult,
    load_dip_model,
)
from napari_tiltgen.fits.dip.network import DIPNetwork
from napari_tiltgen.fits.dip.times import acquisition_times

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DIPModel",
    "DIPNetwork",
    "DIPResult",
    "acquisition_times",
    "fit_dip",
    "fit_dip_iter",
    "load_dip_model",
    "sliding_window_sirt",
    "sliding_window_sirt_iter",
]
