"""Layer spec for dense Qwen3: megatron-core's TE spec when Transformer Engine imports, its local spec otherwise.

As for Qwen3-MoE (``models/qwen3_moe/spec.py``, whose building blocks it reuses): the local spec's norms become the
SP-capable :class:`~megatron_agentic.models.qwen3_moe.norm.SequenceParallelRMSNorm` (so TP > 1 with sequence
parallelism works without TE), ``core_attention`` becomes the Triton ring attention with the ``triton`` backend,
and layers reseed per global layer number. The checkpoint keys are megatron-core's local-spec map, which for a dense
layer is the TE layout (both norms fused into ``linear_qkv`` / ``linear_fc1``).
"""

from __future__ import annotations

import copy
from typing import Any

from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

from megatron_agentic.models.qwen3_moe.norm import ExtraStateRMSNorm, SequenceParallelRMSNorm
from megatron_agentic.models.qwen3_moe.spec import seeded_layer_class, triton_attention_class


def qwen3_dense_layer_spec(backend: str, qk_layernorm: bool = True, init_seed: int | None = None) -> ModuleSpec:
    """Transformer layer spec of a dense Qwen3 layer for a concrete attention backend (``te``, ``local``, ``triton``)."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    from megatron_agentic.platform import detect_platform

    use_te = backend == "te" or (backend == "triton" and detect_platform().has_transformer_engine)
    if use_te:
        spec = get_gpt_layer_with_transformer_engine_spec(num_experts=None, qk_layernorm=qk_layernorm)
    else:
        spec = copy.deepcopy(
            get_gpt_layer_local_spec(num_experts=None, qk_layernorm=qk_layernorm, normalization="RMSNorm")
        )
        sub = spec.submodules
        sub.input_layernorm = SequenceParallelRMSNorm
        sub.pre_mlp_layernorm = SequenceParallelRMSNorm
        if qk_layernorm:
            sub.self_attention.submodules.q_layernorm = ExtraStateRMSNorm
            sub.self_attention.submodules.k_layernorm = ExtraStateRMSNorm
    if backend == "triton":
        spec.submodules.self_attention.submodules.core_attention = triton_attention_class()
    if init_seed is not None:
        spec.module = seeded_layer_class(spec.module)
        spec.params = dict(spec.params or {}, init_seed=init_seed)
    return spec


def qwen3_dense_block_spec(
    config: Any, backend: str, qk_layernorm: bool = True, vp_stage: int | None = None, init_seed: int | None = None
) -> TransformerBlockSubmodules:
    """Decoder block spec for this pipeline stage: its layers plus the final norm."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    layer_spec = qwen3_dense_layer_spec(backend, qk_layernorm=qk_layernorm, init_seed=init_seed)
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    if layer_spec.submodules.input_layernorm is SequenceParallelRMSNorm:
        final_norm: Any = ExtraStateRMSNorm
    else:
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    return TransformerBlockSubmodules(layer_specs=[layer_spec] * n, layer_norm=final_norm)
