"""Qwen3-MoE on megatron-core: presets, layer spec, model builder and an SP-capable RMSNorm."""

from megatron_agentic.models.qwen3_moe.presets import PRESETS, ModelPreset, get_preset

__all__ = ["PRESETS", "ModelPreset", "get_preset"]
