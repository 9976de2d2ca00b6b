"""The import-time ``jit_fuser`` redirection (``megatron_agentic/platform_import.py``): megatron-core's JIT fuser is
off on CPU when this package is imported first, megatron-core's default otherwise, and never touched on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from megatron_agentic import platform_import

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
{first}
import megatron.core.jit as jit
from megatron.core.fusions import fused_bias_swiglu
print(json.dumps({{
    "noop": jit.jit_fuser is jit.noop_decorator,
    "plain_function": fused_bias_swiglu.bias_swiglu.__code__.co_filename == fused_bias_swiglu.__file__,
    "inductor": "torch._inductor.compile_fx" in sys.modules,
}}))
"""


def _probe(first: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MEGATRON_AGENTIC_FORCE_CPU="1", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # fresh interpreters
def test_cpu_process_defines_megatron_cores_fused_functions_without_torch_compile():
    assert _probe("import megatron_agentic") == {"noop": True, "plain_function": True, "inductor": False}
    # the reference: megatron-core imported on its own wraps them with torch.compile (and imports Inductor)
    assert _probe("") == {"noop": False, "plain_function": False, "inductor": True}


def _fake_jit() -> SimpleNamespace:
    module = SimpleNamespace(jit_fuser="torch.compile")
    module.disable_jit_fuser = lambda: setattr(module, "jit_fuser", "noop")
    return module


def test_untouched_on_cuda(monkeypatch):
    monkeypatch.delenv("MEGATRON_AGENTIC_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    module = _fake_jit()
    platform_import.after_jit_import(module)
    assert module.jit_fuser == "torch.compile"


def test_cpu_and_forced_cpu_disable_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = _fake_jit()
    platform_import.after_jit_import(module)
    assert module.jit_fuser == "noop"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("MEGATRON_AGENTIC_FORCE_CPU", "1")
    module = _fake_jit()
    platform_import.after_jit_import(module)
    assert module.jit_fuser == "noop"


def test_missing_target_fails_loudly(monkeypatch):
    monkeypatch.setenv("MEGATRON_AGENTIC_FORCE_CPU", "1")
    with pytest.raises(RuntimeError, match=r"megatron-core .*megatron.core.jit has no disable_jit_fuser"):
        platform_import.after_jit_import(SimpleNamespace(jit_fuser=None))
