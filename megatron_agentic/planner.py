"""``megatron-agentic plan``: validate a parallel layout and estimate memory, step time and GPU-hours.

The estimates follow megatron-core's sharding rules for a Qwen3-MoE ``GPTModel``:

* **Parameters per GPU.** Attention, embedding and output layers are split over tensor parallelism (TP);
  norms and the router are replicated; experts are split over expert parallelism (EP) and expert-tensor
  parallelism (ETP, megatron-core's default: ETP = TP); layers over pipeline stages (PP). The first stage
  holds the embedding, the last the output layer and final norm.
* **Weights, gradients, optimizer.** bf16 weights (2 B), fp32 gradient buffers (4 B), and with the
  distributed optimizer fp32 master weights + Adam moments (12 B) sharded over the data-parallel group
  (DP x CP for dense parameters, the expert-data-parallel group world / (ETP x EP x PP) for experts).
  fp32 training keeps no master copy (8 B of moments).
* **Activations** (bytes per token per layer, flash attention, sequence parallelism dividing the
  token-sharded tensors by TP, context parallelism dividing tokens by CP): norms and residuals
  ``3 h``, query/key/value through QK-norm and RoPE plus the attention output ``d (4 n_q + 4 n_kv)``,
  softmax statistics ``4 n_q`` (fp32), router logits/probabilities ``8 E`` (fp32), and ``k x ETP``
  routed copies of each token through the experts ``2 h + 3 f / ETP``. The unfused ``local`` attention
  backend adds the ``n_q s^2`` score and probability matrices. Full recompute keeps only each layer's input
  plus one layer's working set. With 1F1B the first stage holds ``PP`` micro-batches in flight
  (interleaved: ``L (1 + (PP-1)/(PP V))`` layers' worth), the last stage adds the logits
  (bf16 plus the fp32 copy of the vocabulary-parallel cross entropy).
* **Time.** Model FLOPs per token ``6 (N_active - N_embedding) + 6 L s n_q d`` (causal attention), at the
  recipe's assumed MFU of the GPU's dense bf16 peak. With ``data.document_attention`` the attended length
  (``sum piece^2 / tokens`` from the data's document-length histograms, :mod:`megatron_agentic.attention_cost`)
  replaces ``s``, and CP padding of every document adds tokens; the full-sequence figures are kept alongside.

These are estimates (typically within ~15% of measured peaks); the unit tests check the parameter
counts against megatron-core's own modules. ``plan`` rejects layouts whose estimate exceeds the GPU memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from megatron_agentic.config import ConfigError
from megatron_agentic.models.qwen3_moe.presets import ModelPreset
from megatron_agentic.platform import Platform
from megatron_agentic.recipes import (
    PlanAssumptions,
    RecipeError,
    apply_overrides,
    load_recipe,
    plan_assumptions,
    training_config,
)

GIB = float(1 << 30)


@dataclasses.dataclass
class Layout:
    """A resolved parallel layout over ``world`` GPUs."""

    world: int
    """Total GPUs."""
    tensor: int = 1
    """Tensor-parallel size (TP)."""
    pipeline: int = 1
    """Pipeline-parallel size (PP)."""
    expert: int = 1
    """Expert-parallel size (EP)."""
    expert_tensor: int | None = None
    """Expert-tensor-parallel size (ETP); None: equal to TP, as in megatron-core."""
    context: int = 1
    """Context-parallel size (CP)."""
    virtual_pipeline: int | None = None
    """Model chunks per pipeline rank (interleaved 1F1B)."""
    sequence_parallel: bool = False
    """Sequence parallelism (required when TP > 1 with MoE)."""

    def __post_init__(self) -> None:
        for name in ("world", "tensor", "pipeline", "expert", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"layout.{name} must be an integer >= 1, got {value!r}")
        if self.expert_tensor is None:
            self.expert_tensor = self.tensor

    @property
    def data(self) -> int:
        """Data-parallel size: world / (TP x PP x CP)."""
        return self.world // (self.tensor * self.pipeline * self.context)

    @property
    def expert_data(self) -> int:
        """Expert-data-parallel size: world / (ETP x EP x PP)."""
        return self.world // (self.expert_tensor * self.expert * self.pipeline)


@dataclasses.dataclass
class ParamBreakdown:
    """Parameter counts of one Qwen3-MoE model by component (full model, unsharded)."""

    embedding: int
    """Input embedding (V x h)."""
    output_layer: int
    """Output projection (V x h; 0 when tied)."""
    final_norm: int
    """Final RMSNorm."""
    attention_per_layer: int
    """QKV + output projection of one layer (TP-split)."""
    replicated_per_layer: int
    """Norms (input, pre-MLP, QK) and router of one layer (replicated over TP)."""
    expert: int
    """One expert (SwiGLU fc1 + fc2)."""
    num_layers: int
    """Transformer layers."""
    num_experts: int
    """Experts per layer."""
    topk: int
    """Experts per token."""

    @property
    def total(self) -> int:
        """All parameters."""
        per_layer = self.attention_per_layer + self.replicated_per_layer + self.num_experts * self.expert
        return self.embedding + self.output_layer + self.final_norm + self.num_layers * per_layer

    @property
    def active(self) -> int:
        """Parameters used per token (top-k experts), embeddings included."""
        per_layer = self.attention_per_layer + self.replicated_per_layer + self.topk * self.expert
        return self.embedding + self.output_layer + self.final_norm + self.num_layers * per_layer


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
    )


def params_per_rank(arch: ModelPreset, layout: Layout, first: bool = True, last: bool = True) -> dict[str, int]:
    """Parameters held by one GPU of a pipeline stage: ``dense`` (DP-sharded) and ``expert`` (EDP-sharded).

    ``first``/``last`` say whether the stage holds the embedding / the output layer and final norm.
    """
    b = param_breakdown(arch)
    tp, etp = layout.tensor, layout.expert_tensor or layout.tensor
    layers = arch.num_layers // layout.pipeline
    dense = layers * (b.attention_per_layer // tp + b.replicated_per_layer)
    if first:
        dense += b.embedding // tp
    if last:
        dense += b.output_layer // tp + b.final_norm
    expert = layers * (arch.num_experts // layout.expert) * (b.expert // etp)
    return {"dense": dense, "expert": expert}


def activation_components(
    arch: ModelPreset,
    layout: Layout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    gemm_input_bytes: float | None = None,
) -> dict[str, float]:
    """Activation bytes one layer saves for backward for one micro-batch on one GPU, by component.

    Components are what selective recompute can drop: ``layernorm`` (the two norm outputs), ``core_attn``
    (softmax statistics, and the score matrices of the unfused ``local`` backend), ``moe_act`` (SwiGLU output,
    the fc2 input), ``router`` and ``experts`` (the rest of the MoE layer); ``residual`` and ``attention``
    (Q/K/V through QK-norm and RoPE, attention output) stay. ``gemm_input_bytes`` is the size of tensors that
    only feed GEMMs (1 with FP8: Transformer Engine saves them quantised), default ``act_bytes``.
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


def activation_bytes_per_layer(
    arch: ModelPreset,
    layout: Layout,
    seq_length: int,
    micro_batch: int,
    act_bytes: int,
    local_attention: bool,
    recompute_modules: list[str] | None = None,
    gemm_input_bytes: float | None = None,
) -> float:
    """Activation bytes one layer keeps for backward (selective recompute drops ``recompute_modules``)."""
    parts = activation_components(arch, layout, seq_length, micro_batch, act_bytes, local_attention, gemm_input_bytes)
    dropped = {c for m in recompute_modules or () for c in SELECTIVE_DROPS[m]}
    return sum(v for k, v in parts.items() if k not in dropped)


def recompute_flops_per_token(
    arch: ModelPreset,
    seq_length: int,
    recompute: str,
    recompute_modules: list[str] | None = None,
    layer_fraction: float = 1.0,
    attended_length: float | None = None,
) -> float:
    """Extra FLOPs per token spent re-running forward passes in backward.

    ``full``: one more forward of the recomputed layers (``layer_fraction`` of them): a third of their
    training FLOPs. ``selective``: a forward of the recomputed modules (``core_attn``: the attention
    product; ``moe``: router and routed experts); norms and activations are element-wise (no matmul FLOPs).
    ``attended_length``: per-document attention's attended length (:mod:`megatron_agentic.attention_cost`),
    default ``seq_length`` (the whole sequence).
    """
    if recompute == "none":
        return 0.0
    b = param_breakdown(arch)
    attended = seq_length if attended_length is None else attended_length
    attention_fwd = 2 * arch.num_layers * attended * arch.num_attention_heads * arch.kv_channels
    if recompute == "full":
        per_layer_matmul = b.attention_per_layer + arch.num_experts * arch.hidden_size + b.topk * b.expert
        return layer_fraction * (2.0 * arch.num_layers * per_layer_matmul + attention_fwd)
    extra = 0.0
    modules = set(recompute_modules or ())
    if "core_attn" in modules:
        extra += attention_fwd
    if "moe" in modules:
        extra += 2.0 * arch.num_layers * (b.topk * b.expert + arch.num_experts * arch.hidden_size)
    return extra


def flops_per_token(arch: ModelPreset, seq_length: int, attended_length: float | None = None) -> float:
    """Model training FLOPs per token (forward + backward, causal attention, no recompute).

    ``attended_length`` replaces ``seq_length`` in the attention term for per-document attention
    (:mod:`megatron_agentic.attention_cost`); default: attention over the whole sequence.
    """
    b = param_breakdown(arch)
    matmul = b.active - b.embedding - b.final_norm
    attended = seq_length if attended_length is None else attended_length
    attention = 6 * arch.num_layers * attended * arch.num_attention_heads * arch.kv_channels
    return 6.0 * matmul + attention


@dataclasses.dataclass
class PlanResult:
    """Everything ``plan`` reports."""

    recipe: str
    """Recipe name or path."""
    nodes: int
    """Nodes planned for."""
    gpus_per_node: int
    """GPUs per node."""
    layout: Layout
    """Resolved parallel layout."""
    recompute: str
    """Activation recompute: ``none``, ``full`` or ``selective`` (``model.recompute``)."""
    recompute_modules: list[str] | None
    """With selective recompute: the recomputed modules (``model.recompute_modules``)."""
    expert_tensor_parallel: int
    """Expert-tensor-parallel size (``parallel.expert_tensor``)."""
    precision: str
    """Training precision (bf16 / fp32) and FP8 recipe, e.g. ``bf16`` or ``bf16+fp8:tensorwise``."""
    total_params: int
    """All parameters of the model."""
    active_params: int
    """Parameters used per token (top-k experts, embeddings included)."""
    params_per_gpu: int
    """Parameters held by one GPU of the first pipeline stage."""
    memory: dict[str, float]
    """Per-GPU memory estimate in GiB by category (and ``total``)."""
    memory_gib_per_gpu: float
    """Estimated peak memory of the most loaded GPU in GiB."""
    fits: bool
    """Whether the estimate is within the GPU memory."""
    iterations: int
    """Optimizer steps: ceil(train_tokens / tokens_per_step)."""
    tokens_per_step: int
    """global_batch_size * seq_length."""
    train_tokens: int
    """Token budget of the stage."""
    flops_per_token: float
    """Model training FLOPs per token."""
    recompute_flops_per_token: float
    """Extra FLOPs per token re-running forward passes (0 without recompute); step time includes them."""
    mfu_assumed: float
    """Model-FLOPs utilisation the time estimates use (fraction of ``peak_tflops``)."""
    mfu_source: str
    """Where ``mfu_assumed`` comes from: ``measured: FILE ...`` (``--throughput``) or ``assumption: ...``."""
    mfu_range: list[float]
    """[low, high] MFU bounds; the ``*_range`` fields are the estimates at these bounds."""
    step_time_s: float
    """Estimated seconds per optimizer step at ``mfu_assumed`` (model + recompute FLOPs)."""
    step_time_range_s: list[float]
    """Step time at [high MFU, low MFU]."""
    gpu_hours: float
    """Estimated GPU-hours for the whole budget."""
    gpu_hours_range: list[float]
    """GPU-hours at [high MFU, low MFU]."""
    wall_hours: float
    """Estimated wall-clock hours on ``nodes`` nodes."""
    wall_hours_range: list[float]
    """Wall-clock hours at [high MFU, low MFU]."""
    errors: list[str]
    """Problems that prevent the run (non-empty: ``plan`` exits 1)."""
    warnings: list[str]
    """Things worth knowing that do not prevent the run."""
    attention_mode: str = "sequence"
    """``document`` (``data.document_attention``: attention within each packed document) or ``sequence``."""
    attention_flops_per_token: float = 0.0
    """Attention training FLOPs per token in ``attention_mode`` (included in ``flops_per_token``)."""
    attention_flops_per_token_sequence: float = 0.0
    """Attention FLOPs per token if the whole sequence were attended (the ``sequence`` mode figure)."""
    attended_length: float = 0.0
    """Length that replaces ``seq_length`` in the attention cost (``seq_length`` in ``sequence`` mode)."""
    attention_lengths: str = ""
    """Where the document lengths come from (a ``data mix`` output), or why full-sequence attention is assumed."""
    padding_fraction: float = 0.0
    """Extra (padding) tokens per token: documents padded to a multiple of 2*CP; the step time includes them."""
    activations_gib: dict[str, float] = dataclasses.field(default_factory=dict)
    """Activation memory per GPU in GiB: ``sequence`` and, in ``document`` mode, ``document`` (padded tokens)."""
    sequence_estimate: dict[str, float] = dataclasses.field(default_factory=dict)
    """With document attention: ``flops_per_token``, ``step_time_s``, ``gpu_hours``, ``wall_hours`` at
    full-sequence attention (the before figures)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["layout"]["data"] = self.layout.data
        out["layout"]["expert_data"] = self.layout.expert_data
        return out


def estimate_memory(
    arch: ModelPreset,
    layout: Layout,
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


class ThroughputError(ValueError):
    """A problem with a throughput table, naming the file and field."""


THROUGHPUT_SCHEMA = "megatron-agentic/throughput/1"
"""``schema`` value of the throughput tables ``benchmarks/gpu_acceptance.py`` writes."""


@dataclasses.dataclass
class ThroughputTable:
    """A measured throughput table (``benchmarks/gpu_acceptance.py --out DIR`` writes ``DIR/throughput.json``)."""

    path: str
    """File it was read from."""
    gpu: str
    """GPU name the measurement ran on."""
    entries: list[dict[str, Any]]
    """Rows: ``name``, ``precision`` (``bf16`` or ``fp8:<recipe>``), ``seq_length``, ``num_layers``,
    ``num_experts``, ``tokens_per_s_per_gpu``, ``tflops_per_gpu`` (model FLOPs), ``peak_memory_gib``."""

    def best_for(self, fp8: str | None) -> dict[str, Any] | None:
        """The fastest row of the same precision family (FP8 rows for an FP8 recipe, else bf16 rows)."""
        rows = [e for e in self.entries if e["precision"].startswith("fp8") == (fp8 is not None)]
        return max(rows, key=lambda e: e["tflops_per_gpu"]) if rows else None


def load_throughput(path: str) -> ThroughputTable:
    """Read and check a throughput table; raises ThroughputError naming the file and field."""
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise ThroughputError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ThroughputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("schema") != THROUGHPUT_SCHEMA:
        raise ThroughputError(f"{path}: field 'schema' must be {THROUGHPUT_SCHEMA!r}")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ThroughputError(f"{path}: field 'entries' must be a non-empty list")
    for i, e in enumerate(entries):
        for key, kind in (("name", str), ("precision", str), ("seq_length", int), ("tflops_per_gpu", (int, float))):
            if not isinstance(e, dict) or not isinstance(e.get(key), kind):
                raise ThroughputError(
                    f"{path}: entries[{i}].{key} missing or not {getattr(kind, '__name__', 'number')}"
                )
        if e["tflops_per_gpu"] <= 0:
            raise ThroughputError(f"{path}: entries[{i}].tflops_per_gpu must be > 0")
    return ThroughputTable(path=str(path), gpu=str(data.get("gpu", "unknown GPU")), entries=entries)


MEASURED_DISCOUNT = 0.7
"""Low end of the MFU range from a measurement, as a fraction of it: the acceptance run measures a cut model
(2-4 layers, 16-32 experts) on one node; the full model on many nodes adds inter-node expert all-to-all and
data-parallel traffic."""


def _mfu(assume: PlanAssumptions, train: Any, table: ThroughputTable | None) -> tuple[float, float, float, str]:
    """(mfu, low, high, source) from a measured table when it has a matching row, else the recipe's assumption."""
    row = table.best_for(train.fp8) if table is not None else None
    if row is not None:
        mfu = min(float(row["tflops_per_gpu"]) / assume.peak_tflops, 1.0)
        source = (
            f"measured: {table.path} row {row['name']!r} ({table.gpu}, {row['tflops_per_gpu']:.0f} TFLOP/s/GPU "
            f"model FLOPs, seq {row['seq_length']}, {row.get('num_layers', '?')} layers, "
            f"{row.get('num_experts', '?')} experts) / plan.peak_tflops {assume.peak_tflops:g}; low end "
            f"x{MEASURED_DISCOUNT} for the full model across nodes"
        )
        return mfu, mfu * MEASURED_DISCOUNT, mfu, source
    note = f" (no {'FP8' if train.fp8 else 'bf16'} row in {table.path})" if table is not None else ""
    return assume.mfu, assume.mfu_low, assume.mfu_high, f"assumption: {assume.mfu_source}{note}"


PLAN_PLATFORM = Platform("cuda", "nccl", True, False)
"""The platform plans are made for: CUDA GPUs with Transformer Engine (the H100 image); its effective settings
(:func:`megatron_agentic.perf.resolve_settings`) decide FP8, gradient-reduction dtype and recompute."""


def make_plan(
    recipe_name: str,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    overrides: list[str] | None = None,
    throughput: ThroughputTable | None = None,
    lengths: str | None = None,
) -> PlanResult:
    """Validate the recipe's layout on ``nodes`` x ``gpus_per_node`` GPUs and estimate memory and time.

    ``throughput``: a measured table (``benchmarks/gpu_acceptance.py``); its MFU replaces the recipe's assumption.
    ``lengths``: a ``data mix`` output whose document-length histograms price per-document attention (default: the
    recipe's ``data.blend_file`` when it exists).
    """
    return plan_recipe(load_recipe(recipe_name, overrides), recipe_name, nodes, gpus_per_node, throughput, lengths)


def plan_recipe(
    recipe: dict[str, Any],
    recipe_name: str,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    throughput: ThroughputTable | None = None,
    lengths: str | None = None,
) -> PlanResult:
    """:func:`make_plan` for an already resolved recipe dict."""
    assume: PlanAssumptions = plan_assumptions(recipe)
    nodes = nodes or assume.nodes
    gpus_per_node = gpus_per_node or assume.gpus_per_node
    cfg = training_config(recipe, source=recipe_name)
    arch, par, train = cfg.model.architecture(), cfg.parallel, cfg.train
    world = nodes * gpus_per_node
    errors: list[str] = []
    warnings: list[str] = []
    try:
        cfg.validate(world, PLAN_PLATFORM)
    except ValueError as exc:
        errors.append(str(exc))
    try:
        settings = cfg.effective_settings(PLAN_PLATFORM)
        grad_bytes = 4 if settings.ddp["grad_reduce_in_fp32"] else 2
    except ConfigError as exc:
        errors.append(str(exc))
        grad_bytes = 4
    layout = Layout(
        world=world,
        tensor=par.tensor,
        pipeline=par.pipeline,
        expert=par.expert,
        expert_tensor=par.expert_tensor,
        context=par.context,
        virtual_pipeline=par.virtual_pipeline,
        sequence_parallel=par.use_sequence_parallel,
    )
    precision = train.precision if train.precision != "auto" else "bf16"
    dp = max(layout.data, 1)
    num_mb = max(train.global_batch_size // (train.micro_batch_size * dp), 1)
    if layout.pipeline > 1 and num_mb < layout.pipeline:
        warnings.append(f"{num_mb} micro-batches per step < PP={layout.pipeline}: pipeline bubbles dominate")
    local_attention = cfg.model.attention_backend == "local"
    memory = estimate_memory(
        arch,
        layout,
        seq_length=train.seq_length,
        micro_batch=train.micro_batch_size,
        num_microbatches=num_mb,
        precision=precision,
        recompute=cfg.model.recompute,
        distributed_optimizer=train.distributed_optimizer,
        local_attention=local_attention,
        overhead_gib=assume.overhead_gib,
        recompute_modules=cfg.model.recompute_modules,
        recompute_num_layers=cfg.model.recompute_num_layers,
        recompute_method=cfg.model.recompute_method,
        fp8=train.fp8,
        fp8_param_gather=train.fp8_param_gather,
        grad_bytes=grad_bytes,
    )
    fits = memory["total"] <= assume.gpu_memory_gib
    if not fits:
        hint = {"none": "; try model.recompute=selective or full", "selective": "; try model.recompute=full"}.get(
            cfg.model.recompute, ""
        )
        errors.append(
            f"estimated {memory['total']:.1f} GiB per GPU exceeds {assume.gpu_memory_gib:g} GiB "
            f"(activations {memory['activations']:.1f}, logits {memory['logits']:.1f}){hint}; "
            "raise parallel.tensor/context/pipeline/expert or lower train.micro_batch_size"
        )
    breakdown = param_breakdown(arch)
    tokens_per_step = train.global_batch_size * train.seq_length
    iterations = train.total_iters()
    train_tokens = train.train_tokens if train.train_tokens is not None else iterations * tokens_per_step
    if train.train_tokens is not None and train.train_tokens % tokens_per_step:
        warnings.append(
            f"train_tokens {train.train_tokens:,} is not a multiple of {tokens_per_step:,} tokens per step: "
            f"{iterations:,} iterations train {iterations * tokens_per_step:,} tokens"
        )
    if train.lr_decay_iters is not None and train.lr_decay_iters > iterations:
        warnings.append(f"train.lr_decay_iters ({train.lr_decay_iters}) > iterations ({iterations})")
    if train.lr_warmup_iters >= max(iterations, 1):
        errors.append(f"train.lr_warmup_iters ({train.lr_warmup_iters}) >= iterations ({iterations})")
    attn = attention_plan(cfg, layout, lengths, warnings)
    attended = attn["attended_length"] if attn["mode"] == "document" else None
    fpt = flops_per_token(arch, train.seq_length, attended)
    layers_per_stage = arch.num_layers // max(layout.pipeline, 1)
    fraction = 1.0
    if cfg.model.recompute == "full" and cfg.model.recompute_method == "block":
        fraction = min(cfg.model.recompute_num_layers, layers_per_stage) / layers_per_stage
    rfpt = recompute_flops_per_token(
        arch, train.seq_length, cfg.model.recompute, cfg.model.recompute_modules, fraction, attended
    )
    mfu, mfu_low, mfu_high, mfu_source = _mfu(assume, train, throughput)
    pad = attn["padding_fraction"]

    def step_time_at(u: float, flops: float = fpt + rfpt, padding: float = pad) -> float:
        return tokens_per_step * (1.0 + padding) * flops / (world * assume.peak_tflops * 1e12 * u)

    sequence_estimate: dict[str, float] = {}
    activations = {"sequence": round(memory["activations"], 3)}
    if attn["mode"] == "document":
        seq_flops = flops_per_token(arch, train.seq_length)
        seq_rflops = recompute_flops_per_token(
            arch, train.seq_length, cfg.model.recompute, cfg.model.recompute_modules, fraction
        )
        seq_step = step_time_at(mfu, seq_flops + seq_rflops, 0.0)
        sequence_estimate = {
            "flops_per_token": seq_flops,
            "recompute_flops_per_token": seq_rflops,
            "step_time_s": seq_step,
            "gpu_hours": iterations * seq_step * world / 3600.0,
            "wall_hours": iterations * seq_step / 3600.0,
        }
        # fused (flash / TE) attention keeps O(tokens) activations either way; padding adds tokens
        activations["document"] = round(memory["activations"] * (1.0 + pad), 3)
    step_time = step_time_at(mfu)
    steps = [step_time_at(mfu_high), step_time_at(mfu_low)]
    gpu_hours = iterations * step_time * world / 3600.0
    per_rank = params_per_rank(arch, layout, first=True, last=layout.pipeline == 1)
    return PlanResult(
        recipe=recipe_name,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        layout=layout,
        recompute=cfg.model.recompute,
        recompute_modules=list(cfg.model.recompute_modules) if cfg.model.recompute == "selective" else None,
        expert_tensor_parallel=par.expert_tensor,
        precision=precision + (f"+fp8:{train.fp8}" if train.fp8 else ""),
        total_params=breakdown.total,
        active_params=breakdown.active,
        params_per_gpu=per_rank["dense"] + per_rank["expert"],
        memory={k: round(v, 3) for k, v in memory.items()},
        memory_gib_per_gpu=round(memory["total"], 3),
        fits=fits,
        iterations=iterations,
        tokens_per_step=tokens_per_step,
        train_tokens=int(train_tokens),
        flops_per_token=fpt,
        recompute_flops_per_token=rfpt,
        mfu_assumed=mfu,
        mfu_source=mfu_source,
        mfu_range=[mfu_low, mfu_high],
        step_time_s=step_time,
        step_time_range_s=steps,
        gpu_hours=gpu_hours,
        gpu_hours_range=[iterations * t * world / 3600.0 for t in steps],
        wall_hours=iterations * step_time / 3600.0,
        wall_hours_range=[iterations * t / 3600.0 for t in steps],
        errors=errors,
        warnings=warnings,
        attention_mode=attn["mode"],
        attention_flops_per_token=attn["flops"],
        attention_flops_per_token_sequence=attn["flops_sequence"],
        attended_length=attn["attended_length"],
        attention_lengths=attn["source"],
        padding_fraction=pad,
        activations_gib=activations,
        sequence_estimate=sequence_estimate,
    )


def attention_plan(cfg: Any, layout: Layout, lengths: str | None, warnings: list[str]) -> dict[str, Any]:
    """Attention mode, attended length, FLOPs per token and padding of a run, priced by the data's document lengths.

    ``sequence`` mode (``data.document_attention`` off) attends the whole sequence. ``document`` mode reads the
    length histograms of ``lengths`` (else ``data.blend_file``; both ``data mix`` outputs); without one it assumes
    full-sequence attention (an upper bound) and adds a warning.
    """
    from megatron_agentic.attention_cost import (
        attention_flops_per_token,
        blend_profile,
        load_blend_histograms,
        padding_fraction,
    )

    arch, s = cfg.model.architecture(), cfg.train.seq_length
    full = attention_flops_per_token(arch.num_layers, arch.num_attention_heads, arch.kv_channels, s)
    out = {"mode": "sequence", "attended_length": float(s), "flops": full, "flops_sequence": full,
           "padding_fraction": 0.0, "source": "whole sequence (data.document_attention off)"}  # fmt: skip
    if not cfg.data.document_attention:
        return out
    out["mode"] = "document"
    path = lengths or cfg.data.blend_file
    if path is None or not Path(path).is_file():
        why = f"{path} does not exist" if path is not None else "no data.blend_file"
        out["source"] = f"none ({why}): full-sequence attention assumed (upper bound)"
        warnings.append(
            f"data.document_attention: no document-length histogram ({why}); attention priced for the whole "
            "sequence (an upper bound): run `megatron-agentic data mix` or pass --lengths BLEND.json"
        )
        return out
    try:
        profile = blend_profile(load_blend_histograms(path), s)
    except ValueError as exc:
        warnings.append(f"data.document_attention: {exc}; attention priced for the whole sequence")
        out["source"] = f"none ({exc})"
        return out
    out.update(
        attended_length=profile.attended_length,
        flops=attention_flops_per_token(
            arch.num_layers, arch.num_attention_heads, arch.kv_channels, profile.attended_length
        ),
        padding_fraction=padding_fraction(profile, layout.context),
        source=f"{path} (token-weighted mean document {profile.mean_document:,.0f} tokens)",
    )
    return out


SEARCH_SPACE: dict[str, tuple[int, ...]] = {
    "tensor": (1, 2, 4, 8),
    "context": (1, 2, 4, 8, 16, 32),
    "pipeline": (1, 2, 4, 8),
    "expert": (1, 2, 4, 8, 16, 32, 64),
}
"""Sizes ``plan --search`` tries for each parallel dimension."""


def search_layouts(
    recipe_name: str,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    overrides: list[str] | None = None,
    top: int = 10,
    throughput: ThroughputTable | None = None,
    lengths: str | None = None,
) -> list[PlanResult]:
    """Layouts of the recipe that pass validation and fit in memory, best first (heuristic ranking).

    Tries every combination of :data:`SEARCH_SPACE` (TP within a node) with no, selective (the recipe's
    ``model.recompute_modules``) and full recompute. Ranking: no recompute first, then selective (cheap
    element-wise recompute), then full (a third more compute), then at least 10% memory headroom, then the
    smallest TP x CP x PP (least communication on the critical path), then the smallest EP, then the lowest
    memory. The step-time model does not distinguish layouts, so this ranks by what usually matters, not by a
    simulated step time.
    """
    base = load_recipe(recipe_name, overrides)
    gpn = gpus_per_node or plan_assumptions(base).gpus_per_node
    limit = plan_assumptions(base).gpu_memory_gib
    found = []
    order = {"none": 0, "selective": 1, "full": 2}
    for tp, cp, pp, ep, recompute in itertools.product(
        *(SEARCH_SPACE[k] for k in ("tensor", "context", "pipeline", "expert")), tuple(order)
    ):
        if tp > gpn:
            continue
        candidate = apply_overrides(
            base,
            [
                f"parallel.tensor={tp}",
                f"parallel.context={cp}",
                f"parallel.pipeline={pp}",
                f"parallel.expert={ep}",
                f"model.recompute={recompute}",
                "parallel.virtual_pipeline=null",
            ],
        )
        try:
            result = plan_recipe(candidate, recipe_name, nodes, gpn, throughput, lengths)
        except RecipeError:
            continue
        if not result.errors:
            tight = result.memory_gib_per_gpu > 0.9 * limit
            found.append((order[recompute], tight, tp * cp * pp, ep, result.memory_gib_per_gpu, result))
    found.sort(key=lambda item: item[:5])
    return [item[-1] for item in found[:top]]


def render_table(result: PlanResult) -> None:
    """Print the plan as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lay = result.layout
    table = Table(title=f"plan: {result.recipe} on {result.nodes} x {result.gpus_per_node} GPUs", show_header=False)
    table.add_column("item")
    table.add_column("value", justify="right")
    rows = [
        (
            "layout",
            f"TP={lay.tensor} PP={lay.pipeline} CP={lay.context} EP={lay.expert} ETP={lay.expert_tensor} "
            f"DP={lay.data} EDP={lay.expert_data} VPP={lay.virtual_pipeline or '-'} SP={lay.sequence_parallel}",
        ),
        ("total / active params", f"{result.total_params / 1e9:.2f}B / {result.active_params / 1e9:.2f}B"),
        ("params per GPU", f"{result.params_per_gpu / 1e9:.3f}B"),
    ]
    rows += [(f"memory: {k}", f"{v:.2f} GiB") for k, v in result.memory.items() if k != "total"]
    rows += [
        ("memory per GPU", f"{result.memory_gib_per_gpu:.2f} GiB ({'fits' if result.fits else 'DOES NOT FIT'})"),
        ("tokens per step", f"{result.tokens_per_step:,}"),
        ("iterations", f"{result.iterations:,} = {result.train_tokens:,} tokens / {result.tokens_per_step:,}"),
        ("model TFLOP per token", f"{result.flops_per_token / 1e12:.4f}"),
        (
            f"attention ({result.attention_mode})",
            f"{result.attention_flops_per_token / 1e12:.4f} TFLOP/token (whole sequence "
            f"{result.attention_flops_per_token_sequence / 1e12:.4f}); attended length {result.attended_length:,.0f}",
        ),
        ("document lengths", result.attention_lengths),
        ("recompute", result.recompute + (f" {result.recompute_modules}" if result.recompute_modules else "")),
        ("precision", result.precision),
        ("MFU assumed", f"{result.mfu_assumed:.3f} (range {result.mfu_range[0]:.3f}-{result.mfu_range[1]:.3f})"),
        ("MFU source", result.mfu_source),
        (
            "step time (est.)",
            f"{result.step_time_s:.2f} s ({result.step_time_range_s[0]:.2f}-{result.step_time_range_s[1]:.2f})",
        ),
        (
            "GPU-hours / wall-clock",
            f"{result.gpu_hours:,.0f} / {result.wall_hours:,.1f} h "
            f"(wall {result.wall_hours_range[0]:,.1f}-{result.wall_hours_range[1]:,.1f} h)",
        ),
    ]
    est = result.sequence_estimate
    if est:
        rows += [
            ("padding (CP)", f"{result.padding_fraction:.2%} extra tokens"),
            (
                "activations seq / doc",
                f"{result.activations_gib['sequence']:.2f} / {result.activations_gib['document']:.2f} GiB",
            ),
            (
                "whole-sequence attention",
                f"{est['flops_per_token'] / 1e12:.4f} TFLOP/token, step {est['step_time_s']:.2f} s, "
                f"{est['gpu_hours']:,.0f} GPU-h",
            ),
        ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    for e in result.errors:
        console.print(f"[red]error:[/] {e}")


def render_search(results: list[PlanResult]) -> None:
    """Print the layouts found by :func:`search_layouts`."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not results:
        console.print("[red]no layout fits[/]: raise the node count or lower train.micro_batch_size")
        return
    first = results[0]
    table = Table(title=f"layouts for {first.recipe} on {first.nodes} x {first.gpus_per_node} GPUs (best first)")
    for col in ("TP", "CP", "PP", "EP", "DP", "recompute", "GiB/GPU", "step s"):
        table.add_column(col, justify="right")
    for r in results:
        lay = r.layout
        recompute = r.recompute if r.recompute != "none" else "-"
        table.add_row(
            str(lay.tensor),
            str(lay.context),
            str(lay.pipeline),
            str(lay.expert),
            str(lay.data),
            recompute,
            f"{r.memory_gib_per_gpu:.1f}",
            f"{r.step_time_s:.2f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """``megatron-agentic plan --recipe NAME --nodes N [--gpus-per-node 8] [--json] [--set k=v]``."""
    from megatron_agentic.recipes import list_recipes

    parser = argparse.ArgumentParser(
        prog="megatron-agentic plan", description="Validate a recipe's parallel layout and estimate memory/time."
    )
    parser.add_argument("--recipe", required=True, help=f"recipe name ({', '.join(list_recipes())}) or YAML path")
    parser.add_argument("--nodes", type=int, default=None, help="number of nodes (default: the recipe's plan.nodes)")
    parser.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: plan.gpus_per_node)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--throughput", metavar="FILE", help="measured throughput table (benchmarks/gpu_acceptance.py) for the MFU"
    )
    parser.add_argument(
        "--lengths",
        metavar="BLEND.json",
        help="`data mix` output whose document-length histograms price per-document attention "
        "(default: the recipe's data.blend_file)",
    )
    parser.add_argument("--search", action="store_true", help="list the layouts that fit on these nodes, best first")
    parser.add_argument("--top", type=int, default=10, help="with --search: how many layouts to list")
    args = parser.parse_args(argv)
    if (args.nodes is not None and args.nodes < 1) or (args.gpus_per_node is not None and args.gpus_per_node < 1):
        parser.error("--nodes and --gpus-per-node must be >= 1")
    try:
        table = load_throughput(args.throughput) if args.throughput else None
    except ThroughputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.search:
        try:
            results = search_layouts(
                args.recipe, args.nodes, args.gpus_per_node, args.overrides, args.top, table, args.lengths
            )
        except RecipeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
        else:
            render_search(results)
        return 0 if results else 1
    try:
        result = make_plan(args.recipe, args.nodes, args.gpus_per_node, args.overrides, table, args.lengths)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render_table(result)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
