"""Dynamic phantoms: clusters that change during the acquisition, one state per tilt.

A :class:`DynamicCluster` describes atoms whose positions, presence and elements depend on the
acquisition progress ``s`` in [0, 1] (0 = first frame, 1 = last frame):

* position ``p(s) = p0 + e(s) (p1 - p0)`` with ``e`` a smooth step;
* an atom is present once ``s >= appear_s``;
* its element is ``numbers0`` before ``switch_s`` and ``numbers1`` after (swaps come in pairs, so
  the composition is conserved).

Three kinds (:func:`dynamic_cluster`):

``"growth"``
    A cluster grows from ``start_fraction`` of its atoms to all of them, shell by shell (atoms
    appear in order of distance from the centre, with a random jitter so that facets grow
    unevenly).
``"sintering"``
    Two clusters (random orientations) touching at ``s = 0`` coalesce into one compact fcc
    particle of the same atom count at ``s = 1``. Each atom moves on a straight line to its site
    in the final particle; sites are assigned by optimal transport (squared distances), so paths
    do not cross: the neck grows and the pair rounds off.
``"alloying"``
    A core-shell cluster (``element2`` core) interdiffuses into a random alloy: pairs of core and
    shell atoms swap elements, those nearest the core-shell interface first.

:func:`simulate_dynamic_iter` simulates the tilt series (fast model or abTEM) with the state at
each frame's acquisition time, and returns a :class:`DynamicSimulationResult` with the series
(with ``acquisition_times_s``), the times, and functions giving the atoms and ground-truth volume
at any time.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError
from napari_tiltgen.core.progress import Progress, run
from napari_tiltgen.io.model import TiltSeries, Volume
from napari_tiltgen.simulate.abtem_haadf import abtem_haadf_iter
from napari_tiltgen.simulate.clusters import build_cluster, lattice_constant_A
from napari_tiltgen.simulate.haadf import (
    Optics,
    add_dose_noise,
    fast_haadf_iter,
    haadf_cross_section_A2,
)
from napari_tiltgen.simulate.series import (
    FILL,
    MARGIN_A,
    _scaled,
    _shape2,
    check_fits,
    ground_truth_volume,
    imaging_options,
    resolve_gt_sigma_A,
    tilt_angles_from_range,
)

KINDS = ("growth", "sintering", "alloying")
ORDERS = ("sequential", "dose_symmetric")


def smoothstep(s: Any) -> Any:
    """``3 s^2 - 2 s^3`` clipped to [0, 1]: slow start and end of a transformation."""
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


@dataclass
class DynamicCluster:
    """Atoms whose positions, presence and elements change with acquisition progress ``s``.

    Attributes
    ----------
    positions0, positions1
        ``(N, 3)`` start and end positions, Å, about the rotation centre.
    numbers0, numbers1
        ``(N,)`` atomic numbers before and after ``switch_s``.
    appear_s
        ``(N,)`` progress at which each atom appears (<= 0: present from the start).
    switch_s
        ``(N,)`` progress at which an atom's element changes (> 1: never).
    info
        How it was made (kind, cluster specs, seed).
    """

    positions0: np.ndarray
    positions1: np.ndarray
    numbers0: np.ndarray
    numbers1: np.ndarray
    appear_s: np.ndarray
    switch_s: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_atoms_max(self) -> int:
        return int(self.positions0.shape[0])

    def state(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions (Å) and atomic numbers of the atoms present at progress ``s`` in [0, 1]."""
        s = float(np.clip(s, 0.0, 1.0))
        e = smoothstep(s)
        pos = self.positions0 + e * (self.positions1 - self.positions0)
        num = np.where(s >= self.switch_s, self.numbers1, self.numbers0)
        keep = self.appear_s <= s
        return pos[keep], num[keep]

    def atoms_at(self, s: float):
        """The state at progress ``s`` as :class:`ase.Atoms`."""
        import ase

        pos, num = self.state(s)
        atoms = ase.Atoms(numbers=num, positions=pos)
        atoms.info["tiltgen"] = {"dynamic": self.info, "progress": float(s)}
        return atoms

    def bounding_radius_A(self) -> float:
        """Largest distance of any atom from the centre at any time, Å."""
        r0 = np.linalg.norm(self.positions0, axis=1)
        r1 = np.linalg.norm(self.positions1, axis=1)
        return float(max(r0.max(), r1.max()))  # straight paths stay within the larger radius


def _fcc_sphere(element: str, n_atoms: int) -> np.ndarray:
    """Positions (Å) of the ``n_atoms`` fcc sites closest to the centroid of a site."""
    a = lattice_constant_A(element)
    m = int(math.ceil((n_atoms / 4.0) ** (1.0 / 3.0))) + 3
    g = np.arange(-m, m + 1)
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    sites = (cells[:, None, :] + base[None, :, :]).reshape(-1, 3) * a
    r = np.linalg.norm(sites, axis=1) + 1e-7 * sites[:, 0] + 1e-9 * sites[:, 1]
    pick = sites[np.argsort(r, kind="stable")[:n_atoms]]
    return pick - pick.mean(axis=0)


def dynamic_cluster(
    kind: str = "sintering",
    element: str = "Au",
    *,
    structure: str = "icosahedron",
    shells: int = 3,
    element2: str | None = None,
    start_fraction: float = 0.3,
    core_fraction: float = 0.3,
    seed: int = 0,
) -> DynamicCluster:
    """Build a dynamic phantom.

    Parameters
    ----------
    kind
        ``"growth"``, ``"sintering"`` or ``"alloying"`` (module docstring).
    element
        Main element.
    structure, shells
        Shape and size of the (final, for growth; each, for sintering; whole, for alloying)
        cluster, as in :func:`~napari_tiltgen.simulate.clusters.build_cluster`.
    element2
        Sintering: element of the second particle (default ``element``). Alloying: core element
        (default ``"Ag"`` when ``element`` is Au, else ``"Au"``).
    start_fraction
        Growth: share of the final atoms present at the start.
    core_fraction
        Alloying: share of the atoms in the core.
    seed
        Seed of orientations, jitter and swap order.
    """
    if kind not in KINDS:
        raise TiltgenError(f"unknown dynamic phantom {kind!r}; choose one of {', '.join(KINDS)}.")
    rng = np.random.default_rng([int(seed), 31337])
    info: dict[str, Any] = {"kind": kind, "element": element, "structure": structure,
                            "shells": int(shells), "seed": int(seed)}
    if kind == "growth":
        if not 0.0 < start_fraction <= 1.0:
            raise TiltgenError(f"start_fraction must lie in (0, 1]; got {start_fraction}.")
        atoms = build_cluster(structure, element, shells=shells, seed=seed)
        pos = atoms.positions.copy()
        n = len(pos)
        r = np.linalg.norm(pos, axis=1)
        key = r + rng.normal(0.0, 0.35 * lattice_constant_A(atoms.get_chemical_symbols()[0]), n)
        order = np.argsort(key, kind="stable")
        n0 = max(1, int(round(start_fraction * n)))
        appear = np.empty(n)
        appear[order[:n0]] = -1.0
        rest = order[n0:]
        appear[rest] = (np.arange(rest.size) + 1) / max(rest.size, 1)
        num = atoms.numbers.copy()
        info.update(start_fraction=float(start_fraction), n_atoms_final=n)
        return DynamicCluster(pos, pos.copy(), num, num.copy(), appear, np.full(n, 2.0), info)

    if kind == "sintering":
        el2 = element2 or element
        a = build_cluster(structure, element, shells=shells, seed=int(rng.integers(2**31)))
        b = build_cluster(structure, el2, shells=shells, seed=int(rng.integers(2**31)))
        ra = np.linalg.norm(a.positions, axis=1).max()
        rb = np.linalg.norm(b.positions, axis=1).max()
        gap = 0.8 * lattice_constant_A(element) / math.sqrt(2.0)  # about one bond length
        pa = a.positions - np.array([ra + 0.5 * gap, 0.0, 0.0])
        pb = b.positions + np.array([rb + 0.5 * gap, 0.0, 0.0])
        p0 = np.concatenate([pa, pb])
        p0 -= p0.mean(axis=0)
        num = np.concatenate([a.numbers, b.numbers])
        p1 = _fcc_sphere(element, len(p0))
        from scipy.optimize import linear_sum_assignment

        cost = ((p0[:, None, :] - p1[None, :, :]) ** 2).sum(-1)
        _, cols = linear_sum_assignment(cost)
        p1 = p1[cols]
        n = len(p0)
        info.update(element2=el2, n_atoms=n, contact_gap_A=gap)
        return DynamicCluster(p0, p1, num, num.copy(), np.full(n, -1.0), np.full(n, 2.0), info)

    # alloying
    el2 = element2 or ("Ag" if element == "Au" else "Au")
    if not 0.0 < core_fraction < 1.0:
        raise TiltgenError(f"core_fraction must lie in (0, 1); got {core_fraction}.")
    atoms = build_cluster(structure, element, shells=shells, variant="core_shell",
                          element2=el2, fraction=core_fraction, seed=seed)
    pos = atoms.positions.copy()
    num0 = atoms.numbers.copy()
    n = len(pos)
    from ase.data import atomic_numbers

    z2 = atomic_numbers[atoms.info["tiltgen"]["spec"]["element2"]]
    core = np.flatnonzero(num0 == z2)
    shell = np.flatnonzero(num0 != z2)
    num1 = rng.permutation(num0)  # the random alloy at the end
    to_shell_el = core[num1[core] != z2]  # core sites that become the shell element
    to_core_el = shell[num1[shell] == z2]  # shell sites that become the core element
    r = np.linalg.norm(pos, axis=1)
    r_if = 0.5 * (r[core].max() + r[shell].min()) if core.size and shell.size else 0.0
    # pair the swaps: the sites nearest the interface swap first (a diffusion front)
    ia = to_shell_el[np.argsort(np.abs(r[to_shell_el] - r_if) + rng.uniform(0, 0.5, to_shell_el.size))]
    ib = to_core_el[np.argsort(np.abs(r[to_core_el] - r_if) + rng.uniform(0, 0.5, to_core_el.size))]
    switch = np.full(n, 2.0)
    k = min(ia.size, ib.size)
    times = (np.arange(k) + 1) / (k + 1)
    switch[ia[:k]] = times
    switch[ib[:k]] = times
    num1 = num0.copy()
    num1[ia[:k]], num1[ib[:k]] = num0[ib[:k]], num0[ia[:k]]
    info.update(element2=el2, core_fraction=float(core_fraction), n_atoms=n, n_swaps=int(k))
    return DynamicCluster(pos, pos.copy(), num0, num1, np.full(n, -1.0), switch, info)


def acquisition_times_s(tilt_angles: Sequence[float], frame_time_s: float = 20.0,
                        order: str = "sequential") -> np.ndarray:
    """Acquisition time (s from the first frame) of each tilt angle.

    Parameters
    ----------
    tilt_angles
        Tilt angles, degrees.
    frame_time_s
        Time per frame (exposure, tilting, tracking), seconds.
    order
        ``"sequential"`` (lowest angle first) or ``"dose_symmetric"`` (Hagen scheme: 0, then
        pairs of increasing angles alternating between the positive and negative side).
    """
    a = np.asarray(tilt_angles, dtype=np.float64).reshape(-1)
    if order == "sequential":
        rank = np.argsort(np.argsort(a, kind="stable"), kind="stable")
    elif order == "dose_symmetric":
        start = int(np.argmin(np.abs(a)))
        pos = [i for i in np.argsort(a) if a[i] > a[start]]
        neg = [i for i in np.argsort(-a) if a[i] < a[start]]
        seq = [start]
        side = 0
        while pos or neg:
            src = (pos, neg)[side] if (pos, neg)[side] else (pos, neg)[1 - side]
            seq.extend(src[:2])
            del src[:2]
            side = 1 - side
        rank = np.empty(a.size, dtype=np.int64)
        rank[np.asarray(seq)] = np.arange(a.size)
    else:
        raise TiltgenError(f"unknown acquisition order {order!r}; use one of {', '.join(ORDERS)}.")
    if not frame_time_s > 0:
        raise TiltgenError(f"the frame time must be positive (s); got {frame_time_s}.")
    return rank.astype(np.float64) * float(frame_time_s)


@dataclass
class DynamicSimulationResult:
    """Output of :func:`simulate_dynamic`.

    Attributes
    ----------
    tilt_series
        Frames sorted by angle, with ``acquisition_times_s``.
    clean
        Noise-free stack.
    times_s
        Acquisition time of each frame (same order as the stack), seconds.
    total_time_s
        Time of the last frame, seconds (progress ``s = t / total_time_s``).
    phantom
        The :class:`DynamicCluster`.
    shape, pixel_size_A, gt_sigma_A, optics, z_exponent
        Ground-truth grid ``(nz, ny, nx)`` and settings, for :meth:`volume_at`.
    """

    tilt_series: TiltSeries
    clean: np.ndarray
    times_s: np.ndarray
    total_time_s: float
    phantom: DynamicCluster
    shape: tuple[int, int, int]
    pixel_size_A: float
    gt_sigma_A: float
    optics: Optics
    z_exponent: float

    def progress_at(self, t_s: float) -> float:
        return 0.0 if self.total_time_s <= 0 else float(t_s) / self.total_time_s

    def atoms_at(self, t_s: float):
        """Cluster state at time ``t_s`` (seconds) as :class:`ase.Atoms`."""
        return self.phantom.atoms_at(self.progress_at(t_s))

    def volume_at(self, t_s: float) -> Volume:
        """Ground-truth volume at time ``t_s`` (seconds), on the series' grid."""
        pos, num = self.phantom.state(self.progress_at(t_s))
        w = haadf_cross_section_A2(num, self.optics, self.z_exponent)
        vol = ground_truth_volume(pos, w, self.shape, self.pixel_size_A, self.gt_sigma_A)
        return Volume(vol, self.pixel_size_A,
                      provenance={"method": "ground truth (dynamic)",
                                  "parameters": {"time_s": float(t_s),
                                                 "phantom": self.phantom.info}})

    def volumes(self, times_s: Sequence[float] | None = None) -> np.ndarray:
        """Ground-truth volumes ``(T, nz, ny, nx)`` at ``times_s`` (default: every frame's time,
        which for 181 frames of 128^3 takes 1.5 GB; pass fewer times for less)."""
        times = self.times_s if times_s is None else np.asarray(times_s, float).reshape(-1)
        return np.stack([self.volume_at(t).data for t in times])


def simulate_dynamic_iter(
    phantom: DynamicCluster,
    *,
    frame_time_s: float = 20.0,
    order: str = "sequential",
    **imaging: Any,
) -> Generator[Progress, None, DynamicSimulationResult]:
    """Tilt series of a changing cluster: each frame shows the state at its acquisition time.

    ``imaging``: the keyword parameters of
    :func:`~napari_tiltgen.simulate.series.simulate_tilt_series_iter` (angles, size, pixel
    size, optics, mode, dose, seed, ...; the same defaults); ``frame_time_s`` is the time per
    frame (seconds) and ``order`` (``"sequential"`` or ``"dose_symmetric"``, see
    :func:`acquisition_times_s`) gives the acquisition times.
    """
    o = SimpleNamespace(**imaging_options(**imaging))
    optics = Optics.from_any(o.optics)
    if o.mode not in ("fast", "abtem"):
        raise TiltgenError(f"unknown simulation mode {o.mode!r}; use 'fast' or 'abtem'.")
    angles = (tilt_angles_from_range(o.tilt_range, o.tilt_step) if o.tilt_angles is None
              else np.sort(np.asarray(o.tilt_angles, dtype=np.float64).reshape(-1)))
    ny, nx = _shape2(o.size)
    times = acquisition_times_s(angles, frame_time_s, order)
    total = float(times.max()) if times.size else 0.0
    if o.pixel_size_A is None:
        d = 2 * phantom.bounding_radius_A() + 2 * MARGIN_A
        px = d / (FILL * min(ny, nx))
        digits = 2 - int(math.floor(math.log10(px)))
        px = float(math.ceil(px * 10**digits) / 10**digits)
    else:
        px = float(o.pixel_size_A)
    s_gt = resolve_gt_sigma_A(o.gt_sigma_A, px, optics, o.atom_sigma_A)

    class _Extent:
        positions = np.concatenate([phantom.positions0, phantom.positions1])

    check_fits(_Extent, (ny, nx), px, s_gt)
    clean = np.zeros((angles.size, ny, nx), dtype=np.float32)
    prog = times / total if total > 0 else np.zeros_like(times)
    if o.mode == "fast":
        # every frame at once: atoms absent in a frame get zero weight
        n_max = phantom.n_atoms_max
        pos_all = np.zeros((angles.size, n_max, 3))
        w_all = np.zeros((angles.size, n_max))
        for t in range(angles.size):
            s = float(np.clip(prog[t], 0.0, 1.0))
            pos_all[t] = phantom.positions0 + smoothstep(s) * (phantom.positions1
                                                               - phantom.positions0)
            num = np.where(s >= phantom.switch_s, phantom.numbers1, phantom.numbers0)
            w_all[t] = haadf_cross_section_A2(num, optics, o.z_exponent) * (phantom.appear_s <= s)
        gen = fast_haadf_iter(pos_all, w_all, angles, (ny, nx), px, optics,
                              atom_sigma_A=o.atom_sigma_A, device=o.device, max_batch=16)
        clean = yield from _scaled(gen, 0.0, 1.0)
    else:
        for t in range(angles.size):
            pos, num = phantom.state(prog[t])
            gen = abtem_haadf_iter(pos, num, angles[t:t + 1], (ny, nx), px, optics,
                                   o.abtem_settings)
            frame = yield from _scaled(gen, t / angles.size, (t + 1) / angles.size)
            clean[t] = frame[0]
    stack = clean if o.dose_e_per_A2 is None else add_dose_noise(
        clean, o.dose_e_per_A2, px, np.random.default_rng([int(o.seed), 1]))
    params = {"mode": o.mode, "optics": optics.to_dict(), "size": [ny, nx], "pixel_size_A": px,
              "dose_e_per_A2": o.dose_e_per_A2, "seed": int(o.seed), "z_exponent": o.z_exponent,
              "atom_sigma_A": o.atom_sigma_A, "gt_sigma_A": s_gt, "frame_time_s": frame_time_s,
              "order": order, "phantom": phantom.info}
    ts = TiltSeries(data=stack, tilt_angles=angles, pixel_size_A=px, acquisition_times_s=times,
                    provenance={"source": None, "method": f"dynamic HAADF simulation ({o.mode})",
                                "parameters": params, "angles_source": "simulation",
                                "pixel_size_source": "simulation",
                                "tilt_axis_source": "simulation (y)"})
    return DynamicSimulationResult(tilt_series=ts, clean=clean, times_s=times, total_time_s=total,
                                   phantom=phantom, shape=(nx, ny, nx), pixel_size_A=px,
                                   gt_sigma_A=s_gt, optics=optics, z_exponent=float(o.z_exponent))


def simulate_dynamic(phantom: DynamicCluster, *, show_progress: bool = False,
                     **kwargs: Any) -> DynamicSimulationResult:
    """Run :func:`simulate_dynamic_iter` to completion (same parameters).

    Examples
    --------
    >>> ph = dynamic_cluster("sintering", "Au", shells=2, seed=0)
    >>> res = simulate_dynamic(ph, tilt_step=10.0, size=48)
    >>> res.tilt_series.shape, res.times_s[-1]
    ((19, 48, 48), 360.0)
    """
    return run(simulate_dynamic_iter(phantom, **kwargs), show=show_progress, desc="simulate")
