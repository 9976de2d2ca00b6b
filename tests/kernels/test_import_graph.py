"""The kernel modules import each other without cycles, function-level imports included (a cycle hidden inside a
function still couples two modules both ways)."""

from __future__ import annotations

import ast
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
PREFIX = "megatron_agentic.kernels"


def _imports(path: Path) -> set[str]:
    """Sibling kernel modules ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PREFIX:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PREFIX + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith(PREFIX + "."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_kernel_modules_have_no_import_cycle():
    graph = {p.stem: _imports(p) & {q.stem for q in KERNELS.glob("*.py")} for p in KERNELS.glob("*.py")}
    assert graph["flash_attention"] >= {"autotune", "attention_config", "flash_attention_kernels"}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_finder_finds_a_function_level_cycle():
    """The checker itself: the pre-split layout (autotune imported flash_attention at module level, and
    flash_attention imported autotune inside ``_launch``) is a cycle."""
    assert _cycle({"flash_attention": {"autotune"}, "autotune": {"flash_attention"}}) == [
        "autotune",
        "flash_attention",
        "autotune",
    ]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
