"""Layer spec for Qwen3-MoE: megatron-core's TE spec when Transformer Engine imports, its local spec otherwise.

The local spec is megatron-core's ``get_gpt_layer_local_spec`` with two swaps made through the public
``ModuleSpec`` extension point: the norms become :class:`SequenceParallelRMSNorm` (so TP > 1 with MoE,
which needs sequence parallelism, works without TE), and ``core_attention`` becomes the Triton ring
attention (``megatron_agentic.kernels.megatron_attention.TritonAttention``) when the ``triton`` attention backend is chosen.
Parameter names are megatron-core's standard ones (``decoder.layers.N.self_attention.linear_qkv.weight``,
``decoder.layers.N.mlp.experts.local_experts.E.linear_fc1.weight``, ``decoder.layers.N.mlp.router.weight``, ...).
Checkpoint keys are those of megatron-core's TE spec whichever spec is built (``checkpoint_keys.LAYER_KEYS_MAP``), so a
checkpoint written on CPU loads into the H100 (TE) model and back.
"""

from __future__ import annotations

import copy
import importlib
import logging
from typing import Any

import torch
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

from megatron_agentic.models.qwen3_moe import checkpoint_keys
from megatron_agentic.models.qwen3_moe.norm import ExtraStateRMSNorm, SequenceParallelRMSNorm

logger = logging.getLogger(__name__)

# The attention-backend choice is part of the one platform decision (megatron_agentic/perf.py); re-exported here.
from megatron_agentic.perf import ATTENTION_BACKENDS, resolve_attention_backend  # noqa: E402, F401


def triton_attention_class() -> type:
    """Import ``megatron_agentic.kernels.megatron_attention.TritonAttention`` lazily (the kernels package owns it)."""
    try:
        module = importlib.import_module("megatron_agentic.kernels.megatron_attention")
    except ImportError as exc:
        raise RuntimeError(
            "model.attention_backend=triton needs megatron_agentic.kernels.megatron_attention.TritonAttention, which does not import: "
            f"{exc}"
        ) from exc
    return module.TritonAttention


def seeded_layer_class(base: type) -> type:
    """Subclass of a megatron-core transformer layer class that reseeds the CPU RNG before building itself.

    With ``use_cpu_initialization`` every weight is drawn from the CPU generator; reseeding with the
    layer's *global* number makes the initial weights independent of the pipeline layout (and, as
    megatron-core initialises full weights before splitting them, of the tensor-parallel size), so
    runs with different layouts start from the same model.
    """

    class SeededTransformerLayer(base):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, submodules: Any, layer_number: int = 1, *args: Any, **kwargs: Any) -> None:
            init_seed = kwargs.pop("init_seed", None)
            if init_seed is not None and config.use_cpu_initialization and config.perform_initialization:
                from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

                global_number = layer_number + get_transformer_layer_offset(config, vp_stage=kwargs.get("vp_stage"))
                torch.manual_seed((int(init_seed) * 100_003 + global_number) % (2**63))
            super().__init__(config, submodules, layer_number, *args, **kwargs)

    SeededTransformerLayer.__name__ = SeededTransformerLayer.__qualname__ = f"Seeded{base.__name__}"
    return SeededTransformerLayer


def qwen3_moe_layer_spec(
    backend: str, num_experts: int, qk_layernorm: bool = True, init_seed: int | None = None
) -> ModuleSpec:
    """Transformer layer spec for a Qwen3-MoE layer with the given concrete attention backend.

    ``backend`` is ``te`` (megatron-core's Transformer Engine spec, grouped-GEMM experts), ``local``
    (megatron-core's local spec with our SP-capable RMSNorm, SequentialMLP experts) or ``triton``
    (the local or TE spec, by availability of TE, with Triton ring attention as ``core_attention``).
    ``init_seed`` makes initialisation layout-independent (see :func:`seeded_layer_class`).
    """
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    from megatron_agentic.platform import detect_platform

    use_te = backend == "te" or (backend == "triton" and detect_platform().has_transformer_engine)
    if use_te:
        spec = get_gpt_layer_with_transformer_engine_spec(
            num_experts=num_experts, moe_grouped_gemm=True, qk_layernorm=qk_layernorm
        )
    else:
        spec = copy.deepcopy(
            get_gpt_layer_local_spec(num_experts=num_experts, qk_layernorm=qk_layernorm, normalization="RMSNorm")
        )
        sub = spec.submodules
        # The norms that are TENorm in the TE spec carry its _extra_state (checkpoints hold what TE requests).
        sub.input_layernorm = SequenceParallelRMSNorm
        sub.pre_mlp_layernorm = ExtraStateRMSNorm
        if qk_layernorm:
            sub.self_attention.submodules.q_layernorm = ExtraStateRMSNorm
            sub.self_attention.submodules.k_layernorm = ExtraStateRMSNorm
        # Checkpoint keys of the TE MoE layer (megatron-core's local map would rename pre_mlp_layernorm too).
        sub.sharded_state_dict_keys_map = dict(checkpoint_keys.LAYER_KEYS_MAP)
    if backend == "triton":
        spec.submodules.self_attention.submodules.core_attention = triton_attention_class()
    if init_seed is not None:
        spec.module = seeded_layer_class(spec.module)
        spec.params = dict(spec.params or {}, init_seed=init_seed)
    logger.debug("qwen3-moe layer spec: backend=%s te=%s", backend, use_te)
    return spec


def qwen3_moe_block_spec(
    config: Any,
    backend: str,
    num_experts: int,
    qk_layernorm: bool = True,
    vp_stage: int | None = None,
    init_seed: int | None = None,
) -> TransformerBlockSubmodules:
    """Decoder block spec for this pipeline stage: its layers plus the final norm.

    With the local spec the final norm is :class:`ExtraStateRMSNorm` (the TE spec's is ``TENorm``; megatron-core's default
    for a bare layer spec would be the torch norm, which refuses sequence parallelism).
    """
    from megatron.core.transformer.transformer_block import get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    layer_spec = qwen3_moe_layer_spec(backend, num_experts=num_experts, qk_layernorm=qk_layernorm, init_seed=init_seed)
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    offset = get_transformer_layer_offset(config, vp_stage=vp_stage)
    layer_specs = [layer_spec] * config.num_layers
    if layer_spec.submodules.input_layernorm is SequenceParallelRMSNorm:
        final_norm: Any = ExtraStateRMSNorm
    else:
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    return TransformerBlockSubmodules(layer_specs=layer_specs[offset : offset + n], layer_norm=final_norm)
