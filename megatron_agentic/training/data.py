"""Training data: megatron-core ``GPTDataset`` / ``BlendedMegatronDatasetBuilder`` over weighted ``.bin/.idx``
prefixes (or megatron-core's mock dataset), and context-parallel splitting.

Sample order is fixed by the dataset (megatron-core shuffles with the seed); the loaders that read it
(:mod:`megatron_agentic.loaders`) take global batch ``i`` as samples ``[i * gbs, (i + 1) * gbs)``, split
contiguously over data-parallel ranks and then into micro-batches, so the data position of a run is just its
iteration count and a resumed run reads exactly what the uninterrupted one would have read.
"""

from __future__ import annotations

import logging

import torch
from megatron.core.datasets.gpt_dataset import GPTDataset, MockGPTDataset

from megatron_agentic.config import TrainingConfig
from megatron_agentic.training.sft import build_sft_datasets
from megatron_agentic.training.splits import (
    Datasets,
    TokenizerInfo,
    build_splits,
    check_prefix,
    gpt_dataset_config,
    resolved_blend,
)

logger = logging.getLogger(__name__)


def dataset_eod(cfg: TrainingConfig) -> int:
    """The end-of-document id the training datasets mark documents with (mock data: clipped to the vocabulary)."""
    vocab = cfg.model.architecture().vocab_size
    if cfg.data.uses_files:
        return cfg.data.eod_id
    return cfg.data.eod_id if cfg.data.eod_id < vocab else vocab - 1


def build_datasets(cfg: TrainingConfig, train_samples: int, eval_samples: int) -> Datasets:
    """Build the train/valid datasets (and ``data.eval_sets``) with megatron-core's dataset builder.

    ``train_samples`` and ``eval_samples`` are the numbers of sequences each split must provide
    (megatron-core repeats epochs as needed).
    """
    if cfg.data.sft:  # conversations with per-token loss masks (issue 24)
        return build_sft_datasets(cfg, train_samples, eval_samples)
    arch = cfg.model.architecture()
    seq = cfg.train.seq_length
    if cfg.data.uses_files:
        prefixes, weights = resolved_blend(cfg, check_prefix)
        tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=cfg.data.eod_id)
        config = gpt_dataset_config(cfg, seq, tokenizer, blend=(prefixes, weights), split=cfg.data.split)
        cls = GPTDataset
    else:
        tokenizer = TokenizerInfo(vocab_size=arch.vocab_size, eod=dataset_eod(cfg))
        config = gpt_dataset_config(cfg, seq, tokenizer, split=cfg.data.split)
        cls = MockGPTDataset
    return build_splits(cfg, cls, config, train_samples, eval_samples, GPTDataset, check_prefix, "datasets")


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
