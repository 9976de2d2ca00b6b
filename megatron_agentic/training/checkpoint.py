"""Checkpoint save/resume with megatron-core ``dist_checkpointing``.

Layout: ``DIR/iter_0000100/`` (one dist_checkpointing checkpoint per save) and
``DIR/latest_checkpointed_iteration.txt``, written atomically by rank 0 only after every rank finished
the save and its files were fsynced, so a job killed mid-save resumes from the previous complete checkpoint;
the partial directory it left is deleted at the next start (:func:`clean_partial_checkpoints`). Older
checkpoints are pruned by :func:`prune_checkpoints` (``checkpoint.keep_last`` / ``keep_every``).

A checkpoint holds the model (sharded tensors: loadable into another TP/PP/EP layout), the optimizer
(megatron-core's ``dp_reshardable`` format: every rank writes its own shard, no gather, loadable when only
the data-parallel size changed; or ``fully_reshardable``: any layout), the LR scheduler, the iteration,
consumed samples (the data position) and tokens, the config, and per-rank RNG states (restored only when
the layout is unchanged).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject

from data_tools.common.atomic import atomic_write_text, fsync_path
from megatron_agentic.models.qwen3_moe import checkpoint_keys
from megatron_agentic.testing import faults
from megatron_agentic.training import save_procs

logger = logging.getLogger(__name__)

OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True}
"""Distributed-optimizer state in canonical per-parameter form: loadable into any TP/PP/EP/DP layout (the
format of checkpoints that do not record ``optimizer_format``)."""

OPTIMIZER_FORMATS = ("dp_reshardable", "fully_reshardable")
"""Supported ``checkpoint.optimizer_format`` values."""


def optimizer_metadata(fmt: str) -> dict[str, Any]:
    """dist_checkpointing metadata for the distributed optimizer's ``fmt`` state format."""
    if fmt not in OPTIMIZER_FORMATS:
        raise ValueError(f"unknown optimizer format {fmt!r}; expected one of {OPTIMIZER_FORMATS}")
    return {**OPTIMIZER_METADATA, "distrib_optim_sharding_type": fmt}


def optimizer_format_for_load(saved_format: str | None, saved_layout: dict | None, layout: dict) -> str:
    """The optimizer format to read a checkpoint with; raises RuntimeError when its state cannot be resharded.

    ``dp_reshardable`` state follows the distributed optimizer's buckets, which depend on the model-parallel
    layout (TP, PP, EP, CP): it loads only when those are unchanged (the data-parallel size may change).
    """
    fmt = saved_format or "fully_reshardable"
    if fmt == "dp_reshardable" and saved_layout is not None:
        changed = [k for k in ("tp", "pp", "ep", "cp") if saved_layout.get(k) != layout.get(k)]
        if changed:
            raise RuntimeError(
                "the checkpoint's optimizer state is dp_reshardable (saved with layout "
                f"{ {k: saved_layout.get(k) for k in changed} }, now { {k: layout.get(k) for k in changed} }): it "
                "loads only into the same tensor/pipeline/expert/context layout. Resume once in the old layout with "
                "--set checkpoint.optimizer_format=fully_reshardable and save, or load weights only "
                "(--set checkpoint.load_optimizer=false)"
            )
    return fmt


LATEST_FILE = "latest_checkpointed_iteration.txt"
"""Marker file naming the newest complete checkpoint."""


def checkpoint_path(root: str | os.PathLike, iteration: int) -> Path:
    """Directory of the checkpoint saved at ``iteration``."""
    return Path(root) / f"iter_{iteration:07d}"


def latest_iteration(root: str | os.PathLike | None) -> int | None:
    """Iteration of the newest complete checkpoint under ``root`` (None when there is none)."""
    if root is None:
        return None
    marker = Path(root) / LATEST_FILE
    if not marker.is_file():
        return None
    text = marker.read_text(encoding="utf-8").strip()
    try:
        iteration = int(text)
    except ValueError:
        raise RuntimeError(f"{marker}: expected an iteration number, found {text!r}") from None
    if not checkpoint_path(root, iteration).is_dir():
        raise RuntimeError(f"{marker} names iteration {iteration} but {checkpoint_path(root, iteration)} is missing")
    return iteration


def checkpoint_iterations(root: str | os.PathLike) -> list[int]:
    """Iterations of the ``iter_*`` directories under ``root``, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("iter_") and child.name[5:].isdigit():
            out.append(int(child.name[5:]))
    return sorted(out)


def partial_checkpoints(root: str | os.PathLike) -> list[int]:
    """Iterations of directories a killed save left behind: newer than the latest marker (all without one)."""
    latest = latest_iteration(root)
    return [i for i in checkpoint_iterations(root) if latest is None or i > latest]


def clean_partial_checkpoints(root: str | os.PathLike | None) -> list[int]:
    """Delete the directories of interrupted saves (call on one rank before any save); returns their iterations."""
    if root is None:
        return []
    removed = partial_checkpoints(root)
    for iteration in removed:
        path = checkpoint_path(root, iteration)
        logger.warning("removing %s: an interrupted save (not named by %s)", path, LATEST_FILE)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def retention_victims(
    iterations: list[int], latest: int | None, keep_last: int | None, keep_every: int | None
) -> list[int]:
    """Checkpoints to delete: all but the newest ``keep_last`` and the multiples of ``keep_every``.

    The one ``latest`` names is always kept; ``keep_last=None`` keeps everything.
    """
    if keep_last is None:
        return []
    complete = sorted(i for i in iterations if latest is None or i <= latest)
    newest = set(complete[-keep_last:])
    return [
        i for i in complete if i not in newest and i != latest and not (keep_every and i > 0 and i % keep_every == 0)
    ]


def prune_checkpoints(root: str | os.PathLike, keep_last: int | None, keep_every: int | None) -> list[int]:
    """Delete the checkpoints :func:`retention_victims` selects (rank 0, after the marker moved); returns them."""
    victims = retention_victims(checkpoint_iterations(root), latest_iteration(root), keep_last, keep_every)
    for iteration in victims:
        shutil.rmtree(checkpoint_path(root, iteration), ignore_errors=True)
        logger.info("retention: removed %s", checkpoint_path(root, iteration))
    return victims


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` and the directories themselves."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)


def write_latest_marker(root: str | os.PathLike, iteration: int) -> None:
    """Point the latest marker at ``iteration``: fsync the checkpoint, then write + fsync + rename the marker."""
    root = Path(root)
    _fsync_tree(checkpoint_path(root, iteration))
    marker = root / LATEST_FILE
    atomic_write_text(marker, f"{iteration}\n")
    fsync_path(root)


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory from either a root with a latest marker or an ``iter_*`` directory itself."""
    path = Path(path)
    iteration = latest_iteration(path)
    if iteration is not None:
        return checkpoint_path(path, iteration)
    if (path / "metadata.json").is_file() or (path / "common.pt").is_file():
        return path
    raise FileNotFoundError(f"{path}: no checkpoint found (no {LATEST_FILE} and not a checkpoint directory)")


def layout_signature() -> dict[str, int]:
    """The parallel layout of this job (RNG states are only restored into the same layout)."""
    return {
        "world": torch.distributed.get_world_size(),
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "ep": parallel_state.get_expert_model_parallel_world_size(),
        "cp": parallel_state.get_context_parallel_world_size(),
    }


def _rng_state() -> dict[str, Any]:
    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(state: dict[str, Any] | None) -> ShardedObject:
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return ShardedObject("rng_state", state, (world,), (rank,), replica_id=0)


def unwrap(chunk: Any) -> Any:
    """The ``GPTModel`` inside a DDP wrapper (checkpoints hold unwrapped names)."""
    while hasattr(chunk, "module") and not hasattr(chunk, "decoder"):
        chunk = chunk.module
    return chunk


def model_sharded_state_dict(model_chunks: list[Any]) -> dict[str, Any]:
    """``{"model": ...}`` or ``{"model0": ..., "model1": ...}`` (virtual pipeline) sharded state dicts."""
    if len(model_chunks) == 1:
        return {"model": unwrap(model_chunks[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(chunk).sharded_state_dict() for i, chunk in enumerate(model_chunks)}


def _test_save_pause(iteration: int) -> None:
    """The save-pause test fault (:data:`megatron_agentic.testing.faults.SAVE_PAUSE`); nothing when it is off."""
    seconds = faults.save_pause_seconds(iteration)
    if seconds is None:
        return
    logger.warning("%s: pausing %g s inside the save of iteration %d", faults.SAVE_PAUSE, seconds, iteration)
    time.sleep(seconds)


def save_strategy(fully_parallel: bool) -> Any:
    """megatron-core's default ``torch_dist`` save strategy; with ``fully_parallel`` the writing of replicated
    shards is spread over the data-parallel ranks (``FullyParallelSaveStrategyWrapper``)."""
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

    strategy = get_default_save_sharded_strategy()
    if fully_parallel:
        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        strategy = FullyParallelSaveStrategyWrapper(strategy, group)
    return strategy


def save_checkpoint(
    root: str | os.PathLike,
    iteration: int,
    model_chunks: list[Any],
    optimizer: Any,
    scheduler: Any,
    common: dict[str, Any],
    optimizer_format: str = "fully_reshardable",
    async_queue: Any | None = None,
    on_complete: Any | None = None,
) -> Path:
    """Save a full checkpoint at ``iteration`` and update the latest marker; returns its directory.

    The marker moves only after every rank finished writing and rank 0 fsynced the files, so a save killed
    at any point leaves the previous checkpoint as the latest one. ``on_complete`` runs on rank 0 after the
    marker moved (e.g. retention).

    With ``async_queue`` (a megatron-core ``AsyncCallsQueue``; CUDA only) the shards are written by background
    processes through dist_checkpointing's async path (fully parallel over data-parallel ranks) and training
    continues; the marker moves in the request's finalize step, when the caller's
    ``async_queue.maybe_finalize_async_calls`` sees every rank done.
    """
    target = checkpoint_path(root, iteration)
    rank = torch.distributed.get_rank()
    if rank == 0:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
    torch.distributed.barrier()
    state: dict[str, Any] = model_sharded_state_dict(model_chunks)
    state["optimizer"] = optimizer.sharded_state_dict(
        state, is_loading=False, metadata=optimizer_metadata(optimizer_format)
    )
    state["scheduler"] = scheduler.state_dict()
    state["rng_state"] = _rng_sharded_object(_rng_state())
    state["iteration"] = iteration
    state["layout"] = layout_signature()
    state["optimizer_format"] = optimizer_format
    state.update(common)

    def finalize() -> None:
        torch.distributed.barrier()
        if rank == 0:
            write_latest_marker(root, iteration)
            if on_complete is not None:
                on_complete()
        torch.distributed.barrier()
        logger.info("saved checkpoint %s", target)

    save_procs.start_results_queue()  # helper processes out of the job's signals (issue 25)
    if async_queue is not None:
        with save_procs.guarded_forks():
            request = dist_checkpointing.save(
                state, str(target), sharded_strategy=save_strategy(fully_parallel=True), async_sharded_save=True
            )
            request.add_finalize_fn(finalize)
            async_queue.schedule_async_request(request)
        logger.info("saving checkpoint %s in the background", target)
        return target
    with save_procs.guarded_forks():
        dist_checkpointing.save(state, str(target))
    _test_save_pause(iteration)
    finalize()
    return target


def read_common(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's common (non-tensor) entries: iteration, config, scheduler, layout, ... (cheap, no tensors)."""
    return dist_checkpointing.load_common_state_dict(str(ckpt_dir))


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    model_chunks: list[Any],
    optimizer: Any | None = None,
    scheduler: Any | None = None,
    load_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint directory into the model (and optimizer/scheduler/RNG when given).

    The model and optimizer may be in a different TP/PP/EP/DP layout than at save time
    (dist_checkpointing reshards); RNG states are restored only for the same layout. A checkpoint in the
    legacy key layout (before the TE layout, see ``models/qwen3_moe/checkpoint_keys.py``) is detected and mapped; module
    ``_extra_state`` objects an older checkpoint lacks are initialised (``layout.load_sharded``), nothing else.
    Returns the checkpoint's common (non-tensor) entries, e.g. ``iteration`` and ``tokens``.
    """
    ckpt_dir = str(ckpt_dir)
    common = dist_checkpointing.load_common_state_dict(ckpt_dir)
    layout = layout_signature()
    same_layout = common.get("layout") == layout
    state: dict[str, Any] = model_sharded_state_dict(model_chunks)
    if checkpoint_keys.detect_legacy_layout(ckpt_dir):  # written before the TE key layout: request the old names
        renamed = checkpoint_keys.request_legacy_keys(state)
        if torch.distributed.get_rank() == 0:
            checkpoint_keys.log_legacy_load(ckpt_dir, renamed)
    optimizer_format = None
    if optimizer is not None:
        optimizer_format = optimizer_format_for_load(common.get("optimizer_format"), common.get("layout"), layout)
        _prime_torch_adam_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(
            state, is_loading=True, metadata=optimizer_metadata(optimizer_format)
        )
    if load_rng and same_layout:
        state["rng_state"] = _rng_sharded_object(None)
    # Missing TE _extra_state objects (older checkpoints) are initialised; any other missing entry raises.
    loaded, _ = checkpoint_keys.load_sharded(state, ckpt_dir)
    if len(model_chunks) == 1:
        checkpoint_keys.load_module_state(unwrap(model_chunks[0]), loaded["model"])
    else:
        for i, chunk in enumerate(model_chunks):
            checkpoint_keys.load_module_state(unwrap(chunk), loaded[f"model{i}"])
    if optimizer is not None:
        _load_optimizer_state(optimizer, loaded["optimizer"], optimizer_format)
    if scheduler is not None and "scheduler" in common:
        scheduler.load_state_dict(common["scheduler"])
    if "rng_state" in state:
        _set_rng_state(loaded["rng_state"])
    logger.info("loaded checkpoint %s (same layout: %s)", ckpt_dir, same_layout)
    return {k: v for k, v in common.items() if not k.startswith("model") and k != "optimizer"}


def _prime_torch_adam_state(optimizer: Any) -> None:
    """Give every parameter of a fresh torch Adam a zero state (step 0, zero moments).

    Without Apex/TE, megatron-core's ``DistributedOptimizer.state_dict()`` reads the ``step`` of every
    parameter's torch-Adam state, which a fresh optimizer has not created yet; a zero state is exactly
    what Adam starts from, and loading the checkpoint overwrites it.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p.data)
                    st["exp_avg_sq"] = torch.zeros_like(p.data)


def _saved_step(loaded: Any) -> Any:
    """The optimizer step stored in a loaded optimizer state (param groups of any sub-optimizer)."""
    stack = [loaded]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            groups = item.get("param_groups")
            if isinstance(groups, list):
                for g in groups:
                    if isinstance(g, dict) and "step" in g:
                        return g["step"]
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return None


def _load_optimizer_state(optimizer: Any, loaded: Any, sharding_type: str = "fully_reshardable") -> None:
    """Load a (chained) distributed optimizer's state saved in any layout.

    The parameter state (fp32 params, Adam moments) is in megatron-core's ``sharding_type`` form and is
    loaded with ``load_parameter_state_from_<sharding_type>``. The non-tensor part (param
    groups) depends on the layout: with EP > 1 megatron-core chains a dense and an expert optimizer, with
    EP = 1 it builds one, so it is taken from the live optimizer with the checkpoint's step.

    torch Adam's per-parameter ``step`` is held aside while the parameter state is copied in: megatron-core
    0.16.1 copies every key of the live state but stores no per-parameter ``step`` (``KeyError: 'step'``
    with torch Adam, i.e. without Apex/TE), and it shares one ``step`` tensor between all parameters,
    which torch Adam would advance once per parameter per step.
    """
    subs = list(getattr(optimizer, "chained_optimizers", [optimizer]))
    step = _saved_step(loaded)
    for i, sub in enumerate(subs):
        piece = loaded if len(subs) == 1 else loaded[i]
        param_state = piece["param_state"]
        common = sub.state_dict()
        if step is not None:
            for group in common["optimizer"]["param_groups"]:
                group["step"] = step
        sub.load_state_dict(common)
        inner = sub.optimizer
        held = {p: st.pop("step") for p, st in inner.state.items() if "step" in st}
        try:
            with torch.no_grad():  # megatron-core 0.16.1's dp_reshardable loader copies into leaf params without it
                getattr(sub, f"load_parameter_state_from_{sharding_type}")(param_state)
        finally:
            for p, value in held.items():
                inner.state[p]["step"] = value.detach().clone()
