"""Atomistic nanoclusters built with ase: shapes, elements, sizes, orientations, variants.

Every builder returns an :class:`ase.Atoms` whose positions are in Å and centred on the
cluster's centroid (the origin is the tilt-rotation centre of the simulation), with a
description of how it was made in ``atoms.info["tiltgen"]``.

Shapes (``structure``) and what ``shells`` means for each:

====================== ===================================================== =====================
structure              ase call for ``shells = n``                            atoms for n = 2,3,4,5
====================== ===================================================== =====================
icosahedron            ``Icosahedron(el, noshells=n)``                        13, 55, 147, 309
decahedron             Ino decahedron ``Decahedron(el, p=n, q=n, r=0)``       13, 55, 147, 309
marks_decahedron       ``Decahedron(el, p=n, q=n, r=1)``                      75, 192, 389, 686
octahedron             ``Octahedron(el, length=n + 1, cutoff=0)``             19, 44, 85, 146
cuboctahedron          ``Octahedron(el, length=2n - 1, cutoff=n - 1)``        13, 55, 147, 309
truncated_octahedron   ``Octahedron(el, length=3n - 2, cutoff=n - 1)``        38, 201, 586, 1289
====================== ===================================================== =====================

Variants (``variant``), with ``element2`` the second element and ``fraction`` the share of atoms
it concerns:

* ``"solid"``: one element;
* ``"alloy"``: a random ``fraction`` of the atoms (default 0.5) becomes ``element2``;
* ``"core_shell"``: the innermost ``fraction`` of the atoms (default 0.3, by distance from the
  centre) becomes ``element2`` (the core), the rest stays ``element`` (the shell);
* ``"hollow"``: the innermost ``fraction`` of the atoms (default 0.3) is removed.

The lattice constant of each element is ase's fcc reference value (Xe and Yb included), so the
held-out test elements (Yb, Ir, Xe, Al) give clusters of other sizes and contrasts than the
training elements (Pt, Ag, Au, Cu).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_tiltgen.core.errors import TiltgenError

TRAIN_ELEMENTS: tuple[str, ...] = ("Pt", "Ag", "Au", "Cu")
"""Elements of the training split (as in TSGNet)."""
TEST_ELEMENTS: tuple[str, ...] = ("Yb", "Ir", "Xe", "Al")
"""Held-out elements, used only in the test split (fcc structures)."""
ELEMENTS: tuple[str, ...] = TRAIN_ELEMENTS + TEST_ELEMENTS

STRUCTURES: tuple[str, ...] = ("icosahedron", "decahedron", "marks_decahedron", "octahedron",
                               "cuboctahedron", "truncated_octahedron")
VARIANTS: tuple[str, ...] = ("solid", "alloy", "core_shell", "hollow")
_DEFAULT_FRACTION = {"solid": 0.0, "alloy": 0.5, "core_shell": 0.3, "hollow": 0.3}
MAX_SHELLS = 12
"""Largest shell count accepted (a 12-shell icosahedron has 5083 atoms, about 5.5 nm for Au)."""


def lattice_constant_A(element: str) -> float:
    """fcc lattice constant of ``element`` in Å (ase reference state).

    Raises
    ------
    TiltgenError
        If the symbol is unknown or ase has no fcc lattice constant for it.
    """
    from ase.data import atomic_numbers, reference_states

    sym = _check_symbol(element)
    ref = reference_states[atomic_numbers[sym]] or {}
    a = ref.get("a")
    if ref.get("symmetry") != "fcc" or a is None:
        raise TiltgenError(
            f"element {sym!r} is not fcc in ase's reference data, so fcc clusters of it cannot "
            f"be built. Use one of {', '.join(ELEMENTS)} (or another fcc metal such as Ni, Pd, "
            "Rh, Pb, Ca)."
        )
    return float(a)


def _check_symbol(element: str) -> str:
    from ase.data import atomic_numbers

    sym = str(element).strip()
    sym = sym[:1].upper() + sym[1:].lower()
    if sym not in atomic_numbers or sym == "X":
        raise TiltgenError(
            f"unknown element {element!r}; give a chemical symbol such as "
            f"{', '.join(ELEMENTS)}."
        )
    return sym


@dataclass(frozen=True)
class ClusterSpec:
    """Everything needed to rebuild a cluster exactly (JSON round-trip via :meth:`to_json`).

    Parameters
    ----------
    structure
        One of :data:`STRUCTURES`.
    element
        Main element (chemical symbol).
    shells
        Size parameter, see the module table.
    variant
        One of :data:`VARIANTS`.
    element2
        Second element for ``"alloy"`` and ``"core_shell"``.
    fraction
        Share of atoms concerned by the variant (``None``: the variant's default).
    orientation
        ``"random"`` (uniform random rotation drawn from ``seed``), ``"none"``, or three
        Euler angles in degrees (intrinsic ZYZ).
    seed
        Seed of the random orientation and of the alloy's random occupation.
    """

    structure: str = "icosahedron"
    element: str = "Au"
    shells: int = 3
    variant: str = "solid"
    element2: str | None = None
    fraction: float | None = None
    orientation: str | tuple[float, float, float] = "random"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["orientation"], tuple):
            d["orientation"] = list(d["orientation"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterSpec:
        d = dict(d)
        if isinstance(d.get("orientation"), list):
            d["orientation"] = tuple(float(v) for v in d["orientation"])
        return cls(**d)

    def build(self):
        """Build the :class:`ase.Atoms` (same as :func:`build_cluster` with these fields)."""
        return build_cluster(self.structure, self.element, shells=self.shells,
                             variant=self.variant, element2=self.element2,
                             fraction=self.fraction, orientation=self.orientation,
                             seed=self.seed)


def _base_shape(structure: str, symbol: str, n: int, a: float):
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    if structure == "icosahedron":
        return Icosahedron(symbol, noshells=n, latticeconstant=a)
    if structure == "decahedron":
        return Decahedron(symbol, p=n, q=n, r=0, latticeconstant=a)
    if structure == "marks_decahedron":
        return Decahedron(symbol, p=n, q=n, r=1, latticeconstant=a)
    if structure == "octahedron":
        return Octahedron(symbol, length=n + 1, cutoff=0, latticeconstant=a)
    if structure == "cuboctahedron":
        return Octahedron(symbol, length=2 * n - 1, cutoff=n - 1, latticeconstant=a)
    if structure == "truncated_octahedron":
        return Octahedron(symbol, length=3 * n - 2, cutoff=n - 1, latticeconstant=a)
    raise TiltgenError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}.")


def _min_shells(structure: str) -> int:
    return 2 if structure in ("marks_decahedron", "cuboctahedron", "truncated_octahedron") else 1


def cluster_diameter_A(atoms_or_positions: Any) -> float:
    """Diameter of a cluster in Å: twice the largest atom distance from the centroid."""
    pos = np.asarray(getattr(atoms_or_positions, "positions", atoms_or_positions), float)
    if len(pos) == 0:
        return 0.0
    return float(2.0 * np.linalg.norm(pos - pos.mean(axis=0), axis=1).max())


def shells_for_diameter(structure: str, element: str, diameter_A: float) -> int:
    """Shell count whose (unrotated, solid) cluster diameter is closest to ``diameter_A`` (Å)."""
    if not np.isfinite(diameter_A) or diameter_A <= 0:
        raise TiltgenError(f"the cluster diameter must be a positive number of Å; got {diameter_A}.")
    sym = _check_symbol(element)
    a = lattice_constant_A(sym)
    best, best_err = _min_shells(structure), np.inf
    for n in range(_min_shells(structure), MAX_SHELLS + 1):
        d = cluster_diameter_A(_base_shape(structure, sym, n, a))
        err = abs(d - diameter_A)
        if err < best_err:
            best, best_err = n, err
        if d > diameter_A:
            break
    else:
        if best == MAX_SHELLS and diameter_A > 1.5 * d:
            raise TiltgenError(
                f"a {structure} of {sym} with diameter {diameter_A:.0f} Å needs more than "
                f"{MAX_SHELLS} shells ({d:.0f} Å); use a smaller diameter."
            )
    return best


def rotation_matrix(orientation: Any = "random", seed: int = 0) -> np.ndarray:
    """3x3 rotation matrix for an orientation setting.

    Parameters
    ----------
    orientation
        ``"random"`` (uniform on SO(3), drawn from ``seed``), ``"none"``/``None`` (identity),
        three Euler angles in degrees (intrinsic ZYZ), or a 3x3 rotation matrix.
    seed
        Seed for ``"random"``.
    """
    from scipy.spatial.transform import Rotation

    if orientation is None or (isinstance(orientation, str) and orientation == "none"):
        return np.eye(3)
    if isinstance(orientation, str):
        if orientation != "random":
            raise TiltgenError(
                f"unknown orientation {orientation!r}; use 'random', 'none' or three Euler "
                "angles in degrees."
            )
        return Rotation.random(random_state=np.random.default_rng([int(seed), 7919])).as_matrix()
    arr = np.asarray(orientation, dtype=float)
    if arr.shape == (3,):
        return Rotation.from_euler("ZYZ", arr, degrees=True).as_matrix()
    if arr.shape == (3, 3):
        if not np.allclose(arr @ arr.T, np.eye(3), atol=1e-6) or np.linalg.det(arr) < 0:
            raise TiltgenError("the orientation matrix is not a proper rotation matrix.")
        return arr
    raise TiltgenError(f"orientation must be 'random', 'none', 3 Euler angles or a 3x3 matrix; "
                       f"got shape {arr.shape}.")


def build_cluster(
    structure: str = "icosahedron",
    element: str = "Au",
    *,
    shells: int | None = None,
    diameter_A: float | None = None,
    variant: str = "solid",
    element2: str | None = None,
    fraction: float | None = None,
    orientation: Any = "random",
    seed: int = 0,
):
    """Build a nanocluster with ase, centred on the origin and rotated.

    Parameters
    ----------
    structure
        One of :data:`STRUCTURES` (see the module table for the ase calls).
    element
        Main element, e.g. ``"Au"``; must be fcc in ase's reference data.
    shells
        Size parameter (see the module table). Give this or ``diameter_A``; default 3.
    diameter_A
        Target diameter in Å; the shell count whose cluster diameter is closest is used.
    variant
        ``"solid"``, ``"alloy"``, ``"core_shell"`` or ``"hollow"`` (module docstring).
    element2
        Second element for ``"alloy"`` (solute) and ``"core_shell"`` (core).
    fraction
        Share of atoms the variant concerns, in (0, 1); default 0.5 (alloy), 0.3 (core-shell,
        hollow).
    orientation
        ``"random"``, ``"none"``, Euler angles ZYZ in degrees, or a rotation matrix.
    seed
        Seed of the random orientation and the random alloy occupation.

    Returns
    -------
    ase.Atoms
        Positions in Å centred on the centroid, no cell, with ``info["tiltgen"]`` describing it.

    Examples
    --------
    >>> atoms = build_cluster("icosahedron", "Au", shells=3, orientation="none")
    >>> len(atoms)
    55
    """
    if structure not in STRUCTURES:
        raise TiltgenError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}.")
    if variant not in VARIANTS:
        raise TiltgenError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    sym = _check_symbol(element)
    a = lattice_constant_A(sym)
    if shells is None:
        shells = 3 if diameter_A is None else shells_for_diameter(structure, sym, diameter_A)
    shells = int(shells)
    lo = _min_shells(structure)
    if not lo <= shells <= MAX_SHELLS:
        raise TiltgenError(f"{structure} needs {lo} to {MAX_SHELLS} shells; got {shells}.")
    atoms = _base_shape(structure, sym, shells, a)
    atoms.positions -= atoms.positions.mean(axis=0)

    frac = _DEFAULT_FRACTION[variant] if fraction is None else float(fraction)
    sym2 = None
    if variant != "solid" and not 0.0 < frac < 1.0:
        raise TiltgenError(f"fraction must lie in (0, 1) for variant {variant!r}; got {frac}.")
    if variant in ("alloy", "core_shell"):
        if element2 is None:
            raise TiltgenError(f"variant {variant!r} needs a second element (element2).")
        sym2 = _check_symbol(element2)
    rng = np.random.default_rng([int(seed), 104729])
    n = len(atoms)
    k = int(round(frac * n))
    if variant == "alloy":
        idx = rng.choice(n, size=k, replace=False)
        numbers = atoms.numbers.copy()
        numbers[idx] = _z(sym2)
        atoms.numbers = numbers
    elif variant in ("core_shell", "hollow"):
        r = np.linalg.norm(atoms.positions, axis=1)
        inner = np.argsort(r + 1e-9 * np.arange(n), kind="stable")[:k]
        if variant == "core_shell":
            numbers = atoms.numbers.copy()
            numbers[inner] = _z(sym2)
            atoms.numbers = numbers
        else:
            if n - k < 1:
                raise TiltgenError("the hollow cluster would have no atoms left; lower fraction.")
            del atoms[np.sort(inner).tolist()]
    rot = rotation_matrix(orientation, seed)
    atoms.positions = atoms.positions @ rot.T
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    spec = ClusterSpec(structure=structure, element=sym, shells=shells, variant=variant,
                       element2=sym2, fraction=None if variant == "solid" else frac,
                       orientation=orientation if isinstance(orientation, str)
                       else tuple(np.asarray(orientation, float).reshape(-1)[:3])
                       if np.asarray(orientation).shape == (3,) else "matrix",
                       seed=int(seed))
    atoms.info["tiltgen"] = {
        "spec": spec.to_dict(),
        "rotation": rot.tolist(),
        "n_atoms": len(atoms),
        "diameter_A": cluster_diameter_A(atoms),
        "lattice_constant_A": a,
        "formula": atoms.get_chemical_formula(),
    }
    return atoms


def _z(symbol: str) -> int:
    from ase.data import atomic_numbers

    return int(atomic_numbers[symbol])


def describe(atoms: Any) -> str:
    """One-line description, e.g. ``"icosahedron Au147 (3 shells, 16.3 Å)"``."""
    info = atoms.info.get("tiltgen", {})
    spec = info.get("spec", {})
    d = info.get("diameter_A", cluster_diameter_A(atoms))
    return (f"{spec.get('structure', 'cluster')} {atoms.get_chemical_formula()} "
            f"({spec.get('variant', 'solid')}, {spec.get('shells', '?')} shells, {d:.1f} Å)")

