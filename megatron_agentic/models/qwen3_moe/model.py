"""Build a Qwen3-MoE ``GPTModel`` (megatron-core) from a preset and a parallel layout.

``transformer_config_from`` maps the typed training config and its effective settings
(:func:`megatron_agentic.perf.resolve_settings`, the one place platform-dependent choices are made) to
megatron-core's ``TransformerConfig``;
``build_model`` instantiates the model chunk for this pipeline stage with our layer spec. Parallel
process groups must already be initialised (``megatron.core.parallel_state``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megatron_agentic.models.qwen3_moe.spec import qwen3_moe_block_spec

if TYPE_CHECKING:
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.perf import EffectiveSettings

logger = logging.getLogger(__name__)


def transformer_config_from(
    cfg: TrainingConfig, settings: EffectiveSettings | None = None, **extra: Any
) -> TransformerConfig:
    """megatron-core ``TransformerConfig`` for ``cfg`` (architecture, parallel layout) and its effective settings.

    Args:
        cfg: the whole training config.
        settings: from :func:`megatron_agentic.perf.resolve_settings` (default: ``cfg.effective_settings()`` on
            this machine). Precision, dispatcher, grouped GEMM, fusions, recompute and FP8 come from here only.
        extra: further ``TransformerConfig`` fields, applied last.
    """
    if settings is None:
        settings = cfg.effective_settings()
    arch, parallel_cfg = cfg.model.architecture(), cfg.parallel
    cuda = settings.platform == "cuda"
    bf16 = settings.precision == "bf16"
    tp, pp = parallel_cfg.tensor, parallel_cfg.pipeline
    virtual_pipeline = parallel_cfg.virtual_pipeline
    sp = parallel_cfg.use_sequence_parallel
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
        moe_router_dtype="fp32",
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
        bias_dropout_fusion=False,  # no bias, no dropout: nothing to fuse
        masked_softmax_fusion=False,  # flash/fused attention never materialises the softmax
        persist_layer_norm=False,
        use_cpu_initialization=not cuda,
        perform_initialization=True,
        deallocate_pipeline_outputs=True,
        batch_p2p_sync=cuda,  # torch.cuda.synchronize() after batched p2p: CUDA only
        cp_comm_type="p2p" if parallel_cfg.context > 1 else None,
    )
    kwargs.update(settings.transformer)  # dispatcher, grouped GEMM, fusions, recompute, FP8, overlaps, ETP
    kwargs.update(extra)
    return TransformerConfig(**kwargs)


def build_model(
    cfg: TrainingConfig,
    pre_process: bool = True,
    post_process: bool = True,
    *,
    transformer_config: TransformerConfig | None = None,
    settings: EffectiveSettings | None = None,
    vp_stage: int | None = None,
    seq_length: int | None = None,
    init_seed: int | None = None,
) -> GPTModel:
    """Instantiate the Qwen3-MoE ``GPTModel`` chunk for this rank.

    Args:
        cfg: the whole training config (``model``, ``parallel``, ``train``, ``perf``).
        pre_process / post_process: whether this pipeline stage holds the embedding / output layer.
        transformer_config: a ready ``TransformerConfig`` (else built with :func:`transformer_config_from`).
        settings: effective settings (default: ``cfg.effective_settings()`` on this machine); picks the
            attention backend and layer spec.
        vp_stage: virtual pipeline stage of this chunk.
        seq_length: maximum sequence length (default: ``cfg.train.seq_length``).
        init_seed: reseed per global layer for layout-independent initialisation (default ``cfg.train.seed``).
    """
    if settings is None:
        settings = cfg.effective_settings()
    arch = cfg.model.architecture()
    if transformer_config is None:
        transformer_config = transformer_config_from(cfg, settings)
    backend = settings.attention_backend
    if init_seed is None:
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
        seq_length = cfg.train.seq_length
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
