"""Checkpoint key layout of Qwen3-MoE: the Transformer Engine (H100) layout, and the legacy one it replaced.

Every checkpoint the project writes uses the sharded-state-dict keys of megatron-core 0.16.1's TE layer spec
(``models/gpt/gpt_layer_specs.py``, ``get_gpt_layer_with_transformer_engine_spec`` with ``num_experts`` set):

- the input norm is fused into ``TELayerNormColumnParallelLinear``: ``decoder.layers.self_attention.linear_qkv.
  layer_norm_weight``;
- a MoE layer keeps a separate ``pre_mlp_layernorm`` (``TENorm``): ``decoder.layers.pre_mlp_layernorm.weight``;
- router ``decoder.layers.mlp.router.weight``; experts ``decoder.layers.mlp.experts.experts.linear_fc{1,2}.weight``
  (the keys ``TEGroupedMLP`` and ``SequentialMLP`` both write, ``transformer/moe/experts.py``).

The CPU layer spec reaches this layout through its ``sharded_state_dict_keys_map``
(:data:`LAYER_KEYS_MAP`). Checkpoints written before (with megatron-core's *local* spec map, which renames
``pre_mlp_layernorm.`` to ``mlp.linear_fc1.layer_norm_`` even in MoE layers) are recognised by
:func:`detect_legacy_layout` and loaded by renaming the requested keys (:func:`request_legacy_keys`), for the
model and, because the optimizer's checkpoint keys derive from the model's, for the optimizer state too.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

LAYER_KEYS_MAP: dict[str, str] = {"input_layernorm.": "self_attention.linear_qkv.layer_norm_"}
"""``TransformerLayerSubmodules.sharded_state_dict_keys_map`` of the project's CPU spec: TE keys for a MoE layer.

The TE MoE layer fuses only the input norm into ``linear_qkv``; ``pre_mlp_layernorm`` keeps its own name.
"""

LEGACY_LAYER_KEYS_MAP: dict[str, str] = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}
"""The map of megatron-core's ``get_gpt_layer_local_spec`` that the project used before (legacy layout)."""

LEGACY_KEY_MAP: dict[str, str] = {
    "decoder.layers.mlp.linear_fc1.layer_norm_weight": "decoder.layers.pre_mlp_layernorm.weight",
}
"""Checkpoint tensor key in the legacy layout -> the same tensor's key in the TE layout (MoE layers)."""


def te_key(key: str) -> str:
    """The TE-layout name of a checkpoint tensor key (legacy keys mapped, others unchanged).

    Works on model keys and on keys that embed them (e.g. ``optimizer.state.exp_avg.<model key>``).
    """
    for old, new in LEGACY_KEY_MAP.items():
        if key == old or key.endswith("." + old):
            return key[: len(key) - len(old)] + new
    return key


def checkpoint_tensor_keys(ckpt_dir: str | os.PathLike) -> set[str]:
    """Keys of the tensors stored in a ``dist_checkpointing`` checkpoint directory (reads metadata only)."""
    from megatron.core import dist_checkpointing

    return set(dist_checkpointing.load_tensors_metadata(str(ckpt_dir)))


def is_legacy_keys(keys: set[str] | list[str]) -> bool:
    """Whether checkpoint tensor keys are in the legacy layout (a legacy model key present, its TE key absent)."""
    keys = set(keys)
    return any(old in keys and new not in keys for old, new in LEGACY_KEY_MAP.items())


def detect_legacy_layout(ckpt_dir: str | os.PathLike) -> bool:
    """Whether the checkpoint in ``ckpt_dir`` (an ``iter_*`` directory) was written in the legacy layout."""
    return is_legacy_keys(checkpoint_tensor_keys(ckpt_dir))


def request_legacy_keys(sharded_state_dict: dict[str, Any]) -> int:
    """Rename, in place, the TE-layout keys of a model sharded state dict to their legacy names for loading.

    Call it on the model part before the optimizer's sharded state dict is derived from it, so the optimizer
    state is requested under the legacy names too. The state-dict (module) names are untouched, so
    ``load_state_dict`` works as usual. Returns the number of sharded entries renamed.
    """
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory

    inverse = {new: old for old, new in LEGACY_KEY_MAP.items()}
    renamed = 0
    for item in nested_values(sharded_state_dict):
        if isinstance(item, (ShardedTensor, ShardedTensorFactory, ShardedObject)) and item.key in inverse:
            item.key = inverse[item.key]
            renamed += 1
    return renamed


def log_legacy_load(ckpt_dir: str | os.PathLike, renamed: int) -> None:
    """The one log line announcing that a legacy-layout checkpoint is being mapped at load."""
    logger.warning(
        "%s: legacy checkpoint layout (%s); mapping %d tensor(s) to the TE layout (%s) while loading; "
        "the next save writes the TE layout",
        ckpt_dir,
        ", ".join(LEGACY_KEY_MAP),
        renamed,
        ", ".join(LEGACY_KEY_MAP.values()),
    )


EXTRA_STATE_SUFFIX = "._extra_state"
"""Key suffix of the ``ShardedObject`` s holding a module's ``get_extra_state()`` (TE's FP8 scaling state)."""


def is_extra_state(key: str) -> bool:
    """Whether a state-dict or checkpoint key is a module's ``_extra_state`` (``[prefix.]_extra_state``)."""
    return key == "_extra_state" or key.endswith(EXTRA_STATE_SUFFIX)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint lacks a tensor (or other state) the model asks for: never skipped."""


def load_sharded(sharded_state_dict: dict[str, Any], ckpt_dir: str | os.PathLike) -> tuple[dict[str, Any], set[str]]:
    """``dist_checkpointing.load`` that lets only missing module ``_extra_state`` objects be initialised.

    Checkpoints written before the norms carried Transformer Engine's ``_extra_state`` (converted or trained with
    the project before TE 2.10's ``RMSNorm`` became an ``ops.BasicOperation``) lack the objects the TE model's
    ``q_layernorm``/``k_layernorm``/``pre_mlp_layernorm``/``final_layernorm`` request. As Megatron-LM does for
    "backward compatibility for TE changes" (``--dist-ckpt-strictness log_all`` in its functional tests,
    ``megatron/training/checkpointing.py::load_model_state_dict`` retrying ``strict=False`` at core_v0.16.1),
    the load uses megatron-core's ``StrictHandling.RETURN_UNEXPECTED``: requested keys absent from the checkpoint
    are dropped from the request and returned. Unlike a blanket non-strict load, anything absent other than a
    module's ``_extra_state`` raises :class:`CheckpointMismatchError`, so no tensor is ever silently left at its
    initial value. Returns the loaded state and the absent ``_extra_state`` keys (left as the modules made them).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    loaded, _, unexpected = dist_checkpointing.load(
        sharded_state_dict, str(ckpt_dir), strict=StrictHandling.RETURN_UNEXPECTED
    )
    absent = set(unexpected)
    not_extra = sorted(k for k in absent if not is_extra_state(k))
    if not_extra:
        raise CheckpointMismatchError(
            f"{ckpt_dir}: checkpoint lacks {len(not_extra)} requested entr{'y' if len(not_extra) == 1 else 'ies'}: "
            f"{', '.join(not_extra[:5])}{' ...' if len(not_extra) > 5 else ''}"
        )
    if absent:
        logger.warning(
            "%s: checkpoint has no %s (written before the TE norm extra state); these modules keep their initial "
            "(no-FP8) extra state",
            ckpt_dir,
            ", ".join(sorted(absent)),
        )
    return loaded, absent


def load_module_state(module: Any, state_dict: dict[str, Any]) -> None:
    """``module.load_state_dict`` that accepts only missing ``_extra_state`` entries (see :func:`load_sharded`).

    Strict for every tensor: a missing or unexpected parameter/buffer raises :class:`CheckpointMismatchError`.
    """
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not is_extra_state(k)]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"model state mismatch: missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
