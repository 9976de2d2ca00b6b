"""Megatron indexed datasets (``.bin``/``.idx``) written in a streaming way and validated without torch.

:class:`IndexedWriter` produces byte-for-byte what megatron-core's ``IndexedDatasetBuilder`` +
``_IndexWriter`` produce (format in ``megatron/core/datasets/indexed_dataset.py``), but keeps only a fixed-size
buffer in memory: tokens go straight to the ``.bin``, sequence lengths and document boundaries to temporary side
files, and the ``.idx`` is assembled from them in chunks at the end. Everything is written under temporary names
and renamed into place only when complete (``.bin`` first, ``.idx`` last), so a killed job never leaves a pair
that looks valid.

:func:`read_index` / :func:`validate` parse and check an existing dataset (header, dtype, counts, pointers,
document indices, file sizes) and report every problem found instead of asserting.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_tools.common.atomic import fsync_path

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF_DTYPE = {np.dtype(v): k for k, v in DTYPE_CODES.items()}
HEADER_BYTES = len(INDEX_HEADER) + 8 + 1 + 8 + 8  # 34
_CHUNK = 1 << 20  # elements per chunk when streaming index arrays


def optimal_dtype(vocab_size: int) -> type[np.number]:
    """Token dtype megatron-core picks for a vocabulary (``DType.optimal_dtype``): uint16 below 65500, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def bin_path(prefix: str | os.PathLike) -> Path:
    """``PREFIX.bin``."""
    return Path(str(prefix) + ".bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    """``PREFIX.idx``."""
    return Path(str(prefix) + ".idx")


def dataset_exists(prefix: str | os.PathLike) -> bool:
    """Whether both ``PREFIX.bin`` and ``PREFIX.idx`` exist."""
    return bin_path(prefix).is_file() and idx_path(prefix).is_file()


class IndexedWriter:
    """Stream documents into ``PREFIX.bin``/``PREFIX.idx`` with bounded memory, atomically.

    Use :meth:`add_documents` (one sequence per document, the layout of ``preprocess_data.py`` without
    sentence splitting) or :meth:`add_sequences` (any layout), then :meth:`finalize`; :meth:`abort` (or leaving a
    ``with`` block by an exception) removes the temporary files.
    """

    def __init__(
        self,
        prefix: str | os.PathLike,
        dtype: type[np.number] | np.dtype,
        fsync: bool = True,
        resume: dict[str, int] | None = None,
    ) -> None:
        """Start a new dataset, or with ``resume`` (a :meth:`checkpoint` result) continue the temporary files.

        Resuming truncates the temporary files to the checkpointed sizes, dropping whatever was written after it;
        ``ValueError`` when they are missing or shorter than the checkpoint.
        """
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF_DTYPE:
            raise ValueError(f"unsupported token dtype {self.dtype}")
        self.fsync = fsync
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin_tmp = Path(str(bin_path(prefix)) + ".tmp")
        self._idx_tmp = Path(str(idx_path(prefix)) + ".tmp")
        self._len_tmp = Path(str(self.prefix) + ".lengths.tmp")
        self._doc_tmp = Path(str(self.prefix) + ".docs.tmp")
        self.num_sequences = self.num_documents = self.num_tokens = 0
        self._closed = False
        if resume is None:
            self._bin, self._lens, self._docs = (open(p, "wb") for p in (self._bin_tmp, self._len_tmp, self._doc_tmp))
            return
        sizes = {
            self._bin_tmp: resume["num_tokens"] * self.dtype.itemsize,
            self._len_tmp: resume["num_sequences"] * 4,
            self._doc_tmp: resume["num_documents"] * 8,
        }
        for path, size in sizes.items():
            if not path.is_file() or path.stat().st_size < size:
                raise ValueError(f"{path}: missing or shorter than its checkpoint ({size} bytes); cannot resume")
        handles = []
        for path, size in sizes.items():
            f = open(path, "r+b")
            f.truncate(size)
            f.seek(size)
            handles.append(f)
        self._bin, self._lens, self._docs = handles
        self.num_sequences, self.num_documents = resume["num_sequences"], resume["num_documents"]
        self.num_tokens = resume["num_tokens"]

    def checkpoint(self) -> dict[str, int]:
        """Flush (and fsync) the temporary files; returns the state to pass as ``resume`` after a crash."""
        for f in (self._bin, self._lens, self._docs):
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        return {
            "num_tokens": self.num_tokens,
            "num_sequences": self.num_sequences,
            "num_documents": self.num_documents,
        }

    def __enter__(self) -> IndexedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.finalize()

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents given as a flat token array and the token count of each document."""
        lengths = np.asarray(lengths, dtype=np.int64)
        ends = np.arange(self.num_sequences + 1, self.num_sequences + 1 + lengths.size, dtype=np.int64)
        self.add_sequences(tokens, lengths, ends - self.num_sequences)

    def add_sequences(self, tokens: np.ndarray, seq_lengths: np.ndarray, doc_ends: np.ndarray) -> None:
        """Append sequences and documents: ``doc_ends`` are document ends counted in sequences added by this call."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        seq_lengths = np.asarray(seq_lengths)
        if int(seq_lengths.sum()) != tokens.size:
            raise ValueError(f"lengths sum to {int(seq_lengths.sum())} but {tokens.size} tokens were given")
        if seq_lengths.size and (seq_lengths.min() < 0 or seq_lengths.max() > np.iinfo(np.int32).max):
            raise ValueError("sequence lengths must fit in int32")
        self._bin.write(tokens.tobytes())
        self._lens.write(seq_lengths.astype(np.int32).tobytes())
        self._docs.write((np.asarray(doc_ends, dtype=np.int64) + self.num_sequences).tobytes())
        self.num_sequences += int(seq_lengths.size)
        self.num_documents += int(np.asarray(doc_ends).size)
        self.num_tokens += int(tokens.size)

    def add_dataset(self, info: IndexInfo) -> None:
        """Append a whole existing dataset (validated :class:`IndexInfo`): its ``.bin`` is copied in chunks."""
        if info.errors or info.sequence_lengths is None or info.document_indices is None:
            raise ValueError(f"{info.prefix}: cannot append an invalid dataset: {'; '.join(info.errors)}")
        if info.dtype != self.dtype:
            raise ValueError(f"{info.prefix}: dtype {info.dtype} differs from the output's {self.dtype}")
        with open(bin_path(info.prefix), "rb") as f:
            shutil.copyfileobj(f, self._bin, 1 << 24)
        lengths, docs = info.sequence_lengths, info.document_indices
        for i in range(0, lengths.size, _CHUNK):
            self._lens.write(np.asarray(lengths[i : i + _CHUNK], dtype=np.int32).tobytes())
        for i in range(1, docs.size, _CHUNK):
            self._docs.write((np.asarray(docs[i : i + _CHUNK], dtype=np.int64) + self.num_sequences).tobytes())
        self.num_sequences += info.num_sequences
        self.num_documents += info.num_documents
        self.num_tokens += info.num_tokens

    def finalize(self) -> tuple[Path, Path]:
        """Write the ``.idx``, fsync, and rename both files into place; returns ``(bin, idx)`` paths."""
        for f in (self._bin, self._lens, self._docs):
            f.close()
        itemsize = np.int64(self.dtype.itemsize)
        with open(self._idx_tmp, "wb") as out:
            out.write(INDEX_HEADER)
            out.write(struct.pack("<Q", INDEX_VERSION))
            out.write(struct.pack("<B", CODE_OF_DTYPE[self.dtype]))
            out.write(struct.pack("<Q", self.num_sequences))
            out.write(struct.pack("<Q", self.num_documents + 1))
            lengths = (
                np.memmap(self._len_tmp, dtype=np.int32, mode="r") if self.num_sequences else np.zeros(0, np.int32)
            )
            for i in range(0, self.num_sequences, _CHUNK):
                out.write(np.asarray(lengths[i : i + _CHUNK]).tobytes())
            carry = np.int64(0)
            for i in range(0, self.num_sequences, _CHUNK):
                chunk = np.asarray(lengths[i : i + _CHUNK], dtype=np.int64) * itemsize
                ends = np.cumsum(chunk) + carry
                out.write((ends - chunk).tobytes())
                carry = ends[-1]
            del lengths
            out.write(np.zeros(1, np.int64).tobytes())
            with open(self._doc_tmp, "rb") as f:
                while chunk := f.read(1 << 24):
                    out.write(chunk)
        if self.fsync:
            fsync_path(self._bin_tmp)
            fsync_path(self._idx_tmp)
        self._len_tmp.unlink(missing_ok=True)
        self._doc_tmp.unlink(missing_ok=True)
        os.replace(self._bin_tmp, bin_path(self.prefix))
        os.replace(self._idx_tmp, idx_path(self.prefix))
        self._closed = True
        return bin_path(self.prefix), idx_path(self.prefix)

    def close(self) -> None:
        """Close the temporary files and keep them (a later run can resume from a :meth:`checkpoint`)."""
        for f in (self._bin, self._lens, self._docs):
            f.close()
        self._closed = True

    def abort(self) -> None:
        """Close and delete the temporary files (nothing is renamed)."""
        for f in (self._bin, self._lens, self._docs):
            f.close()
        for p in (self._bin_tmp, self._idx_tmp, self._len_tmp, self._doc_tmp):
            p.unlink(missing_ok=True)
        self._closed = True


def remove_dataset(prefix: str | os.PathLike) -> None:
    """Delete ``PREFIX.idx`` then ``PREFIX.bin`` (index first, so a half-removed pair never looks valid)."""
    idx_path(prefix).unlink(missing_ok=True)
    bin_path(prefix).unlink(missing_ok=True)


@dataclass
class IndexInfo:
    """A parsed ``.idx`` (arrays are read-only memory maps) plus the problems found while parsing."""

    prefix: Path
    """Dataset prefix."""
    dtype: np.dtype | None = None
    """Token dtype from the header."""
    sequence_lengths: np.ndarray | None = None
    """Tokens per sequence (int32)."""
    sequence_pointers: np.ndarray | None = None
    """Byte offset of each sequence in the ``.bin`` (int64)."""
    document_indices: np.ndarray | None = None
    """Sequence index where each document starts, plus the final end (int64, first is 0)."""
    errors: list[str] = field(default_factory=list)
    """Corruption found (empty when the dataset is consistent)."""

    @property
    def num_sequences(self) -> int:
        """Number of sequences."""
        return 0 if self.sequence_lengths is None else int(self.sequence_lengths.size)

    @property
    def num_documents(self) -> int:
        """Number of documents."""
        return 0 if self.document_indices is None else max(int(self.document_indices.size) - 1, 0)

    @property
    def num_tokens(self) -> int:
        """Total tokens."""
        return 0 if self.sequence_lengths is None else int(self.sequence_lengths.sum(dtype=np.int64))

    def document_tokens(self, doc: int) -> np.ndarray:
        """Tokens of document ``doc`` read from the ``.bin`` (memory-mapped)."""
        assert self.document_indices is not None and self.sequence_pointers is not None and self.dtype is not None
        s0, s1 = int(self.document_indices[doc]), int(self.document_indices[doc + 1])
        if s1 <= s0:
            return np.zeros(0, self.dtype)
        start = int(self.sequence_pointers[s0])
        count = int(self.sequence_lengths[s0:s1].sum(dtype=np.int64))
        data = np.memmap(bin_path(self.prefix), dtype=self.dtype, mode="r", offset=start, shape=(count,))
        return np.array(data)


def read_index(prefix: str | os.PathLike, *, check: bool = True) -> IndexInfo:
    """Parse ``PREFIX.idx`` and check its internal consistency and the ``.bin`` size; never raises on corruption.

    The header and the ``.idx`` size are always checked; ``check=False`` skips the pass over the arrays (pointers
    against lengths, document indices, ``.bin`` size) for callers that only need the lengths of a dataset already
    validated."""
    info = IndexInfo(Path(prefix))
    ipath, bpath = idx_path(prefix), bin_path(prefix)
    for p in (ipath, bpath):
        if not p.is_file():
            info.errors.append(f"{p}: missing")
    if info.errors:
        return info
    size = ipath.stat().st_size
    with open(ipath, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        info.errors.append(f"{ipath}: truncated header ({len(head)} of {HEADER_BYTES} bytes)")
        return info
    if head[:9] != INDEX_HEADER:
        info.errors.append(f"{ipath}: bad magic {head[:9]!r} (expected {INDEX_HEADER!r})")
        return info
    version = struct.unpack("<Q", head[9:17])[0]
    if version != INDEX_VERSION:
        info.errors.append(f"{ipath}: unsupported version {version}")
        return info
    code = head[17]
    if code not in DTYPE_CODES:
        info.errors.append(f"{ipath}: unknown dtype code {code}")
        return info
    info.dtype = np.dtype(DTYPE_CODES[code])
    n_seq, n_doc = struct.unpack("<QQ", head[18:34])
    expected = HEADER_BYTES + n_seq * (4 + 8) + n_doc * 8
    if expected != size:
        info.errors.append(
            f"{ipath}: size {size} does not match header counts ({n_seq} sequences, {n_doc} document indices "
            f"need {expected} bytes)"
        )
        return info
    mm = np.memmap(ipath, dtype=np.uint8, mode="r")
    info.sequence_lengths = np.frombuffer(mm, dtype=np.int32, count=n_seq, offset=HEADER_BYTES)
    info.sequence_pointers = np.frombuffer(mm, dtype=np.int64, count=n_seq, offset=HEADER_BYTES + 4 * n_seq)
    info.document_indices = np.frombuffer(mm, dtype=np.int64, count=n_doc, offset=HEADER_BYTES + 12 * n_seq)
    if check:
        _check_arrays(info, bpath.stat().st_size)
    return info


def _check_arrays(info: IndexInfo, bin_size: int) -> None:
    lengths, pointers, docs = info.sequence_lengths, info.sequence_pointers, info.document_indices
    assert lengths is not None and pointers is not None and docs is not None and info.dtype is not None
    item = info.dtype.itemsize
    ipath = idx_path(info.prefix)
    if docs.size == 0 or docs[0] != 0:
        info.errors.append(f"{ipath}: document indices must start with 0")
    elif docs[-1] != lengths.size:
        info.errors.append(f"{ipath}: last document index {int(docs[-1])} != sequence count {lengths.size}")
    carry = np.int64(0)
    for i in range(0, max(lengths.size, 1), _CHUNK):
        ln = lengths[i : i + _CHUNK].astype(np.int64)
        if ln.size == 0:
            break
        if (ln < 0).any():
            info.errors.append(f"{ipath}: negative sequence length at sequence {i + int(np.argmax(ln < 0))}")
            return
        expect = np.cumsum(ln * item) + carry - ln * item
        bad = np.nonzero(pointers[i : i + _CHUNK] != expect)[0]
        if bad.size:
            j = i + int(bad[0])
            info.errors.append(
                f"{ipath}: sequence pointer {j} is {int(pointers[j])}, expected {int(expect[bad[0]])} "
                "(pointers must be the running sum of lengths)"
            )
            return
        carry = expect[-1] + ln[-1] * item
    for i in range(0, docs.size, _CHUNK):
        d = docs[max(i - 1, 0) : i + _CHUNK]
        if (np.diff(d) < 0).any():
            info.errors.append(f"{ipath}: document indices decrease near document {i + int(np.argmax(np.diff(d) < 0))}")
            return
    expected_bin = int(carry)
    if bin_size != expected_bin:
        what = "truncated" if bin_size < expected_bin else "has trailing bytes"
        info.errors.append(
            f"{bin_path(info.prefix)}: {what}: {bin_size} bytes, the index describes {expected_bin} "
            f"({expected_bin // item} tokens of {info.dtype})"
        )
