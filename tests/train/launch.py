"""Shared launch helpers of the multi-process training tests: a free port, the ``train`` command line, and
:func:`run_train` (the pre-imported launcher of ``tests.support.zygote``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.recipes.recipes_testlib import free_port
from tests.support import zygote

__all__ = ["free_port", "run_train", "train_argv"]


def train_argv(args: list[str], nproc: int = 1) -> list[str]:
    """``python -m megatron_agentic train ARGS``, under ``torch.distributed.run`` on a free port when ``nproc > 1``."""
    if nproc == 1:
        return [sys.executable, "-m", "megatron_agentic", "train", *args]
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}"]
    return [sys.executable, *launcher, "-m", "megatron_agentic", "train", *args]


def run_train(
    args: list[str],
    nproc: int = 1,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = zygote.REPO,
    timeout: float = 400,
) -> subprocess.CompletedProcess:
    """``megatron-agentic train ARGS`` on ``nproc`` ranks, started from the pre-imported test launcher (no
    interpreter start-up, same code). Use :func:`train_argv` with a real process where the test is about the
    process itself (signals, torchrun's exit codes, process groups)."""
    return zygote.run(["train", *args], nproc=nproc, env=env, cwd=cwd, timeout=timeout)
