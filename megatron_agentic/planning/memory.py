"""Parameters, activations and memory per GPU of a parallel layout (megatron-core's sharding rules).

The model-specific parts (parameter breakdown, activation components and what selective recompute drops) come from
the architecture's model family (:func:`megatron_agentic.models.registry.family_of`).
"""

from __future__ import annotations

from megatron_agentic.models.family import Architecture, ParamBreakdown
from megatron_agentic.models.registry import family_of
from megatron_agentic.planning.layout import GIB, ParallelLayout


def activation_components(
    arch: Architecture,
    layout: ParallelLayout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    gemm_input_bytes: float | None = None,
) -> dict[str, float]:
    """Activation bytes one layer saves for backward for one micro-batch on one GPU, by component (the family's
    formula, e.g. :func:`megatron_agentic.models.qwen3_moe.formulas.activation_components`)."""
    return family_of(arch).activation_components(
        arch, layout, seq_length, micro_batch, act_bytes, local_attention, gemm_input_bytes
    )


def params_per_rank(
    arch: Architecture, layout: ParallelLayout, first: bool = True, last: bool = True
) -> dict[str, int]:
    """Parameters held by one GPU of a pipeline stage: ``dense`` (DP-sharded) and ``expert`` (EDP-sharded).

    ``first``/``last`` say whether the stage holds the embedding / the output layer and final norm.
    """
    b = family_of(arch).param_breakdown(arch)
    tp, etp = layout.tensor, layout.expert_tensor or layout.tensor
    layers = arch.num_layers // layout.pipeline
    dense = layers * (b.attention_per_layer // tp + b.mlp_per_layer // tp + b.replicated_per_layer)
    if first:
        dense += b.embedding // tp
    if last:
        dense += b.output_layer // tp + b.final_norm
    expert = layers * (b.num_experts // layout.expert) * (b.expert // etp)
    return {"dense": dense, "expert": expert}


def activation_bytes_per_layer(
    arch: Architecture,
    layout: ParallelLayout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    recompute_modules: list[str] | None = None,
    gemm_input_bytes: float | None = None,
) -> float:
    """Activation bytes one layer keeps for backward (selective recompute drops ``recompute_modules``)."""
    parts = activation_components(arch, layout, seq_length, micro_batch, act_bytes, local_attention, gemm_input_bytes)
    dropped = {c for m in recompute_modules or () for c in family_of(arch).selective_drops[m]}
    return sum(v for k, v in parts.items() if k not in dropped)


def estimate_memory(
    arch: Architecture,
    layout: ParallelLayout,
    *,
    seq_length: int,
    micro_batch: int,
    num_microbatches: int,
    precision: str,
    recompute: bool | str,
    distributed_optimizer: bool,
    local_attention: bool,
    overhead_gib: float,
    recompute_modules: list[str] | None = None,
    recompute_num_layers: int | None = None,
    recompute_method: str = "uniform",
    fp8: str | None = None,
    fp8_param_gather: bool = False,
    grad_bytes: int = 4,
) -> dict[str, float]:
    """Per-GPU memory in GiB by category for the most loaded pipeline stage (first or last).

    ``recompute``: ``none``/``full``/``selective`` (booleans: full / none). Full ``uniform`` keeps each layer's
    input; full ``block`` recomputes ``recompute_num_layers`` layers per stage and keeps the others whole.
    FP8 (Transformer Engine): GEMM weights get an FP8 copy and its transpose (2 B per parameter on top of the
    bf16 weights; with ``fp8_param_gather`` the FP8 copy replaces the bf16 weights), GEMM-only activations are
    saved in FP8 (1 B). ``grad_bytes``: 4 with fp32 gradient reduction, 2 without.
    """
    mode = {True: "full", False: "none"}.get(recompute, recompute)  # type: ignore[call-overload]
    param_bytes = 2 if precision == "bf16" else 4
    opt_bytes = 12 if precision == "bf16" else 8
    weight_bytes = float(param_bytes)
    if fp8 is not None:
        weight_bytes = 2.0 if fp8_param_gather else param_bytes + 2.0
    gemm_bytes = 1.0 if fp8 is not None else None
    pp = layout.pipeline
    modules = recompute_modules if mode == "selective" else None
    full_layer = activation_bytes_per_layer(
        arch, layout, seq_length, micro_batch, param_bytes, local_attention, None, gemm_bytes
    )
    per_layer = activation_bytes_per_layer(
        arch, layout, seq_length, micro_batch, param_bytes, local_attention, modules, gemm_bytes
    )
    layer_input = seq_length * micro_batch / layout.context * arch.hidden_size * param_bytes
    if layout.sequence_parallel:
        layer_input /= layout.tensor
    layers_per_stage = arch.num_layers // pp
    if pp == 1:
        inflight = 1.0
    elif layout.virtual_pipeline:
        inflight = arch.num_layers * (1 + (pp - 1) / (pp * layout.virtual_pipeline)) / layers_per_stage
    else:
        inflight = float(min(pp, num_microbatches))
    if mode == "full":
        recomputed = layers_per_stage
        if recompute_method == "block" and recompute_num_layers is not None:
            recomputed = min(recompute_num_layers, layers_per_stage)
        kept = (layers_per_stage - recomputed) * full_layer + recomputed * layer_input
        first_acts = inflight * kept + full_layer  # plus one layer's working set while recomputing
        last_acts = kept + full_layer
    else:
        working = full_layer - per_layer  # the recomputed modules of one layer, live during its backward
        first_acts = inflight * layers_per_stage * per_layer + working
        last_acts = layers_per_stage * per_layer + working
    tokens = seq_length * micro_batch / layout.context
    # logits in the training dtype; with bf16 the vocabulary-parallel cross entropy adds an fp32 copy
    logits = tokens * arch.vocab_size / layout.tensor * (param_bytes + (4 if param_bytes < 4 else 0))
    dense_shard = max(layout.data, 1) * layout.context if distributed_optimizer else 1
    expert_shard = max(layout.expert_data, 1) if distributed_optimizer else 1

    def stage(first: bool, last: bool, acts: float) -> dict[str, float]:
        p = params_per_rank(arch, layout, first=first, last=last)
        n = p["dense"] + p["expert"]
        return {
            "weights": n * weight_bytes / GIB,
            "gradients": n * grad_bytes / GIB,
            "optimizer": (p["dense"] * opt_bytes / dense_shard + p["expert"] * opt_bytes / expert_shard) / GIB,
            "activations": acts / GIB,
            "logits": (logits if last else 0.0) / GIB,
            "overhead": overhead_gib,
        }

    candidates = [stage(True, pp == 1, first_acts)]
    if pp > 1:
        candidates.append(stage(False, True, last_acts))
    worst = max(candidates, key=lambda m: sum(m.values()))
    worst["total"] = sum(worst.values())
    return worst


def param_breakdown(arch: Architecture) -> ParamBreakdown:
    """Per-component parameter counts of ``arch`` (its family's formula)."""
    return family_of(arch).param_breakdown(arch)
