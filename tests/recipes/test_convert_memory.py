"""hf-to-mcore peak memory grows with the largest layer, not with the number of layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_agentic.convert.synthetic import hf_shapes, write_random_hf_checkpoint
from megatron_agentic.models.qwen3_moe.presets import ModelPreset

_MEASURE = """
import json, sys
import rich.progress, torch.distributed.checkpoint  # noqa: F401  (imports before the baseline)
import megatron_agentic.training.checkpoint  # noqa: F401
from megatron_agentic.convert import hf_to_mcore

def hwm_kb():  # peak RSS of this process image (ru_maxrss would include the parent's, inherited over fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = hwm_kb()
if sys.argv[3] == "convert":
    hf_to_mcore.convert(sys.argv[1], sys.argv[2], precision="fp32", progress=False)
else:  # control: what a converter holding the whole model holds
    from safetensors.torch import load_file
    from megatron_agentic.models.qwen3_moe import hf_mapping as mapping
    from megatron_agentic.convert.hf_io import HFCheckpoint
    arch = mapping.preset_from_hf_config(HFCheckpoint(sys.argv[1]).config)
    full = mapping.hf_to_megatron(load_file(sys.argv[1] + "/model.safetensors"), arch)
print(json.dumps({"growth_kb": hwm_kb() - base, "base_kb": base}))
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


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc (VmHWM)")
def test_peak_memory_does_not_grow_with_layer_count(tmp_path):
    """Peak RSS growth of a conversion (after imports) of 2 vs 8 layers: the 6 extra layers (~150 MB fp32)
    must add well under a quarter of their size (a model-building converter adds at least their size)."""
    growth = {}
    for layers, mode in ((2, "convert"), (8, "convert"), (8, "control")):
        hf = tmp_path / f"hf{layers}"
        if not hf.exists():
            write_random_hf_checkpoint(hf, _arch(layers), dtype=torch.float32, max_shard_bytes=2**40)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(hf), str(tmp_path / f"ckpt{layers}"), mode],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        growth[layers, mode] = json.loads(out.stdout.strip().splitlines()[-1])["growth_kb"] * 1024
    extra = _model_bytes(_arch(8)) - _model_bytes(_arch(2))
    assert extra > 140e6
    assert growth[8, "control"] > 0.75 * _model_bytes(_arch(8)), growth  # the measurement sees a held model
    assert growth[8, "convert"] - growth[2, "convert"] < 0.25 * extra, (growth, extra)
