"""Test faults: every switch that exists only so that tests can reach a path a healthy run never takes.

Production code never reads a test switch itself; it asks this module through one call per site, and every
switch is listed here (and in docs/architecture.md, "Test faults"). A run with none of them set behaves exactly as
if this module did not exist.

Environment switches (they cross process boundaries: torchrun workers, ``megatron-agentic train`` subprocesses):

``MEGATRON_AGENTIC_TEST_NAN_GRAD`` (:data:`NAN_GRAD`)
    ``RANK@STEP[,STEP...]`` (``RANK`` ``*``: every rank) makes that rank's gradients NaN at those steps while its
    loss stays finite: a NaN that only the gradient checks can see, on one data-parallel rank
    (:func:`nan_grad`, asked by ``training/loop.py``).
``MEGATRON_AGENTIC_TEST_SAVE_HOOK`` (:data:`SAVE_PAUSE`)
    ``sleep:SECONDS[@ITERATION]`` pauses every rank inside the checkpoint save (of ``ITERATION`` only, when given),
    after its shard files are written and before the latest marker moves: a window in which tests kill the job
    mid-save (:func:`save_pause_seconds`, asked by ``training/checkpoint.py``).
``MEGATRON_AGENTIC_TEST_SAMPLE_LOG`` (:data:`SAMPLE_LOG`)
    a file to which a single-rank run appends ``{"step": N, "samples": [hash, ...]}`` per step (a hash of each
    training sample's tokens, in the order read), so tests can compare the samples of different runs
    (:func:`sample_log_path`, asked by ``training/data_order.py``).

In-process switches (tests flip them with :func:`forced` or pytest's ``monkeypatch.setitem(faults.FORCED, ...)``):

``gpu_tile_configs`` (:data:`GPU_TILE_CONFIGS`)
    the Triton interpreter runs the attention kernels with the H100 tile configurations instead of its small tiles
    (:func:`active`, asked by ``kernels/attention_config.py``; ``attention_config.gpu_configs_on_cpu`` wraps it).
``autotune_anywhere`` (:data:`AUTOTUNE_ANYWHERE`)
    the attention launcher takes the ``triton.autotune`` path off CUDA too (under the interpreter, with one
    candidate or a stand-in benchmark), so its grid/key/restore logic is tested on CPU
    (:func:`active`, asked by ``kernels/flash_attention.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

NAN_GRAD = "MEGATRON_AGENTIC_TEST_NAN_GRAD"
"""Environment switch: ``RANK@STEP[,STEP...]`` poisons gradients (see the module docstring)."""
SAVE_PAUSE = "MEGATRON_AGENTIC_TEST_SAVE_HOOK"
"""Environment switch: ``sleep:SECONDS[@ITERATION]`` pauses inside a checkpoint save."""
SAMPLE_LOG = "MEGATRON_AGENTIC_TEST_SAMPLE_LOG"
"""Environment switch: a file that records each step's training samples."""
ENVIRONMENT = (NAN_GRAD, SAVE_PAUSE, SAMPLE_LOG)
"""Every environment switch."""

GPU_TILE_CONFIGS = "gpu_tile_configs"
"""In-process switch: GPU tile configurations under the interpreter."""
AUTOTUNE_ANYWHERE = "autotune_anywhere"
"""In-process switch: the autotuned launch path off CUDA."""
FORCED: dict[str, bool] = {GPU_TILE_CONFIGS: False, AUTOTUNE_ANYWHERE: False}
"""State of the in-process switches (tests set entries; production code only reads them through :func:`active`)."""


def active(name: str) -> bool:
    """Whether test fault ``name`` is switched on (in-process switch, or a non-empty environment switch)."""
    if name in FORCED:
        return FORCED[name]
    if name in ENVIRONMENT:
        return bool(os.environ.get(name, "").strip())
    raise KeyError(f"unknown test fault {name!r} (known: {', '.join([*FORCED, *ENVIRONMENT])})")


@contextlib.contextmanager
def forced(name: str, on: bool = True) -> Iterator[None]:
    """Switch the in-process fault ``name`` on (or off) for the duration of the ``with`` block."""
    if name not in FORCED:
        raise KeyError(f"{name!r} is not an in-process test fault (known: {', '.join(FORCED)})")
    previous, FORCED[name] = FORCED[name], on
    try:
        yield
    finally:
        FORCED[name] = previous


def nan_grad(rank: int, step: int) -> bool:
    """Whether :data:`NAN_GRAD` poisons ``rank``'s gradients at ``step``."""
    spec = os.environ.get(NAN_GRAD, "").strip()
    if not spec:
        return False
    who, _, steps = spec.partition("@")
    return (who == "*" or int(who) == rank) and step in {int(x) for x in steps.split(",") if x.strip()}


def save_pause_seconds(iteration: int) -> float | None:
    """Seconds :data:`SAVE_PAUSE` asks the save of ``iteration`` to pause for (None: no pause)."""
    value = os.environ.get(SAVE_PAUSE, "")
    if not value.startswith("sleep:"):
        return None
    seconds, _, at = value[6:].partition("@")
    if at and int(at) != iteration:
        return None
    return float(seconds)


def sample_log_path() -> Path | None:
    """The file :data:`SAMPLE_LOG` names (None: not set)."""
    value = os.environ.get(SAMPLE_LOG, "")
    return Path(value) if value else None
