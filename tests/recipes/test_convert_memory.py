"""hf-to-mcore peak memory grows with the largest layer, not with the number of layers."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from megatron_agentic.convert.synthetic import hf_shapes, write_random_hf_checkpoint
from megatron_agentic.models.qwen3_moe.presets import ModelPreset

_MEASURE = """
import json, resource, sys
import rich.progress, torch.distributed.checkpoint  # noqa: F401  (imports before the baseline)
import megatron_agentic.training.checkpoint  # noqa: F401
from megatron_agentic.convert import hf_to_mcore
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hf_to_mcore.convert(sys.argv[1], sys.argv[2], precision="fp32", progress=False)
print(json.dumps({"growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}))
"""


def _arch(layers: int) -> ModelPreset:
    return ModelPreset(
        name="mem",
        num_layers=layers,
        hidden_size=512,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=64,
        num_experts=16,
        moe_router_topk=2,
        moe_ffn_hidden_size=256,
        ffn_hidden_size=1024,
        vocab_size=1024,
        max_position_embeddings=256,
    )


def _model_bytes(arch: ModelPreset) -> int:
    return sum(torch.Size(shape).numel() * 4 for _, shape in hf_shapes(arch))


def test_peak_memory_does_not_grow_with_layer_count(tmp_path):
    """Peak RSS growth of a conversion (after imports) of 2 vs 8 layers: the 6 extra layers (~150 MB fp32)
    must add well under a quarter of their size (a model-building converter adds at least their size)."""
    growth = {}
    for layers in (2, 8):
        hf = write_random_hf_checkpoint(tmp_path / f"hf{layers}", _arch(layers), dtype=torch.float32)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(hf), str(tmp_path / f"ckpt{layers}")],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        growth[layers] = json.loads(out.stdout.strip().splitlines()[-1])["growth_kb"] * 1024
    extra = _model_bytes(_arch(8)) - _model_bytes(_arch(2))
    assert extra > 140e6
    assert growth[8] - growth[2] < 0.25 * extra, (growth, extra)
