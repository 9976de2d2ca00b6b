"""The layout of data_tools: two jobs over shared leaves, no import cycle, light package imports.

Static checks over the source (``ast``; nothing is imported): see ``tests/data/import_graph.py`` for what counts
as an import (function-level imports included).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.data.import_graph import build_graph

ROOT = Path(__file__).resolve().parents[2]
LLM_CLIENT = "data_tools.synthesis.llm.client"


@pytest.fixture(scope="module")
def graph():
    return build_graph(ROOT / "data_tools")


def test_no_import_cycle_in_data_tools(graph):
    assert len(graph.modules) > 60  # the walk found the tree
    assert graph.cycles() == []


def test_indexed_and_common_import_nothing_from_synthesis(graph):
    leaks = {
        m: sorted(t for t in graph.edges[m] if t.startswith("data_tools.synthesis"))
        for m in graph.modules
        if m.startswith(("data_tools.indexed", "data_tools.common"))
    }
    assert {m: t for m, t in leaks.items() if t} == {}
    common = {m: sorted(graph.edges[m]) for m in graph.modules if m.startswith("data_tools.common.")}
    assert {m: t for m, t in common.items() if t and t != ["data_tools.common"]} == {}  # leaves


def test_package_inits_import_nothing(graph):
    """Importing one piece of a package never loads its siblings (``fas`` used to load its CLI and the client)."""
    packages = [m for m, p in graph.modules.items() if p.name == "__init__.py"]
    assert "data_tools.synthesis.fas" in packages and "data_tools.synthesis.llm" in packages
    assert {m: sorted(graph.top_edges[m]) for m in packages if graph.top_edges[m]} == {}


def test_only_model_facing_modules_load_the_llm_client(graph):
    loads = {m for m in graph.modules if m != LLM_CLIENT and LLM_CLIENT in graph.closure(m)}
    for light in ("fas.judge", "fas.questions", "fas.actions", "fas.records", "fas.template_actions", "answers"):
        assert f"data_tools.synthesis.{light}" not in loads
    assert "data_tools.synthesis.fas.pipeline" in loads  # the check sees a real dependency
    fas = {m.rsplit(".", 1)[1] for m in loads if m.startswith("data_tools.synthesis.fas.")}
    assert fas == {"__main__", "cli", "memory_build", "pipeline"}


def test_no_module_shadows_the_standard_library(graph):
    assert {m for m in graph.modules if m.rsplit(".", 1)[-1] in sys.stdlib_module_names} == set()


def test_the_graph_sees_function_level_and_package_init_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from pkg.a import f\n")
    (pkg / "sub" / "__init__.py").write_text("def main():\n    from pkg.sub.cli import run\n")
    (pkg / "sub" / "cli.py").write_text("from pkg.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    (pkg / "c.py").write_text("from pkg.sub.leaf import x\n")
    g = build_graph(pkg)
    assert sorted(g.cycles()) == [["pkg.a", "pkg.b"]]  # cli -> leaf is inside sub already: no package edge
    assert g.closure("pkg.c") == {"pkg.sub", "pkg.sub.leaf"}  # the package __init__ runs first
    assert g.top_edges["pkg.a"] == set() and g.edges["pkg.a"] == {"pkg.b"}
    (pkg / "d.py").write_text("from pkg.sub.leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("def g():\n    import pkg.d\n")
    # d -> pkg.sub (its __init__ runs) -> sub.cli (function level) -> leaf -> d: the old fas/__init__ shape
    assert sorted(build_graph(pkg).cycles()) == [
        ["pkg.a", "pkg.b"],
        ["pkg.d", "pkg.sub", "pkg.sub.cli", "pkg.sub.leaf"],
    ]
