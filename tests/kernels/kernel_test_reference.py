"""Independent torch reference for the attention tests: plain softmax attention with explicit masks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    softmax_scale: float | None = None,
    doc_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q [b, sq, h, d]``, ``k/v [b, sk, hk, d]`` -> (out ``[b, sq, h, d]``, natural-log lse ``[b, h, sq]``).

    Computed in float64 with K/V repeated per query head (the GQA definition), a bottom-right causal mask and,
    when ``doc_ids [sq]`` is given (``sq == sk``), a block-diagonal document mask.
    """
    b, sq, h, d = q.shape
    sk = k.shape[1]
    rep = h // k.shape[2]
    kk = k.double().repeat_interleave(rep, dim=2)
    vv = v.double().repeat_interleave(rep, dim=2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), kk) * scale
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= torch.arange(sk)[None, :] <= torch.arange(sq)[:, None] + (sk - sq)
    if doc_ids is not None:
        keep &= doc_ids[:, None] == doc_ids[None, :]
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, dim=-1), vv)
    return out, lse


def doc_ids_from_cu(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Document id of every token of a packed sequence."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(lengths)), lengths)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` for the block, the previous setting restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
