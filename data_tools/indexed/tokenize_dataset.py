"""``data tokenize``: JSONL / Parquet -> Megatron indexed datasets (``{PREFIX}_{key}_document.bin/.idx``).

Tokens are identical to Megatron-LM ``tools/preprocess_data.py`` with the equivalent tokenizer (one document per
record, no sentence splitting, ``--append-eod`` adds the end-of-document id). Inputs are streamed in bounded
blocks to worker processes and results are written in input order, so the output bytes do not depend on the
number of workers and memory does not depend on the input size. Outputs are written under temporary names and
renamed when complete; a ``{PREFIX}.tokenize.json`` summary is written last and marks the run as finished, so a
rerun skips finished shards. While running, a resume point (``{PREFIX}.tokenize.ckpt.json``) is saved periodically
and a rerun after a kill continues from it, giving the same bytes as an uninterrupted run.

Python API: :func:`tokenize_to_indexed`. CLI: ``megatron-agentic data tokenize --input PATH --output-prefix PREFIX
--tokenizer qwen3 --json-keys text --append-eod --workers 2``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_tools.common.atomic import atomic_write_text, remove_stale_temporaries
from data_tools.common.jsonl import BadLine
from data_tools.common.lock import lock_output_file
from data_tools.indexed.indexed_io import IndexedWriter, dataset_exists, optimal_dtype, read_index, remove_dataset
from data_tools.indexed.provenance import synthetic_template_records
from data_tools.indexed.readers import (
    FileRange,
    JsonlBlock,
    OversizeLine,
    RowBlock,
    expand_inputs,
    input_format,
    is_splittable,
    iter_jsonl_blocks,
    iter_parquet_blocks,
    lines_before,
    plan_shard,
)
from data_tools.indexed.tokenize_worker import (
    BadItem,
    BlockResult,
    WorkerOptions,
    init_worker,
    process_block,
    run_block,
)
from data_tools.indexed.tokenizers import load_tokenizer

log = logging.getLogger(__name__)
SUMMARY_VERSION = 1


def _default_workers() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - non-Linux
        return max(os.cpu_count() or 1, 1)


@dataclass
class TokenizeConfig:
    """Options of one tokenization run (one shard)."""

    inputs: list[str]
    """Input files, globs or directories (JSONL, .jsonl.gz, .jsonl.zst, Parquet)."""
    output_prefix: str
    """Output prefix; datasets are ``{prefix}_{key}_document`` (with ``-{I:05d}-of-{N:05d}`` added when sharded)."""
    tokenizer: str = "qwen3"
    """``qwen3``, a HF tokenizer directory or tokenizer.json, or a sentencepiece .model."""
    json_keys: tuple[str, ...] = ("text",)
    """Record fields to tokenize; each gives its own dataset, like Megatron-LM's ``--json-keys``."""
    append_eod: bool = False
    """Append the tokenizer's end-of-document id to each document (Megatron-LM ``--append-eod``)."""
    workers: int = field(default_factory=_default_workers)
    """Tokenizer processes; 1 tokenizes in the calling process."""
    shard_index: int = 0
    """This shard's index (e.g. ``$SLURM_ARRAY_TASK_ID``)."""
    num_shards: int = 1
    """Total number of shards; inputs are split into this many contiguous byte ranges."""
    block_bytes: int = 1 << 20
    """Input bytes per work item sent to a worker (memory is a small multiple of this times the workers)."""
    parquet_batch_rows: int = 1024
    """Rows per work item for Parquet inputs."""
    max_in_flight: int = 0
    """Work items queued or running at once; 0 means ``2 * workers + 2``."""
    max_doc_bytes: int = 64 << 20
    """Records larger than this are skipped as ``too_long`` (never held in memory whole)."""
    strict: bool = False
    """Fail on the first bad record (naming file and line) instead of skipping and counting it."""
    overwrite: bool = False
    """Redo a finished run, or replace outputs written with other settings."""
    progress: bool | None = None
    """Show a progress bar; ``None`` shows it when stderr is a terminal."""
    examples_per_reason: int = 5
    """How many offending lines to list per bad-input reason in the summary."""
    start_method: str | None = None
    """multiprocessing start method (default ``fork`` where available, so workers inherit the tokenizer)."""
    checkpoint_seconds: float = 60.0
    """Save a resume point at most this often (0: after every block); a killed run continues from the last one."""

    def __post_init__(self) -> None:
        if isinstance(self.inputs, (str, os.PathLike)):
            self.inputs = [str(self.inputs)]
        self.inputs = [str(i) for i in self.inputs]
        if not self.inputs:
            raise ValueError("no inputs given")
        if isinstance(self.json_keys, str):
            self.json_keys = (self.json_keys,)
        self.json_keys = tuple(self.json_keys)
        if not self.json_keys or len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"json_keys must be non-empty and distinct, got {self.json_keys}")
        bad_keys = [k for k in self.json_keys if not k or "/" in k or os.sep in k]
        if bad_keys:
            raise ValueError(f"json keys {bad_keys} cannot be used in output file names")
        if not str(self.output_prefix):
            raise ValueError("output_prefix is empty")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard index {self.shard_index} is out of range for {self.num_shards} shards")
        for name in ("block_bytes", "parquet_batch_rows", "max_doc_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_in_flight < 0:
            raise ValueError("max_in_flight must be >= 0")
        if self.checkpoint_seconds < 0:
            raise ValueError("checkpoint_seconds must be >= 0")

    @property
    def prefix(self) -> str:
        """The output prefix of this shard."""
        if self.num_shards == 1:
            return str(self.output_prefix)
        return f"{self.output_prefix}-{self.shard_index:05d}-of-{self.num_shards:05d}"

    def dataset_prefix(self, key: str) -> str:
        """``{prefix}_{key}_document``, the Megatron-LM naming."""
        return f"{self.prefix}_{key}_document"

    @property
    def summary_path(self) -> Path:
        """``{prefix}.tokenize.json``: the run summary, written last."""
        return Path(self.prefix + ".tokenize.json")

    @property
    def checkpoint_path(self) -> Path:
        """``{prefix}.tokenize.ckpt.json``: the resume point of an unfinished run."""
        return Path(self.prefix + ".tokenize.ckpt.json")


class BadInputError(ValueError):
    """Raised with ``strict=True`` on the first bad record."""


@dataclass
class TokenizeStats:
    """What a run did; also stored as ``{prefix}.tokenize.json``."""

    outputs: dict[str, str]
    """Dataset prefix per key."""
    documents: int = 0
    """Documents written (per key; all keys get the same documents)."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Tokens written per key (EOD included)."""
    records: int = 0
    """Records read (non-blank lines / rows)."""
    input_bytes: int = 0
    """Input bytes processed (uncompressed)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped records per reason."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """First offending ``file:line`` per reason."""
    blank_lines: int = 0
    """Blank lines ignored."""
    seconds: float = 0.0
    """Wall time of the run."""
    reused: bool = False
    """True when a finished run was found and nothing was recomputed."""
    resumed_blocks: int = 0
    """Input blocks taken from an interrupted run's checkpoint instead of being tokenized again."""
    tokenizer: str = ""
    """Tokenizer name."""
    dtype: str = ""
    """Token dtype of the outputs."""

    @property
    def docs_per_s(self) -> float:
        """Documents per second."""
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second over all keys."""
        return sum(self.tokens.values()) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Multi-line human-readable summary."""
        lines = [
            f"{self.documents:,} documents, {sum(self.tokens.values()):,} tokens in {self.seconds:.1f}s "
            f"({self.docs_per_s:,.0f} docs/s, {self.tokens_per_s:,.0f} tokens/s)"
            + (" [reused]" if self.reused else ""),
        ]
        for key, prefix in self.outputs.items():
            lines.append(f"  {key}: {prefix}.bin/.idx ({self.tokens.get(key, 0):,} tokens, {self.dtype})")
        total_bad = sum(self.skipped.values())
        if total_bad:
            lines.append(f"skipped {total_bad:,} bad records:")
            for reason, n in sorted(self.skipped.items()):
                lines.append(f"  {reason}: {n:,}")
                lines.extend(f"    {ex}" for ex in self.examples.get(reason, []))
        return "\n".join(lines)


def _fingerprint(cfg: TokenizeConfig, files: Sequence[Path], tok_name: str, n_vocab: int) -> dict:
    return {
        "tokenizer": tok_name,
        "n_vocab": n_vocab,
        "json_keys": list(cfg.json_keys),
        "append_eod": cfg.append_eod,
        "shard_index": cfg.shard_index,
        "num_shards": cfg.num_shards,
        "inputs": [[str(f), f.stat().st_size] for f in files],
    }


def _finished(cfg: TokenizeConfig, fingerprint: dict) -> dict | None:
    """The stored summary when this run already finished with the same settings and outputs are intact."""
    if not cfg.summary_path.is_file():
        return None
    try:
        stored = json.loads(cfg.summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stored.get("fingerprint") != fingerprint:
        if cfg.overwrite:
            return None
        raise FileExistsError(
            f"{cfg.summary_path} was written with other settings or inputs; pass --overwrite to replace it"
        )
    for key in cfg.json_keys:
        prefix = cfg.dataset_prefix(key)
        if not dataset_exists(prefix) or read_index(prefix).errors:
            return None
    return stored


def _blocks(
    ranges: Sequence[FileRange], cfg: TokenizeConfig, skip: int = 0
) -> Iterator[tuple[int, JsonlBlock | RowBlock | OversizeLine]]:
    """All blocks of the shard in order, without the first ``skip`` ones (read again, but not yielded)."""
    for i, item in enumerate(_all_blocks(ranges, cfg)):
        if i >= skip:
            yield item


def _all_blocks(
    ranges: Sequence[FileRange], cfg: TokenizeConfig
) -> Iterator[tuple[int, JsonlBlock | RowBlock | OversizeLine]]:
    for ri, rng in enumerate(ranges):
        if input_format(rng.path) == "parquet":
            for b in iter_parquet_blocks(rng.path, cfg.json_keys, cfg.parquet_batch_rows, (rng.start, rng.end)):
                yield ri, b
        else:
            for b in iter_jsonl_blocks(rng, cfg.block_bytes, cfg.max_doc_bytes):
                yield ri, b


def _ordered_results(
    ranges: Sequence[FileRange], cfg: TokenizeConfig, opts: WorkerOptions, skip: int = 0
) -> Iterator[tuple[int, JsonlBlock | RowBlock | OversizeLine, BlockResult | None]]:
    """Process blocks after the first ``skip`` (in a bounded pool when ``workers > 1``); yield results in order."""
    if cfg.workers == 1:
        for ri, block in _blocks(ranges, cfg, skip):
            yield ri, block, None if isinstance(block, OversizeLine) else process_block(block, opts)
        return
    method = cfg.start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    limit = cfg.max_in_flight or 2 * cfg.workers + 2
    pending: collections.deque[tuple[int, object, Future | None]] = collections.deque()
    with ProcessPoolExecutor(
        cfg.workers, mp_context=mp.get_context(method), initializer=init_worker, initargs=(opts,)
    ) as ex:
        try:
            for ri, block in _blocks(ranges, cfg, skip):
                fut = None if isinstance(block, OversizeLine) else ex.submit(run_block, block)
                pending.append((ri, block, fut))
                while len(pending) >= limit:
                    ri0, b0, f0 = pending.popleft()
                    yield ri0, b0, None if f0 is None else f0.result()
            while pending:
                ri0, b0, f0 = pending.popleft()
                yield ri0, b0, None if f0 is None else f0.result()
        finally:
            for _, _, f in pending:
                if f is not None:
                    f.cancel()


class _Progress:
    """tqdm bar over input bytes with docs/s and tokens/s of this run.

    The bar is created at the first update, i.e. after the worker processes were forked, so no tqdm monitor thread
    exists at fork time.
    """

    def __init__(self, enabled: bool, total: int | None, desc: str, initial: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.enabled, self.total, self.desc = enabled, total, desc
        self.bar = None
        self.initial = initial  # (bytes, docs, tokens) already done by an interrupted run
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, nbytes: int, docs: int, tokens: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.initial[0],
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self.desc,
                dynamic_ncols=True,
            )
        self.bar.update(nbytes)
        now = time.perf_counter()
        if now - self.last > 0.5:
            dt = max(now - self.t0, 1e-9)
            docs_s, tok_s = (docs - self.initial[1]) / dt, (tokens - self.initial[2]) / dt
            self.bar.set_postfix_str(f"{docs_s:,.0f} docs/s, {tok_s:,.0f} tok/s", refresh=False)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(cfg: TokenizeConfig) -> TokenizeStats:
    """Tokenize ``cfg.inputs`` (this shard's part) into indexed datasets; returns the run statistics.

    Raises :class:`BadInputError` in strict mode, ``FileExistsError`` when finished outputs with other settings
    exist (unless ``overwrite``), ``FileNotFoundError`` for missing inputs.
    """
    t0 = time.perf_counter()
    files = expand_inputs(cfg.inputs)
    ranges = plan_shard(files, cfg.shard_index, cfg.num_shards)
    tok = load_tokenizer(cfg.tokenizer)
    dtype = np.dtype(optimal_dtype(tok.n_vocab))
    outputs = {k: cfg.dataset_prefix(k) for k in cfg.json_keys}
    fingerprint = _fingerprint(cfg, files, tok.spec, tok.n_vocab)
    stats = TokenizeStats(outputs=outputs, tokens={k: 0 for k in cfg.json_keys}, tokenizer=tok.name, dtype=dtype.name)
    for path in (cfg.checkpoint_path, cfg.summary_path):  # a run killed while it saved one of them
        for tmp in remove_stale_temporaries(path):
            log.info("removed %s (left by a killed run)", tmp)
    if not cfg.overwrite and (stored := _finished(cfg, fingerprint)) is not None:
        for name in ("documents", "tokens", "records", "input_bytes", "skipped", "examples", "blank_lines", "seconds"):
            setattr(stats, name, stored["stats"][name])
        stats.reused = True
        log.info("%s is finished; skipping (pass --overwrite to redo)", cfg.summary_path)
        return stats
    cfg.summary_path.unlink(missing_ok=True)
    resume_key = {
        **fingerprint,
        "dtype": dtype.name,
        "block_bytes": cfg.block_bytes,
        "parquet_batch_rows": cfg.parquet_batch_rows,
        "max_doc_bytes": cfg.max_doc_bytes,
    }
    writers, skip, elapsed = _open_writers(cfg, outputs, dtype, resume_key, stats)
    opts = WorkerOptions(tok.spec, cfg.json_keys, cfg.append_eod, dtype.name, cfg.max_doc_bytes)
    total = sum(r.end - r.start for r in ranges) if all(is_splittable(r.path) for r in ranges) else None
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    done = (stats.input_bytes, stats.documents, sum(stats.tokens.values()))
    progress = _Progress(show, total, Path(cfg.prefix).name, initial=done)
    line_base: dict[int, int] = {}
    blocks_done, last_ckpt = skip, time.perf_counter()
    try:
        for ri, block, result in _ordered_results(ranges, cfg, opts, skip):
            if isinstance(block, OversizeLine):
                items = [BadItem(0, "too_long", f"{block.nbytes} bytes > {cfg.max_doc_bytes}")]
                stats.input_bytes += block.nbytes
                stats.records += 1
                first = block.line
            else:
                assert result is not None
                items = result.bad
                first = block.first_line
                stats.input_bytes += result.nbytes
                stats.records += result.num_records
                stats.blank_lines += result.blank_lines
                stats.documents += result.num_docs
                for k, w in writers.items():
                    w.add_documents(result.tokens[k], result.lengths[k])
                    stats.tokens[k] += int(result.tokens[k].size)
            for item in items:
                stats.skipped[item.reason] = stats.skipped.get(item.reason, 0) + 1
                examples = stats.examples.setdefault(item.reason, [])
                if cfg.strict or len(examples) < cfg.examples_per_reason:
                    if ri not in line_base:
                        line_base[ri] = lines_before(ranges[ri])
                    record = BadLine(str(ranges[ri].path), line_base[ri] + first + item.index, item.reason, item.detail)
                    if cfg.strict:
                        raise BadInputError(f"{record} (run without --strict to skip and count bad records)")
                    examples.append(str(record))
            blocks_done += 1
            now = time.perf_counter()
            if now - last_ckpt >= cfg.checkpoint_seconds:
                _save_checkpoint(cfg, resume_key, blocks_done, writers, stats, elapsed + now - t0)
                last_ckpt = now
            progress.update(
                block.nbytes if isinstance(block, OversizeLine) else result.nbytes,
                stats.documents,
                sum(stats.tokens.values()),
            )
        for w in writers.values():
            w.finalize()
    except BadInputError:
        for w in writers.values():
            w.abort()
        cfg.checkpoint_path.unlink(missing_ok=True)
        raise
    except BaseException:
        for w in writers.values():
            w.close()  # keep the temporary files: the next run resumes from the last checkpoint
        raise
    finally:
        progress.close()
    stats.seconds = elapsed + time.perf_counter() - t0
    if stats.documents == 0:
        log.warning("%s: no documents were written (megatron-core cannot read an empty dataset)", cfg.prefix)
    synthetic = [str(f) for f in files if synthetic_template_records(f)]
    if synthetic:
        log.warning(
            "%d input(s) hold template-backend synthetic text (synthetic_template: true; demo/test quality, not for "
            "real training): %s",
            len(synthetic),
            ", ".join(synthetic[:5]),
        )
    summary = {
        "version": SUMMARY_VERSION,
        "fingerprint": fingerprint,
        "stats": asdict(stats),
        "synthetic_template_inputs": synthetic,
    }
    atomic_write_text(cfg.summary_path, json.dumps(summary, indent=2))
    cfg.checkpoint_path.unlink(missing_ok=True)
    return stats


_RESUMED_FIELDS = ("documents", "tokens", "records", "input_bytes", "skipped", "examples", "blank_lines")


def _open_writers(
    cfg: TokenizeConfig, outputs: dict[str, str], dtype: np.dtype, resume_key: dict, stats: TokenizeStats
) -> tuple[dict[str, IndexedWriter], int, float]:
    """Writers continuing a matching checkpoint (restoring ``stats``), else fresh ones; returns (writers, blocks, s)."""
    ckpt = None
    if not cfg.overwrite and cfg.checkpoint_path.is_file():
        try:
            ckpt = json.loads(cfg.checkpoint_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            ckpt = None
    if ckpt is not None and ckpt.get("key") == resume_key:
        try:
            writers = {k: IndexedWriter(p, dtype, resume=ckpt["writers"][k]) for k, p in outputs.items()}
        except (ValueError, KeyError, OSError) as exc:
            log.warning("cannot resume from %s (%s); starting over", cfg.checkpoint_path, exc)
        else:
            for name in _RESUMED_FIELDS:
                setattr(stats, name, ckpt["stats"][name])
            stats.resumed_blocks = int(ckpt["blocks_done"])
            log.info("resuming %s after %d blocks (%d documents)", cfg.prefix, stats.resumed_blocks, stats.documents)
            return writers, stats.resumed_blocks, float(ckpt["seconds"])
    cfg.checkpoint_path.unlink(missing_ok=True)
    for prefix in outputs.values():
        remove_dataset(prefix)
    return {k: IndexedWriter(p, dtype) for k, p in outputs.items()}, 0, 0.0


def _save_checkpoint(
    cfg: TokenizeConfig, key: dict, blocks: int, writers: dict[str, IndexedWriter], stats: TokenizeStats, seconds: float
) -> None:
    """Flush the writers and atomically record how far the run got."""
    state = {
        "key": key,
        "blocks_done": blocks,
        "writers": {k: w.checkpoint() for k, w in writers.items()},
        "stats": {name: getattr(stats, name) for name in _RESUMED_FIELDS},
        "seconds": seconds,
    }
    atomic_write_text(cfg.checkpoint_path, json.dumps(state))


def tokenize_to_indexed(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_prefix: str | os.PathLike,
    tokenizer: str = "qwen3",
    json_keys: Sequence[str] = ("text",),
    append_eod: bool = True,
    workers: int | None = None,
    **options: object,
) -> TokenizeStats:
    """Tokenize JSONL/Parquet ``inputs`` into ``{output_prefix}_{key}_document.bin/.idx``; returns statistics.

    ``options`` are further :class:`TokenizeConfig` fields (``shard_index``, ``num_shards``, ``strict``, ...).
    """
    cfg = TokenizeConfig(
        inputs=[str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)],
        output_prefix=str(output_prefix),
        tokenizer=tokenizer,
        json_keys=tuple(json_keys),
        append_eod=append_eod,
        workers=workers or _default_workers(),
        **options,  # type: ignore[arg-type]
    )
    return run(cfg)


def build_parser() -> argparse.ArgumentParser:
    """The ``data tokenize`` argument parser."""
    p = argparse.ArgumentParser(
        prog="megatron-agentic data tokenize",
        description="Tokenize JSONL (.gz/.zst) or Parquet into Megatron indexed datasets {PREFIX}_{key}_document.bin/.idx.",
    )
    p.add_argument("--input", nargs="+", required=True, help="files, globs or directories")
    p.add_argument(
        "--output-prefix", required=True, help="output prefix (shard suffix -IIIII-of-NNNNN added when sharded)"
    )
    p.add_argument(
        "--tokenizer", default="qwen3", help="qwen3 | HF tokenizer dir or tokenizer.json | sentencepiece .model"
    )
    p.add_argument("--json-keys", nargs="+", default=["text"], help="fields to tokenize, one dataset each")
    p.add_argument("--append-eod", action="store_true", help="append the end-of-document token to every document")
    p.add_argument("--workers", type=int, default=_default_workers(), help="tokenizer processes (default: all cores)")
    p.add_argument("--shard-index", type=int, default=0, help="this shard (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--num-shards", type=int, default=1, help="split the inputs into this many contiguous shards")
    p.add_argument("--block-bytes", type=int, default=1 << 20, help="input bytes per work item (bounds memory)")
    p.add_argument("--max-in-flight", type=int, default=0, help="work items in flight (default 2*workers+2)")
    p.add_argument("--max-doc-bytes", type=int, default=64 << 20, help="skip records larger than this as too_long")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record, naming file and line")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, help="save a resume point this often (0: always)")
    p.add_argument("--overwrite", action="store_true", help="redo finished outputs")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    p.add_argument("--json-summary", help="also write the run statistics to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 1 on bad input in strict mode or other errors."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lock_output_file(args.output_prefix, "data tokenize", args.shard_index, args.num_shards)  # issue 16
    try:
        cfg = TokenizeConfig(
            inputs=args.input,
            output_prefix=args.output_prefix,
            tokenizer=args.tokenizer,
            json_keys=tuple(args.json_keys),
            append_eod=args.append_eod,
            workers=args.workers,
            shard_index=args.shard_index,
            num_shards=args.num_shards,
            block_bytes=args.block_bytes,
            max_in_flight=args.max_in_flight,
            max_doc_bytes=args.max_doc_bytes,
            strict=args.strict,
            checkpoint_seconds=args.checkpoint_seconds,
            overwrite=args.overwrite,
            progress=args.progress,
        )
        stats = run(cfg)
    except (BadInputError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"data tokenize: error: {exc}", file=sys.stderr)
        return 1
    print(stats.summary())
    if args.json_summary:
        Path(args.json_summary).write_text(json.dumps(asdict(stats), indent=2), encoding="utf-8")
    if stats.documents == 0 and args.num_shards == 1:  # a shard of an array job may legitimately get nothing
        print(
            f"data tokenize: error: no valid document in {', '.join(map(str, args.input))} (skipped: {dict(stats.skipped) or 'none'}); "
            "the output dataset is empty",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
