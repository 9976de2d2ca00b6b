"""Qwen3-MoE on megatron-core: presets, layer spec, model builder, checkpoint keys, HF mapping, formulas, defaults."""

from megatron_agentic.models.family import ModelFamily
from megatron_agentic.models.qwen3_moe import formulas
from megatron_agentic.models.qwen3_moe.perf_defaults import BRIDGE_H100
from megatron_agentic.models.qwen3_moe.presets import PRESETS, ModelPreset, get_preset

FAMILY = ModelFamily(
    name="qwen3_moe",
    package=__name__,
    presets=PRESETS,
    param_breakdown=formulas.param_breakdown,
    activation_components=formulas.activation_components,
    selective_drops=formulas.SELECTIVE_DROPS,
    h100_defaults=BRIDGE_H100,
)
"""The Qwen3-MoE family (registered in ``megatron_agentic/models/registry.py``)."""

__all__ = ["FAMILY", "PRESETS", "ModelPreset", "get_preset"]
