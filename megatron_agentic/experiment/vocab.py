"""The experiment vocabulary: Qwen3 token ids that occur in the experiment's data mapped to dense ids.

A tiny model's cost on CPU is dominated by its 151936-row embedding and output layer when it keeps the full Qwen3
vocabulary. The experiment therefore tokenizes everything with the real Qwen3 tokenizer, then maps the ids that
occur anywhere in its data (plus every special token from ``<|endoftext|>`` on) to ``0..K-1``; any other id maps to
one unknown id ``K``. Decoding maps back (the unknown id decodes to nothing). The report says so. With
``model.vocab: qwen3`` (cluster scale) no map is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.common.atomic import atomic_write_json
from data_tools.indexed.indexed_io import IndexedWriter, optimal_dtype, read_index

QWEN3_SPECIAL_START = 151643
"""First Qwen3 special token (``<|endoftext|>``)."""
QWEN3_SPECIAL_END = 151669
"""One past the last Qwen3 special token (``</think>`` is 151668)."""
QWEN3_EOD = 151643
"""Qwen3's end-of-document token."""


@dataclass(frozen=True)
class ExperimentVocab:
    """A bijection between the Qwen3 ids kept (sorted) and ``0..K-1``, plus the unknown id ``K``."""

    kept: tuple[int, ...]
    """Qwen3 ids kept, ascending; the dense id of ``kept[i]`` is ``i``."""

    @classmethod
    def build(cls, id_arrays: Iterable[np.ndarray]) -> ExperimentVocab:
        """The vocabulary of every id in ``id_arrays`` plus all Qwen3 special tokens."""
        seen = set(range(QWEN3_SPECIAL_START, QWEN3_SPECIAL_END))
        for arr in id_arrays:
            seen.update(np.unique(np.asarray(arr)).tolist())
        return cls(tuple(sorted(int(i) for i in seen)))

    @property
    def unk(self) -> int:
        """Dense id of every Qwen3 id not kept."""
        return len(self.kept)

    @property
    def size(self) -> int:
        """Dense ids in use (kept + unknown)."""
        return len(self.kept) + 1

    def padded_size(self, multiple: int = 128) -> int:
        """``size`` rounded up to ``multiple`` (the model's ``vocab_size``)."""
        return -(-self.size // multiple) * multiple

    @property
    def eod(self) -> int:
        """Dense id of ``<|endoftext|>``."""
        return self.to_dense([QWEN3_EOD])[0]

    def to_dense(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        """Qwen3 ids -> dense ids (unknown ids -> :attr:`unk`)."""
        kept = np.asarray(self.kept, dtype=np.int64)
        arr = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(kept, arr)
        pos_c = np.minimum(pos, len(kept) - 1)
        hit = kept[pos_c] == arr
        return np.where(hit, pos_c, self.unk).astype(np.int64).tolist()

    def to_qwen3(self, dense: Sequence[int] | np.ndarray) -> list[int]:
        """Dense ids -> Qwen3 ids; the unknown id (and padding ids past it) are dropped."""
        return [self.kept[i] for i in (int(d) for d in dense) if 0 <= i < len(self.kept)]

    def save(self, path: str | os.PathLike) -> None:
        """Write the map as JSON (atomically)."""
        atomic_write_json(path, {"kept": list(self.kept), "unk": self.unk}, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentVocab:
        """Read a map written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(int(i) for i in data["kept"]))


def dataset_ids(prefix: str | os.PathLike) -> np.ndarray:
    """All token ids of an indexed dataset (``.bin`` read through its ``.idx`` dtype)."""
    info = read_index(prefix)
    return np.fromfile(str(prefix) + ".bin", dtype=info.dtype)


def remap_dataset(src: str | os.PathLike, dst: str | os.PathLike, vocab: ExperimentVocab) -> int:
    """Write ``dst`` = ``src`` with every id mapped to the dense vocabulary (same sequences and documents).

    A loss-mask companion (``src_loss_mask``) is copied alongside as ``dst_loss_mask``. Returns the token count.
    """
    info = read_index(src)
    tokens = np.asarray(vocab.to_dense(dataset_ids(src)), dtype=optimal_dtype(vocab.padded_size()))
    _write_like(dst, info, tokens)
    mask_src = Path(str(src) + "_loss_mask.idx")
    if mask_src.exists():
        mask_info = read_index(str(src) + "_loss_mask")
        _write_like(str(dst) + "_loss_mask", mask_info, dataset_ids(str(src) + "_loss_mask"))
    return int(tokens.size)


def _write_like(dst: str | os.PathLike, info, tokens: np.ndarray) -> None:
    doc_ends = np.asarray(info.document_indices[1:], dtype=np.int64)
    with IndexedWriter(dst, tokens.dtype, fsync=False) as writer:
        writer.add_sequences(tokens, np.asarray(info.sequence_lengths, dtype=np.int64), doc_ends)
        writer.finalize()
