"""Every documented shell command runs as written, or is marked and checked statically (see doccheck.py).

A failing block fails with the document's file and line. Runnable blocks of one document share one scratch
copy of the repository and run in order, as a reader following the page would.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("doccheck", Path(__file__).with_name("doccheck.py"))
doccheck = importlib.util.module_from_spec(_spec)
sys.modules["doccheck"] = doccheck
_spec.loader.exec_module(doccheck)

DOCS = doccheck.doc_paths()
BLOCK_TIMEOUT_S = 600  # generous: a loaded CI machine; an unloaded 2-core run of every block takes ~5 min


def _id(path: Path) -> str:
    return str(path.relative_to(doccheck.REPO))


def test_docs_are_found_and_parse():
    """The documents exist and every mark is known (a typo in a mark would silently skip a block)."""
    names = {_id(p) for p in DOCS}
    assert {"README.md", "docs/training.md", "docs/has.md", "docs/recipes.md", "kernels/README.md"} <= names
    blocks = [b for p in DOCS for b in doccheck.parse_blocks(p)]
    assert sum(b.skip is None for b in blocks) >= 8, "most shell blocks should be runnable"


def test_unknown_mark_is_refused(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs-check: skip someday -->\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match=r"x.md:1: unknown docs-check mark"):
        doccheck.parse_blocks(doc, repo=tmp_path)


@pytest.mark.slow
def test_static_check_catches_drift(tmp_path):
    """The static check fails on a missing flag, a missing subcommand and a missing file (it can fail)."""
    bad = doccheck.Block(
        doc="x.md",
        line=3,
        text="megatron-agentic data tokenize --no-such-flag 1 \\\n   --input a.jsonl\n"
        "megatron-agentic data nosuch --x 1\nbash examples/slurm/nosuch.sbatch --dry-run\n",
        skip="long",
    )
    messages = [e.message for e in doccheck.static_check(bad)]
    assert any("no flag --no-such-flag" in m for m in messages), messages
    assert not any("no flag --input" in m for m in messages), messages
    assert any("no subcommand" in m for m in messages), messages
    assert any("nosuch.sbatch does not exist" in m for m in messages), messages


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_marked_blocks_name_real_commands_flags_and_files(doc):
    errors = [e for b in doccheck.parse_blocks(doc) if b.skip for e in doccheck.static_check(b)]
    assert not errors, "\n".join(f"{e.where}: {e.message}" for e in errors)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_runnable_blocks_run_as_written(doc, tmp_path):
    blocks = [b for b in doccheck.parse_blocks(doc) if b.skip is None]
    if not blocks:
        pytest.skip(f"{_id(doc)} has no runnable shell block")
    # the same static check first: a wrong flag is reported as such rather than as a failed run
    errors = [e for b in blocks for e in doccheck.static_check(b)]
    assert not errors, "\n".join(f"{e.where}: {e.message}" for e in errors)
    scratch = doccheck.scratch_copy(tmp_path / "repo")
    for block in blocks:
        res = doccheck.run_block(block, scratch, timeout=BLOCK_TIMEOUT_S)
        tail = "\n".join(res.output.splitlines()[-40:])
        assert res.returncode == 0, (
            f"{block.where}: exit {res.returncode} after {res.seconds:.0f} s\n{block.text}\n--- output ---\n{tail}"
        )
