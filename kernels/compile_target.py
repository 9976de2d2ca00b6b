"""What a kernel module lists in its ``aot_targets()``: one kernel configuration to compile for sm_90.

A leaf (no imports from this package) so that kernel modules can describe their targets without importing
:mod:`megatron_agentic.kernels.aot`, which in turn reads the kernel modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class CompileTarget:
    """One kernel configuration to compile for sm_90: what a kernel module lists in its ``aot_targets()``."""

    label: str
    """Row name in the race table (``ring_merge d=128 rows``)."""
    module: str
    """Module that defines the kernel (``megatron_agentic.kernels.ring_merge``)."""
    function: str
    """Name of the ``@triton.jit`` function in that module."""
    signature: tuple[tuple[str, str], ...]
    """``(argument, type)`` for every argument (``*fp32``, ``i32``, ``constexpr``, ...)."""
    constexprs: tuple[tuple[str, object], ...]
    """Values of the constexpr arguments."""
    aligned: tuple[str, ...] = ()
    """Arguments that get the divisibility-by-16 hint the JIT gives aligned pointers and strides at runtime."""
    num_warps: int = 4
    """Warps per program."""
    num_stages: int = 3
    """Pipeline stages."""

    def jit_function(self):
        """The ``@triton.jit`` function."""
        return getattr(importlib.import_module(self.module), self.function)
