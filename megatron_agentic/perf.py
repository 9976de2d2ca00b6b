"""The one decision function: what megatron-core is given, as a pure function of (platform, config).

:func:`resolve_settings` turns the typed training config (``auto`` defaults included) and a
:class:`~megatron_agentic.platform.Platform` into :class:`EffectiveSettings`: layer spec (TE or local),
attention backend, precision, FP8, token dispatcher, grouped GEMM, fusions, recompute, DDP overlap and
optimizer precision. It refuses invalid combinations with a one-line :class:`ConfigError` naming the fields,
before any process group starts. Everything that builds the model, DDP and optimizer reads the result, and
``train`` / ``doctor`` print it, so what an H100 run will use is decided (and unit-tested) on any machine.

``auto`` means: the model family's H100 value (``ModelFamily.h100_defaults``; for Qwen3-MoE NVIDIA Megatron-Bridge's
H100 Qwen3-30B-A3B recipes, ``models/qwen3_moe/perf_defaults.py``) when the platform has the parts (CUDA + Transformer
Engine), off on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from megatron_agentic.errors import ConfigError
from megatron_agentic.models.registry import family_of

if TYPE_CHECKING:
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.platform import Platform


# -- performance surface (issue 13) ---------------------------------------------------------------------------

AUTO_BOOL = ("auto", True, False)


@dataclasses.dataclass
class PerfConfig:
    """The ``perf`` config section: fusions, overlaps and optimizer precision. ``auto``: the model family's H100 value
    (Qwen3-MoE: Megatron-Bridge's H100 Qwen3-30B-A3B recipe) when the platform has CUDA + Transformer Engine, off on
    CPU (decided by :func:`resolve_settings`)."""

    moe_grouped_gemm: bool | str = "auto"
    """Grouped-GEMM experts (``moe_grouped_gemm``, TE ``TEGroupedMLP``); needs TE."""
    moe_permute_fusion: bool | str = "auto"
    """Fused token permutation (``moe_permute_fusion``); needs TE. ``auto`` keeps it off: Megatron-Bridge's Qwen3-30B-A3B
    H100 smoke runs on the PyTorch 25.11 image turned it off (TE's fused permutation failed there)."""
    moe_router_fusion: bool | str = "auto"
    """Fused router top-k / softmax / aux-loss (``moe_router_fusion``); needs TE."""
    cross_entropy_loss_fusion: bool | str = "auto"
    """Fused vocabulary-parallel cross entropy (``cross_entropy_loss_fusion``)."""
    cross_entropy_fusion_impl: str = "auto"
    """Implementation of the fused cross entropy (``cross_entropy_fusion_impl``): ``native`` or ``te``."""
    bias_activation_fusion: bool | str = "auto"
    """Fused SwiGLU (``bias_activation_fusion``)."""
    apply_rope_fusion: bool | str = "auto"
    """Fused RoPE (``apply_rope_fusion``); needs TE."""
    gradient_accumulation_fusion: bool | str = "auto"
    """Accumulate weight gradients in the fp32 main-grad buffer inside the GEMM (``gradient_accumulation_fusion``);
    needs TE and Apex's ``fused_weight_gradient_mlp_cuda`` (megatron-core's output layer), so ``auto`` is on only
    where that extension imports."""
    overlap_grad_reduce: bool | str = "auto"
    """Overlap the data-parallel gradient reduce-scatter with backward (DDP ``overlap_grad_reduce``)."""
    overlap_param_gather: bool | str = "auto"
    """Overlap the distributed optimizer's parameter all-gather with forward (DDP ``overlap_param_gather``);
    needs the distributed optimizer and ``overlap_grad_reduce``."""
    ddp_bucket_size: int | None = None
    """Gradient bucket size in elements (DDP ``bucket_size``); null: megatron-core's default."""
    check_for_nan_in_grad: bool | str = "auto"
    """Check gradients for NaN/Inf before the reduce (DDP ``check_for_nan_in_grad``); the loop's skip/spike guard
    reads it."""
    grad_reduce_in_fp32: bool | str = "auto"
    """Reduce gradients in fp32 (DDP ``grad_reduce_in_fp32``); ``auto``: off with the precision-aware optimizer
    (Bridge 16-GPU recipe), else on."""
    precision_aware_optimizer: bool | str = "auto"
    """TE's precision-aware fused Adam (``OptimizerConfig.use_precision_aware_optimizer``); needs TE, bf16 and the
    distributed optimizer."""
    cuda_graph_impl: str = "auto"
    """CUDA graphs (``cuda_graph_impl``): ``auto`` (none), ``none``, ``transformer_engine`` or ``local``; refused
    until the training loop has a capture step."""
    cuda_graph_scope: list[str] = dataclasses.field(default_factory=lambda: ["moe_router", "moe_preprocess"])
    """Scopes captured with TE CUDA graphs (``cuda_graph_scope``), Bridge 16-GPU: ``moe_router``, ``moe_preprocess``."""
    tp_comm_overlap: bool | str = "auto"
    """Overlap tensor-parallel communication with GEMMs (``tp_comm_overlap``, TE userbuffers); needs TE, TP > 1 and
    sequence parallelism (``auto`` is off at TP = 1)."""
    overlap_moe_expert_parallel_comm: bool | str = "auto"
    """Overlap the EP all-to-all with another micro-batch's compute (``overlap_moe_expert_parallel_comm``); needs
    EP > 1, alltoall/flex, bf16, no full recompute. ``auto``: off (Bridge's base recipe)."""
    manual_gc: bool | str = "auto"
    """Disable Python's automatic garbage collector and collect every ``manual_gc_interval`` steps."""
    manual_gc_interval: int = 100
    """Steps between manual garbage collections (Bridge: 100)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.default == "auto" and f.name not in ("cross_entropy_fusion_impl", "cuda_graph_impl"):
                if getattr(self, f.name) not in AUTO_BOOL:
                    raise ConfigError(f"perf.{f.name} must be auto, true or false, got {getattr(self, f.name)!r}")
        if self.cross_entropy_fusion_impl not in ("auto", "native", "te"):
            raise ConfigError(
                f"perf.cross_entropy_fusion_impl must be auto, native or te, got {self.cross_entropy_fusion_impl!r}"
            )
        if self.cuda_graph_impl not in ("auto", "none", "transformer_engine", "local"):
            raise ConfigError(
                f"perf.cuda_graph_impl must be auto, none, transformer_engine or local, got {self.cuda_graph_impl!r}"
            )
        if self.ddp_bucket_size is not None and (not isinstance(self.ddp_bucket_size, int) or self.ddp_bucket_size < 1):
            raise ConfigError(f"perf.ddp_bucket_size must be null or an integer >= 1, got {self.ddp_bucket_size!r}")
        if not isinstance(self.manual_gc_interval, int) or self.manual_gc_interval < 1:
            raise ConfigError(f"perf.manual_gc_interval must be an integer >= 1, got {self.manual_gc_interval!r}")


NEEDS_TE = (
    "moe_grouped_gemm",
    "moe_permute_fusion",
    "moe_router_fusion",
    "apply_rope_fusion",
    "gradient_accumulation_fusion",
    "precision_aware_optimizer",
    "tp_comm_overlap",
)
"""``perf`` fields whose implementation is Transformer Engine (CUDA) code in megatron-core 0.16.1."""

ATTENTION_BACKENDS = ("auto", "local", "te", "triton")
"""Values of ``model.attention_backend``."""


def resolve_attention_backend(
    requested: str, context_parallel: int, te_available: bool, document_attention: bool = False
) -> str:
    """Concrete attention backend (``local``, ``te`` or ``triton``) for a requested one.

    ``auto`` picks ``te`` when Transformer Engine imports, else ``triton`` when context parallelism or per-document
    (``thd``) attention is on (megatron-core's local attention can do neither), else ``local``.
    """
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"model.attention_backend must be one of {ATTENTION_BACKENDS}, got {requested!r}")
    if requested == "auto":
        if te_available:
            return "te"
        return "triton" if context_parallel > 1 or document_attention else "local"
    if requested == "local" and document_attention:
        raise ValueError(
            "model.attention_backend=local cannot run data.document_attention (megatron-core's local attention has "
            "no packed thd format); use triton or auto"
        )
    if requested == "te" and not te_available:
        raise ValueError("model.attention_backend=te needs Transformer Engine, which does not import here")
    if requested == "local" and context_parallel > 1:
        raise ValueError(
            "model.attention_backend=local cannot run parallel.context > 1 (megatron-core's local attention "
            "asserts CP == 1); use triton or auto"
        )
    return requested


RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mlp", "moe", "shared_experts")
"""``model.recompute_modules`` values megatron-core 0.16.1 accepts for a Qwen3-MoE layer (selective recompute)."""


@dataclasses.dataclass(frozen=True)
class EffectiveSettings:
    """What megatron-core is actually given for one run (the result of :func:`resolve_settings`)."""

    platform: str
    """``cuda`` or ``cpu``."""
    layer_spec: str
    """``te`` (megatron-core's Transformer Engine spec, grouped-GEMM experts) or ``local``."""
    attention_backend: str
    """Concrete attention backend: ``te``, ``local`` or ``triton``."""
    precision: str
    """``bf16`` or ``fp32`` (params and compute)."""
    fp8: str | None
    """FP8 recipe (``tensorwise``, ``delayed``, ``blockwise``) or None."""
    moe_token_dispatcher: str
    """``allgather``, ``alltoall`` or ``flex``."""
    moe_flex_backend: str | None
    """``deepep`` or ``hybridep`` with the flex dispatcher, else None."""
    transformer: dict[str, Any]
    """Performance-related ``TransformerConfig`` fields (fusions, grouped GEMM, recompute, FP8, overlaps, ETP)."""
    ddp: dict[str, Any]
    """``DistributedDataParallelConfig`` fields."""
    optimizer: dict[str, Any]
    """Performance-related ``OptimizerConfig`` fields."""
    manual_gc: bool
    """Disable Python's automatic GC and collect every ``manual_gc_interval`` steps."""
    manual_gc_interval: int
    """Steps between manual collections."""
    attention_mode: str = "sequence"
    """``document`` (``data.document_attention``: packed ``thd`` batches, attention within each document) or
    ``sequence`` (causal attention over the whole sequence)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dtypes as strings)."""
        out = dataclasses.asdict(self)
        for section in ("transformer", "ddp", "optimizer"):
            out[section] = {
                k: (str(v) if not isinstance(v, (bool, int, float, str, list, type(None))) else v)
                for k, v in out[section].items()
            }
        return out

    def summary_lines(self) -> list[str]:
        """Short human-readable lines (logged at run start, shown by ``doctor``)."""
        t, d, o = self.transformer, self.ddp, self.optimizer
        on = sorted(k for k, v in {**t, **d, **o}.items() if v is True)
        recompute = t.get("recompute_granularity") or "none"
        if recompute == "selective":
            recompute += f" {t.get('recompute_modules')}"
        elif recompute == "full":
            recompute += f" {t.get('recompute_method')} x{t.get('recompute_num_layers')}"
        return [
            f"platform={self.platform} spec={self.layer_spec} attention={self.attention_backend} "
            f"precision={self.precision} fp8={self.fp8 or 'off'} attention_mode={self.attention_mode}",
            f"dispatcher={self.moe_token_dispatcher}{'/' + self.moe_flex_backend if self.moe_flex_backend else ''} "
            f"ETP={t.get('expert_tensor_parallel_size')} recompute={recompute} "
            f"cuda_graph={t.get('cuda_graph_impl')} manual_gc={self.manual_gc_interval if self.manual_gc else 'off'}",
            f"on: {', '.join(on) if on else 'none'}",
        ]


def _pick(value: Any, name: str, available: bool, defaults: Mapping[str, Any]) -> bool:
    """Resolve an ``auto | true | false`` field: ``auto`` -> the family's H100 value when ``available``, else False."""
    if value == "auto":
        return bool(defaults[name]) if available else False
    return bool(value)


def resolve_settings(platform: Platform, cfg: TrainingConfig) -> EffectiveSettings:
    """Effective settings for ``cfg`` on ``platform``; raises ConfigError (one line, naming fields) when invalid.

    Pure: reads only ``platform``'s fields (device type, Transformer Engine, DeepEP/HybridEP availability) and
    ``cfg``; imports nothing optional and touches no device.
    """
    m, p, t, perf = cfg.model, cfg.parallel, cfg.train, cfg.perf
    cuda, te = platform.is_cuda, platform.is_cuda and platform.has_transformer_engine
    arch = m.architecture()
    family = family_of(arch)
    defaults = family.h100_defaults

    precision = t.precision if t.precision != "auto" else ("bf16" if cuda else "fp32")
    try:
        attention = resolve_attention_backend(m.attention_backend, p.context, te, cfg.data.document_attention)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    # FP8 (Transformer Engine only).
    if t.fp8 is not None:
        if not te:
            raise ConfigError(f"train.fp8={t.fp8} needs Transformer Engine on CUDA, which this machine does not have")
        if precision != "bf16":
            raise ConfigError(f"train.fp8={t.fp8} needs train.precision=bf16 (got {precision})")
    if t.fp8_param_gather and t.fp8 is None:
        raise ConfigError("train.fp8_param_gather=true needs train.fp8")
    if t.fp8_param_gather and not t.distributed_optimizer:
        raise ConfigError("train.fp8_param_gather=true needs train.distributed_optimizer=true")

    # Token dispatcher.
    dispatcher = m.moe_token_dispatcher
    if dispatcher == "auto":
        dispatcher = "alltoall" if cuda else "allgather"  # Bridge: moe_token_dispatcher_type = "alltoall"
    flex_backend = None
    if dispatcher == "flex":
        flex_backend = m.moe_flex_backend
        have = platform.has_deep_ep if flex_backend == "deepep" else platform.has_hybrid_ep
        if not (cuda and have):
            lib = "deep_ep.Buffer" if flex_backend == "deepep" else "deep_ep.HybridEPBuffer"
            raise ConfigError(
                f"model.moe_token_dispatcher=flex with model.moe_flex_backend={flex_backend} needs {lib} on CUDA, "
                "which does not import here; use alltoall"
            )

    # Expert-tensor parallelism.
    etp = p.expert_tensor
    if family.moe and arch.moe_ffn_hidden_size % etp:
        raise ConfigError(
            f"parallel.expert_tensor ({etp}) must divide model.moe_ffn_hidden_size ({arch.moe_ffn_hidden_size})"
        )

    # Fusions and kernels.
    flags: dict[str, bool] = {}
    for name in NEEDS_TE:
        flags[name] = _pick(getattr(perf, name), name, te, defaults)
        if flags[name] and not te:
            raise ConfigError(f"perf.{name}=true needs Transformer Engine on CUDA, which this machine does not have")
    if not platform.has_apex_gradient_fusion and flags["gradient_accumulation_fusion"]:
        if perf.gradient_accumulation_fusion == "auto":
            flags["gradient_accumulation_fusion"] = False
        else:
            raise ConfigError(
                "perf.gradient_accumulation_fusion=true needs Apex's fused_weight_gradient_mlp_cuda extension "
                "(megatron-core's ColumnParallelLinear raises without it), which does not import here"
            )
    if flags["tp_comm_overlap"] and perf.tp_comm_overlap == "auto" and not (p.tensor > 1 and p.use_sequence_parallel):
        flags["tp_comm_overlap"] = False  # Bridge's CommOverlapConfig disables itself at TP=1
    if flags["tp_comm_overlap"] and not (p.tensor > 1 and p.use_sequence_parallel):
        raise ConfigError("perf.tp_comm_overlap=true needs parallel.tensor > 1 with parallel.sequence_parallel")
    if te and family.moe and not flags["moe_grouped_gemm"]:
        raise ConfigError("perf.moe_grouped_gemm=false: the Transformer Engine layer spec uses grouped-GEMM experts")
    for name in ("bias_activation_fusion", "cross_entropy_loss_fusion", "check_for_nan_in_grad", "manual_gc"):
        flags[name] = _pick(getattr(perf, name), name, te, defaults)
    ce_impl = perf.cross_entropy_fusion_impl
    if ce_impl == "auto":
        ce_impl = defaults["cross_entropy_fusion_impl"] if te else "native"
    if flags["cross_entropy_loss_fusion"] and ce_impl == "te" and not te:
        raise ConfigError("perf.cross_entropy_fusion_impl=te needs Transformer Engine on CUDA; use native")
    # DDP and optimizer.
    overlap_grad = _pick(perf.overlap_grad_reduce, "overlap_grad_reduce", cuda, defaults)
    overlap_param = _pick(perf.overlap_param_gather, "overlap_param_gather", cuda and t.distributed_optimizer, defaults)
    if overlap_param and not t.distributed_optimizer:
        raise ConfigError("perf.overlap_param_gather=true needs train.distributed_optimizer=true")
    if overlap_param and not overlap_grad:
        raise ConfigError("perf.overlap_param_gather=true needs perf.overlap_grad_reduce=true")
    grad_fp32 = perf.grad_reduce_in_fp32
    if grad_fp32 == "auto":
        # Bridge turns fp32 grad reduction off together with the precision-aware optimizer (16-GPU recipe);
        # without it (CPU, fp32) gradients are reduced in fp32 as in bf16_mixed().
        grad_fp32 = not (flags["precision_aware_optimizer"] and precision == "bf16")
    if flags["precision_aware_optimizer"]:
        if not t.distributed_optimizer:
            raise ConfigError("perf.precision_aware_optimizer=true needs train.distributed_optimizer=true")
        if precision != "bf16":
            raise ConfigError("perf.precision_aware_optimizer=true needs train.precision=bf16")

    # Recompute.
    recompute: dict[str, Any] = {"recompute_granularity": None, "recompute_method": None, "recompute_num_layers": None}
    if m.recompute == "full":
        recompute.update(
            recompute_granularity="full",
            recompute_method=m.recompute_method,
            recompute_num_layers=m.recompute_num_layers,
        )
    elif m.recompute == "selective":
        recompute.update(recompute_granularity="selective", recompute_modules=list(m.recompute_modules))
        if "moe_act" in m.recompute_modules and not flags["moe_grouped_gemm"]:
            raise ConfigError("model.recompute_modules: moe_act needs perf.moe_grouped_gemm (Transformer Engine)")
        if "layernorm" in m.recompute_modules and not te:
            raise ConfigError("model.recompute_modules: layernorm recompute needs Transformer Engine on CUDA")
        if t.fp8 == "delayed" and {"moe_act", "layernorm"} & set(m.recompute_modules):
            raise ConfigError(
                "model.recompute_modules: moe_act/layernorm recompute does not work with train.fp8=delayed"
            )

    # CUDA graphs: megatron-core's TE graphs are captured by the training loop (Megatron-LM's training.py
    # calls TECudaGraphHelper.create_cudagraphs after warm-up); our loop has no capture step yet.
    graph_impl = "none" if perf.cuda_graph_impl == "auto" else perf.cuda_graph_impl
    if graph_impl != "none":
        if not te:
            raise ConfigError(f"perf.cuda_graph_impl={graph_impl} needs Transformer Engine on CUDA")
        raise ConfigError(
            f"perf.cuda_graph_impl={graph_impl}: the training loop has no CUDA-graph capture step yet; use none"
        )

    # EP communication overlap (megatron-core's combined 1F1B schedule).
    ep_overlap = _pick(perf.overlap_moe_expert_parallel_comm, "overlap_moe_expert_parallel_comm", cuda, defaults)
    if ep_overlap:
        problems = []
        if p.expert < 2:
            problems.append("parallel.expert > 1")
        if dispatcher not in ("alltoall", "flex"):
            problems.append("model.moe_token_dispatcher alltoall or flex")
        if m.recompute == "full":
            problems.append("model.recompute != full")
        if precision != "bf16":
            problems.append("train.precision=bf16")
        if not cuda:
            problems.append("CUDA")
        if problems:
            raise ConfigError(f"perf.overlap_moe_expert_parallel_comm=true needs {', '.join(problems)}")

    transformer: dict[str, Any] = {
        "expert_tensor_parallel_size": etp,
        "moe_token_dispatcher_type": dispatcher,
        "moe_grouped_gemm": flags["moe_grouped_gemm"],
        "moe_permute_fusion": flags["moe_permute_fusion"],
        "moe_router_fusion": flags["moe_router_fusion"],
        "cross_entropy_loss_fusion": flags["cross_entropy_loss_fusion"],
        "cross_entropy_fusion_impl": ce_impl,
        "bias_activation_fusion": flags["bias_activation_fusion"],
        "apply_rope_fusion": flags["apply_rope_fusion"],
        "gradient_accumulation_fusion": flags["gradient_accumulation_fusion"],
        "tp_comm_overlap": flags["tp_comm_overlap"],
        "overlap_moe_expert_parallel_comm": ep_overlap,
        "cuda_graph_impl": graph_impl,
        **recompute,
    }
    if flex_backend is not None:
        transformer["moe_flex_dispatcher_backend"] = flex_backend
    if t.fp8 is not None:
        # Bridge's bf16_with_fp8_*_mixed(): fp8="hybrid" (E4M3 forward, E5M2 gradients) and the named recipe.
        transformer.update(fp8="hybrid", fp8_recipe=t.fp8, fp8_param=t.fp8_param_gather)
    ddp = {
        "grad_reduce_in_fp32": bool(grad_fp32),
        "overlap_grad_reduce": overlap_grad,
        "overlap_param_gather": overlap_param,
        "use_distributed_optimizer": t.distributed_optimizer,
        "check_for_nan_in_grad": flags["check_for_nan_in_grad"],
        "bucket_size": perf.ddp_bucket_size,
        "fp8_param_gather": t.fp8_param_gather,
    }
    # Megatron-LM (training.py get_megatron_optimizer_config, core_v0.16.1) fills OptimizerConfig from the same
    # args as TransformerConfig and the DDP config: the fields they share get the same values here.
    optimizer = {
        "use_distributed_optimizer": t.distributed_optimizer,
        "use_precision_aware_optimizer": flags["precision_aware_optimizer"],
        "overlap_param_gather_with_optimizer_step": False,
        "overlap_param_gather": overlap_param,
        # the distributed optimizer's FP8-parameter and precision-aware branches read it; without FP8 the value of
        # TransformerConfig and Megatron-LM's --fp8-recipe default ("delayed"), which both branches treat as no FP8
        "fp8_recipe": t.fp8 or "delayed",
    }
    return EffectiveSettings(
        platform="cuda" if cuda else "cpu",
        layer_spec="te" if te else "local",
        attention_backend=attention,
        precision=precision,
        fp8=t.fp8,
        moe_token_dispatcher=dispatcher,
        moe_flex_backend=flex_backend,
        transformer=transformer,
        ddp=ddp,
        optimizer=optimizer,
        manual_gc=flags["manual_gc"],
        manual_gc_interval=perf.manual_gc_interval,
        attention_mode="document" if cfg.data.document_attention else "sequence",
    )
