"""What attention costs per token, from the data: full-sequence vs per-document (``data.document_attention``).

Causal attention over ``n`` tokens costs ``6 L n_q d n^2`` training FLOPs (forward ``QK^T`` and ``PV``, halved by
causality, times three for backward), so a sequence attended whole costs ``6 L n_q d s`` per token, and a
sequence split into documents ``n_1, n_2, ...`` costs ``6 L n_q d sum(n_i^2) / s`` per token: the *attended
length* ``sum(n_i^2) / sum(n_i)`` replaces ``s``.

megatron-core's ``GPTDataset`` lays shuffled documents end to end and cuts samples every ``s`` tokens, so a
document's start falls anywhere within a sample: :func:`piece_statistics` averages, over the start offset, the
squared lengths of the pieces a document of length ``n`` is cut into (and their number). A source's attended
length is then ``sum_docs E[sum piece^2] / sum_docs n`` from its length histogram (``data mix`` records one per
source, :mod:`data_tools.indexed.doc_lengths`), and a blend's is the token-weighted mean over its sources. With context
parallelism every piece is padded to a multiple of ``2 CP`` (on average ``CP - 1/2`` tokens), which the padding
fraction adds to every token's cost.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.indexed.doc_lengths import check_histogram

OFFSETS = 512
"""Start offsets averaged over by :func:`piece_statistics` (evenly spaced within a sequence)."""


def piece_statistics(lengths: np.ndarray, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(E[sum of squared piece lengths], E[number of pieces])`` of documents of ``lengths`` cut every
    ``seq_length`` tokens, averaged over a start offset uniform within the sequence."""
    n = np.asarray(lengths, dtype=np.float64)[:, None]
    s = float(seq_length)
    u = (np.arange(OFFSETS, dtype=np.float64) + 0.5) * s / OFFSETS  # tokens of the sample before the document
    first = np.minimum(n, s - u[None, :])
    rest = n - first
    full = np.floor(rest / s)
    last = rest - full * s
    squares = first**2 + full * s**2 + last**2
    pieces = 1.0 + full + (last > 0)
    return squares.mean(axis=1), pieces.mean(axis=1)


@dataclasses.dataclass(frozen=True)
class LengthProfile:
    """Per-token attention quantities of a blend at one sequence length."""

    attended_length: float
    """``E[sum piece^2] / tokens``: the length that replaces ``s`` in the attention FLOPs per token."""
    pieces_per_token: float
    """Documents (pieces) per token; with CP each is padded to a multiple of ``2 CP``."""
    mean_document: float
    """Token-weighted mean document length of the blend (before cutting)."""


def histogram_profile(hist: dict[str, Any], seq_length: int) -> LengthProfile:
    """:class:`LengthProfile` of one source's length histogram (bucket lengths: the length with the bucket's mean
    square, exact for the quadratic term within a sequence)."""
    counts = np.asarray(hist["counts"], dtype=np.float64)
    tokens = np.asarray(hist["token_sums"], dtype=np.float64)
    squares = np.asarray(hist["square_sums"], dtype=np.float64)
    total = tokens.sum()
    if total <= 0:
        raise ValueError("the histogram holds no tokens")
    keep = counts > 0
    rep = np.sqrt(squares[keep] / counts[keep])  # root mean square length of the bucket
    sq, pieces = piece_statistics(rep, seq_length)
    return LengthProfile(
        attended_length=float((counts[keep] * sq).sum() / total),
        pieces_per_token=float((counts[keep] * pieces).sum() / total),
        mean_document=float(squares.sum() / total),
    )


def blend_profile(sources: list[tuple[float, dict[str, Any]]], seq_length: int) -> LengthProfile:
    """Token-weighted :class:`LengthProfile` of ``(weight, histogram)`` sources (weights: shares of tokens)."""
    total = sum(w for w, _ in sources)
    if total <= 0:
        raise ValueError("the blend has no weight")
    profiles = [(w / total, histogram_profile(h, seq_length)) for w, h in sources]
    return LengthProfile(
        attended_length=sum(w * p.attended_length for w, p in profiles),
        pieces_per_token=sum(w * p.pieces_per_token for w, p in profiles),
        mean_document=sum(w * p.mean_document for w, p in profiles),
    )


def load_blend_histograms(path: str | Path) -> list[tuple[float, dict[str, Any]]]:
    """``(weight, histogram)`` of every source of a ``data mix`` output; ValueError naming the file and field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, list) or not sources:
        raise ValueError(f"{path}: no 'sources' list (was it written by `megatron-agentic data mix`?)")
    out = []
    for i, entry in enumerate(sources):
        if "doc_length_histogram" not in entry:
            raise ValueError(
                f"{path}: sources[{i}] has no 'doc_length_histogram' (written by an older `data mix`; run it again)"
            )
        hist = check_histogram(entry["doc_length_histogram"], f"{path}: sources[{i}].doc_length_histogram")
        out.append((float(entry.get("weight", 0.0)), hist))
    return out


def attention_flops_per_token(num_layers: int, heads: int, head_dim: int, attended_length: float) -> float:
    """Training FLOPs per token of causal attention over ``attended_length`` (``s`` for the whole sequence)."""
    return 6.0 * num_layers * heads * head_dim * attended_length


def padding_fraction(profile: LengthProfile, context_parallel: int) -> float:
    """Extra tokens per real token when every document piece is padded to a multiple of ``2 CP``."""
    if context_parallel <= 1:
        return 0.0
    return profile.pieces_per_token * (2 * context_parallel - 1) / 2.0
