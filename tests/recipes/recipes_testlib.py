"""Multi-process helpers for the recipe tests: gloo process groups on CPU and megatron-core model builds."""

from __future__ import annotations

import json
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tests.support import zygote


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_parallel(tensor: int = 1, pipeline: int = 1, expert: int = 1, context: int = 1, seed: int = 1) -> None:
    """(Re)initialise megatron-core's parallel state and RNG tracker for a layout."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=tensor,
        pipeline_model_parallel_size=pipeline,
        expert_model_parallel_size=expert,
        context_parallel_size=context,
    )
    model_parallel_cuda_manual_seed(seed)


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    from megatron_agentic.platform import setup_platform

    setup_platform(rank)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        error = None
    except BaseException:  # noqa: BLE001 - reported to the parent
        result, error = None, traceback.format_exc()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"result": result, "error": error}))
    dist.destroy_process_group()


def run_spawned(world: int, fn: Callable[..., Any], *args: Any, out_dir: str) -> list[Any]:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks; returns each rank's JSON-able result."""
    port = free_port()
    zygote.spawn(_entry, (world, port, fn, args, out_dir), world)
    results = []
    for rank in range(world):
        data = json.loads(Path(out_dir, f"rank{rank}.json").read_text())
        if data["error"]:
            raise AssertionError(f"rank {rank} failed:\n{data['error']}")
        results.append(data["result"])
    return results


def model_sizes(rank: int, world: int, layouts: list[dict[str, int]], preset: str = "tiny-moe") -> list[dict[str, Any]]:
    """For each layout, build ``preset``'s local chunk with megatron-core and count its parameters."""
    from megatron.core import parallel_state as ps

    from megatron_agentic.config import config_from_dict
    from megatron_agentic.models.registry import build_model

    out = []
    for layout in layouts:
        init_parallel(**layout)
        cfg = config_from_dict(
            {
                "model": {"preset": preset, "attention_backend": "local"},
                "parallel": layout,
                "train": {"seq_length": 64, "micro_batch_size": 1, "global_batch_size": 2, "precision": "fp32"},
            }
        )
        first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        model = build_model(cfg, pre_process=first, post_process=last)
        expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
        dense = sum(p.numel() for n, p in model.named_parameters() if ".experts." not in n)
        out.append({"layout": layout, "first": first, "last": last, "dense": dense, "expert": expert})
    return out


def saved_activation_bytes(rank: int, world: int, seq_length: int, micro_batch: int) -> dict[str, float]:
    """Bytes the tiny-moe forward saves for backward (parameters excluded), measured with autograd hooks."""
    from megatron_agentic.config import config_from_dict
    from megatron_agentic.models.qwen3_moe.model import build_model

    init_parallel()
    cfg = config_from_dict(
        {
            "model": {"preset": "tiny-moe", "attention_backend": "local"},
            "train": {
                "seq_length": seq_length,
                "micro_batch_size": micro_batch,
                "global_batch_size": micro_batch,
                "precision": "fp32",
            },
        }
    )
    model = build_model(cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    tokens = torch.randint(0, 1000, (micro_batch, seq_length))
    position_ids = torch.arange(seq_length).expand(micro_batch, seq_length)
    mask = torch.triu(torch.ones(1, 1, seq_length, seq_length, dtype=torch.bool), diagonal=1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(tokens, position_ids, mask, labels=tokens)
    loss.float().mean().backward()
    return {"saved_bytes": float(sum(seen.values()))}
