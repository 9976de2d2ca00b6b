"""Resume rules, as pure functions: which config changes a checkpoint accepts, and whose LR schedule wins.

- The data position is the number of consumed samples. A resumed run continues at sample
  ``consumed_samples``; a changed ``train.global_batch_size`` is accepted when it divides that count.
- Fields in :data:`INCOMPATIBLE_FIELDS` must not change between the saved config and the new one (the model
  shape, the data blend and split, the sequence length, the seed): a change is refused naming the field and
  both values.
- The LR schedule: when the checkpoint's scheduler (max/min LR, warmup, decay steps and style) differs from
  the one built from the new config, ``train.scheduler_from`` must say which wins (``checkpoint`` or
  ``config``); there is no silent default (Megatron-LM asserts the same unless told).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from megatron_agentic.config import ConfigError, config_from_dict

INCOMPATIBLE_FIELDS: tuple[str, ...] = (
    "model.*",
    "train.seq_length",
    "train.seed",
    "data.mock",
    "data.blend",
    "data.blend_file",
    "data.split",
    "data.tokenizer",
    "data.eod_token_id",
    "data.reset_position_ids",
    "data.reset_attention_mask",
    "data.document_attention",
    "data.eod_mask_loss",
    "data.sft",
)
"""Config fields a resume must keep (``section.*``: every field of the section)."""

DATA_SOURCE_FIELDS: tuple[str, ...] = ("data.mock", "data.blend", "data.blend_file", "data.split")
"""Fields naming the training data: a change is accepted with ``data.resume_from=config``."""

SCHEDULER_FIELDS: tuple[str, ...] = ("max_lr", "min_lr", "lr_warmup_steps", "lr_decay_steps", "lr_decay_style")
"""``OptimizerParamScheduler.state_dict()`` entries that define the LR schedule."""

_MODEL_RUNTIME_FIELDS = {"attention_backend", "moe_token_dispatcher", "recompute"}
"""``model`` fields that change how the model is computed, not its weights (may change on resume)."""


def _architecture(model_section: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved model shape (preset + overrides) of a saved ``model`` section; None if it no longer parses."""
    values = {k: v for k, v in model_section.items() if k not in _MODEL_RUNTIME_FIELDS}
    try:
        return dataclasses.asdict(config_from_dict({"model": values}).model.architecture())
    except (ConfigError, TypeError):
        return None


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``field: saved -> current`` lines for every incompatible change (empty: compatible).

    ``model.*`` compares the resolved architectures (preset defaults included), so a field set explicitly to
    its preset value is no change.
    """
    problems = []
    data_from_config = (current.get("data") or {}).get("resume_from") == "config"
    for pattern in INCOMPATIBLE_FIELDS:
        if data_from_config and pattern in DATA_SOURCE_FIELDS:
            continue  # data.resume_from=config: the new data is accepted (training/data_order.py)
        section, _, field = pattern.partition(".")
        old_section, new_section = saved.get(section) or {}, current.get(section) or {}
        if field == "*" and section == "model":
            old_arch, new_arch = _architecture(old_section), _architecture(new_section)
            if old_arch is not None and new_arch is not None:
                old_section, new_section = old_arch, new_arch
        if field == "*":
            names = sorted((set(old_section) | set(new_section)) - _MODEL_RUNTIME_FIELDS)
        else:
            names = [field]
        for name in names:
            if name not in old_section:  # older checkpoints lack newer fields
                continue
            old, new = old_section.get(name), new_section.get(name)
            if old != new:
                problems.append(f"{section}.{name}: checkpoint {old!r} -> now {new!r}")
    return problems


def check_config_compatible(saved: dict[str, Any] | None, current: dict[str, Any], where: str) -> None:
    """Raise ConfigError naming every incompatible field (no-op for checkpoints without a saved config)."""
    if not saved:
        return
    problems = config_differences(saved, current)
    if problems:
        raise ConfigError(
            f"cannot resume from {where}: incompatible config change(s): {'; '.join(problems)}. Restore these "
            "values, or start a new run (new checkpoint.dir) initialised with checkpoint.pretrained."
        )


def data_start_iteration(consumed_samples: int, global_batch_size: int, where: str) -> int:
    """The loader iteration that starts at sample ``consumed_samples`` with the new global batch size."""
    if consumed_samples % global_batch_size:
        raise ConfigError(
            f"cannot resume from {where}: it consumed {consumed_samples} samples, not a multiple of "
            f"train.global_batch_size={global_batch_size}; choose a batch size that divides it"
        )
    return consumed_samples // global_batch_size


def scheduler_differences(saved: dict[str, Any], built: dict[str, Any]) -> list[str]:
    """``field: checkpoint -> config`` lines where the saved LR schedule differs from the config's."""
    return [
        f"{name}: checkpoint {saved.get(name)!r} -> config {built.get(name)!r}"
        for name in SCHEDULER_FIELDS
        if name in saved and saved.get(name) != built.get(name)
    ]


def resolve_scheduler_source(
    saved: dict[str, Any], built: dict[str, Any], scheduler_from: str | None, where: str
) -> str:
    """``checkpoint`` or ``config``: whose LR schedule the resumed run follows.

    Raises ConfigError naming ``train.scheduler_from`` when the schedules differ and it is not set.
    """
    differences = scheduler_differences(saved, built)
    if not differences:
        return scheduler_from or "checkpoint"
    if scheduler_from is None:
        raise ConfigError(
            f"{where} holds a different LR schedule than this config ({'; '.join(differences)}); set "
            "train.scheduler_from=checkpoint to keep the saved schedule or train.scheduler_from=config to follow "
            "this config from the saved step"
        )
    return scheduler_from
