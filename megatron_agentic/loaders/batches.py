"""What every training batch loader agrees on: the batch keys, which samples a rank reads, and the schedule.

The torch loader (:mod:`megatron_agentic.loaders.torch_loader`) and the DALI loader
(:mod:`megatron_agentic.loaders.dali`) both derive from :class:`RankBatchLoader`, so they read exactly the same
samples in the same order (switching loaders or resuming never changes what a run reads) and neither imports the
other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


class RankBatchLoader:
    """One data-parallel rank's micro-batches of consecutive global batches: the part every loader shares.

    Iteration ``i`` covers ``rank_sample_indices(i, ...)`` (indices wrap modulo the dataset length), in
    micro-batches of ``micro_batch_size`` consecutive samples; starting at ``start_iteration`` resumes the data
    position exactly. Subclasses implement :meth:`iteration_batches`.
    """

    def __init__(
        self,
        dataset: Any,
        micro_batch_size: int,
        global_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        start_iteration: int = 0,
    ) -> None:
        if global_batch_size % (dp_size * micro_batch_size) != 0:
            raise ValueError(
                f"global batch {global_batch_size} is not a multiple of micro batch {micro_batch_size} x "
                f"data-parallel size {dp_size}"
            )
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.iteration = start_iteration
        """The next iteration :meth:`next_iteration` returns (the data position)."""
        self.per_rank = global_batch_size // dp_size
        """Samples per rank and global batch."""
        self.num_microbatches = self.per_rank // micro_batch_size
        """Micro-batches per rank and global batch."""

    def sample_index(self, iteration: int, position: int) -> int:
        """Dataset index of sample ``position`` (0 .. ``per_rank - 1``) of this rank's part of ``iteration``."""
        index = rank_sample_indices(iteration, self.global_batch_size, self.dp_rank, self.dp_size)[position]
        return index % len(self.dataset)

    def micro_batch_indices(self, iteration: int) -> Iterator[list[int]]:
        """Dataset indices of each micro-batch of this rank's part of ``iteration``."""
        indices = [self.sample_index(iteration, p) for p in range(self.per_rank)]
        for s in range(0, len(indices), self.micro_batch_size):
            yield indices[s : s + self.micro_batch_size]

    def iteration_batches(self, iteration: int) -> Iterator[dict[str, Any]]:
        """Micro-batches of global batch ``iteration`` for this rank."""
        raise NotImplementedError

    def next_iteration(self) -> Iterator[dict[str, Any]]:
        """Micro-batches of the next iteration (advances the data position)."""
        batches = self.iteration_batches(self.iteration)
        self.iteration += 1
        return batches
