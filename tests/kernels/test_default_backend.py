"""kernels/README.md's first example runs as written on CPU tensors: the default block backend follows the device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SNIPPET = """
import torch
from megatron_agentic.kernels.flash_attention import flash_attn_func
torch.manual_seed(0)
q, k, v = torch.randn(1, 48, 4, 32), torch.randn(1, 48, 2, 32), torch.randn(1, 48, 2, 32)
out = flash_attn_func(q, k, v, causal=True)  # the README's call, CPU tensors, no interpreter
kk, vv = (x.repeat_interleave(2, dim=2).transpose(1, 2) for x in (k, v))
ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, is_causal=True).transpose(1, 2)
print(float((out - ref).abs().max()))
"""


@pytest.mark.slow
def test_readme_example_runs_on_cpu_without_the_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5
