"""Build a Qwen3-MoE ``GPTModel`` (megatron-core) from a preset and a parallel layout.

``transformer_config_from`` maps our typed configs to megatron-core's ``TransformerConfig``;
``build_model`` instantiates the model chunk for this pipeline stage with our layer spec. Parallel
process groups must already be initialised (``megatron.core.parallel_state``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megatron_agentic.models.qwen3_moe.presets import ModelPreset
from megatron_agentic.models.qwen3_moe.spec import qwen3_moe_block_spec, resolve_attention_backend

logger = logging.getLogger(__name__)


def _architecture(model_cfg: Any) -> ModelPreset:
    """Accept a ModelPreset or a config.ModelConfig (preset name + overrides)."""
    if isinstance(model_cfg, ModelPreset):
        return model_cfg
    if hasattr(model_cfg, "architecture"):
        return model_cfg.architecture()
    raise TypeError(f"expected ModelPreset or ModelConfig, got {type(model_cfg).__name__}")


def transformer_config_from(
    model_cfg: Any,
    parallel_cfg: Any,
    *,
    precision: str = "fp32",
    cuda: bool | None = None,
    moe_token_dispatcher: str | None = None,
    recompute: bool | None = None,
    virtual_pipeline: int | None = None,
    **extra: Any,
) -> TransformerConfig:
    """megatron-core ``TransformerConfig`` for a Qwen3-MoE architecture and parallel layout.

    Args:
        model_cfg: ``ModelPreset`` or ``megatron_agentic.config.ModelConfig``.
        parallel_cfg: ``megatron_agentic.config.ParallelConfig`` (tensor, pipeline, expert, context, SP).
        precision: ``fp32`` or ``bf16`` (params and compute).
        cuda: whether training runs on CUDA (default: ``torch.cuda.is_available()``); picks fusions,
            the token dispatcher and the initialisation device.
        moe_token_dispatcher: ``allgather``/``alltoall``; default from ``model_cfg`` or by platform.
        recompute: full activation recomputation (default from ``model_cfg``).
        virtual_pipeline: virtual pipeline size (default from ``parallel_cfg``).
        extra: further ``TransformerConfig`` fields, applied last.
    """
    arch = _architecture(model_cfg)
    if cuda is None:
        cuda = torch.cuda.is_available()
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    bf16 = precision == "bf16"
    dispatcher = moe_token_dispatcher or getattr(model_cfg, "moe_token_dispatcher", "auto")
    if dispatcher == "auto":
        dispatcher = "alltoall" if cuda else "allgather"
    if recompute is None:
        recompute = bool(getattr(model_cfg, "recompute", False))
    if virtual_pipeline is None:
        virtual_pipeline = getattr(parallel_cfg, "virtual_pipeline", None)
    tp, pp = parallel_cfg.tensor, parallel_cfg.pipeline
    from megatron_agentic.platform import has_transformer_engine

    te_grouped_gemm = bool(cuda and has_transformer_engine())
    sp = parallel_cfg.use_sequence_parallel if hasattr(parallel_cfg, "use_sequence_parallel") else tp > 1
    kwargs: dict[str, Any] = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.kv_channels,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_moe_experts=arch.num_experts,
        moe_ffn_hidden_size=arch.moe_ffn_hidden_size,
        moe_router_topk=arch.moe_router_topk,
        moe_router_pre_softmax=arch.moe_router_pre_softmax,
        moe_router_load_balancing_type=arch.moe_router_load_balancing_type,
        moe_aux_loss_coeff=arch.moe_aux_loss_coeff,
        moe_token_dispatcher_type=dispatcher,
        moe_router_dtype="fp32",
        moe_grouped_gemm=te_grouped_gemm,  # the TE spec uses grouped-GEMM experts; the local spec SequentialMLP
        normalization="RMSNorm",
        layernorm_epsilon=arch.norm_epsilon,
        qk_layernorm=arch.qk_layernorm,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=arch.init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=virtual_pipeline,
        expert_model_parallel_size=parallel_cfg.expert,
        context_parallel_size=parallel_cfg.context,
        sequence_parallel=sp,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        autocast_dtype=torch.bfloat16 if bf16 else torch.float32,
        calculate_per_token_loss=True,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        use_cpu_initialization=not cuda,
        perform_initialization=True,
        deallocate_pipeline_outputs=True,
        batch_p2p_sync=cuda,  # torch.cuda.synchronize() after batched p2p: CUDA only
        cp_comm_type="p2p" if parallel_cfg.context > 1 else None,
    )
    if recompute:
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    kwargs.update(extra)
    return TransformerConfig(**kwargs)


def build_model(
    cfg: Any,
    pre_process: bool = True,
    post_process: bool = True,
    *,
    transformer_config: TransformerConfig | None = None,
    vp_stage: int | None = None,
    te_available: bool | None = None,
    seq_length: int | None = None,
    init_seed: int | None = None,
    **config_kwargs: Any,
) -> GPTModel:
    """Instantiate the Qwen3-MoE ``GPTModel`` chunk for this rank.

    Args:
        cfg: the whole ``megatron_agentic.config.TrainingConfig`` (uses ``model``, ``parallel``, ``train``),
            or a ``ModelConfig``/``ModelPreset`` (then pass ``transformer_config`` or the parallel config via
            ``config_kwargs['parallel_cfg']``).
        pre_process / post_process: whether this pipeline stage holds the embedding / output layer.
        transformer_config: a ready ``TransformerConfig`` (else built with :func:`transformer_config_from`).
        vp_stage: virtual pipeline stage of this chunk.
        te_available: override Transformer Engine detection (tests).
        seq_length: maximum sequence length (default: ``cfg.train.seq_length`` or the preset's).
        init_seed: reseed per global layer for layout-independent initialisation (default ``cfg.train.seed``).
        config_kwargs: forwarded to :func:`transformer_config_from`.
    """
    from megatron_agentic.platform import has_transformer_engine

    model_cfg = getattr(cfg, "model", cfg)
    arch = _architecture(model_cfg)
    parallel_cfg = getattr(cfg, "parallel", None) or config_kwargs.pop("parallel_cfg", None)
    if transformer_config is None:
        if parallel_cfg is None:
            raise ValueError("build_model needs a TrainingConfig, a transformer_config, or parallel_cfg=")
        train_cfg = getattr(cfg, "train", None)
        if train_cfg is not None and "precision" not in config_kwargs:
            precision = train_cfg.precision
            if precision == "auto":
                precision = "bf16" if torch.cuda.is_available() else "fp32"
            config_kwargs["precision"] = precision
        transformer_config = transformer_config_from(model_cfg, parallel_cfg, **config_kwargs)
    if te_available is None:
        te_available = has_transformer_engine()
    requested = getattr(model_cfg, "attention_backend", "auto")
    backend = resolve_attention_backend(requested, transformer_config.context_parallel_size, te_available)
    if init_seed is None and getattr(cfg, "train", None) is not None:
        init_seed = cfg.train.seed
    spec = qwen3_moe_block_spec(
        transformer_config,
        backend,
        num_experts=arch.num_experts,
        qk_layernorm=arch.qk_layernorm,
        vp_stage=vp_stage,
        init_seed=init_seed,
    )
    if seq_length is None:
        train_cfg = getattr(cfg, "train", None)
        seq_length = train_cfg.seq_length if train_cfg is not None else arch.max_position_embeddings
    model = GPTModel(
        config=transformer_config,
        transformer_layer_spec=spec,
        vocab_size=arch.vocab_size,
        max_sequence_length=max(seq_length, arch.max_position_embeddings),
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=not arch.untie_embeddings_and_output_weights,
        position_embedding_type="rope",
        rotary_base=int(arch.rotary_base),
        vp_stage=vp_stage,
    )
    logger.debug("built %s chunk (backend=%s, pre=%s, post=%s)", arch.name, backend, pre_process, post_process)
    return model
