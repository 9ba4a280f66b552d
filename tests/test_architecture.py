"""The package's import graph (docs/architecture.md): no cycles, and reporting reads files only.

The graph is read from the source with `ast`, so imports inside functions (lazy imports) count
as much as those at the top of a module: a cycle closed by a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "metabn_bench"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# reporting/ turns run files into tables; it never imports the code that made them.
FORBIDDEN = {
    f"{PACKAGE}.reporting": (f"{PACKAGE}.training", f"{PACKAGE}.evaluation", f"{PACKAGE}.methods",
                             f"{PACKAGE}.models", f"{PACKAGE}.suite", f"{PACKAGE}.analysis"),
    f"{PACKAGE}.gate.compare": (f"{PACKAGE}.suite",),  # only gate/baseline.py runs a suite
    f"{PACKAGE}.gate.check": (f"{PACKAGE}.suite",),
    f"{PACKAGE}.gate.noise": (f"{PACKAGE}.suite",),
    f"{PACKAGE}.methods": (f"{PACKAGE}.training", f"{PACKAGE}.evaluation", f"{PACKAGE}.suite"),
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    """metabn_bench.x.y of a file (a package is named by its __init__)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that the file imports, anywhere in it (functions included).

    `from a.b import c` names the module a.b.c when c is a module, else a.b; relative imports
    are resolved against the file's package.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    out.add(full)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    mods = modules()
    known = set(mods)
    return {name: imported(path, name, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of module names, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_graph_finds_lazy_and_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from metabn_bench.runs import DONE\n    from . import fsio\n")
    found = imported(src, f"{PACKAGE}.x", {f"{PACKAGE}.runs", f"{PACKAGE}.fsio"})
    assert found == {f"{PACKAGE}.runs", f"{PACKAGE}.fsio"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_reporting_and_methods_do_not_import_the_wings_above_them() -> None:
    bad = [f"{mod} imports {dep}" for mod, deps in import_graph().items()
           for wing, banned in FORBIDDEN.items() if _inside(mod, wing)
           for dep in sorted(deps) if any(_inside(dep, b) for b in banned)]
    assert not bad, "\n".join(bad)


def test_the_ground_floor_stays_small_and_files_short() -> None:
    top = [p.name for p in ROOT.glob("*.py")]
    assert len(top) <= 13, f"{len(top)} modules at the top of the package: {sorted(top)}"
    long = [f"{p.relative_to(ROOT)}: {n}" for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"files over {MAX_LINES} lines: {long}"
