"""No import cycle in the project (``megatron_agentic/``, the ``kernels/`` folder imported as
``megatron_agentic.kernels``, and ``data_tools/``), function-level imports included (a static ``ast`` walk).

Every ``import`` / ``from ... import`` anywhere in a module counts (module level, inside functions, inside ``try``),
except those under ``if TYPE_CHECKING:`` (never executed). Importing ``a.b.c`` also imports the packages ``a.b`` and
``a`` (their ``__init__``), except the importing module's own ancestors, which Python has always imported first.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXCLUDED: tuple[str, ...] = ()
"""Module prefixes left out of the check."""
KNOWN_CYCLES: list[list[str]] = []
"""Cycles tolerated (none)."""
SOURCES = {"megatron_agentic": "megatron_agentic", "kernels": "megatron_agentic.kernels", "data_tools": "data_tools"}
"""Folder -> the import name of its modules."""


def _modules() -> dict[str, Path]:
    """Module name -> file of every module of the project (packages by their ``__init__.py``)."""
    out = {}
    for folder, name in SOURCES.items():
        root = REPO / folder
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([name, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """``(module, [names])`` of every executed import in ``tree`` (relative imports resolved)."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (directly, or as a parent package of what it imports)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name.startswith(EXCLUDED):
            continue
        own_ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own_ancestors.add(name)
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for base, names in _imported_names(tree, name, path.name == "__init__.py"):
            hits = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules] or [base]
            for hit in hits:
                parts = hit.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in modules and target not in own_ancestors and not target.startswith(EXCLUDED):
                        targets.add(target)
        targets.discard(name)
        graph[name] = targets
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_walk_sees_function_level_imports_and_skips_type_checking():
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from a.typed import T\n"
        "def f():\n    from a.lazy import g\n    import a.other\n"
        "from . import sibling\n"
    )
    found = _imported_names(ast.parse(source), "a.pkg.mod", False)
    assert ("a.lazy", ["g"]) in found and ("a.other", []) in found and ("a.pkg", ["sibling"]) in found
    assert all(base != "a.typed" for base, _ in found)
    assert strongly_connected({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


def test_no_import_cycle_in_the_project():
    graph = import_graph()
    for module in ("megatron_agentic.config", "megatron_agentic.planning.plan", "megatron_agentic.kernels.autotune"):
        assert module in graph, module  # the walk found them
    assert "data_tools.synthesis.has.template_backend" in graph
    assert "megatron_agentic.kernels.attention_config" in graph["megatron_agentic.kernels.flash_attention"]
    assert "megatron_agentic.perf" in graph["megatron_agentic.config"]  # module-level edge seen
    cycles = [c for c in strongly_connected(graph) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles (function-level imports included): " + "; ".join(" <-> ".join(c) for c in cycles)
