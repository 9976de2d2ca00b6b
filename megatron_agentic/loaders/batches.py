"""What every training batch loader agrees on: the batch keys and which samples a rank reads.

Shared by the torch loader (``megatron_agentic.training.data``) and the DALI loader
(``megatron_agentic.loaders.dali``), so neither imports the other for them and both read exactly the same
samples in the same order (switching loaders or resuming never changes what a run reads).
"""

from __future__ import annotations

BATCH_KEYS = ("tokens", "labels", "loss_mask", "attention_mask", "position_ids")
"""Keys of a batch dict (``attention_mask`` may be absent/None)."""


def rank_sample_indices(iteration: int, global_batch_size: int, dp_rank: int, dp_size: int) -> range:
    """Dataset indices this data-parallel rank reads for global batch ``iteration``.

    Global batch ``i`` is samples ``[i * global_batch_size, (i + 1) * global_batch_size)``, split into
    ``dp_size`` contiguous equal parts; rank ``dp_rank`` takes part ``dp_rank``.
    """
    per_rank = global_batch_size // dp_size
    start = iteration * global_batch_size + dp_rank * per_rank
    return range(start, start + per_rank)
