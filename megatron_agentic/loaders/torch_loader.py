"""The torch batch loader (``data.loader: torch``, the default) and :func:`build_loader`, which picks the loader
``data.loader`` names.

Global batch ``i`` is dataset samples ``[i * gbs, (i + 1) * gbs)`` split contiguously over data-parallel ranks and
then into micro-batches (:class:`~megatron_agentic.loaders.batches.RankBatchLoader`, shared with the DALI
loader), so the data position of a run is just its iteration count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from megatron_agentic.config import ConfigError, TrainingConfig
from megatron_agentic.loaders.batches import BATCH_KEYS, RankBatchLoader


def _collate(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
    batch: dict[str, torch.Tensor | None] = {}
    for key in BATCH_KEYS:
        values = [s.get(key) for s in samples]
        batch[key] = None if values[0] is None else torch.stack([torch.as_tensor(v) for v in values])
    return batch


class _MicroBatchSampler(torch.utils.data.Sampler):
    """Endless batch sampler: the micro-batch index lists of one rank for iterations ``start, start + 1, ...``.

    ``start`` may be changed between ``iter()`` calls (a seek).
    """

    def __init__(self, schedule: RankBatchLoader) -> None:
        self.schedule = schedule
        self.start = 0

    def __iter__(self) -> Iterator[list[int]]:
        iteration = self.start
        while True:
            yield from self.schedule.micro_batch_indices(iteration)
            iteration += 1


class MicroBatchLoader(RankBatchLoader):
    """Yields the micro-batch dicts of one rank for consecutive iterations (torch ``DataLoader`` path).

    With ``num_workers > 0`` one ``DataLoader`` with persistent workers streams the micro-batches of consecutive
    iterations (``prefetch_factor`` micro-batches per worker loaded ahead); asking for an iteration other than the
    next one re-positions the stream (the workers are kept). The batches are identical to ``num_workers=0``
    (in-process loading).
    """

    def __init__(
        self,
        dataset: Any,
        micro_batch_size: int,
        global_batch_size: int,
        dp_rank: int,
        dp_size: int,
        start_iteration: int = 0,
        num_workers: int = 0,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(dataset, micro_batch_size, global_batch_size, dp_rank, dp_size, start_iteration)
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self._sampler: _MicroBatchSampler | None = None
        self._loader: torch.utils.data.DataLoader | None = None
        self._stream: Iterator[dict[str, torch.Tensor | None]] | None = None
        self._stream_next: int | None = None

    def _seek(self, iteration: int) -> None:
        if self._loader is None:
            self._sampler = _MicroBatchSampler(self)
            self._loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=self._sampler,
                num_workers=self.num_workers,
                collate_fn=_collate,
                persistent_workers=True,
                prefetch_factor=self.prefetch_factor,
            )
        assert self._sampler is not None
        self._sampler.start = iteration
        self._stream = iter(self._loader)  # persistent workers are reused; stale prefetches are discarded
        self._stream_next = iteration

    def iteration_batches(self, iteration: int) -> Iterator[dict[str, torch.Tensor | None]]:
        """Micro-batches of global batch ``iteration`` for this rank."""
        if self.num_workers > 0:
            if self._stream is None or self._stream_next != iteration:
                self._seek(iteration)
            assert self._stream is not None
            batches = [next(self._stream) for _ in range(self.num_microbatches)]
            self._stream_next = iteration + 1
            return iter(batches)
        return self._in_process(iteration)

    def _in_process(self, iteration: int) -> Iterator[dict[str, torch.Tensor | None]]:
        for indices in self.micro_batch_indices(iteration):
            yield _collate([self.dataset[i] for i in indices])

    def close(self) -> None:
        """Stop the worker processes (if any); a later call starts new ones."""
        stream, self._stream, self._loader, self._stream_next = self._stream, None, None, None
        shutdown = getattr(stream, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def build_loader(
    dataset: Any,
    cfg: TrainingConfig,
    dp_rank: int,
    dp_size: int,
    start_iteration: int = 0,
) -> RankBatchLoader:
    """The per-rank micro-batch loader for ``data.loader`` (``torch`` or ``dali``).

    ``dali`` calls :func:`megatron_agentic.loaders.dali.build_dali_loader` (the optional extra ``[dali]``, imported
    only when asked for; without it a ConfigError names the extra).
    """
    t = cfg.train
    if cfg.data.loader == "dali":
        try:
            from megatron_agentic.loaders.dali import build_dali_loader
        except ImportError as exc:
            raise ConfigError(f"data.loader=dali: {exc}") from None
        return build_dali_loader(
            dataset,
            t.micro_batch_size,
            global_batch_size=t.global_batch_size,
            dp_rank=dp_rank,
            dp_size=dp_size,
            start_iteration=start_iteration,
        )
    return MicroBatchLoader(
        dataset,
        t.micro_batch_size,
        t.global_batch_size,
        dp_rank,
        dp_size,
        start_iteration=start_iteration,
        num_workers=cfg.data.num_workers,
        prefetch_factor=cfg.data.prefetch_factor,
    )
