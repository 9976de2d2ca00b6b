"""Static import graph of a source tree (``ast``; nothing is imported), for the layout tests of ``data_tools``.

Every ``import`` / ``from ... import`` statement counts, inside functions and methods too (a function-level import
is still a dependency, only a hidden one). ``from pkg import name`` points at ``pkg.name`` when that is a module of the
tree, else at ``pkg``. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: those packages are added
as targets unless the importer lives in them already (its own packages are initialised before it runs).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportGraph:
    """Modules of a tree and, per module, the modules of the tree it imports."""

    modules: dict[str, Path] = field(default_factory=dict)
    """Dotted name -> file (a package is its ``__init__.py``)."""
    edges: dict[str, set[str]] = field(default_factory=dict)
    """Every import (module level and function level)."""
    top_edges: dict[str, set[str]] = field(default_factory=dict)
    """Imports that run when the module is imported (module level, outside functions and classes' methods)."""

    def closure(self, name: str) -> set[str]:
        """Modules loaded by importing ``name`` (its module-level imports, transitively), ``name`` excluded."""
        seen: set[str] = set()
        todo = [name, *_ancestors(name)]
        while todo:
            for nxt in self.top_edges.get(todo.pop(), ()):
                if nxt not in seen and nxt != name:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def cycles(self) -> list[list[str]]:
        """One cycle per strongly connected component of more than one module (or a module importing itself)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []

        def visit(v: str) -> None:  # Tarjan
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(self.edges.get(v, ())):
                if w not in index:
                    visit(w)
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
                if len(comp) > 1 or v in self.edges.get(v, ()):
                    found.append(sorted(comp))

        for v in sorted(self.modules):
            if v not in index:
                visit(v)
        return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(package_dir: Path) -> ImportGraph:
    """The import graph of the package at ``package_dir`` (imports of other packages are left out)."""
    graph = ImportGraph()
    for path in sorted(package_dir.rglob("*.py")):
        graph.modules[_module_name(package_dir, path)] = path
    for name, path in graph.modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph.edges[name], graph.top_edges[name] = set(), set()
        for node, in_function in _imports(tree):
            targets = _targets(graph, name, is_package, node)
            graph.edges[name] |= targets
            if not in_function:
                graph.top_edges[name] |= targets
    return graph


def _imports(node: ast.AST, in_function: bool = False):
    """``(import statement, whether it sits in a function body)`` for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        else:
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(child, inner)


def _targets(graph: ImportGraph, importer: str, is_package: bool, node: ast.AST) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = importer.split(".") if is_package else importer.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join([*pkg, base] if base else pkg)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in graph.modules else base)
    out: set[str] = set()
    own = set(_ancestors(importer)) | {importer}
    for target in names:
        while target and target not in graph.modules:
            target = target.rpartition(".")[0]
        if not target:
            continue
        out.add(target)
        out |= {a for a in _ancestors(target) if a in graph.modules and a not in own}
    out.discard(importer)
    return out
