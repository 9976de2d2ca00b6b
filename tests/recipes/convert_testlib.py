"""Spawned-worker helpers for the conversion tests: load converted checkpoints into real megatron-core models."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from megatron_agentic.models.qwen3_moe.checkpoint_keys import LAYER_KEYS_MAP as TE_KEYS_MAP
from megatron_agentic.models.qwen3_moe.checkpoint_keys import LEGACY_LAYER_KEYS_MAP as LEGACY_KEYS_MAP

LAYOUTS = ({"tensor": 2}, {"expert": 2}, {"pipeline": 2})


def set_keys_map(model: Any, keys_map: dict[str, str]) -> None:
    """Give every transformer layer of ``model`` the sharded-key map ``keys_map``."""
    for layer in model.decoder.layers:
        layer.submodules_config.sharded_state_dict_keys_map = dict(keys_map)


def _sharded_keys(model: Any) -> list[str]:
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    out = set()
    for item in nested_values(model.sharded_state_dict()):
        out.add(item.unique_key if isinstance(item, ShardedObject) else item.key)
    return sorted(out)


def load_in_layouts(
    rank: int, world: int, ckpt: str, hf_dir: str, tokens: list[list[int]], legacy_out: str
) -> dict[str, Any]:
    """Load ``ckpt`` into TP=2, EP=2 and PP=2 models (2 ranks); compare every local tensor with the HF weights.

    Returns per layout the mismatched tensor names, the full logits (TP/EP layouts) and the sharded keys the
    model requests. The EP=2 model is then saved with megatron-core's legacy key map to ``legacy_out``.
    """
    from megatron.core import dist_checkpointing, parallel_state
    from safetensors.torch import load_file

    from megatron_agentic.convert.hf_io import HFCheckpoint
    from megatron_agentic.convert.runtime import build_local_model, layer_numbers, tensor_state
    from megatron_agentic.models.qwen3_moe import hf_mapping as mapping
    from megatron_agentic.training.checkpoint import (
        LATEST_FILE,
        checkpoint_path,
        load_checkpoint,
        resolve_checkpoint_dir,
    )
    from tests.recipes.recipes_testlib import init_parallel

    arch = mapping.preset_from_hf_config(HFCheckpoint(hf_dir).config)
    full = mapping.hf_to_megatron(load_file(Path(hf_dir) / "model.safetensors"), arch)
    results: dict[str, Any] = {}
    for layout in LAYOUTS:
        tp, pp, ep = layout.get("tensor", 1), layout.get("pipeline", 1), layout.get("expert", 1)
        init_parallel(tensor=tp, pipeline=pp, expert=ep)
        model = build_local_model(arch, tp, pp, ep, "fp32")
        set_keys_map(model, TE_KEYS_MAP)
        load_checkpoint(resolve_checkpoint_dir(ckpt), [model], load_rng=False)
        local = tensor_state(model)
        expected = mapping.local_shard(
            full,
            list(local),
            layer_numbers(model),
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
            tp=tp,
            etp_rank=parallel_state.get_expert_tensor_parallel_rank(),
            etp=parallel_state.get_expert_tensor_parallel_world_size(),
            ep_rank=parallel_state.get_expert_model_parallel_rank(),
            num_local_experts=arch.num_experts // ep,
        )
        entry: dict[str, Any] = {
            "mismatched": [k for k in local if not torch.equal(local[k], expected[k])],
            "num_tensors": len(local),
            "keys": _sharded_keys(model),
            "logits": None,
        }
        if pp == 1:
            ids = torch.tensor(tokens)
            s = ids.shape[1]
            mask = torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool), diagonal=1)
            model.eval()
            with torch.no_grad():
                logits = model(ids, torch.arange(s).expand_as(ids), mask).float()
            if tp > 1:  # vocab-parallel output
                group = parallel_state.get_tensor_model_parallel_group()
                parts = [torch.empty_like(logits) for _ in range(tp)]
                torch.distributed.all_gather(parts, logits.contiguous(), group=group)
                logits = torch.cat(parts, dim=-1)
            entry["logits"] = logits.tolist()
        results["x".join(f"{k}{v}" for k, v in layout.items())] = entry
        if ep > 1:  # a checkpoint in the legacy layout, written by megatron-core itself
            set_keys_map(model, LEGACY_KEYS_MAP)
            target = checkpoint_path(legacy_out, 0)
            if rank == 0:
                target.mkdir(parents=True)
            torch.distributed.barrier()
            dist_checkpointing.save(
                {"model": model.sharded_state_dict(), "arch": dataclasses.asdict(arch)}, str(target)
            )
            torch.distributed.barrier()
            if rank == 0:
                (Path(legacy_out) / LATEST_FILE).write_text("0\n", encoding="utf-8")
        del model
    parallel_state.destroy_model_parallel()
    return results
