"""Dense Qwen3 on megatron-core (no experts): presets, layer spec, model builder, formulas and defaults."""

from megatron_agentic.models.family import ModelFamily
from megatron_agentic.models.qwen3_dense import formulas
from megatron_agentic.models.qwen3_dense.presets import PRESETS, DensePreset

H100_DEFAULTS = {
    # No measured dense H100 recipe in this project yet: the non-MoE values of the Qwen3-MoE family's
    # (Megatron-Bridge H100, models/qwen3_moe/perf_defaults.py) with every MoE-only kernel off.
    "moe_grouped_gemm": False,
    "moe_permute_fusion": False,
    "moe_router_fusion": False,
    "overlap_moe_expert_parallel_comm": False,
    "cross_entropy_loss_fusion": True,
    "cross_entropy_fusion_impl": "te",
    "bias_activation_fusion": True,
    "apply_rope_fusion": True,
    "grad_reduce_in_fp32": False,
    "precision_aware_optimizer": True,
    "gradient_accumulation_fusion": True,
    "overlap_grad_reduce": True,
    "overlap_param_gather": True,
    "check_for_nan_in_grad": True,
    "manual_gc": True,
    "tp_comm_overlap": True,
}
"""Values of the ``auto`` performance fields on CUDA + Transformer Engine."""

FAMILY = ModelFamily(
    name="qwen3_dense",
    package=__name__,
    presets=PRESETS,
    param_breakdown=formulas.param_breakdown,
    activation_components=formulas.activation_components,
    selective_drops=formulas.SELECTIVE_DROPS,
    h100_defaults=H100_DEFAULTS,
)
"""The dense Qwen3 family (registered in ``megatron_agentic/models/registry.py``)."""

__all__ = ["FAMILY", "PRESETS", "DensePreset"]
