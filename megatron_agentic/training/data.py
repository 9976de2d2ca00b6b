"""Training data: megatron-core ``GPTDataset`` / ``BlendedMegatronDatasetBuilder`` over weighted ``.bin/.idx``
prefixes (or megatron-core's mock dataset), and context-parallel splitting.

Sample order is fixed by the dataset (megatron-core shuffles with the seed); the loaders that read it
(:mod:`megatron_agentic.loaders`) take global batch ``i`` as samples ``[i * gbs, (i + 1) * gbs)``, split
contiguously over data-parallel ranks and then into micro-batches, so the data position of a run is just its
iteration count and a resumed run reads exactly what the uninterrupted one would have read.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset

from megatron_agentic.config import ConfigError, TrainingConfig, load_blend_file, parse_blend

logger = logging.getLogger(__name__)


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


def _check_prefix(prefix: str, where: str) -> None:
    for suffix in (".bin", ".idx"):
        if not Path(prefix + suffix).is_file():
            raise ConfigError(f"{where}: {prefix}{suffix} does not exist")


def _gpt_config(cfg: TrainingConfig, seq_length: int, tokenizer: TokenizerInfo, **kwargs: Any) -> GPTDatasetConfig:
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


def dataset_eod(cfg: TrainingConfig) -> int:
    """The end-of-document id the training datasets mark documents with (mock data: clipped to the vocabulary)."""
    vocab = cfg.model.architecture().vocab_size
    if cfg.data.uses_files:
        return cfg.data.eod_id
    return cfg.data.eod_id if cfg.data.eod_id < vocab else vocab - 1


def _is_built_on_rank() -> bool:
    return True


def build_datasets(cfg: TrainingConfig, train_samples: int, eval_samples: int) -> Datasets:
    """Build the train/valid datasets (and ``data.eval_sets``) with megatron-core's dataset builder.

    ``train_samples`` and ``eval_samples`` are the numbers of sequences each split must provide
    (megatron-core repeats epochs as needed).
    """
    if cfg.data.sft:  # conversations with per-token loss masks (issue 24)
        from megatron_agentic.training.sft import build_sft_datasets

        return build_sft_datasets(cfg, train_samples, eval_samples)
    arch = cfg.model.architecture()
    seq = cfg.train.seq_length
    if cfg.data.uses_files:
        prefixes, weights = resolved_blend(cfg, _check_prefix)
        tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=cfg.data.eod_id)
        config = _gpt_config(cfg, seq, tokenizer, blend=(prefixes, weights), split=cfg.data.split)
        cls = GPTDataset
    else:
        tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=dataset_eod(cfg))
        config = _gpt_config(cfg, seq, tokenizer, split=cfg.data.split)
        cls = MockGPTDataset
    return build_splits(cfg, cls, config, train_samples, eval_samples, GPTDataset, _check_prefix, "datasets")


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
        ecfg = _gpt_config(cfg, seq, tokenizer, blend=([prefix], None), split="0,100,0")
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


def split_for_context_parallel(
    batch: dict[str, torch.Tensor | None], cp_rank: int, cp_size: int
) -> dict[str, torch.Tensor | None]:
    """Zigzag-split a batch along the sequence: rank ``r`` keeps chunks ``r`` and ``2W-1-r`` of ``2W``.

    This is the layout megatron-core's RoPE uses (``get_pos_emb_on_this_cp_rank``) and the one
    ``megatron.core.utils.get_batch_on_this_cp_rank`` produces; attention masks are dropped (the ring
    attention is causal).
    """
    if cp_size == 1:
        return batch
    out: dict[str, torch.Tensor | None] = {}
    for key, val in batch.items():
        if val is None or key == "attention_mask":
            out[key] = None
            continue
        s = val.shape[1]
        chunk = s // (2 * cp_size)
        first = val[:, cp_rank * chunk : (cp_rank + 1) * chunk]
        j = 2 * cp_size - 1 - cp_rank
        second = val[:, j * chunk : (j + 1) * chunk]
        out[key] = torch.cat([first, second], dim=1).contiguous()
    return out
