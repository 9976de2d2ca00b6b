"""JSONL input with typed bad-line reports, and append-only resumable JSONL output.

Readers never crash on one bad line: :func:`iter_jsonl` yields a :class:`BadLine` (file, line, reason) in its
place so callers can skip and count it. A line longer than ``max_line_bytes`` (:data:`MAX_LINE_BYTES` by default)
is skipped as ``line_too_long`` while it is read, without ever being held in memory whole (a 30 MB line used to
cost ~650 MB once parsed), like the tokenizer's block reader does. Writers are append-only: :class:`ResumableJsonlWriter` recovers the
keys of the complete records already in the file when it is opened (a killed job leaves at most one partial
trailing line, which is truncated), so a rerun writes each record exactly once.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BAD_LINE_REASONS = ("invalid_utf8", "invalid_json", "not_object", "missing_field", "bad_field_type", "line_too_long")
MAX_LINE_BYTES = 16 << 20
"""Default cap on one JSONL line (16 MiB: a 128K-token agent trajectory is well under 2 MiB)."""
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BadLine:
    """An input line (or Parquet row) that could not be used, with where and why; ``str()`` is ``file:line: reason``.

    :func:`iter_jsonl` yields these; ``data tokenize`` reports its skipped records with them.
    """

    path: str
    """File the line came from."""
    lineno: int
    """1-based line (JSONL) or row (Parquet) number."""
    reason: str
    """Short reason code: one of :data:`BAD_LINE_REASONS` from :func:`iter_jsonl`; ``data tokenize`` has its own
    (``too_long``, ``invalid_json``, ``missing_key``, ..., the keys of its summary's ``skipped``)."""
    detail: str = ""
    """Human-readable detail (parser message, missing field name, ...)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """Open a possibly compressed (``.gz``/``.zst``) file for binary streaming reads (every JSONL reader's opener)."""
    p = str(path)
    if p.endswith(".gz"):
        return gzip.open(p, "rb")
    if p.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(p, "rb"), closefd=True))
    return open(p, "rb")


def parse_object(line: bytes) -> dict[str, Any] | tuple[str, str]:
    """One JSONL line as a JSON object, or ``(reason, detail)`` with reason ``invalid_utf8``, ``invalid_json`` or
    ``not_object``; a leading UTF-8 byte-order mark (files saved by some editors) is skipped. Every JSONL reader of
    the project (:func:`iter_jsonl`, the ``data tokenize`` workers) parses its lines here."""
    if line[:3] == b"\xef\xbb\xbf":
        line = line[3:]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"byte {exc.start}: {exc.reason}"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return "invalid_json", str(exc)[:120]
    if not isinstance(obj, dict):
        return "not_object", type(obj).__name__
    return obj


def _capped_lines(raw: IO[bytes], max_line_bytes: int) -> Iterator[bytes | None]:
    """Lines of ``raw``; ``None`` in place of a line longer than ``max_line_bytes`` (read past in chunks)."""
    while True:
        line = raw.readline(max_line_bytes + 1)
        if not line:
            return
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while True:  # skip the rest of the oversize line without keeping it
                rest = raw.readline(_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def iter_jsonl(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    types: dict[str, type | tuple[type, ...]] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """Yield ``(lineno, record)`` for each non-blank line of a JSONL file (``.gz``/``.zst`` decompressed).

    A line that is not valid UTF-8, not JSON, not a JSON object, lacks a ``required`` field, has a field of the
    wrong type (``types``) or is longer than ``max_line_bytes`` is yielded as a :class:`BadLine` instead of a
    record. Blank lines are skipped.
    """
    required = tuple(required)
    types = types or {}
    name = str(path)
    with open_binary(path) as raw:
        for lineno, line in enumerate(_capped_lines(raw, max_line_bytes), start=1):
            if line is None:
                yield lineno, BadLine(name, lineno, "line_too_long", f"longer than {max_line_bytes:,} bytes")
                continue
            if not line.strip():
                continue
            obj = parse_object(line)
            if isinstance(obj, tuple):
                yield lineno, BadLine(name, lineno, *obj)
                continue
            missing = [k for k in required if k not in obj or obj[k] is None]
            if missing:
                yield lineno, BadLine(name, lineno, "missing_field", ",".join(missing))
                continue
            wrong = [k for k, t in types.items() if k in obj and obj[k] is not None and not isinstance(obj[k], t)]
            if wrong:
                yield lineno, BadLine(name, lineno, "bad_field_type", ",".join(wrong))
                continue
            yield lineno, obj


def dumps_line(record: dict[str, Any]) -> str:
    """Serialize one record as a JSONL line (UTF-8 kept, no trailing newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class ResumableJsonlWriter:
    """Append-only JSONL writer that resumes: complete records already in ``path`` are kept and their keys known.

    On open, a partial trailing line (no final newline, the signature of a killed writer) is truncated and the
    ``key`` of every complete record is collected in :attr:`done`; :meth:`write` skips records whose key is
    already there, so replaying the same work after a crash never duplicates a record. Every write is flushed
    (and fsynced when ``fsync=True``) before it returns.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.key = key
        self.fsync = fsync
        self.done: set[str] = set()
        self.recovered = 0
        """Number of complete records found in the file when it was opened."""
        self.truncated_bytes = 0
        """Bytes of a partial trailing line removed on open."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._f = open(self.path, "a", encoding="utf-8")

    def _recover(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                self.truncated_bytes = len(data) - end
                f.truncate(end)
        for lineno, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{self.path}:{lineno}: corrupt record in the middle of an output file: {exc}"
                ) from exc
            if not isinstance(rec, dict) or self.key not in rec:
                raise ValueError(f"{self.path}:{lineno}: output record without key field {self.key!r}")
            self.done.add(str(rec[self.key]))
            self.recovered += 1

    def __contains__(self, key: object) -> bool:
        return str(key) in self.done

    def __len__(self) -> int:
        return len(self.done)

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record`` unless its key was already written; return whether it was written."""
        k = str(record[self.key])
        if k in self.done:
            return False
        self._f.write(dumps_line(record) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.done.add(k)
        return True

    def close(self) -> None:
        """Flush and close the file."""
        if not self._f.closed:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> ResumableJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file that must be fully valid (outputs of these tools); raises on the first bad line."""
    out = []
    for _, rec in iter_jsonl(path):
        if isinstance(rec, BadLine):
            raise ValueError(str(rec))
        out.append(rec)
    return out
