"""``data inspect PREFIX``: validate a Megatron indexed dataset and summarise it.

Checks the ``.idx`` header (magic, version, dtype code), that the file size matches the counts, that sequence
pointers are the running sum of lengths, that document indices start at 0, never decrease and end at the sequence
count, that the ``.bin`` size matches, and (for datasets up to ``--scan-limit`` bytes, or with ``--scan``) that
every token id is below the tokenizer's vocabulary. Prints documents, tokens, a length histogram and decoded
samples. Exits 2 when the dataset is corrupt, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_tools.indexed.indexed_io import IndexInfo, bin_path, read_index


def _find_tokenizer_spec(prefix: Path) -> str | None:
    """The tokenizer recorded by ``data tokenize`` in a ``*.tokenize.json`` next to the dataset, if any."""
    for summary in sorted(prefix.parent.glob("*.tokenize.json")):
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        outputs = data.get("stats", {}).get("outputs", {})
        if any(Path(v).name == prefix.name for v in outputs.values()):
            return data.get("fingerprint", {}).get("tokenizer")
    return None


def scan_tokens(info: IndexInfo, vocab: int, chunk: int = 1 << 24) -> str | None:
    """Stream the ``.bin`` and return an error if any token id is negative or ``>= vocab``."""
    assert info.dtype is not None
    data = np.memmap(bin_path(info.prefix), dtype=info.dtype, mode="r")
    for i in range(0, data.size, chunk):
        part = np.asarray(data[i : i + chunk])
        lo, hi = int(part.min()), int(part.max())
        if lo < 0 or hi >= vocab:
            j = i + int(np.argmax((part < 0) | (part >= vocab)))
            return f"{bin_path(info.prefix)}: token {j} has id {int(data[j])}, outside the vocabulary [0, {vocab})"
    return None


def _doc_length_chunks(info: IndexInfo, chunk: int = 1 << 22) -> Iterator[np.ndarray]:
    """Token count of every document, in chunks (bounded memory), from the validated pointers and document indices."""
    assert info.sequence_pointers is not None and info.document_indices is not None and info.dtype is not None
    item = info.dtype.itemsize
    n_seq = info.num_sequences
    end_of_data = int(info.sequence_pointers[-1]) + int(info.sequence_lengths[-1]) * item if n_seq else 0
    docs = info.document_indices
    for i in range(0, max(docs.size - 1, 0), chunk):
        bounds = np.asarray(docs[i : i + chunk + 1])
        offsets = np.where(bounds < n_seq, info.sequence_pointers[np.minimum(bounds, max(n_seq - 1, 0))], end_of_data)
        yield np.diff(offsets) // item


def length_stats(info: IndexInfo, width: int = 40) -> tuple[dict, list[str]]:
    """Document length min/mean/max/empties and a power-of-two bucket histogram (two streaming passes)."""
    n, total, lo, hi, empty = 0, 0, None, 0, 0
    for lengths in _doc_length_chunks(info):
        if lengths.size:
            n += lengths.size
            total += int(lengths.sum())
            lo = int(lengths.min()) if lo is None else min(lo, int(lengths.min()))
            hi = max(hi, int(lengths.max()))
            empty += int((lengths == 0).sum())
    stats = {
        "doc_length_min": lo or 0,
        "doc_length_mean": total / n if n else 0.0,
        "doc_length_max": hi,
        "empty_documents": empty,
    }
    if not n:
        return stats, []
    edges = np.array([0] + [2**k for k in range(int(np.ceil(np.log2(max(hi, 1) + 1))) + 1)])
    counts = np.zeros(edges.size - 1, dtype=np.int64)
    for lengths in _doc_length_chunks(info):
        counts += np.histogram(lengths, bins=edges)[0]
    top = max(int(counts.max()), 1)
    lines = [
        f"  [{a:>8,}, {b:>8,})  {int(c):>10,}  {'#' * max(1, int(width * c / top))}"
        for a, b, c in zip(edges[:-1].tolist(), edges[1:].tolist(), counts)
        if c
    ]
    return stats, lines


def inspect_dataset(
    prefix: str | os.PathLike,
    tokenizer: str | None = None,
    samples: int = 2,
    max_chars: int = 400,
    scan: bool | None = None,
    scan_limit: int = 1 << 30,
) -> tuple[dict, list[str]]:
    """Validate and summarise a dataset; returns ``(report, errors)`` (``errors`` empty when consistent)."""
    prefix = Path(str(prefix)[:-4] if str(prefix).endswith((".idx", ".bin")) else str(prefix))
    info = read_index(prefix)
    errors = list(info.errors)
    report: dict = {"prefix": str(prefix)}
    if info.sequence_lengths is None:
        return report, errors
    report.update(
        dtype=str(info.dtype),
        documents=info.num_documents,
        sequences=info.num_sequences,
        tokens=info.num_tokens,
        bin_bytes=bin_path(prefix).stat().st_size,
    )
    if not errors:  # lengths come from pointers, which are only meaningful once validated
        stats, report["histogram"] = length_stats(info)
        report.update(stats)
    spec = tokenizer if tokenizer is not None else (_find_tokenizer_spec(prefix) or "qwen3")
    tok = None
    if spec.lower() != "none":
        from data_tools.indexed.tokenizers import load_tokenizer

        tok = load_tokenizer(spec)
        report["tokenizer"] = tok.name
    if not errors and report["bin_bytes"] == 0:
        errors.append(f"{bin_path(prefix)}: empty dataset (no tokens; megatron-core cannot memory-map an empty .bin)")
    if not errors and tok is not None:
        do_scan = scan if scan is not None else report["bin_bytes"] <= scan_limit
        if do_scan:
            problem = scan_tokens(info, tok.n_vocab)
            report["token_scan"] = "ok" if problem is None else "failed"
            if problem:
                errors.append(problem)
    if not errors and samples > 0 and info.num_documents:
        picks = sorted(
            {0, info.num_documents - 1} | set(np.random.default_rng(0).integers(0, info.num_documents, samples))
        )
        report["samples"] = []
        for d in picks[: max(samples, 1)]:
            ids = info.document_tokens(d)
            text = tok.decode(ids[:max_chars]) if tok is not None else " ".join(map(str, ids[:64]))
            report["samples"].append({"document": int(d), "tokens": int(ids.size), "text": text[:max_chars]})
    return report, errors


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``data inspect PREFIX [--tokenizer SPEC|none] [--samples N] [--json]``."""
    p = argparse.ArgumentParser(prog="megatron-agentic data inspect", description=__doc__.splitlines()[0])
    p.add_argument("prefix", nargs="+", help="dataset prefix(es) (PREFIX.bin/PREFIX.idx), or the .idx/.bin path")
    p.add_argument("--tokenizer", default=None, help="tokenizer for decoding (default: recorded one, else qwen3; none)")
    p.add_argument("--samples", type=int, default=2, help="documents to decode")
    p.add_argument("--max-chars", type=int, default=400, help="characters of each decoded sample to print")
    scan = p.add_mutually_exclusive_group()
    scan.add_argument("--scan", dest="scan", action="store_true", default=None, help="always check every token id")
    scan.add_argument("--no-scan", dest="scan", action="store_false", help="never scan token ids")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    status = 0
    for prefix in args.prefix:
        report, errors = inspect_dataset(prefix, args.tokenizer, args.samples, args.max_chars, args.scan)
        report["errors"] = errors
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            print(f"{report['prefix']}:")
            if "documents" in report:
                print(
                    f"  {report['documents']:,} documents, {report['sequences']:,} sequences, {report['tokens']:,} "
                    f"tokens ({report['dtype']})"
                )
            if "histogram" in report:
                print(
                    f"  document length min/mean/max {report['doc_length_min']:,} / {report['doc_length_mean']:,.1f}"
                    f" / {report['doc_length_max']:,}; {report['empty_documents']:,} empty"
                )
                print("  document length histogram (tokens):")
                for line in report["histogram"]:
                    print(line)
            for s in report.get("samples", []):
                print(f"  --- document {s['document']} ({s['tokens']} tokens) ---")
                print("  " + s["text"].replace("\n", "\n  "))
            if errors:
                print("  CORRUPT:")
                for e in errors:
                    print(f"    {e}")
            else:
                print("  OK")
        if errors:
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
