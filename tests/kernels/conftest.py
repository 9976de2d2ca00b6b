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
    if "megatron_agentic.kernels.flash_attention" in sys.modules:
        importlib.reload(sys.modules["megatron_agentic.kernels.flash_attention"])
