"""Sharded checkpoint keys of a Qwen3-MoE ``GPTModel`` in megatron-core 0.16.1's Transformer Engine layout.

These are the ``dist_checkpointing`` keys (layer axis stacked, global expert axis) that H100 training with
``get_gpt_layer_with_transformer_engine_spec`` loads, and that the CPU local spec writes once its
``sharded_state_dict_keys_map`` matches the TE layer (input norm fused into ``linear_qkv``, a separate
``pre_mlp_layernorm`` for MoE layers). ``LEGACY_KEYS`` maps the keys of checkpoints written before that
change (megatron-core's local-spec remap ``pre_mlp_layernorm.`` -> ``mlp.linear_fc1.layer_norm_``).

The old->new map itself is the model package's (``models/qwen3_moe/checkpoint_keys.py``), shared with training's load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from megatron_agentic.models.qwen3_moe.checkpoint_keys import LEGACY_KEY_MAP

logger = logging.getLogger(__name__)

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"

LAYER_KEYS = {
    "input_layernorm": "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
    "linear_qkv": "decoder.layers.self_attention.linear_qkv.weight",
    "q_layernorm": "decoder.layers.self_attention.q_layernorm.weight",
    "k_layernorm": "decoder.layers.self_attention.k_layernorm.weight",
    "linear_proj": "decoder.layers.self_attention.linear_proj.weight",
    "pre_mlp_layernorm": "decoder.layers.pre_mlp_layernorm.weight",
    "router": "decoder.layers.mlp.router.weight",
}
"""Per-layer tensors, stored with a leading layer axis ``[num_layers, ...]``."""

EXPERT_KEYS = {
    "linear_fc1": "decoder.layers.mlp.experts.experts.linear_fc1.weight",
    "linear_fc2": "decoder.layers.mlp.experts.experts.linear_fc2.weight",
}
"""Expert tensors, stored ``[num_layers, num_experts, ...]`` (SequentialMLP and TEGroupedMLP share them)."""

LAYER_EXTRA_STATES = (
    "decoder.layers.self_attention.linear_qkv._extra_state",
    "decoder.layers.self_attention.linear_proj._extra_state",
    "decoder.layers.self_attention.q_layernorm._extra_state",
    "decoder.layers.self_attention.k_layernorm._extra_state",
    "decoder.layers.pre_mlp_layernorm._extra_state",
)
"""``_extra_state`` objects (one per layer) the TE model requests on load: its linear layers and its ``TENorm``
norms (TE 2.10's ``RMSNorm`` is an ``ops.BasicOperation`` with ``get_extra_state``); the CPU spec writes the same
(``models/qwen3_moe/norm.py::ExtraStateRMSNorm``)."""

FINAL_EXTRA_STATES = ("decoder.final_layernorm._extra_state",)
"""``_extra_state`` objects outside the layer stack (offsets ``(0,)``, shape ``(1,)``): the final ``TENorm``."""

EXPERT_EXTRA_STATES = (
    "decoder.layers.mlp.experts.experts.linear_fc1._extra_state",
    "decoder.layers.mlp.experts.experts.linear_fc2._extra_state",
)
"""``_extra_state`` objects (one per layer and expert) of the expert linear layers."""

LEGACY_KEYS = LEGACY_KEY_MAP
"""Old (pre-TE-layout) key -> TE-layout key."""


def legacy_renames(stored_keys: Iterable[str]) -> dict[str, str]:
    """TE-layout key -> stored key for a checkpoint holding old-layout keys (empty for a TE-layout one).

    Logs one line when an old-layout checkpoint is detected.
    """
    stored = set(stored_keys)
    renames = {new: old for old, new in LEGACY_KEYS.items() if old in stored and new not in stored}
    if renames:
        logger.info(
            "checkpoint uses the pre-TE key layout (%s); reading it as %s",
            ", ".join(sorted(renames.values())),
            ", ".join(sorted(renames)),
        )
    return renames


def extra_state_key(base: str, offsets: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """The unique key megatron-core gives a ``ShardedObject`` (``base/shard_<offsets>_<shape>``)."""
    return f"{base}/shard_{'.'.join(map(str, offsets))}_{'.'.join(map(str, shape))}"
