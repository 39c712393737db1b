"""The house's layout: no import circles among sgtlab's modules, and no import of a module that is gone.

The graph is read from the source with `ast`, so lazy (function-level) imports count as edges too:
a circle that only closes at call time is still a circle. Edges:

- `import sgtlab.a.b` and `from sgtlab.a.b import f`: to `sgtlab.a.b` (the module named);
- `from sgtlab.a import b` where `b` is a submodule: to `sgtlab.a.b`; where `b` is a name
  defined in `sgtlab/a/__init__.py`: to `sgtlab.a` (that __init__ must have run to define it);
- relative imports are resolved the same way; a package's `__init__` is a module of its own.

Importing `sgtlab.a.b` also runs `sgtlab/__init__` and `sgtlab/a/__init__`, but those are not edges:
a submodule imported while its package's __init__ is still running loads fine, so only a real
circle (each module needing a name from the next before it has finished) is one."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sgtlab"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/sgtlab (a package is its __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported sgtlab module, line) for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(here[:len(here) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in modules else base, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> the sgtlab modules it imports, and the imports that name no module (as text)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    missing = []
    for name, path in modules.items():
        for target, line in _imports(name, path, modules):
            if target not in modules:
                missing.append(f"{path.relative_to(SRC)}:{line} imports {target}")
            elif target != name:
                graph[name].add(target)
    return graph, missing


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> b -> ... -> a) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    circles = []
    for comp in components:  # the shortest way from the component's first module back to itself
        start = min(comp)
        prev: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while prev[path[-1]] != start:
            path.append(prev[path[-1]])
        circles.append([start] + path[::-1])
    return circles


def test_graph_reads_the_kinds_of_import():
    graph, _ = import_graph()
    assert "sgtlab.reporting.html" in graph["sgtlab.reporting"]  # absolute from-import of a name
    assert "sgtlab.reporting" not in graph["sgtlab.errors"]      # no edge to parents implied
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_sgtlab_import_names_a_module():
    _, missing = import_graph()
    assert not missing, "imports of sgtlab modules that do not exist:\n" + "\n".join(missing)


def test_no_import_circles():
    graph, _ = import_graph()
    circles = _cycles(graph)
    assert not circles, "import circles (lazy imports included):\n" + "\n".join(" -> ".join(c) for c in circles)
