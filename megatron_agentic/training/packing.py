"""Per-document attention for packed samples: micro-batches -> ``thd`` tokens + ``PackedSeqParams``.

megatron-core's ``GPTDataset`` fills every sample with consecutive documents of the shuffled corpus; each document
ends with the end-of-document (EOD) token appended at tokenization, and the sample's end cuts whatever document
is running (the rest continues in the next sample). ``data.reset_attention_mask`` makes megatron-core materialise
a dense ``[1, s, s]`` mask per sample to keep documents apart, which at 32K-128K tokens cannot be built.
:func:`pack_documents` gives the same attention without a mask: the documents of a micro-batch (a document ends
after every EOD token and at every sample end, exactly the boundaries of megatron-core's ``reset_attention_mask``)
are laid end to end as one ``thd`` sequence described by ``PackedSeqParams`` (``cu_seqlens``), position ids restart
per document, and every document is attended on its own by Transformer Engine's or the project's Triton ``thd``
attention. With context parallelism each document is padded to a multiple of ``2 * CP`` (padding at its end,
excluded from the loss, invisible to its real tokens under the causal mask) and zigzag-split on its own, the layout
Transformer Engine's ``thd_get_partitioned_indices`` and ``megatron_agentic.kernels.ring_attention`` use.

:func:`packed_seq_params` (document lengths -> ``PackedSeqParams``) is the reusable piece for other packers (SFT).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from megatron.core.packed_seq_params import PackedSeqParams

PACKED_KEYS = ("tokens", "labels", "loss_mask", "position_ids")
"""Per-token batch keys a packed micro-batch carries (``attention_mask`` is never built)."""


def cp_multiple(cp_size: int) -> int:
    """Length every document is padded to a multiple of: ``2 * cp_size`` with context parallelism, else 1."""
    return 2 * cp_size if cp_size > 1 else 1


def document_lengths(tokens: torch.Tensor, eod: int) -> list[int]:
    """Document lengths of one sample ``[s]``: a document ends after every EOD token and at the sample's end.

    These are the blocks of megatron-core's ``reset_attention_mask`` (``gpt_dataset._get_ltor_masks_and_position_ids``):
    token ``j`` attends to token ``i <= j`` iff no EOD lies in ``[i, j)``.
    """
    s = int(tokens.numel())
    ends = ((tokens.reshape(-1) == eod).nonzero().flatten() + 1).tolist()
    bounds = [0, *ends]
    if bounds[-1] != s:
        bounds.append(s)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def padded_lengths(lengths: Sequence[int], cp_size: int = 1, total_length: int | None = None) -> list[int]:
    """Each document's length rounded up to :func:`cp_multiple`; the last one also absorbs ``total_length - sum``.

    ``total_length`` (a multiple of ``cp_multiple``, at least the padded sum) gives every micro-batch of a step the
    same packed length, which pipeline send/receive shapes and the all-gather token dispatcher need.
    """
    m = cp_multiple(cp_size)
    padded = [math.ceil(n / m) * m for n in lengths]
    if total_length is not None:
        extra = total_length - sum(padded)
        if extra < 0 or extra % m or not padded:
            raise ValueError(
                f"total_length {total_length} must be >= the padded packed length {sum(padded)} and differ from it "
                f"by a multiple of {m}"
            )
        padded[-1] += extra
    return padded


def packed_seq_params(
    lengths: Sequence[int],
    padded: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> PackedSeqParams:
    """``PackedSeqParams`` (``thd``) of documents with real ``lengths`` laid end to end.

    Args:
        lengths: real tokens of each document, in order (their sum need not equal the packed length when padded).
        padded: each document's padded length (``>= lengths[i]``; padding sits at the document's end), as laid out
            in the packed sequence; ``None`` or equal to ``lengths`` means no padding.
        device: where the int32 ``cu_seqlens`` tensors live (the model's device).

    Returns:
        ``cu_seqlens_q/kv`` over the real lengths, ``cu_seqlens_q/kv_padded`` over the padded lengths (``None``
        without padding), and ``max_seqlen_q/kv`` = the longest padded document (what RoPE and the kernels' grid
        must cover). The ``cu_seqlens`` describe the *full* packed sequence; with context parallelism every rank
        holds its zigzag share of each document (see :func:`pack_documents`).
    """
    if padded is not None and len(padded) != len(lengths):
        raise ValueError(f"{len(lengths)} document lengths but {len(padded)} padded lengths")
    if padded is not None and any(p < n for p, n in zip(padded, lengths)):
        raise ValueError("a padded document length is shorter than its real length")
    has_padding = padded is not None and list(padded) != list(lengths)

    def cu(values: Sequence[int]) -> torch.Tensor:
        out = torch.zeros(len(values) + 1, dtype=torch.int32)
        out[1:] = torch.cumsum(torch.as_tensor(list(values), dtype=torch.int64), 0).to(torch.int32)
        return out.to(device) if device is not None else out

    cu_real = cu(lengths)
    cu_pad = cu(padded) if has_padding else None
    longest = max(padded if has_padding else lengths, default=0)
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu_real,
        cu_seqlens_kv=cu_real,
        cu_seqlens_q_padded=cu_pad,
        cu_seqlens_kv_padded=cu_pad,
        max_seqlen_q=int(longest),
        max_seqlen_kv=int(longest),
    )


def micro_batch_documents(tokens: torch.Tensor, eod: int) -> list[int]:
    """Document lengths of a ``[b, s]`` micro-batch, sample after sample (sample ends are document ends)."""
    return [n for row in tokens for n in document_lengths(row, eod)]


def packed_length(tokens: torch.Tensor, eod: int, cp_size: int = 1) -> int:
    """Length of the packed ``thd`` sequence of a ``[b, s]`` micro-batch (documents padded for ``cp_size``)."""
    return sum(padded_lengths(micro_batch_documents(tokens, eod), cp_size))


def pack_documents(
    batch: dict[str, Any],
    eod: int,
    cp_rank: int = 0,
    cp_size: int = 1,
    total_length: int | None = None,
    pad_token: int | None = None,
) -> dict[str, Any]:
    """One ``[b, s]`` micro-batch -> this CP rank's share of its per-document packed ``thd`` form.

    Args:
        batch: ``tokens``, ``labels``, ``loss_mask`` (``[b, s]``; ``position_ids`` and ``attention_mask`` are
            ignored: positions are recomputed per document, and no mask is needed).
        eod: end-of-document token id (documents end after it).
        cp_rank / cp_size: context-parallel rank and size; with ``cp_size > 1`` every document is padded to a
            multiple of ``2 * cp_size`` and this rank keeps chunks ``r`` and ``2W-1-r`` of each.
        total_length: pad the packed sequence to this many tokens (see :func:`padded_lengths`); default: no more
            than the documents need.
        pad_token: token id of padding positions (default ``eod``); padding has label 0 and loss mask 0.

    Returns:
        ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` as ``[1, t_local]`` and ``packed_seq_params``
        (full-sequence ``cu_seqlens``), ``attention_mask`` ``None``. Per-token values of real tokens are
        unchanged, so the token loss is the dense-mask one; ``loss_mask`` (e.g. an SFT mask) is carried through.
    """
    tokens = batch["tokens"]
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, seq], got {tuple(tokens.shape)}")
    lengths = micro_batch_documents(tokens, eod)
    padded = padded_lengths(lengths, cp_size, total_length)
    total = sum(padded)
    device = tokens.device
    starts = torch.zeros(len(padded), dtype=torch.long)
    starts[1:] = torch.cumsum(torch.as_tensor(padded[:-1], dtype=torch.long), 0)
    n = torch.as_tensor(lengths, dtype=torch.long)
    doc_of_token = torch.repeat_interleave(torch.arange(len(lengths)), n)
    real_starts = torch.cumsum(n, 0) - n
    offset = torch.arange(int(n.sum())) - real_starts[doc_of_token]
    dest = (starts[doc_of_token] + offset).to(device)

    fills = {"tokens": eod if pad_token is None else pad_token, "labels": 0, "loss_mask": 0}
    out: dict[str, Any] = {}
    for key, fill in fills.items():
        src = batch[key].reshape(-1)
        packed = torch.full((total,), fill, dtype=src.dtype, device=device)
        packed[dest] = src
        out[key] = packed.unsqueeze(0)
    pad_doc = torch.repeat_interleave(torch.arange(len(padded)), torch.as_tensor(padded, dtype=torch.long))
    out["position_ids"] = (torch.arange(total) - starts[pad_doc]).unsqueeze(0).to(device)
    params = packed_seq_params(lengths, padded, device=device)
    if cp_size > 1:
        from megatron_agentic.kernels.ring_attention import zigzag_indices

        cu_pad = params.cu_seqlens_q_padded if params.cu_seqlens_q_padded is not None else _cu(padded)
        idx = zigzag_indices(total, cp_rank, cp_size, cu_pad, device)
        out = {k: v.index_select(1, idx).contiguous() for k, v in out.items()}
    out["attention_mask"] = None
    out["packed_seq_params"] = params
    return out


def _cu(values: Sequence[int]) -> torch.Tensor:
    out = torch.zeros(len(values) + 1, dtype=torch.long)
    out[1:] = torch.cumsum(torch.as_tensor(list(values), dtype=torch.long), 0)
    return out


def step_packed_length(batches: Sequence[dict[str, Any]], eod: int, cp_size: int, tp_size: int = 1) -> int:
    """The packed length all micro-batches of a step are padded to on this rank (before the cross-rank max).

    The longest packed micro-batch, rounded up to a multiple of ``2 * cp_size * tp_size`` (every CP rank's share
    must split evenly over sequence-parallel TP ranks).
    """
    m = cp_multiple(cp_size) * max(tp_size, 1)
    longest = max((packed_length(b["tokens"], eod, cp_size) for b in batches), default=0)
    return math.ceil(longest / m) * m


def prepare_document_batches(
    batches: Sequence[dict[str, Any]],
    eod: int,
    cp_rank: int,
    cp_size: int,
    tp_size: int = 1,
    device: torch.device | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Pack every micro-batch of one step for per-document attention; returns them and the packed length.

    Without context parallelism a packed micro-batch holds exactly its ``b * s`` tokens (no padding, no
    communication). With CP > 1 documents are padded, so the packed length varies; every micro-batch of the step
    is padded to the longest one over all ranks (one ``all_reduce(MAX)`` of an integer), keeping the send/receive
    shapes of pipeline stages and the token counts of the all-gather MoE dispatcher equal across ranks. The
    returned length is the full (pre-CP-split) packed length: what megatron-core's schedule is given as
    ``seq_length`` with ``micro_batch_size=1``.
    """
    if not batches:
        return [], 0
    if cp_size > 1:
        total = step_packed_length(batches, eod, cp_size, tp_size)
        if torch.distributed.is_initialized():
            t = torch.tensor([total], dtype=torch.long, device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            total = int(t.item())
    else:
        total = int(batches[0]["tokens"].numel())
    packed = [pack_documents(b, eod, cp_rank, cp_size, total_length=total if cp_size > 1 else None) for b in batches]
    if device is not None and device.type != "cpu":
        packed = [_to_device(b, device) for b in packed]
    return packed, total


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in batch.items():
        if isinstance(val, torch.Tensor):
            out[key] = val.to(device, non_blocking=True)
        elif isinstance(val, PackedSeqParams):
            fields = {
                f: (getattr(val, f).to(device) if isinstance(getattr(val, f), torch.Tensor) else getattr(val, f))
                for f in val.__dataclass_fields__
            }
            out[key] = PackedSeqParams(**fields)
        else:
            out[key] = val
    return out
