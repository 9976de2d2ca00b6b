"""The suite's own promises: collecting it imports no megatron-core (a few seconds per pytest start), the
in-process tier's guard refuses process creation in unmarked tests, and the longest files start first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COLLECT = """
import sys, pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"])
heavy = sorted(m for m in ("megatron.core", "transformers", "transformer_engine") if m in sys.modules)
print("HEAVY", ",".join(heavy))
sys.exit(int(code))
"""


@pytest.mark.slow
def test_collecting_the_suite_imports_no_megatron_core():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    out = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("HEAVY")]
    assert line == "HEAVY ", f"imported while collecting: {line[6:]} (import it inside the test, or tests.support.lazy)"


def test_the_guard_refuses_a_process_in_an_unmarked_test():
    from tests.conftest import ProcessInInProcessTest

    with pytest.raises(ProcessInInProcessTest, match="mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    import multiprocessing

    with pytest.raises(ProcessInInProcessTest):
        multiprocessing.get_context("spawn").Process(target=print).start()


@pytest.mark.slow
def test_slow_tests_may_start_processes():
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0


def test_the_longest_files_exist_and_are_handed_out_in_collection_order():
    """A renamed file in ``LONG_FIRST`` would silently start last again; without ``--no-loadscope-reorder``
    pytest-xdist reorders the files by their number of tests and the list does nothing."""
    from tests.conftest import LONG_FIRST

    assert [p for p in LONG_FIRST if not (ROOT / p).is_file()] == []
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (xdist,) = [line for line in makefile.splitlines() if line.startswith("XDIST :=")]
    assert "--dist loadfile" in xdist and "--no-loadscope-reorder" in xdist, xdist
    runs = [line for line in makefile.splitlines() if "-m pytest -q tests" in line]
    assert len(runs) == 2 and all("$(XDIST)" in line for line in runs), runs
