"""``megatron-agentic convert hf-to-mcore --hf-dir HF --output CKPT [--tp N --pp N --ep N]``.

Reads a HF Qwen3-MoE checkpoint (safetensors) and writes a megatron-core ``dist_checkpointing``
checkpoint in the layout of ``megatron-agentic train`` (``CKPT/iter_0000000`` + the latest marker), so
it can be given as ``checkpoint.pretrained`` and loaded into any TP/PP/EP layout. The conversion runs
on ``tp * pp * ep`` CPU processes joined by gloo; each builds its model chunk, reads only the HF
tensors it holds, and megatron-core writes the sharded checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from megatron_agentic.convert.hf_io import HFCheckpoint
from megatron_agentic.convert.mapping import (
    ConversionError,
    local_shard,
    megatron_names,
    megatron_tensor,
    preset_from_hf_config,
)
from megatron_agentic.convert.runtime import build_local_model, init_layout, layer_numbers, run_on_ranks, tensor_state
from megatron_agentic.models.qwen3_moe.presets import ModelPreset

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class _LazyMegatron(Mapping):
    """Full megatron tensors computed on demand from a HF checkpoint."""

    def __init__(self, hf: HFCheckpoint, arch: ModelPreset) -> None:
        self.hf, self.arch = hf, arch
        self.names = set(megatron_names(arch))

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(name)
        return megatron_tensor(name, self.hf.get, self.arch)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)


def _worker(rank: int, world: int, hf_dir: str, output: str, tp: int, pp: int, ep: int, precision: str) -> None:
    from megatron.core import dist_checkpointing, parallel_state

    from megatron_agentic.training.checkpoint import LATEST_FILE, checkpoint_path

    hf = HFCheckpoint(hf_dir)
    arch = preset_from_hf_config(hf.config)
    init_layout(tp, pp, ep)
    model = build_local_model(arch, tp, pp, ep, precision)
    names = list(tensor_state(model))
    shard = local_shard(
        _LazyMegatron(hf, arch),
        names,
        layer_numbers(model),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        tp=tp,
        etp_rank=parallel_state.get_expert_tensor_parallel_rank(),
        etp=parallel_state.get_expert_tensor_parallel_world_size(),
        ep_rank=parallel_state.get_expert_model_parallel_rank(),
        num_local_experts=arch.num_experts // ep,
    )
    dtype = DTYPES[precision]
    model.load_state_dict({k: v.to(dtype) for k, v in shard.items()}, strict=True)
    target = checkpoint_path(output, 0)
    if rank == 0:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
    torch.distributed.barrier()
    state = {
        "model": model.sharded_state_dict(),
        "iteration": 0,
        "tokens": 0,
        "arch": dataclasses.asdict(arch),
        "converted_from": str(Path(hf_dir).resolve()),
    }
    dist_checkpointing.save(state, str(target))
    torch.distributed.barrier()
    if rank == 0:
        marker = Path(output) / LATEST_FILE
        tmp = marker.with_suffix(".tmp")
        tmp.write_text("0\n", encoding="utf-8")
        os.replace(tmp, marker)


def convert(hf_dir: str, output: str, tp: int = 1, pp: int = 1, ep: int = 1, precision: str = "bf16") -> Path:
    """Convert ``hf_dir`` to a megatron checkpoint at ``output`` saved from a TP/PP/EP layout; returns it.

    The layout is validated against the HF config before any process starts.
    """
    hf = HFCheckpoint(hf_dir)
    arch = preset_from_hf_config(hf.config)
    checks = [
        (arch.num_attention_heads % tp, f"num_attention_heads ({arch.num_attention_heads}) % --tp {tp}"),
        (arch.num_query_groups % tp, f"num_key_value_heads ({arch.num_query_groups}) % --tp {tp}"),
        (arch.num_layers % pp, f"num_hidden_layers ({arch.num_layers}) % --pp {pp}"),
        (arch.num_experts % ep, f"num_experts ({arch.num_experts}) % --ep {ep}"),
        (arch.vocab_size % tp, f"vocab_size ({arch.vocab_size}) % --tp {tp}"),
        (arch.moe_ffn_hidden_size % tp, f"moe_intermediate_size ({arch.moe_ffn_hidden_size}) % --tp {tp}"),
    ]
    for bad, what in checks:
        if bad:
            raise ConversionError(f"layout does not divide the model: {what} != 0")
    run_on_ranks(tp * pp * ep, _worker, hf_dir, output, tp, pp, ep, precision)
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="megatron-agentic convert hf-to-mcore", description=__doc__.split("\n")[0])
    parser.add_argument("--hf-dir", required=True, help="HF checkpoint directory (config.json + *.safetensors)")
    parser.add_argument("--output", required=True, help="megatron checkpoint directory to write")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the saving layout")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size of the saving layout")
    parser.add_argument("--ep", type=int, default=1, help="expert-parallel size of the saving layout")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="stored precision (default bf16)")
    args = parser.parse_args(argv)
    if min(args.tp, args.pp, args.ep) < 1:
        parser.error("--tp, --pp and --ep must be >= 1")
    try:
        path = convert(args.hf_dir, args.output, args.tp, args.pp, args.ep, args.dtype)
    except (ConversionError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (TP={args.tp} PP={args.pp} EP={args.ep}, {args.dtype}); loadable into any layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
