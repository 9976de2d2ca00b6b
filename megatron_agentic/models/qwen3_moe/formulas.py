"""Qwen3-MoE parameter and activation formulas (megatron-core's sharding of a Qwen3-MoE ``GPTModel``).

The planner (:mod:`megatron_agentic.planning`) turns these into memory and time estimates; its unit tests check the
parameter counts against transformers' model and megatron-core's modules, the activations against autograd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from megatron_agentic.models.family import ParamBreakdown

if TYPE_CHECKING:
    from megatron_agentic.models.qwen3_moe.presets import ModelPreset
    from megatron_agentic.planning.layout import ParallelLayout


def param_breakdown(arch: ModelPreset) -> ParamBreakdown:
    """Per-component parameter counts of ``arch`` (megatron-core local/TE spec, no biases)."""
    h, d = arch.hidden_size, arch.kv_channels
    qkv = (arch.num_attention_heads + 2 * arch.num_query_groups) * d * h
    proj = arch.num_attention_heads * d * h
    norms = 2 * h + (2 * d if arch.qk_layernorm else 0)
    return ParamBreakdown(
        embedding=arch.vocab_size * h,
        output_layer=arch.vocab_size * h if arch.untie_embeddings_and_output_weights else 0,
        final_norm=h,
        attention_per_layer=qkv + proj,
        replicated_per_layer=norms + arch.num_experts * h,
        expert=3 * h * arch.moe_ffn_hidden_size,
        num_layers=arch.num_layers,
        num_experts=arch.num_experts,
        topk=arch.moe_router_topk,
        router_per_layer=arch.num_experts * h,
    )


def activation_components(
    arch: ModelPreset,
    layout: ParallelLayout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    gemm_input_bytes: float | None = None,
) -> dict[str, float]:
    """Activation bytes one layer saves for backward for one micro-batch on one GPU, by component.

    ``layout`` is a :class:`megatron_agentic.planning.layout.ParallelLayout`. Components are what selective recompute
    can drop: ``layernorm`` (the two norm outputs), ``core_attn`` (softmax statistics, and the score matrices of the
    unfused ``local`` backend), ``moe_act`` (SwiGLU output, the fc2 input), ``router`` and ``experts`` (the rest of the
    MoE layer); ``residual`` and ``attention`` (Q/K/V through QK-norm and RoPE, attention output) stay.
    ``gemm_input_bytes`` is the size of tensors that only feed GEMMs (1 with FP8: Transformer Engine saves them
    quantised), default ``act_bytes``.
    """
    h, d, nq, nkv = arch.hidden_size, arch.kv_channels, arch.num_attention_heads, arch.num_query_groups
    g = act_bytes if gemm_input_bytes is None else gemm_input_bytes
    tp, etp = layout.tensor, layout.expert_tensor or layout.tensor
    tokens = seq_length * micro_batch / layout.context
    tok_sp = tokens / tp if layout.sequence_parallel else tokens
    head_tp = 1.0 / tp
    core_attn = tokens * head_tp * 4 * nq  # fp32 log-sum-exp per head
    if local_attention:
        kv_len = seq_length  # unfused attention: scores and probabilities over the whole (local) sequence
        core_attn += micro_batch * nq * head_tp * (seq_length / layout.context) * kv_len * 2 * act_bytes
    routed = tok_sp * arch.moe_router_topk * etp
    f = arch.moe_ffn_hidden_size / etp
    return {
        "residual": tok_sp * h * act_bytes,
        "layernorm": tok_sp * 2 * h * g,
        "attention": tokens * head_tp * d * (4 * nq + 4 * nkv) * act_bytes,
        "core_attn": core_attn,
        "router": tok_sp * 8 * arch.num_experts,
        "experts": routed * (h * g + h * act_bytes + 2 * f * act_bytes),
        "moe_act": routed * f * g,
    }


SELECTIVE_DROPS: dict[str, tuple[str, ...]] = {
    "layernorm": ("layernorm",),
    "core_attn": ("core_attn",),
    "moe_act": ("moe_act",),
    "moe": ("router", "experts", "moe_act"),
    "mlp": (),  # no dense MLP in an all-MoE model
    "shared_experts": (),  # Qwen3-30B-A3B has none
}
"""Activation components (of :func:`activation_components`) that each ``recompute_modules`` entry drops."""
