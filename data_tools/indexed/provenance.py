"""Reading the provenance flag ``synthetic_template: true`` that synthesis writes on template-backend records.

Template-backend (offline, rule-based) FAS/HAS text is for demos and tests; ``data tokenize`` and ``data mix``
use :func:`synthetic_template_records` / :func:`tokenized_synthetic_inputs` to say so loudly when such data is
about to enter a training blend.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from data_tools.common.jsonl import open_binary

_FLAG = re.compile(rb'"synthetic_template"\s*:\s*true')
SCAN_LINES = 1000
"""Lines read from the head of each input (a synthesis output is made by one backend throughout)."""


def synthetic_template_records(path: str | Path, max_lines: int = SCAN_LINES) -> int:
    """How many of the first ``max_lines`` lines of a JSONL file carry ``"synthetic_template": true`` (at any
    nesting level: FAS ``provenance``, HAS ``meta``); 0 for non-JSONL inputs or unreadable files."""
    name = str(path)
    if not name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json")):
        return 0
    n = 0
    try:
        with open_binary(path) as f:
            for i, line in enumerate(f):
                if i >= max_lines:
                    break
                n += bool(_FLAG.search(line))
    except OSError:
        return 0
    return n


def tokenized_synthetic_inputs(prefix: str) -> list[str]:
    """The template-backend inputs recorded in the ``data tokenize`` summary of a dataset prefix
    (``{base}_{key}_document`` -> ``{base}.tokenize.json``); empty when there is no summary."""
    m = re.match(r"^(.*)_[^_/]+_document$", prefix)
    if not m:
        return []
    summary = Path(m.group(1) + ".tokenize.json")
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(data.get("synthetic_template_inputs") or [])
