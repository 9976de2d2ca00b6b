"""docs/training.md's config tables list every field of every config section (``megatron_agentic/config.py``),
and nothing that is not a field, so the table cannot drift from the dataclasses again."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path

from megatron_agentic.config import TrainingConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
NAME = re.compile(r"`([a-z_][a-z0-9_.]*)`")


def _sections() -> dict[str, type]:
    """``section name -> config dataclass`` (every dataclass-valued field of :class:`TrainingConfig`)."""
    return {f.name: f.default_factory for f in dataclasses.fields(TrainingConfig) if f.name != "source"}


def _rows(text: str, heading: str) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of the table rows (header and rule excluded) after ``heading`` up to the next heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    rows = []
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.startswith("#"):
            break
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append((i + 1, [c.strip() for c in line.strip().strip("|").split("|")]))
    return rows[1:] if rows else rows  # drop the header row


def documented_fields(text: str) -> dict[str, dict[str, int]]:
    """``section -> {field: line}`` from the schema table (``| section | field(s) | ...``) and the performance table
    (``| `section.field`, `field` | ...``: a bare name shares the section of the dotted name before it)."""
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for lineno, cells in _rows(text, "## Config schema"):
        for name in NAME.findall(cells[1]):
            found[cells[0]][name] = lineno
    for lineno, cells in _rows(text, "### Performance settings"):
        section = None
        for name in NAME.findall(cells[0]):
            if "." in name:
                section, name = name.split(".", 1)
            assert section is not None, f"{DOC}:{lineno}: {name!r} has no section"
            found[section][name] = lineno
    return found


def test_every_config_field_has_a_row_and_every_row_is_a_field():
    found = documented_fields(DOC.read_text(encoding="utf-8"))
    missing, unknown = [], []
    for section, factory in _sections().items():
        fields = {f.name for f in dataclasses.fields(factory())}
        fields.discard("overrides")  # model.overrides: the "*any preset field*" row (unknown model keys land there)
        missing += [f"{section}.{name}" for name in sorted(fields - set(found.get(section, {})))]
        unknown += [f"{section}.{n} ({DOC}:{line})" for n, line in found.get(section, {}).items() if n not in fields]
    unknown += [f"{s} ({DOC})" for s in found if s not in _sections()]
    assert not missing, f"config fields without a row in {DOC}: {missing}"
    assert not unknown, f"rows naming no config field: {unknown}"


def test_the_parser_sees_both_tables():
    """Guard against a parser that finds nothing (and so cannot fail): both tables contribute known rows."""
    found = documented_fields(DOC.read_text(encoding="utf-8"))
    assert "preset" in found["model"] and "iters" in found["train"]
    assert "manual_gc_interval" in found["perf"] and "expert_tensor" in found["parallel"]
