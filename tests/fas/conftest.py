"""Fixtures for the FAS tests: a small memory built from the built-in Wikipedia corpus."""

from __future__ import annotations

import pytest

from data_tools.synthesis.memory import main as memory_main


@pytest.fixture(scope="session")
def wiki_memory(tmp_path_factory) -> str:
    """Heuristic memory from the first 60 built-in Wikipedia summaries."""
    out = tmp_path_factory.mktemp("memory") / "memory.jsonl"
    assert memory_main(["--builtin-wiki", "--limit", "60", "--output", str(out)]) == 0
    return str(out)
