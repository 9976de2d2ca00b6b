"""Build a dense Qwen3 ``GPTModel`` (megatron-core) from a preset and a parallel layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

from megatron_agentic.models.gpt import build_gpt_model, gpt_transformer_config
from megatron_agentic.models.qwen3_dense.spec import qwen3_dense_block_spec

if TYPE_CHECKING:
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.perf import EffectiveSettings


def transformer_config_from(
    cfg: TrainingConfig, settings: EffectiveSettings | None = None, **extra: Any
) -> TransformerConfig:
    """megatron-core ``TransformerConfig`` for ``cfg`` and its effective settings (no MoE fields)."""
    return gpt_transformer_config(cfg, settings, {}, extra)


def _block_spec(
    config: TransformerConfig, backend: str, arch: Any, vp_stage: int | None, init_seed: int | None
) -> TransformerBlockSubmodules:
    return qwen3_dense_block_spec(
        config, backend, qk_layernorm=arch.qk_layernorm, vp_stage=vp_stage, init_seed=init_seed
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
    """Instantiate the dense Qwen3 ``GPTModel`` chunk for this rank (arguments as the Qwen3-MoE ``build_model``)."""
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
