"""Random HF Qwen3-MoE checkpoints of any shape (Hub key names), written layer by layer.

For conversion benchmarks and memory tests: e.g. the full-width Qwen3-30B-A3B cut to a few layers, without
downloading anything. Memory holds one layer at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from megatron_agentic.convert.hf_io import HFCheckpointWriter
from megatron_agentic.models.qwen3_moe.hf_mapping import hf_config_from_preset
from megatron_agentic.models.qwen3_moe.presets import ModelPreset


def hf_shapes(arch: ModelPreset) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a HF Qwen3-MoE checkpoint of ``arch``, in layer order."""
    h, d, f, e = arch.hidden_size, arch.kv_channels, arch.moe_ffn_hidden_size, arch.num_experts
    nq, ng = arch.num_attention_heads, arch.num_query_groups
    yield "model.embed_tokens.weight", (arch.vocab_size, h)
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (nq * d, h)
        yield p + "self_attn.k_proj.weight", (ng * d, h)
        yield p + "self_attn.v_proj.weight", (ng * d, h)
        yield p + "self_attn.o_proj.weight", (h, nq * d)
        yield p + "self_attn.q_norm.weight", (d,)
        yield p + "self_attn.k_norm.weight", (d,)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate.weight", (e, h)
        for x in range(e):
            yield f"{p}mlp.experts.{x}.gate_proj.weight", (f, h)
            yield f"{p}mlp.experts.{x}.up_proj.weight", (f, h)
            yield f"{p}mlp.experts.{x}.down_proj.weight", (h, f)
    yield "model.norm.weight", (h,)
    if arch.untie_embeddings_and_output_weights:
        yield "lm_head.weight", (arch.vocab_size, h)


def write_random_hf_checkpoint(
    directory: str | os.PathLike,
    arch: ModelPreset,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    max_shard_bytes: int = 2 * 1024**3,
) -> Path:
    """Write a random (normal, std 0.02; norms around 1) HF checkpoint of ``arch``; returns its directory."""
    generator = torch.Generator().manual_seed(seed)
    config = hf_config_from_preset(arch, "bfloat16" if dtype == torch.bfloat16 else "float32")
    with HFCheckpointWriter(directory, config, max_shard_bytes) as writer:
        for name, shape in hf_shapes(arch):
            t = torch.randn(shape, generator=generator).mul_(0.02)
            if name.endswith("norm.weight"):
                t.add_(1.0)
            writer.add(name, t.to(dtype))
    return Path(directory)
