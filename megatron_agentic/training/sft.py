"""SFT datasets for ``megatron-agentic train`` (``data.sft: true``): conversations with per-token loss masks.

Each ``blend`` / ``eval_sets`` prefix is a dataset written by ``megatron-agentic data sft``
(:mod:`data_tools.synthesis.sft`): ``PREFIX.bin/.idx`` (token ids, one document per conversation) and
``PREFIX_loss_mask.bin/.idx`` (uint8, 1 on target tokens), both read with megatron-core's ``IndexedDataset``.
:class:`SFTDataset` is a megatron-core ``MegatronDataset`` (so ``BlendedMegatronDatasetBuilder`` does the train/valid
split and the weighted blend of several SFT sets, e.g. general chat + ReAct trajectories), built like Megatron-LM's
``megatron/training/datasets/sft_dataset.py`` (core_v0.16.1): ``tokens = seq[:-1]``, ``labels = seq[1:]``,
``loss_mask`` 0 where the label is not a target (``IGNORE_INDEX``) or is padding, position ids from 0.

One conversation per sequence: a conversation longer than ``seq_length + 1`` tokens is truncated on the right
(as Megatron-LM does), a shorter one is padded with the end-of-document id, and padding carries no loss. The
model is causal, so a sample attends only to itself and earlier tokens of itself; no attention or loss crosses
samples. (Packing several conversations per sequence with per-document ``PackedSeqParams`` is the follow-up once
the packed CPT path exists.)

Sample order: the training split repeats shuffled epochs (a permutation per epoch from ``train.seed``); the
validation split and eval sets read each conversation once in order and then yield *padding samples* (all loss
masked), so an evaluation of ``ceil(conversations / global_batch_size)`` batches is the exact token-weighted
masked loss over the set (what ``megatron-agentic sft-eval`` runs).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from data_tools.synthesis.sft import mask_path
from megatron_agentic.config import ConfigError, TrainingConfig
from megatron_agentic.training.splits import TokenizerInfo, build_splits, gpt_dataset_config, resolved_blend

logger = logging.getLogger(__name__)


def check_sft_prefix(prefix: str, where: str) -> None:
    """ConfigError naming ``where`` unless ``prefix`` and its loss-mask dataset both exist."""
    from pathlib import Path

    for p in (prefix, mask_path(prefix)):
        for suffix in (".bin", ".idx"):
            if not Path(p + suffix).is_file():
                hint = " (make it with `megatron-agentic data sft`)" if p != prefix else ""
                raise ConfigError(f"{where}: {p}{suffix} does not exist{hint}")


class SFTLowLevelDataset:
    """The token and loss-mask ``IndexedDataset`` pair of one SFT prefix (sequence lengths must agree)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tokens = IndexedDataset(prefix, multimodal=False, mmap=True)
        self.mask = IndexedDataset(mask_path(prefix), multimodal=False, mmap=True)
        if not np.array_equal(self.tokens.sequence_lengths, self.mask.sequence_lengths):
            raise ConfigError(
                f"{mask_path(prefix)}: sequence lengths differ from {prefix} "
                f"({len(self.mask)} vs {len(self.tokens)} conversations); rewrite both with `data sft`"
            )

    def __len__(self) -> int:
        return len(self.tokens)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and 0/1 target mask of conversation ``index``."""
        return self.tokens[index], self.mask[index]


class SFTDataset(MegatronDataset):
    """One padded conversation per sample with Megatron-LM's SFT ``labels`` / ``loss_mask`` (see module doc)."""

    def __init__(
        self,
        dataset: SFTLowLevelDataset,
        dataset_path: str | None,
        indices: np.ndarray,
        num_samples: int | None,
        index_split: Split,
        config: Any,
    ) -> None:
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        n = len(indices)
        if n == 0:
            raise ConfigError(
                f"data.split {config.split!r} leaves the {index_split.name} split of {dataset_path} "
                f"({len(dataset)} conversations) empty; change data.split (e.g. 100,0,0) or add conversations"
            )
        wanted = n if num_samples is None else max(int(num_samples), 1)
        if index_split == Split.train:
            epochs = math.ceil(wanted / n)
            self.order = np.concatenate(
                [np.random.RandomState(config.random_seed + e).permutation(indices) for e in range(epochs)]
            )[:wanted]
        else:
            self.order = np.asarray(indices[:wanted])
        self.length = wanted
        self.pad_id = int(config.tokenizer.eod)
        window = config.sequence_length + 1
        lengths = dataset.tokens.sequence_lengths[np.asarray(indices, dtype=np.int64)]
        long_ones = np.asarray(indices, dtype=np.int64)[lengths > window]
        if long_ones.size:
            empty = sum(1 for i in long_ones.tolist() if not dataset.mask[i][1:window].any())
            logger.warning(
                "%s (%s): %d of %d conversations are longer than seq_length + 1 = %d tokens and are truncated%s",
                dataset_path,
                index_split.name,
                long_ones.size,
                n,
                window,
                f"; {empty} keep no target token (raise train.seq_length)" if empty else "",
            )

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: SFTLowLevelDataset) -> int:
        """Conversations (the unit the train/valid split divides)."""
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: Any) -> SFTLowLevelDataset:
        """The token + loss-mask pair of ``dataset_path``."""
        return SFTLowLevelDataset(dataset_path)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        seq = self.config.sequence_length
        ids = np.full(seq + 1, self.pad_id, dtype=np.int64)
        mask = np.zeros(seq + 1, dtype=np.float32)
        if idx < len(self.order):  # beyond: a padding sample of an evaluation split (no loss)
            tokens, target = self.dataset.get(int(self.order[idx]))
            k = min(len(tokens), seq + 1)
            ids[:k] = tokens[:k]
            mask[:k] = target[:k]
        return {
            "tokens": torch.from_numpy(ids[:-1].copy()),
            "labels": torch.from_numpy(ids[1:].copy()),
            "loss_mask": torch.from_numpy(mask[1:].copy()),
            "position_ids": torch.arange(seq, dtype=torch.int64),
        }


def conversations_in(prefix: str) -> int:
    """Number of conversations of an SFT dataset (read from its ``.idx`` without loading tokens)."""
    from data_tools.indexed.indexed_io import read_index

    return int(read_index(prefix).num_sequences)


def build_sft_datasets(cfg: TrainingConfig, train_samples: int, eval_samples: int) -> Any:
    """``Datasets`` (train / valid / eval_sets) of :class:`SFTDataset` for ``data.sft: true``."""
    if not cfg.data.uses_files:
        raise ConfigError("data.sft=true needs data.blend or data.blend_file (SFT datasets from `data sft`)")
    if cfg.data.reset_attention_mask or cfg.data.reset_position_ids:
        raise ConfigError("data.sft=true holds one conversation per sequence: unset data.reset_* (nothing to reset)")
    arch = cfg.model.architecture()
    prefixes, weights = resolved_blend(cfg, check_sft_prefix)
    tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=cfg.data.eod_id)
    config = gpt_dataset_config(cfg, cfg.train.seq_length, tokenizer, blend=(prefixes, weights), split=cfg.data.split)
    return build_splits(
        cfg, SFTDataset, config, train_samples, eval_samples, SFTDataset, check_sft_prefix, "SFT datasets"
    )
