"""NVIDIA DALI batch loader (optional extra ``[dali]``): ``data.loader: dali``.

A DALI pipeline reads samples of the training dataset (megatron-core ``GPTDataset``: dicts of
``tokens, labels, loss_mask, attention_mask, position_ids``) through ``fn.external_source`` and batches
them on DALI's worker threads with a prefetch queue, so batch assembly overlaps the training step.
The sample order is exactly the one of the torch path (:class:`megatron_agentic.loaders.torch_loader.MicroBatchLoader`;
both are :class:`~megatron_agentic.loaders.batches.RankBatchLoader`): global batch ``i`` is dataset samples
``[i * gbs, (i + 1) * gbs)`` split over data-parallel ranks, so switching loaders or resuming never changes what a
run reads.

The loader exposes the same ``next_iteration()`` / ``iteration_batches(i)`` interface and yields the same
batch dicts (torch tensors, ``attention_mask`` None when the dataset has none).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from megatron_agentic.loaders.batches import BATCH_KEYS, RankBatchLoader

logger = logging.getLogger(__name__)


def dali_available() -> bool:
    """Whether ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _require_dali() -> Any:
    try:
        import nvidia.dali as dali
    except ImportError as exc:
        raise ImportError(
            "data.loader=dali needs NVIDIA DALI: pip install 'megatron-agentic[dali]' (nvidia-dali-cuda120), "
            "or use data.loader=torch"
        ) from exc
    return dali


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class DaliMicroBatchLoader(RankBatchLoader):
    """Per-rank micro-batch loader backed by a DALI pipeline (same contract as ``MicroBatchLoader``)."""

    def __init__(
        self,
        dataset: Any,
        micro_batch_size: int,
        global_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        start_iteration: int = 0,
        num_threads: int = 2,
        prefetch_queue_depth: int = 2,
        device_id: int | None = None,
    ) -> None:
        super().__init__(dataset, micro_batch_size, global_batch_size, dp_rank, dp_size, start_iteration)
        self.dali = _require_dali()
        self.num_threads = num_threads
        self.prefetch_queue_depth = prefetch_queue_depth
        self.device_id = device_id
        first = dataset[0]
        self.keys = [k for k in BATCH_KEYS if first.get(k) is not None]
        self._pipe: Any = None
        self._pipe_iteration: int | None = None  # iteration the pipeline's next batch belongs to
        self._pipe_offset = 0  # micro-batches of that iteration already consumed

    def _sample(self, stream_start: int, position: int) -> tuple[np.ndarray, ...]:
        """Sample number ``position`` of this rank's stream starting at iteration ``stream_start``."""
        index = self.sample_index(stream_start + position // self.per_rank, position % self.per_rank)
        sample = self.dataset[index]
        return tuple(_to_numpy(sample[k]) for k in self.keys)

    def _build(self, start_iteration: int) -> None:
        dali = self.dali
        fn = dali.fn
        keys = self.keys

        def source(sample_info: Any) -> tuple[np.ndarray, ...]:
            return self._sample(start_iteration, int(sample_info.idx_in_epoch))

        pipe = dali.pipeline.Pipeline(
            batch_size=self.micro_batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=self.prefetch_queue_depth,
            exec_async=True,
            exec_pipelined=True,
        )
        with pipe:
            outputs = fn.external_source(source=source, num_outputs=len(keys), batch=False, parallel=False)
            pipe.set_outputs(*outputs)
        pipe.build()
        self._pipe = pipe
        self._pipe_iteration = start_iteration
        self._pipe_offset = 0
        logger.debug("DALI pipeline built at iteration %d (keys %s)", start_iteration, keys)

    def _next_batch(self) -> dict[str, torch.Tensor | None]:
        outputs = self._pipe.run()
        batch: dict[str, torch.Tensor | None] = dict.fromkeys(BATCH_KEYS)
        for key, out in zip(self.keys, outputs):
            if hasattr(out, "as_cpu"):
                out = out.as_cpu()
            batch[key] = torch.from_numpy(np.array(out.as_array()))
        self._pipe_offset += 1
        if self._pipe_offset * self.micro_batch_size == self.per_rank:
            self._pipe_iteration += 1
            self._pipe_offset = 0
        return batch

    def iteration_batches(self, iteration: int) -> Iterator[dict[str, torch.Tensor | None]]:
        """Micro-batches of global batch ``iteration`` for this rank."""
        if self._pipe is None or self._pipe_iteration != iteration or self._pipe_offset != 0:
            self._build(iteration)
        for _ in range(self.num_microbatches):
            yield self._next_batch()


def build_dali_loader(
    dataset: Any,
    micro_batch_size: int,
    global_batch_size: int | None = None,
    dp_rank: int = 0,
    dp_size: int = 1,
    start_iteration: int = 0,
    **kwargs: Any,
) -> DaliMicroBatchLoader:
    """A :class:`DaliMicroBatchLoader` over ``dataset`` (raises ImportError naming the extra without DALI).

    ``global_batch_size`` defaults to ``micro_batch_size * dp_size``; ``kwargs`` go to the loader
    (``num_threads``, ``prefetch_queue_depth``, ``device_id``).
    """
    if global_batch_size is None:
        global_batch_size = micro_batch_size * dp_size
    return DaliMicroBatchLoader(
        dataset, micro_batch_size, global_batch_size, dp_rank, dp_size, start_iteration=start_iteration, **kwargs
    )
