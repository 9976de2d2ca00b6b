"""The attention benchmark runs unmodified everywhere: on a CPU-only machine it says it needs a GPU and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the benchmark really runs")
@pytest.mark.parametrize("args", [[], ["--ring"], ["--packed"]])
def test_benchmark_exits_cleanly_without_gpu(args):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_attention.py"), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "needs an H100" in proc.stdout and "nothing measured" in proc.stdout
