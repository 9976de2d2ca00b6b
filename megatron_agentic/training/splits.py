"""What the pre-training and the SFT datasets share: megatron-core's dataset config for a run, the blend as
(prefixes, weights), and the train/valid/eval-set builder (a leaf below :mod:`~megatron_agentic.training.data` and
:mod:`~megatron_agentic.training.sft`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

from megatron_agentic.config import ConfigError, TrainingConfig, load_blend_file, parse_blend

logger = logging.getLogger("megatron_agentic.training.data")


@dataclasses.dataclass
class TokenizerInfo:
    """The two tokenizer facts megatron-core's GPT datasets need (no tokenizer files are loaded)."""

    vocab_size: int
    """Number of token ids."""
    eod: int
    """End-of-document token id."""

    @property
    def unique_identifiers(self) -> dict[str, int | str]:
        """What megatron-core hashes into dataset cache names."""
        return {"class": "TokenizerInfo", "vocab_size": self.vocab_size, "eod": self.eod}


@dataclasses.dataclass
class Datasets:
    """Datasets of one run."""

    train: Any
    """Training dataset (indexable, returns batch dicts)."""
    valid: Any | None
    """Validation split (None when the split gives it no weight)."""
    eval_sets: dict[str, Any]
    """Extra held-out sets by name."""


def check_prefix(prefix: str, where: str) -> None:
    """ConfigError naming ``where`` unless both files of the indexed dataset ``prefix`` exist."""
    for suffix in (".bin", ".idx"):
        if not Path(prefix + suffix).is_file():
            raise ConfigError(f"{where}: {prefix}{suffix} does not exist")


def gpt_dataset_config(
    cfg: TrainingConfig, seq_length: int, tokenizer: TokenizerInfo, **kwargs: Any
) -> GPTDatasetConfig:
    """megatron-core's ``GPTDatasetConfig`` for this run (``kwargs``: ``blend``, ``split`` ...)."""
    d = cfg.data
    return GPTDatasetConfig(
        random_seed=cfg.train.seed,
        sequence_length=seq_length,
        tokenizer=tokenizer,
        reset_position_ids=d.reset_position_ids,
        reset_attention_mask=d.reset_attention_mask,
        eod_mask_loss=d.eod_mask_loss,
        create_attention_mask=create_attention_mask(cfg),
        path_to_cache=d.cache_dir,
        mid_level_dataset_surplus=0.005,
        **kwargs,
    )


def create_attention_mask(cfg: TrainingConfig) -> bool:
    """Materialise ``[1, s, s]`` masks only where they carry information (document resets), and never with
    ``data.document_attention`` (documents are kept apart by ``PackedSeqParams`` instead)."""
    return bool(cfg.data.reset_attention_mask) and not cfg.data.document_attention


def _is_built_on_rank() -> bool:
    return True


def resolved_blend(cfg: TrainingConfig, check_prefix: Any) -> tuple[list[str], list[float] | None]:
    """``data.blend`` (or ``data.blend_file``) as (prefixes, weights), each prefix checked by ``check_prefix``."""
    blend_list = cfg.data.blend if cfg.data.blend is not None else load_blend_file(cfg.data.blend_file)
    where = "data.blend" if cfg.data.blend is not None else f"data.blend_file {cfg.data.blend_file}"
    prefixes, weights = parse_blend(blend_list, where)
    for prefix in prefixes:
        check_prefix(prefix, where)
    return prefixes, weights


def build_splits(
    cfg: TrainingConfig,
    cls: Any,
    config: Any,
    train_samples: int,
    eval_samples: int,
    eval_cls: Any,
    check_prefix: Any,
    label: str,
) -> Datasets:
    """Train/valid splits of ``cls`` from ``config`` and every ``data.eval_sets`` prefix as an ``eval_cls`` dataset
    (shared by the pre-training and the SFT datasets)."""
    arch = cfg.model.architecture()
    seq = cfg.train.seq_length
    split = [float(x) for x in str(cfg.data.split).split(",")]
    sizes = [train_samples, eval_samples if split[1] > 0 else 0, 0]
    train, valid, _ = BlendedMegatronDatasetBuilder(cls, sizes, _is_built_on_rank, config).build()
    if train is None:
        raise ConfigError(f"data.split {cfg.data.split!r} leaves no training data")
    eval_sets: dict[str, Any] = {}
    for name, prefix in cfg.data.eval_sets.items():
        check_prefix(prefix, f"data.eval_sets.{name}")
        tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=cfg.data.eod_id)
        ecfg = gpt_dataset_config(cfg, seq, tokenizer, blend=([prefix], None), split="0,100,0")
        _, dataset, _ = BlendedMegatronDatasetBuilder(eval_cls, [0, eval_samples, 0], _is_built_on_rank, ecfg).build()
        eval_sets[name] = dataset
    logger.info(
        "%s: train=%d valid=%s eval_sets=%s",
        label,
        len(train),
        None if valid is None else len(valid),
        {k: len(v) for k, v in eval_sets.items()},
    )
    return Datasets(train=train, valid=valid, eval_sets=eval_sets)
