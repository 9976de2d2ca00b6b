"""Build a Qwen3-MoE ``GPTModel`` (megatron-core) from a preset and a parallel layout.

``transformer_config_from`` maps the typed training config and its effective settings
(:func:`megatron_agentic.perf.resolve_settings`, the one place platform-dependent choices are made) to
megatron-core's ``TransformerConfig``;
``build_model`` instantiates the model chunk for this pipeline stage with our layer spec. Parallel
process groups must already be initialised (``megatron.core.parallel_state``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

from megatron_agentic.models.gpt import build_gpt_model, gpt_transformer_config
from megatron_agentic.models.qwen3_moe.spec import qwen3_moe_block_spec

if TYPE_CHECKING:
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.perf import EffectiveSettings


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
    arch = cfg.model.architecture()
    moe = dict(
        num_moe_experts=arch.num_experts,
        moe_ffn_hidden_size=arch.moe_ffn_hidden_size,
        moe_router_topk=arch.moe_router_topk,
        moe_router_pre_softmax=arch.moe_router_pre_softmax,
        moe_router_load_balancing_type=arch.moe_router_load_balancing_type,
        moe_aux_loss_coeff=arch.moe_aux_loss_coeff,
        moe_router_dtype="fp32",
    )
    return gpt_transformer_config(cfg, settings, moe, extra)


def _block_spec(
    config: TransformerConfig, backend: str, arch: Any, vp_stage: int | None, init_seed: int | None
) -> TransformerBlockSubmodules:
    return qwen3_moe_block_spec(
        config,
        backend,
        num_experts=arch.num_experts,
        qk_layernorm=arch.qk_layernorm,
        vp_stage=vp_stage,
        init_seed=init_seed,
    )


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
    return build_gpt_model(
        cfg,
        _block_spec,
        transformer_config_from,
        pre_process,
        post_process,
        transformer_config=transformer_config,
        settings=settings,
        vp_stage=vp_stage,
        seq_length=seq_length,
        init_seed=init_seed,
    )
