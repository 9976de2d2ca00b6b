"""Streaming input for the tokenizer: JSONL (plain, ``.gz``, ``.zst``) and Parquet, from files, globs or directories.

Inputs are read in bounded *blocks*: a JSONL block is a run of complete lines of at most about ``block_bytes``
(one line may make it longer, up to ``max_line_bytes``; longer lines are skipped without being held in memory and
reported as :class:`OversizeLine`); a Parquet block is a batch of rows. Blocks carry their file and first line
number so workers can name the line of any bad record.

Sharding (``--shard-index I --num-shards N``) splits the concatenated input bytes into N contiguous ranges: plain
JSONL files are split at line boundaries (a line belongs to the shard holding its first byte), Parquet files at row
groups (placed by compressed size); compressed JSONL cannot be split and goes whole to the shard holding its
first byte. Concatenating the shards' outputs in shard order therefore gives exactly the single-run output.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from data_tools.common.jsonl import open_binary

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
INPUT_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
DIR_SUFFIXES = tuple(x for x in INPUT_SUFFIXES if x != ".json")
"""Suffixes picked up when a directory is given (plain ``.json`` is left out: directories often hold configs)."""


def input_format(path: str | os.PathLike) -> str:
    """``"parquet"`` or ``"jsonl"`` (plain or compressed) for a path, from its name."""
    return "parquet" if str(path).endswith(PARQUET_SUFFIXES) else "jsonl"


def is_splittable(path: str | os.PathLike) -> bool:
    """Whether a file can be split at byte offsets (uncompressed JSONL)."""
    p = str(path)
    return input_format(p) == "jsonl" and not p.endswith((".gz", ".zst"))


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve files, globs and directories into an ordered list of input files.

    Each argument keeps its position; a glob or a directory (searched recursively for known suffixes) expands to
    its files in sorted order. Duplicates are dropped. Raises ``FileNotFoundError`` when nothing matches.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        s = str(item)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(DIR_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{s}: directory contains no input files ({', '.join(DIR_SUFFIXES)})")
        elif p.is_file():
            found = [p]
        elif glob.has_magic(s):
            found = sorted(Path(q) for q in glob.glob(os.path.expanduser(s), recursive=True) if Path(q).is_file())
            if not found:
                raise FileNotFoundError(f"{s}: glob matches no files")
        else:
            raise FileNotFoundError(f"{s}: no such file or directory")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


@dataclass(frozen=True)
class FileRange:
    """The part of one input file a shard reads: bytes ``[start, end)``, or row groups ``[start, end)`` of Parquet."""

    path: Path
    """Input file."""
    start: int
    """First byte offset (a line belongs to the range holding its first byte), or first Parquet row group."""
    end: int
    """End byte offset (exclusive; the file size for whole files), or end Parquet row group (exclusive)."""


def plan_shard(files: Sequence[Path], shard_index: int = 0, num_shards: int = 1) -> list[FileRange]:
    """The byte ranges of ``files`` that shard ``shard_index`` of ``num_shards`` reads, in input order."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} out of range for {num_shards} shards")
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    lo, hi = shard_index * total // num_shards, (shard_index + 1) * total // num_shards
    ranges: list[FileRange] = []
    g0 = 0
    for f, size in zip(files, sizes):
        g1 = g0 + size
        if size > 0:
            if is_splittable(f):
                a, b = max(lo, g0), min(hi, g1)
                if a < b:
                    ranges.append(FileRange(f, a - g0, b - g0))
            elif input_format(f) == "parquet":
                # a row group belongs to the shard holding its (size-proportional) first byte
                starts = _row_group_starts(f, g0, size)
                mine = [i for i, pos in enumerate(starts) if lo <= pos < hi]
                if mine:
                    ranges.append(FileRange(f, mine[0], mine[-1] + 1))
            elif lo <= g0 < hi:
                ranges.append(FileRange(f, 0, size))
        g0 = g1
    return ranges


def _row_group_starts(path: Path, g0: int, size: int) -> list[int]:
    """Global positions of a Parquet file's row groups, spreading its ``size`` bytes by compressed group size."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(str(path)).metadata
    weights = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        weights.append(max(sum(rg.column(j).total_compressed_size for j in range(rg.num_columns)), 1))
    total, acc, starts = sum(weights), 0, []
    for w in weights:
        starts.append(g0 + acc * size // total)
        acc += w
    return starts


@dataclass
class JsonlBlock:
    """Complete JSONL lines from one file."""

    path: str
    """File the lines come from."""
    first_line: int
    """Line number of the first line, relative to the range start (1-based within the range)."""
    data: bytes
    """The raw lines, each ending with ``\\n`` except possibly the file's last line."""


@dataclass
class RowBlock:
    """A batch of Parquet rows: column name -> values (``None`` for a missing column)."""

    path: str
    """File the rows come from."""
    first_line: int
    """Row number (1-based) of the first row."""
    columns: dict[str, list | None]
    """Values per requested column."""
    num_rows: int
    """Number of rows in the batch."""
    nbytes: int
    """Approximate input bytes the batch stands for (for progress)."""


@dataclass
class OversizeLine:
    """A JSONL line longer than ``max_line_bytes``, skipped while reading."""

    path: str
    """File of the line."""
    line: int
    """Line number, relative to the range start (1-based)."""
    nbytes: int
    """Length of the line in bytes."""


def iter_jsonl_blocks(
    rng: FileRange, block_bytes: int = 1 << 21, max_line_bytes: int = 1 << 26
) -> Iterator[JsonlBlock | OversizeLine]:
    """Yield blocks of complete lines of ``rng`` (and :class:`OversizeLine` for skipped giant lines).

    Memory stays below about ``block_bytes + max_line_bytes`` whatever the file or line sizes.
    """
    name = str(rng.path)
    with open_binary(rng.path) as f:
        # pos: absolute offset of buf[0]
        if rng.start > 0:
            f.seek(rng.start - 1)
            pos = rng.start
            buf = b""
            if f.read(1) != b"\n":  # mid-line: that line belongs to the previous range
                skipped, buf = _skip_line(f)
                pos += skipped
        else:
            pos, buf = 0, b""
        end = rng.end if is_splittable(rng.path) else None
        lineno = 1
        eof = False
        while not eof or buf:
            if end is not None and pos >= end:
                return
            if not eof:
                chunk = f.read(block_bytes)
                eof = not chunk
                buf += chunk
            cut = -1
            if end is not None and pos + len(buf) >= end:
                k = buf.find(b"\n", max(end - pos - 1, 0))
                if k >= 0 or eof:
                    cut = len(buf) if k < 0 else k + 1
                    if cut > 0:
                        yield JsonlBlock(name, lineno, buf[:cut])
                    return
            if cut < 0:
                cut = buf.rfind(b"\n") + 1
            if cut == 0 and eof:
                cut = len(buf)
            if cut > 0:
                block = buf[:cut]
                yield JsonlBlock(name, lineno, block)
                lineno += block.count(b"\n")
                pos += cut
                buf = buf[cut:]
            elif len(buf) > max_line_bytes:
                # One line longer than the limit: drop it without keeping it in memory.
                skipped, rest = _skip_line(f)
                total = len(buf) + skipped
                yield OversizeLine(name, lineno, total)
                lineno += 1
                pos += total
                buf = rest


def _skip_line(f: IO[bytes], chunk: int = 1 << 20) -> tuple[int, bytes]:
    """Consume bytes up to and including the next newline (no seeking, so compressed streams work).

    Returns the number of bytes skipped and the bytes already read past the newline.
    """
    n = 0
    while True:
        data = f.read(chunk)
        if not data:
            return n, b""
        k = data.find(b"\n")
        if k >= 0:
            return n + k + 1, data[k + 1 :]
        n += len(data)


def iter_parquet_blocks(
    path: Path, columns: Sequence[str], batch_rows: int = 2048, row_groups: tuple[int, int] | None = None
) -> Iterator[RowBlock]:
    """Yield the requested columns of a Parquet file (row groups ``[a, b)`` only) in batches of ``batch_rows`` rows.

    Row numbers (``first_line``) are 1-based within the whole file.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    a, b = row_groups if row_groups is not None else (0, pf.num_row_groups)
    present = [c for c in columns if c in pf.schema_arrow.names]
    total_rows = max(pf.metadata.num_rows, 1)
    size = path.stat().st_size
    row = 1 + sum(pf.metadata.row_group(i).num_rows for i in range(a))
    if not present:
        for rg in range(a, b):
            n = pf.metadata.row_group(rg).num_rows
            yield RowBlock(str(path), row, {c: None for c in columns}, n, size * n // total_rows)
            row += n
        return
    if a >= b:
        return
    for batch in pf.iter_batches(batch_size=batch_rows, columns=present, row_groups=list(range(a, b))):
        n = batch.num_rows
        cols = {c: (batch.column(c).to_pylist() if c in present else None) for c in columns}
        yield RowBlock(str(path), row, cols, n, size * n // total_rows)
        row += n


def lines_before(rng: FileRange) -> int:
    """Number of lines of the file before the first line of ``rng`` (relative line ``n`` is absolute ``n + this``).

    Counts newlines before the range start (reads that prefix once; only needed to report bad lines of shards
    that start inside a file).
    """
    if rng.start <= 0 or not is_splittable(rng.path):
        return 0
    n = 0
    with open(rng.path, "rb") as f:
        remaining = rng.start
        last = b"\n"
        while remaining > 0:
            data = f.read(min(remaining, 1 << 24))
            if not data:
                break
            n += data.count(b"\n")
            last = data[-1:]
            remaining -= len(data)
    return n if last == b"\n" else n + 1
