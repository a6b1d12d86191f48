"""Import graph of napari_tiltgen, drawn from the code: dependencies, cycles, module sizes.

Reads every module under ``src/napari_tiltgen`` with :mod:`ast` (nothing is imported or run)
and collects the package-internal imports, including imports inside functions (a lazy import
is still a dependency; only ``if TYPE_CHECKING:`` blocks are left out).

Usage::

    python tools/importgraph.py                 # per-package dependencies, cycles, big modules
    python tools/importgraph.py --modules       # every module and what it imports
    python tools/importgraph.py --dot | dot -Tsvg -o imports.svg   # draw it (graphviz)
    python tools/importgraph.py --check         # exit 1 on an import cycle or a module > 600 lines

``tests/test_architecture.py`` uses :func:`module_graph`, :func:`cycles` and
:func:`module_lines` to keep the packages import-cycle free and their modules small.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "napari_tiltgen"
MAX_LINES = 600


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Package-internal modules imported anywhere in ``tree`` (outside TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:  # `from a.b import c`: c may be a name, not a module
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and (m := resolve(alias.name)):
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                for alias in node.names:
                    m = resolve(f"{target}.{alias.name}")
                    if m:
                        found.add(m)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: set of package modules it imports}`` for every module of the package."""
    mods = _modules(root)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
    return graph


def module_lines(root: Path = ROOT) -> dict[str, int]:
    """Lines of every module."""
    return {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in _modules(root).items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (import cycles), sorted.

    A package's ``__init__`` importing its own submodules, which import names back from the
    ``__init__``'s siblings, is not a cycle unless a submodule imports the ``__init__`` itself.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def package_of(module: str, depth: int = 2) -> str:
    """``napari_tiltgen.fits.dip.fit`` -> ``napari_tiltgen.fits`` (top-level subpackage)."""
    return ".".join(module.split(".")[:depth])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Dependencies between top-level subpackages / modules of the package."""
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        p = package_of(m)
        out.setdefault(p, set()).update(package_of(d) for d in deps if package_of(d) != p)
    return out


def _short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.") or PACKAGE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="list every module's imports")
    ap.add_argument("--dot", action="store_true", help="print the graph in graphviz dot")
    ap.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 on an import cycle or a module over {MAX_LINES} lines",
    )
    args = ap.parse_args(argv)
    graph = module_graph()
    if args.dot:
        pg = package_graph(graph)
        print("digraph napari_tiltgen {\n  rankdir=BT; node [shape=box];")
        for p in sorted(pg):
            for d in sorted(pg[p]):
                print(f'  "{_short(p)}" -> "{_short(d)}";')
        print("}")
        return 0
    if args.modules:
        for m in sorted(graph):
            print(f"{_short(m)}: {', '.join(_short(d) for d in sorted(graph[m])) or '-'}")
        return 0
    pg = package_graph(graph)
    print("package -> packages it imports")
    for p in sorted(pg):
        print(f"  {_short(p):<16} {', '.join(_short(d) for d in sorted(pg[p])) or '-'}")
    found = cycles(graph)
    print(f"\nimport cycles between modules: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(_short(m) for m in c))
    big = {m: n for m, n in module_lines().items() if n > MAX_LINES}
    print(f"\nmodules over {MAX_LINES} lines: {len(big)}")
    for m, n in sorted(big.items(), key=lambda kv: -kv[1]):
        print(f"  {_short(m):<40} {n}")
    return 1 if args.check and (found or big) else 0


if __name__ == "__main__":
    raise SystemExit(main())
