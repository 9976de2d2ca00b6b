"""The same sample order after any allowed resume.

megatron-core's ``GPTDataset`` shuffles all the epochs it is built for together, so the order of the very first
samples depends on how many samples it is asked for (``train.iters`` x ``train.global_batch_size``): a run resumed
with a longer ``train.iters`` (or another batch size) and a dataset built anew would continue "at consumed sample N"
of a different permutation, repeating samples it had already seen and skipping others.

The order is therefore fixed once, at a run's first start, and stored in every checkpoint (``data_build``):

- ``num_samples`` (the chunk size C: what the first start built), ``seed`` and ``split``;
- the resolved blend: each prefix with its weight, the sizes of its ``.bin`` and ``.idx`` and a fingerprint of the
  ``.idx`` (header, size, SHA-256 of its first and last MiB), so a blend file rewritten in place or a re-tokenized
  data set is noticed, not only a changed path.

The training stream is a sequence of chunks: chunk 0 is megatron-core's dataset built for C samples with
``train.seed`` (exactly what a run that is never extended reads), chunk ``k`` the same build with seed
``train.seed + k``. A resume rebuilds the chunks from the stored values, so extending ``train.iters`` or changing the
global batch size (where allowed, see :mod:`~megatron_agentic.training.resume`) continues the same sequence. A
changed blend or data files are refused naming both values, unless ``data.resume_from=config``: then the data is
built anew from the config and the run continues at the consumed-sample count of a new order (samples may repeat
or be skipped; that is the documented consequence).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from megatron_agentic.config import ConfigError, TrainingConfig, load_blend_file, parse_blend
from megatron_agentic.testing import faults

logger = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1 << 20
"""Bytes hashed at each end of an ``.idx`` file."""


def idx_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over an ``.idx`` file's size, its first and its last :data:`FINGERPRINT_BYTES` (hex, 16 chars)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(size - FINGERPRINT_BYTES, FINGERPRINT_BYTES))
            h.update(f.read())
    return h.hexdigest()[:16]


def resolved_blend(cfg: TrainingConfig) -> list[dict[str, Any]]:
    """The blend this config trains on: ``[{prefix, weight, bin_bytes, idx_bytes, idx_fingerprint}]`` ([] for mock)."""
    d = cfg.data
    if not d.uses_files:
        return []
    blend_list = d.blend if d.blend is not None else load_blend_file(d.blend_file)
    prefixes, weights = parse_blend(
        blend_list, "data.blend" if d.blend is not None else f"data.blend_file {d.blend_file}"
    )
    out = []
    for i, prefix in enumerate(prefixes):
        entry: dict[str, Any] = {"prefix": prefix, "weight": None if weights is None else weights[i]}
        try:
            entry["bin_bytes"] = Path(prefix + ".bin").stat().st_size
            entry["idx_bytes"] = Path(prefix + ".idx").stat().st_size
            entry["idx_fingerprint"] = idx_fingerprint(prefix + ".idx")
        except OSError as exc:
            raise ConfigError(f"data: {prefix}: cannot read: {exc.strerror or exc}") from None
        out.append(entry)
    return out


def build_spec(cfg: TrainingConfig, num_samples: int) -> dict[str, Any]:
    """What fixes the training sample order (stored in checkpoints as ``data_build``)."""
    return {
        "num_samples": int(num_samples),
        "seed": int(cfg.train.seed),
        "split": str(cfg.data.split),
        "blend": resolved_blend(cfg),
    }


def _blend_text(blend: list[dict[str, Any]]) -> str:
    if not blend:
        return "mock data"
    return ", ".join(
        f"{b['prefix']} (weight {b['weight']}, {b['bin_bytes']} B .bin, .idx {b['idx_fingerprint']})" for b in blend
    )


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``what: checkpoint X -> now Y`` for every change of the data a stored order was built from."""
    problems = []
    old, new = saved.get("blend") or [], current.get("blend") or []
    if old != new:
        problems.append(f"data blend: checkpoint [{_blend_text(old)}] -> now [{_blend_text(new)}]")
    if str(saved.get("split")) != str(current.get("split")):
        problems.append(f"data.split: checkpoint {saved.get('split')!r} -> now {current.get('split')!r}")
    return problems


def resolve_build(saved: dict[str, Any] | None, cfg: TrainingConfig, needed_samples: int, where: str) -> dict[str, Any]:
    """The build spec this run uses: the checkpoint's (same order) or, for a new run, one built for ``needed_samples``.

    Raises ConfigError naming both values when the data changed and ``data.resume_from`` is not ``config``.
    """
    current = build_spec(cfg, needed_samples)
    if not saved:
        return current
    changed = differences(saved, current)
    if changed and cfg.data.resume_from != "config":
        raise ConfigError(
            f"cannot resume from {where}: the training data changed: {'; '.join(changed)}. Restore the data, or set "
            "data.resume_from=config to train on the new data from the consumed-sample count (a new sample order: "
            "samples may repeat or be skipped)"
        )
    if changed:
        logger.warning(
            "data.resume_from=config: the data changed since %s (%s); continuing in a new sample order", where, changed
        )
        return current
    return {**current, "num_samples": int(saved["num_samples"]), "seed": int(saved["seed"])}


class ChunkedDataset:
    """Chunks of ``chunk_size`` samples, chunk ``k`` being ``chunks[k]`` (indexable; only its first samples used)."""

    def __init__(self, chunks: list[Any], chunk_size: int) -> None:
        self.chunks = chunks
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.chunk_size * len(self.chunks)

    def __getitem__(self, index: int) -> Any:
        chunk, offset = divmod(int(index), self.chunk_size)
        return self.chunks[chunk][offset]


def build_train_stream(
    cfg: TrainingConfig, spec: dict[str, Any], needed_samples: int, eval_samples: int, build_datasets: Any
) -> Any:
    """megatron-core datasets for the stored order: ``(datasets, train)`` where ``train`` covers ``needed_samples``.

    ``build_datasets(cfg, train_samples, eval_samples)`` is :func:`megatron_agentic.training.data.build_datasets`.
    Chunk 0 is exactly the dataset a run that is never extended builds.
    """
    size = int(spec["num_samples"])
    seed = int(spec["seed"])
    first_cfg = (
        cfg if seed == cfg.train.seed else dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    )
    datasets = build_datasets(first_cfg, size, eval_samples)
    count = max(1, math.ceil(needed_samples / size))
    if count == 1:
        return datasets, datasets.train
    chunks = [datasets.train]
    for k in range(1, count):
        chunk_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed + k))
        chunks.append(build_datasets(chunk_cfg, size, 0).train)
    logger.info("training stream: %d chunks of %d samples (order fixed at the run's first start)", count, size)
    return datasets, ChunkedDataset(chunks, size)


class SampleLog:
    """Records which samples each step read (the test fault :data:`megatron_agentic.testing.faults.SAMPLE_LOG`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_env(cls, rank: int, dp_size: int) -> SampleLog | None:
        """The log the test fault names (one data-parallel rank only), else None."""
        path = faults.sample_log_path()
        if path is None or rank != 0 or dp_size != 1:
            return None
        return cls(path)

    def wrap(self, loader: Any, state: Any) -> Any:
        """A loader whose ``next_iteration`` also records the step's samples."""
        log = self

        class _Recording:
            def next_iteration(self) -> Any:
                batches = list(loader.next_iteration())
                hashes = []
                for batch in batches:
                    for row in batch["tokens"]:
                        hashes.append(hashlib.sha256(row.cpu().numpy().tobytes()).hexdigest()[:16])
                with open(log.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.iteration + 1, "samples": hashes}) + "\n")
                return iter(batches)

        return _Recording()
