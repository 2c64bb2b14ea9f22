"""The import graph of blt_models/: no cycle, transport below format below factory.

Every import counts, function-level (lazy) ones included: a lazy import only hides a cycle until
the function runs. Importing a submodule also imports its parent packages (``models/__init__``
registers every family), so those edges are counted too; the package root ``blt_models`` is the
public face and only the command line (the top of the graph) may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import blt_models

PACKAGE = Path(blt_models.__file__).parent
ROOT = "blt_models"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (
        PACKAGE.parent / rel / "__init__.py"
    ).is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == ROOT}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != ROOT:
                    continue
                subs = [f"{module}.{a.name}" for a in node.names if _exists(f"{module}.{a.name}")]
                targets |= set(subs) if subs and len(subs) == len(node.names) else {module}
        edges: set[str] = set()
        for target in targets:
            parts = target.split(".")
            # A submodule import runs its parent packages too (the root is checked separately),
            # except the packages the importer itself lives in: they are already running.
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if not name.startswith(parent + "."):
                    edges.add(parent)
            if len(parts) > 1:
                edges.add(target)
            if target == ROOT:
                edges.add(ROOT)
        edges.discard(name)
        graph[name] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == ROOT:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read():
    graph = _graph()
    assert "blt_models._factory" in graph["blt_models"]
    assert "blt_models._published" in graph["blt_models._factory"]  # factory above format
    assert "blt_models._hub" in graph["blt_models._published"]  # format above transport


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_weights_code():
    graph = _graph()
    below_hub = {"blt_models._published", "blt_models._factory", "blt_models._checkpoint",
                 "blt_models._convert", "blt_models._registry"}  # fmt: skip
    assert not graph["blt_models._hub"] & below_hub  # transport is a leaf
    assert "blt_models._factory" not in graph["blt_models._published"]
    assert "blt_models._convert" not in graph["blt_models._factory"]
    for family in ("blt", "blt_vs", "cornet", "resnet"):
        edges = graph[f"blt_models.models.{family}"]
        assert not edges & {"blt_models._factory", "blt_models._convert", "blt_models._published"}


def test_only_the_command_line_imports_the_package_root():
    importers = sorted(n for n, edges in _graph().items() if ROOT in edges)
    assert set(importers) <= {"blt_models.cli", "blt_models.demo"}, importers
