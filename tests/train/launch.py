"""Shared launch helpers of the multi-process training tests: a free port and the ``train`` command line."""

from __future__ import annotations

import sys

from tests.recipes.recipes_testlib import free_port

__all__ = ["free_port", "train_argv"]


def train_argv(args: list[str], nproc: int = 1) -> list[str]:
    """``python -m megatron_agentic train ARGS``, under ``torch.distributed.run`` on a free port when ``nproc > 1``."""
    if nproc == 1:
        return [sys.executable, "-m", "megatron_agentic", "train", *args]
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}"]
    return [sys.executable, *launcher, "-m", "megatron_agentic", "train", *args]
