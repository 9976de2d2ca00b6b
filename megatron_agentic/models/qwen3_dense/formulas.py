"""Dense Qwen3 parameter and activation formulas (megatron-core's sharding of a dense ``GPTModel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from megatron_agentic.models.family import ParamBreakdown

if TYPE_CHECKING:
    from megatron_agentic.models.qwen3_dense.presets import DensePreset
    from megatron_agentic.planning.layout import ParallelLayout


def param_breakdown(arch: DensePreset) -> ParamBreakdown:
    """Per-component parameter counts of ``arch`` (megatron-core local/TE spec, no biases)."""
    h, d = arch.hidden_size, arch.kv_channels
    qkv = (arch.num_attention_heads + 2 * arch.num_query_groups) * d * h
    proj = arch.num_attention_heads * d * h
    return ParamBreakdown(
        embedding=arch.vocab_size * h,
        output_layer=arch.vocab_size * h if arch.untie_embeddings_and_output_weights else 0,
        final_norm=h,
        attention_per_layer=qkv + proj,
        replicated_per_layer=2 * h + (2 * d if arch.qk_layernorm else 0),
        expert=0,
        num_layers=arch.num_layers,
        num_experts=0,
        topk=0,
        mlp_per_layer=3 * h * arch.ffn_hidden_size,  # fc1 = [gate; up] (2 f x h), fc2 (h x f)
    )


def activation_components(
    arch: DensePreset,
    layout: ParallelLayout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    gemm_input_bytes: float | None = None,
) -> dict[str, float]:
    """Activation bytes one layer saves for backward for one micro-batch on one GPU, by component.

    As the Qwen3-MoE formula (``models/qwen3_moe/formulas.py``) with one TP-split SwiGLU MLP in place of the router
    and experts: ``mlp`` (fc1 input, fc1 output) and ``mlp_act`` (SwiGLU output, the fc2 input).
    """
    h, d, nq, nkv = arch.hidden_size, arch.kv_channels, arch.num_attention_heads, arch.num_query_groups
    g = act_bytes if gemm_input_bytes is None else gemm_input_bytes
    tp = layout.tensor
    tokens = seq_length * micro_batch / layout.context
    tok_sp = tokens / tp if layout.sequence_parallel else tokens
    head_tp = 1.0 / tp
    core_attn = tokens * head_tp * 4 * nq  # fp32 log-sum-exp per head
    if local_attention:
        core_attn += micro_batch * nq * head_tp * (seq_length / layout.context) * seq_length * 2 * act_bytes
    f = arch.ffn_hidden_size / tp
    return {
        "residual": tok_sp * h * act_bytes,
        "layernorm": tok_sp * 2 * h * g,
        "attention": tokens * head_tp * d * (4 * nq + 4 * nkv) * act_bytes,
        "core_attn": core_attn,
        "mlp": tokens * (h * g + 2 * f * act_bytes),
        "mlp_act": tokens * f * g,
    }


SELECTIVE_DROPS: dict[str, tuple[str, ...]] = {
    "layernorm": ("layernorm",),
    "core_attn": ("core_attn",),
    "moe_act": (),  # no experts
    "moe": (),
    "mlp": ("mlp", "mlp_act"),
    "shared_experts": (),
}
"""Activation components (of :func:`activation_components`) that each ``recompute_modules`` entry drops."""
