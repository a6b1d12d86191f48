"""The layout holds: no import cycles, small modules, physics at the bottom, no Qt below the GUI.

The graph is read from the code by ``tools/importgraph.py`` (``python tools/importgraph.py``
prints it, ``--dot`` draws it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("importgraph", REPO / "tools" / "importgraph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("importgraph", mod)
    spec.loader.exec_module(mod)
    return mod


ig = _tool()
GRAPH = ig.module_graph()
LINES = ig.module_lines()
PKG = "napari_tiltgen"
#: what each layer may import (besides itself); the layers of docs/architecture.md
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "physics": {"core"},
    "simulate": {"core", "io", "physics"},
    "recon": {"core", "io", "physics"},
    "align": {"core", "io", "physics", "recon"},
    "evaluate": {"core", "io", "physics", "recon"},
    "nets": {"core", "io", "physics", "recon", "evaluate", "simulate"},
    "fits": {"core", "io", "physics", "recon", "align"},
    "workflows": {
        "core",
        "io",
        "physics",
        "simulate",
        "recon",
        "align",
        "evaluate",
        "nets",
        "fits",
    },
    "cli": set(),  # filled below: the two front ends may use every layer but each other
    "gui": set(),
}
ALLOWED["cli"] = ALLOWED["gui"] = set(ALLOWED) - {"cli", "gui"} | {""}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_cycle_finder_finds_cycles() -> None:
    """The checker itself: a two-module and a three-module cycle, and a clean chain."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}, "g": set()}
    assert ig.cycles(graph) == [["a", "b"], ["c", "d", "e"]]
    assert ig.cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_lazy_imports() -> None:
    """Imports inside functions count (the old backends <-> recon cycle was two lazy imports)."""
    deps = GRAPH["napari_tiltgen.fits.dip.fit"]
    assert "napari_tiltgen.recon.iterative" in deps  # imported inside _warm_start
    assert "napari_tiltgen.physics.per_tilt" in deps
    assert not any(
        _in(d, ("napari_tiltgen.recon.api",)) for d in GRAPH["napari_tiltgen.recon.backends"]
    )


def test_every_package_is_a_known_layer() -> None:
    layers = {_layer(m) for m in GRAPH} - {""}
    assert layers == set(ALLOWED), layers ^ set(ALLOWED)


def test_layers_import_only_what_is_below_them() -> None:
    bad = []
    for m, deps in GRAPH.items():
        own = _layer(m)
        if not own:
            continue
        for d in deps:
            other = _layer(d)
            if other != own and other not in ALLOWED[own]:
                bad.append(f"{m} -> {d}")
    assert bad == []


def test_no_import_cycle() -> None:
    assert ig.cycles(GRAPH) == []


def test_no_module_over_600_lines() -> None:
    big = {m: n for m, n in LINES.items() if n > ig.MAX_LINES}
    assert big == {}
    assert LINES["napari_tiltgen.physics.projector"] > 300  # the count is real


def test_physics_is_the_bottom_layer_and_fits_use_it() -> None:
    for m, deps in GRAPH.items():
        if _in(m, ("napari_tiltgen.physics",)):
            outside = {
                d for d in deps if not _in(d, ("napari_tiltgen.physics", "napari_tiltgen.core"))
            }
            assert outside == set(), m
    fit_deps = set().union(*(d for m, d in GRAPH.items() if _in(m, ("napari_tiltgen.fits",))))
    assert {
        "napari_tiltgen.physics.rays",
        "napari_tiltgen.physics.per_tilt",
        "napari_tiltgen.physics.shifts",
    } <= fit_deps


def test_no_forward_model_code_outside_physics() -> None:
    """Sparse operators, shifts and ray casting come from physics/ only."""
    src = REPO / "src" / PKG
    for path in src.rglob("*.py"):
        if path.is_relative_to(src / "physics"):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("scipy.sparse", "_joseph", "sparse_csr_tensor", "ndimage.shift("):
            assert needle not in text, (str(path.relative_to(src)), needle)


def test_no_qt_below_the_gui() -> None:
    src = REPO / "src" / PKG
    for path in src.rglob("*.py"):
        if path.is_relative_to(src / "gui"):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("import qtpy", "from qtpy", "import napari\n", "from magicgui"):
            assert needle not in text, (str(path.relative_to(src)), needle)
