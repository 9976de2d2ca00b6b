"""One recipe's plan: validate its layout on N x G GPUs and estimate memory, step time and GPU-hours."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from megatron_agentic.errors import ConfigError
from megatron_agentic.models.registry import family_of
from megatron_agentic.planning.layout import ParallelLayout
from megatron_agentic.planning.memory import estimate_memory, params_per_rank
from megatron_agentic.planning.time import ThroughputTable, flops_per_token, mfu_for, recompute_flops_per_token
from megatron_agentic.platform_info import Platform
from megatron_agentic.recipes import PlanAssumptions, load_recipe, plan_assumptions, training_config

if TYPE_CHECKING:
    from megatron_agentic.config import TrainConfig, TrainingConfig


@dataclasses.dataclass
class PlanResult:
    """Everything ``plan`` reports."""

    recipe: str
    """Recipe name or path."""
    nodes: int
    """Nodes planned for."""
    gpus_per_node: int
    """GPUs per node."""
    layout: ParallelLayout
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
    layout = ParallelLayout.of(par, world)
    precision = train.precision if train.precision != "auto" else "bf16"
    memory = memory_plan(cfg, layout, precision, grad_bytes, assume, errors, warnings)
    fits = memory["total"] <= assume.gpu_memory_gib
    breakdown = family_of(arch).param_breakdown(arch)
    tokens_per_step, iterations, train_tokens = schedule_plan(train, errors, warnings)
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
    mfu, mfu_low, mfu_high, mfu_source = mfu_for(assume, train, throughput)
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
        train_tokens=train_tokens,
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


def memory_plan(
    cfg: TrainingConfig,
    layout: ParallelLayout,
    precision: str,
    grad_bytes: int,
    assume: PlanAssumptions,
    errors: list[str],
    warnings: list[str],
) -> dict[str, float]:
    """:func:`~megatron_agentic.planning.memory.estimate_memory` of ``cfg`` on ``layout``; appends the pipeline-bubble
    warning and the does-not-fit error (with a recompute hint)."""
    train = cfg.train
    num_mb = max(train.global_batch_size // (train.micro_batch_size * max(layout.data, 1)), 1)
    if layout.pipeline > 1 and num_mb < layout.pipeline:
        warnings.append(f"{num_mb} micro-batches per step < PP={layout.pipeline}: pipeline bubbles dominate")
    memory = estimate_memory(
        cfg.model.architecture(),
        layout,
        seq_length=train.seq_length,
        micro_batch=train.micro_batch_size,
        num_microbatches=num_mb,
        precision=precision,
        recompute=cfg.model.recompute,
        distributed_optimizer=train.distributed_optimizer,
        local_attention=cfg.model.attention_backend == "local",
        overhead_gib=assume.overhead_gib,
        recompute_modules=cfg.model.recompute_modules,
        recompute_num_layers=cfg.model.recompute_num_layers,
        recompute_method=cfg.model.recompute_method,
        fp8=train.fp8,
        fp8_param_gather=train.fp8_param_gather,
        grad_bytes=grad_bytes,
    )
    if memory["total"] > assume.gpu_memory_gib:
        hint = {"none": "; try model.recompute=selective or full", "selective": "; try model.recompute=full"}.get(
            cfg.model.recompute, ""
        )
        errors.append(
            f"estimated {memory['total']:.1f} GiB per GPU exceeds {assume.gpu_memory_gib:g} GiB "
            f"(activations {memory['activations']:.1f}, logits {memory['logits']:.1f}){hint}; "
            "raise parallel.tensor/context/pipeline/expert or lower train.micro_batch_size"
        )
    return memory


def schedule_plan(train: TrainConfig, errors: list[str], warnings: list[str]) -> tuple[int, int, int]:
    """(tokens per step, iterations, token budget) of ``train``; appends the schedule's warnings and errors."""
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
    return tokens_per_step, iterations, int(train_tokens)


def attention_plan(cfg: Any, layout: ParallelLayout, lengths: str | None, warnings: list[str]) -> dict[str, Any]:
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
