"""The per-block work of ``data tokenize``: parse and validate records, tokenize them, return flat token arrays.

It runs in worker processes (or inline with one worker). Every record of a block is either kept (its text under
every requested key tokenizes to at least one token) or reported as a :class:`BadItem` with one of
:data:`BAD_REASONS`; keeping a record for all keys or none keeps the per-key datasets aligned document by document.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from data_tools.common.jsonl import parse_object
from data_tools.indexed.readers import JsonlBlock, RowBlock
from data_tools.indexed.tokenizers import load_tokenizer

BAD_REASONS = (
    "invalid_json",
    "not_object",
    "missing_key",
    "non_string",
    "empty_text",
    "invalid_utf8",
    "too_long",
    "tokenizer_error",
)
"""Classes of bad input records, each skipped and counted (or fatal with ``--strict``)."""


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to process blocks (sent once to each worker process)."""

    tokenizer: str
    """Tokenizer spec for :func:`load_tokenizer`."""
    json_keys: tuple[str, ...]
    """Record fields to tokenize, one output dataset each."""
    append_eod: bool
    """Append the tokenizer's end-of-document id to every document."""
    dtype: str
    """Numpy dtype name of the output tokens (``int32`` or ``uint16``)."""
    max_doc_bytes: int
    """Records longer than this (JSONL line bytes, or Parquet text characters) are ``too_long``."""


@dataclass
class BadItem:
    """A skipped record: its 0-based position in the block, the reason and a short detail."""

    index: int
    """Record position in the block (line offset for JSONL, row offset for Parquet)."""
    reason: str
    """One of :data:`BAD_REASONS`."""
    detail: str = ""
    """Human-readable detail (parser message, key name, value type...)."""


@dataclass
class BlockResult:
    """Tokens of the kept records of one block, per key, plus what was skipped."""

    tokens: dict[str, np.ndarray]
    """Flat token array per key, in record order."""
    lengths: dict[str, np.ndarray]
    """Tokens per kept document per key (int64)."""
    num_records: int
    """Records (non-blank lines or rows) seen in the block."""
    blank_lines: int
    """Blank lines skipped (not an error)."""
    bad: list[BadItem] = field(default_factory=list)
    """Skipped records in order."""
    nbytes: int = 0
    """Input bytes the block stood for."""

    @property
    def num_docs(self) -> int:
        """Documents kept."""
        return int(next(iter(self.lengths.values())).size) if self.lengths else 0


def _check_value(value: object, max_doc_bytes: int, check_size: bool) -> tuple[str, str] | None:
    """``(reason, detail)`` when a field value cannot be tokenized, else ``None``."""
    if value is None:
        return "missing_key", ""
    if isinstance(value, str):
        parts: list[str] = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value  # Megatron-LM accepts a list of sentences and concatenates their tokens
    else:
        return "non_string", type(value).__name__
    if not any(parts):
        return "empty_text", ""
    for p in parts:
        if not p.isascii():
            try:
                p.encode("utf-8")
            except UnicodeEncodeError as exc:
                return "invalid_utf8", f"unpaired surrogate at character {exc.start}"
        if check_size and len(p) > max_doc_bytes:
            return "too_long", f"{len(p)} characters > {max_doc_bytes}"
    return None


def _check_record(record: dict, keys: tuple[str, ...], max_doc_bytes: int, check_size: bool) -> tuple[str, str] | None:
    """The first problem of a record's ``keys`` as ``(reason, "key 'k': detail")``, else ``None``."""
    for k in keys:
        p = _check_value(record.get(k), max_doc_bytes, check_size)
        if p:
            return p[0], f"key {k!r}" + (f": {p[1]}" if p[1] else "")
    return None


def _records(block: JsonlBlock | RowBlock, opts: WorkerOptions, bad: list[BadItem]) -> tuple[list[int], dict, int, int]:
    """Validated field values of a block: (kept record positions, key -> values, records seen, blank lines)."""
    keys = opts.json_keys
    values: dict[str, list] = {k: [] for k in keys}
    kept: list[int] = []

    def keep(i: int, record: dict, from_row: bool) -> None:
        problem = _check_record(record, keys, opts.max_doc_bytes, from_row)
        if problem:
            bad.append(BadItem(i, *problem))
            return
        kept.append(i)
        for k in keys:
            values[k].append(record[k])

    if isinstance(block, RowBlock):
        for i in range(block.num_rows):
            keep(i, {k: (None if block.columns[k] is None else block.columns[k][i]) for k in keys}, True)
        return kept, values, block.num_rows, 0
    lines = block.data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    blank = 0
    for i, raw in enumerate(lines):
        if len(raw) > opts.max_doc_bytes:
            bad.append(BadItem(i, "too_long", f"{len(raw)} bytes > {opts.max_doc_bytes}"))
            continue
        if not raw.strip():
            blank += 1
            continue
        obj = parse_object(raw)
        if isinstance(obj, tuple):
            bad.append(BadItem(i, *obj))
            continue
        keep(i, obj, False)
    return kept, values, len(lines) - blank, blank


def _encode(values: list, tok, kept: list[int], failed: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize one key's values (strings or sentence lists); returns flat ids and per-document lengths."""
    flat_texts: list[str] = []
    owners: list[int] | None = None
    if all(isinstance(v, str) for v in values):
        flat_texts = values
    else:
        owners = []
        for j, v in enumerate(values):
            parts = [v] if isinstance(v, str) else list(v)
            flat_texts.extend(parts)
            owners.extend([j] * len(parts))
    try:
        ids, lengths = tok.encode_batch_flat(flat_texts)
    except Exception:  # find the record(s) the tokenizer rejects, keep the rest
        parts_ids = []
        for t_i, text in enumerate(flat_texts):
            try:
                parts_ids.append(np.asarray(tok.encode(text), dtype=np.int64))
            except Exception as exc:  # noqa: BLE001 - any tokenizer failure is reported per record
                doc = t_i if owners is None else owners[t_i]
                failed.setdefault(kept[doc], f"{type(exc).__name__}: {exc}"[:120])
                parts_ids.append(np.zeros(0, np.int64))
        lengths = np.array([p.size for p in parts_ids], dtype=np.int64)
        ids = np.concatenate(parts_ids) if parts_ids else np.zeros(0, np.int64)
    if owners is not None:
        doc_lengths = np.zeros(len(values), dtype=np.int64)
        np.add.at(doc_lengths, np.asarray(owners, dtype=np.int64), lengths)
        lengths = doc_lengths
    return ids, lengths


def process_block(block: JsonlBlock | RowBlock, opts: WorkerOptions) -> BlockResult:
    """Validate and tokenize one block; see the module docstring."""
    tok = load_tokenizer(opts.tokenizer)
    bad: list[BadItem] = []
    kept, values, n_records, blank = _records(block, opts, bad)
    nbytes = len(block.data) if isinstance(block, JsonlBlock) else block.nbytes
    dtype = np.dtype(opts.dtype)
    tokens: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    failed: dict[int, str] = {}
    for k in opts.json_keys:
        tokens[k], lengths[k] = _encode(values[k], tok, kept, failed)
    drop = np.zeros(len(kept), dtype=bool)
    for k in opts.json_keys:
        drop |= lengths[k] == 0
    if failed or drop.any():
        for j, pos in enumerate(kept):
            if pos in failed:
                drop[j] = True
        for j in np.nonzero(drop)[0]:
            pos = kept[int(j)]
            bad.append(
                BadItem(pos, *(("tokenizer_error", failed[pos]) if pos in failed else ("empty_text", "0 tokens")))
            )
        bad.sort(key=lambda b: b.index)
        for k in opts.json_keys:
            owner = np.repeat(np.arange(len(kept)), lengths[k])
            tokens[k] = tokens[k][~drop[owner]]
            lengths[k] = lengths[k][~drop]
    for k in opts.json_keys:
        ids, ln = tokens[k], lengths[k]
        if opts.append_eod and ln.size:
            ids = np.insert(ids, np.cumsum(ln), tok.eod_id)
            ln = ln + 1
        if ids.size and (int(ids.max()) > np.iinfo(dtype).max or int(ids.min()) < 0):
            raise ValueError(f"token id {int(ids.max())} does not fit the output dtype {dtype}")
        tokens[k] = ids.astype(dtype, copy=False)
        lengths[k] = ln
    return BlockResult(tokens, lengths, n_records, blank, bad, nbytes)


_OPTIONS: WorkerOptions | None = None


def init_worker(opts: WorkerOptions) -> None:
    """Process-pool initializer: remember the options, load the tokenizer, exit if the parent dies."""
    global _OPTIONS
    _OPTIONS = opts
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_tokenizer(opts.tokenizer)
    parent = os.getppid()

    def _watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=_watch, daemon=True, name="parent-watch").start()


def run_block(block: JsonlBlock | RowBlock) -> BlockResult:
    """Entry point in a worker process (options come from :func:`init_worker`)."""
    assert _OPTIONS is not None, "init_worker was not called"
    return process_block(block, _OPTIONS)
