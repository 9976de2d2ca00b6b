"""What every family's ``GPTModel`` shares: the ``TransformerConfig`` fields of a Qwen3-style decoder and the build.

A family's ``model.py`` adds its own fields (MoE routing, ...) and its block spec; the parallel layout and the
effective settings (:func:`megatron_agentic.perf.resolve_settings`, the one place platform-dependent choices are made)
are read here. Parallel process groups must already be initialised (``megatron.core.parallel_state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

if TYPE_CHECKING:
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.perf import EffectiveSettings

logger = logging.getLogger(__name__)


def gpt_transformer_config(
    cfg: TrainingConfig, settings: EffectiveSettings | None, family_fields: dict[str, Any], extra: dict[str, Any]
) -> TransformerConfig:
    """``TransformerConfig`` of a Qwen3-style decoder (RMSNorm, SwiGLU, RoPE, no bias) plus ``family_fields``.

    ``settings`` default: ``cfg.effective_settings()`` on this machine; its ``transformer`` fields (dispatcher,
    grouped GEMM, fusions, recompute, FP8, overlaps, ETP) override the family's, ``extra`` overrides all.
    """
    if settings is None:
        settings = cfg.effective_settings()
    arch, parallel_cfg = cfg.model.architecture(), cfg.parallel
    cuda = settings.platform == "cuda"
    bf16 = settings.precision == "bf16"
    kwargs: dict[str, Any] = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.kv_channels,
        ffn_hidden_size=arch.ffn_hidden_size,
        **family_fields,
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
        tensor_model_parallel_size=parallel_cfg.tensor,
        pipeline_model_parallel_size=parallel_cfg.pipeline,
        virtual_pipeline_model_parallel_size=parallel_cfg.virtual_pipeline,
        expert_model_parallel_size=parallel_cfg.expert,
        context_parallel_size=parallel_cfg.context,
        sequence_parallel=parallel_cfg.use_sequence_parallel,
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


def build_gpt_model(
    cfg: TrainingConfig,
    block_spec: Callable[..., Any],
    transformer_config_from: Callable[..., TransformerConfig],
    pre_process: bool = True,
    post_process: bool = True,
    *,
    transformer_config: TransformerConfig | None = None,
    settings: EffectiveSettings | None = None,
    vp_stage: int | None = None,
    seq_length: int | None = None,
    init_seed: int | None = None,
) -> GPTModel:
    """Instantiate this rank's ``GPTModel`` chunk with ``block_spec(config, backend, arch, vp_stage, init_seed)``.

    Args: see a family's ``build_model`` (e.g. :func:`megatron_agentic.models.qwen3_moe.model.build_model`).
    """
    if settings is None:
        settings = cfg.effective_settings()
    arch = cfg.model.architecture()
    if transformer_config is None:
        transformer_config = transformer_config_from(cfg, settings)
    backend = settings.attention_backend
    if init_seed is None:
        init_seed = cfg.train.seed
    spec = block_spec(transformer_config, backend, arch, vp_stage=vp_stage, init_seed=init_seed)
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
