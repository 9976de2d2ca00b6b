"""Document-length histograms of megatron indexed datasets (what per-document attention costs depends on).

With per-document attention (``data.document_attention``) the attention FLOPs of a packed sequence are the sum of
the squared lengths of its documents, not the squared sequence length, so the planner needs each source's length
distribution. ``data mix`` records it per source (``sources[i].doc_length_histogram``) with
:func:`length_histogram`: log-spaced buckets (:data:`BUCKETS_PER_OCTAVE` per power of two), and per bucket the
document count, the sum of lengths and the sum of squared lengths (exact, so quadratic costs are exact for
documents that fit in a sequence). Lengths are the index's sequence lengths: ``tokenize`` writes one sequence per
document with its EOD appended, the unit megatron-core's ``GPTDataset`` samples and the EOD-delimited span
per-document attention sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from data_tools.indexed.indexed_io import read_index

BUCKETS_PER_OCTAVE = 4
"""Histogram resolution: bucket edges at ``2 ** (k / 4)`` (about 19% wide)."""

HISTOGRAM_SCHEMA = "megatron-agentic/doc-length-histogram/1"
"""``schema`` of a histogram dict."""


def sequence_length_chunks(prefix: str | os.PathLike, chunk: int = 1 << 24) -> Iterator[np.ndarray]:
    """The int32 sequence lengths of the ``.idx`` of ``prefix``, in chunks (bounded memory).

    The header is parsed by :func:`~data_tools.indexed.indexed_io.read_index` (without its array pass); a missing
    or malformed index raises ``ValueError`` naming the file.
    """
    info = read_index(prefix, check=False)
    if info.errors:
        raise ValueError(info.errors[0])
    lengths = info.sequence_lengths
    assert lengths is not None
    for i in range(0, lengths.size, chunk):
        yield np.asarray(lengths[i : i + chunk])


def bucket_edges(max_length: int) -> np.ndarray:
    """Bucket edges ``[1, 2**(1/4), ...]`` (rounded up to integers, deduplicated) covering ``max_length``."""
    top = max(int(max_length), 1)
    k = int(np.ceil(np.log2(top + 1) * BUCKETS_PER_OCTAVE)) + 1
    edges = np.unique(np.ceil(2.0 ** (np.arange(k + 1) / BUCKETS_PER_OCTAVE)).astype(np.int64))
    return np.concatenate([[0], edges])


def length_histogram(chunks: Iterator[np.ndarray] | list[np.ndarray]) -> dict[str, Any]:
    """Histogram dict of document lengths given in chunks (two passes over a list, one pass over its max first).

    Returns ``{"schema", "documents", "tokens", "max_length", "edges", "counts", "token_sums", "square_sums"}``:
    bucket ``i`` holds lengths in ``[edges[i], edges[i+1])``; ``square_sums`` are floats (they overflow int64).
    """
    parts = list(chunks)
    max_length = max((int(p.max()) for p in parts if p.size), default=0)
    edges = bucket_edges(max_length)
    counts = np.zeros(edges.size - 1, dtype=np.int64)
    token_sums = np.zeros(edges.size - 1, dtype=np.int64)
    square_sums = np.zeros(edges.size - 1, dtype=np.float64)
    for p in parts:
        if not p.size:
            continue
        n = p.astype(np.int64)
        which = np.searchsorted(edges, n, side="right") - 1
        counts += np.bincount(which, minlength=counts.size)
        token_sums += np.bincount(which, weights=n, minlength=counts.size).astype(np.int64)
        square_sums += np.bincount(which, weights=n.astype(np.float64) ** 2, minlength=counts.size)
    keep = counts > 0
    return {
        "schema": HISTOGRAM_SCHEMA,
        "documents": int(counts.sum()),
        "tokens": int(token_sums.sum()),
        "max_length": max_length,
        "edges": [[int(a), int(b)] for a, b in zip(edges[:-1][keep], edges[1:][keep])],
        "counts": counts[keep].tolist(),
        "token_sums": token_sums[keep].tolist(),
        "square_sums": square_sums[keep].tolist(),
    }


def dataset_histogram(prefix: str | os.PathLike) -> dict[str, Any]:
    """:func:`length_histogram` of the indexed dataset ``prefix``."""
    return length_histogram(list(sequence_length_chunks(prefix)))


def check_histogram(hist: Any, where: str) -> dict[str, Any]:
    """Validate a histogram dict read from a file; raises ValueError naming ``where`` and the field."""
    if not isinstance(hist, dict) or hist.get("schema") != HISTOGRAM_SCHEMA:
        raise ValueError(f"{where}: field 'schema' must be {HISTOGRAM_SCHEMA!r}")
    n = None
    for key in ("edges", "counts", "token_sums", "square_sums"):
        value = hist.get(key)
        if not isinstance(value, list):
            raise ValueError(f"{where}: field {key!r} must be a list")
        if n is not None and len(value) != n:
            raise ValueError(f"{where}: field {key!r} has {len(value)} entries, expected {n}")
        n = len(value)
    if any(c < 0 for c in hist["counts"]) or any(t < 0 for t in hist["token_sums"]):
        raise ValueError(f"{where}: negative counts or token sums")
    return hist
