"""Kernel tests run the Triton kernels under the interpreter on CPU (set before megatron_agentic.kernels.flash_attention loads)."""

from __future__ import annotations

import importlib
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    import triton

    if not triton.knobs.runtime.interpret:
        triton.knobs.runtime.interpret = True
    # Another test module may have imported the kernels before the interpreter was switched on.
    # The device code first (``@triton.jit`` decides at decoration time), then the modules that bind its kernels.
    for name in ("flash_attention_kernels", "ring_merge", "flash_attention"):
        if f"megatron_agentic.kernels.{name}" in sys.modules:
            importlib.reload(sys.modules[f"megatron_agentic.kernels.{name}"])
