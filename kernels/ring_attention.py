"""Zigzag ring attention: context-parallel flash attention over a process group (NCCL or gloo).

Sharding. The sequence (or, for packed documents, every document) is cut into ``2W`` equal chunks and rank ``r``
holds chunks ``r`` and ``2W-1-r`` (:func:`zigzag_split`), the same layout megatron-core's
``get_batch_on_this_cp_rank`` and ``get_pos_emb_on_this_cp_rank`` use, so RoPE sees global positions. Under a
causal mask every rank then does the same work: at ring step 0 a rank attends its own K/V causally; at a step
where the K/V came from a lower rank, all local queries attend the *first* half of that K/V; from a higher rank,
only the *second* half of the local queries attend all of it (each is half of a full block).

Communication. K and V travel around the ring as one buffer with ``dist.batch_isend_irecv``; the transfer for
step ``i+1`` is posted before the block of step ``i`` is computed. Block outputs are written in fp32 and merged with
the stable form ``out -= sigmoid(lse_b - lse) * (out - out_b)``, ``lse -= logsigmoid(lse - lse_b)`` (one fused kernel
per step with the Triton blocks, :mod:`megatron_agentic.kernels.ring_merge`). The backward
reuses the final ``out``/``lse`` (so every block's probabilities are already normalised), accumulates dQ locally in
fp32 (in place inside the Triton kernels), and passes fp32 dK/dV around the ring with the K/V they belong to; after ``W`` steps each rank holds the
gradient of its own K/V.

Block compute is pluggable (:class:`BlockBackend`): the Triton kernels on CUDA, the torch implementation
(:mod:`megatron_agentic.kernels.torch_attention`) on CPU; ``backend="triton"`` forces Triton (the interpreter, on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_agentic.kernels import flash_attention as _fa

# ----------------------------------------------------------------------------------------------------------------
# zigzag sharding
# ----------------------------------------------------------------------------------------------------------------


def zigzag_indices(
    seqlen: int, rank: int, world_size: int, cu_seqlens: torch.Tensor | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Global token indices held by ``rank``: chunks ``rank`` and ``2W-1-rank`` of every document (in order).

    Without ``cu_seqlens`` the whole sequence of ``seqlen`` tokens is one document. Every document length must be
    divisible by ``2 * world_size``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    bounds = [0, seqlen] if cu_seqlens is None else [int(x) for x in cu_seqlens.tolist()]
    if bounds[-1] != seqlen:
        raise ValueError(f"cu_seqlens ends at {bounds[-1]} but the sequence has {seqlen} tokens")
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        length = end - start
        if length % (2 * world_size):
            raise ValueError(
                f"document length {length} (tokens {start}..{end}) is not divisible by 2 * world_size = "
                f"{2 * world_size}; pad documents to a multiple of it"
            )
        chunk = length // (2 * world_size)
        for c in (rank, 2 * world_size - 1 - rank):
            parts.append(torch.arange(start + c * chunk, start + (c + 1) * chunk))
    idx = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    return idx.to(device) if device is not None else idx


def zigzag_split(
    x: torch.Tensor, dim: int, rank: int, world_size: int, cu_seqlens: torch.Tensor | None = None
) -> torch.Tensor:
    """The zigzag shard of ``x`` along ``dim`` held by ``rank`` (chunks ``rank`` and ``2W-1-rank``)."""
    idx = zigzag_indices(x.shape[dim], rank, world_size, cu_seqlens, x.device)
    return x.index_select(dim, idx)


def zigzag_merge(
    shards: list[torch.Tensor] | tuple[torch.Tensor, ...], dim: int, cu_seqlens: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`zigzag_split`: reassemble the full tensor from all ranks' shards (rank order)."""
    world_size = len(shards)
    seqlen = sum(s.shape[dim] for s in shards)
    first = shards[0]
    shape = list(first.shape)
    shape[dim] = seqlen
    out = first.new_empty(shape)
    for rank, shard in enumerate(shards):
        out.index_copy_(dim, zigzag_indices(seqlen, rank, world_size, cu_seqlens, first.device), shard)
    return out


# ----------------------------------------------------------------------------------------------------------------
# ring plumbing
# ----------------------------------------------------------------------------------------------------------------


class _Ring:
    """Batched P2P to the next rank / from the previous rank of ``group``."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.next = dist.get_global_rank(group, (self.rank + 1) % self.world_size)
        self.prev = dist.get_global_rank(group, (self.rank - 1) % self.world_size)

    def exchange(self, send: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Post ``send -> next`` and ``recv <- prev``; returns the receive buffer and the requests to wait on."""
        recv = torch.empty_like(send)
        ops = [
            dist.P2POp(dist.isend, send, self.next, self.group),
            dist.P2POp(dist.irecv, recv, self.prev, self.group),
        ]
        return recv, dist.batch_isend_irecv(ops)


def _wait(reqs: list) -> None:
    for req in reqs:
        req.wait()


@dataclass
class _Layout:
    """Local packed layout: documents, their halves, and the row indices of each half."""

    cu: torch.Tensor
    """int32 local ``cu_seqlens`` (each local document holds two chunks)."""
    cu_half: torch.Tensor
    """int32 ``cu_seqlens`` of one chunk per document."""
    first: torch.Tensor
    """Row indices of every document's first chunk (global chunk ``r``)."""
    second: torch.Tensor
    """Row indices of every document's second chunk (global chunk ``2W-1-r``)."""
    max_len: int
    """Longest local document."""
    max_half: int
    """Longest chunk."""

    @classmethod
    def build(cls, cu_local: torch.Tensor) -> _Layout:
        bounds = cu_local.tolist()
        firsts, seconds = [], []
        for start, end in zip(bounds[:-1], bounds[1:]):
            half = (end - start) // 2
            firsts.append(torch.arange(start, start + half))
            seconds.append(torch.arange(start + half, end))
        lens = [e - s for s, e in zip(bounds[:-1], bounds[1:])] or [0]
        dev = cu_local.device

        def cat(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(parts).to(dev) if parts else torch.empty(0, dtype=torch.long, device=dev)

        return cls(
            cu=cu_local.to(torch.int32),
            cu_half=(cu_local // 2).to(torch.int32),
            first=cat(firsts),
            second=cat(seconds),
            max_len=max(lens),
            max_half=max(lens) // 2,
        )


def _merge(out: torch.Tensor, lse: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> None:
    """In place: fold a block result (``out_b [T, h, d]``, ``lse_b [h, T]``) into fp32 ``out``/``lse``.

    Rows whose block saw no key (``lse_b = -inf``) are left unchanged, also when ``lse`` is ``-inf`` too.
    """
    lse_b = lse_b.float()
    no_key = torch.isneginf(lse_b)
    w = torch.where(no_key, 0.0, torch.sigmoid(lse_b - lse)).transpose(0, 1).unsqueeze(-1)  # [T, h, 1]
    out.sub_(w * (out - out_b.float()))
    lse.copy_(torch.where(no_key, lse, torch.logaddexp(lse, lse_b)))


def _merger(be: _fa.BlockBackend):
    """The merge for ``be``: one fused Triton kernel per step with the Triton blocks, torch ops otherwise."""
    if be.name == "triton":
        from megatron_agentic.kernels.ring_merge import ring_merge_

        return ring_merge_

    def torch_merge(out, lse, out_b, lse_b, rows=None):
        if rows is None:
            _merge(out, lse, out_b, lse_b)
            return
        o_sub, l_sub = out[rows], lse[:, rows]
        _merge(o_sub, l_sub, out_b, lse_b)
        out[rows] = o_sub
        lse[:, rows] = l_sub

    return torch_merge


def _step_kind(step: int, rank: int, causal: bool) -> str:
    """Which block a rank computes at ``step``: ``diag`` (causal), ``full``, ``kv_first_half`` or ``q_second_half``."""
    if not causal:
        return "full"
    if step == 0:
        return "diag"
    return "kv_first_half" if step <= rank else "q_second_half"


def _ring_forward(q, k, v, ring: _Ring, lay: _Layout, causal: bool, scale: float, be: _fa.BlockBackend):
    kv = torch.stack([k, v])
    out = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), device=q.device, dtype=torch.float32)
    merge = _merger(be)
    for step in range(ring.world_size):
        reqs: list = []
        if step + 1 < ring.world_size:
            kv_next, reqs = ring.exchange(kv)
        kind = _step_kind(step, ring.rank, causal)
        k_cur, v_cur = kv[0], kv[1]
        if kind in ("diag", "full"):
            o_b, l_b = be.forward(q, k_cur, v_cur, lay.cu, lay.cu, lay.max_len, kind == "diag", scale, torch.float32)
            if step == 0:
                out.copy_(o_b)
                lse.copy_(l_b)
            else:
                merge(out, lse, o_b, l_b)
        elif kind == "kv_first_half":
            o_b, l_b = be.forward(
                q, k_cur[lay.first], v_cur[lay.first], lay.cu, lay.cu_half, lay.max_len, False, scale, torch.float32
            )
            merge(out, lse, o_b, l_b)
        else:
            rows = lay.second
            o_b, l_b = be.forward(q[rows], k_cur, v_cur, lay.cu_half, lay.cu, lay.max_half, False, scale, torch.float32)
            merge(out, lse, o_b, l_b, rows)
        if reqs:
            _wait(reqs)
            kv = kv_next
    return out, lse


def _ring_backward(
    dout, q, k, v, out, lse, ring: _Ring, lay: _Layout, causal: bool, scale: float, be: _fa.BlockBackend
):
    delta = _fa.attention_delta(out, dout)
    dout = dout.to(q.dtype)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    # the Triton kernels add dQ into the running buffer themselves when a block covers every local query
    in_place = {"dq_accum": dq} if be.name == "triton" else {}
    kv = torch.stack([k, v])
    dkv = None
    dkv_reqs: list = []
    dkv_recv = None
    for step in range(ring.world_size):
        kv_reqs: list = []
        if step + 1 < ring.world_size:
            kv_next, kv_reqs = ring.exchange(kv)
        kind = _step_kind(step, ring.rank, causal)
        k_cur, v_cur = kv[0], kv[1]
        kv_rows = None  # rows of the visiting K/V this block touched (None: all of them)
        if kind in ("diag", "full"):
            dq_b, dk_b, dv_b = be.backward(
                dout, q, k_cur, v_cur, lse, delta, lay.cu, lay.cu, lay.max_len, lay.max_len, kind == "diag", scale,
                **in_place,
            )  # fmt: skip
            if not in_place:
                dq.add_(dq_b)
        elif kind == "kv_first_half":
            kv_rows = lay.first
            dq_b, dk_b, dv_b = be.backward(
                dout, q, k_cur[kv_rows], v_cur[kv_rows], lse, delta,
                lay.cu, lay.cu_half, lay.max_len, lay.max_half, False, scale, **in_place,
            )  # fmt: skip
            if not in_place:
                dq.add_(dq_b)
        else:
            rows = lay.second
            dq_b, dk_b, dv_b = be.backward(
                dout[rows], q[rows], k_cur, v_cur, lse[:, rows].contiguous(), delta[:, rows].contiguous(),
                lay.cu_half, lay.cu, lay.max_half, lay.max_len, False, scale,
            )  # fmt: skip
            dq.index_add_(0, rows, dq_b)
        if step == 0:
            dkv = torch.stack([dk_b, dv_b])  # step 0 always covers every local K/V row
        else:
            _wait(dkv_reqs)  # the travelling fp32 dK/dV of the K/V held now
            dkv = dkv_recv
            if kv_rows is None:
                dkv[0].add_(dk_b)
                dkv[1].add_(dv_b)
            else:
                dkv[0].index_add_(0, kv_rows, dk_b)
                dkv[1].index_add_(0, kv_rows, dv_b)
        if ring.world_size > 1:
            # dK/dV of the K/V held now go to the next rank, which holds those K/V at the next step; after the
            # last step this delivers every rank's own gradient.
            dkv_recv, dkv_reqs = ring.exchange(dkv)
        if kv_reqs:
            _wait(kv_reqs)
            kv = kv_next
    if ring.world_size > 1:
        _wait(dkv_reqs)
        dkv = dkv_recv
    return dq, dkv[0], dkv[1]


class RingAttnFunc(torch.autograd.Function):
    """Autograd wrapper of the zigzag ring on packed local tensors ``[T_local, heads, dim]``."""

    @staticmethod
    def forward(ctx, q, k, v, group, cu_local, causal, softmax_scale, backend_name):
        ring = _Ring(group)
        lay = _Layout.build(cu_local)
        be = _fa.get_block_backend(backend_name, q.device)
        out, lse = _ring_forward(q, k, v, ring, lay, causal, softmax_scale, be)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring, ctx.lay, ctx.be, ctx.causal, ctx.scale = ring, lay, be, causal, softmax_scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _ring_backward(dout, q, k, v, out, lse, ctx.ring, ctx.lay, ctx.causal, ctx.scale, ctx.be)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None


def ring_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: dist.ProcessGroup | None,
    causal: bool = True,
    softmax_scale: float | None = None,
    *,
    cu_seqlens: torch.Tensor | None = None,
    backend: str | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Context-parallel attention of the local zigzag shard.

    Args:
        q: local shard ``[batch, seq_local, heads, dim]`` (``zigzag_split`` of the full sequence along dim 1), or
            packed ``[tokens_local, heads, dim]`` when ``cu_seqlens`` is given.
        k: ``[batch, seq_local, kv_heads, dim]`` (or packed); ``heads % kv_heads == 0``; not repeated for GQA.
        v: same shape as ``k``.
        group: context-parallel process group (``None``: the default group).
        causal: causal mask over global positions.
        softmax_scale: defaults to ``dim ** -0.5``.
        cu_seqlens: int32 document boundaries of the *full* (unsharded) packed sequence; every document length
            divisible by ``2 * world_size``, each document zigzag-sharded on its own
            (``zigzag_split(x, 0, rank, W, cu_seqlens)``), as megatron-core's THD context parallelism does.
        backend: block compute, ``triton``/``torch``/``None`` (Triton on CUDA, torch on CPU).
        return_lse: also return the fp32 natural-log LSE (``[batch, heads, seq_local]``; packed ``[heads, T]``).

    Returns:
        The local shard of the attention output, shaped like ``q``.
    """
    group = group if group is not None else dist.group.WORLD
    world_size = dist.get_world_size(group)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if k.shape != v.shape or q.shape[-1] != k.shape[-1] or q.shape[-2] % k.shape[-2]:
        raise ValueError(f"incompatible q/k/v shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if cu_seqlens is not None:
        if q.dim() != 3:
            raise ValueError(f"with cu_seqlens q must be packed [tokens, heads, dim], got {tuple(q.shape)}")
        cu_global = cu_seqlens.to(torch.int64)
        lengths = cu_global[1:] - cu_global[:-1]
        if bool((lengths % (2 * world_size)).any()):
            raise ValueError(f"every document length must be divisible by 2 * world_size = {2 * world_size}")
        cu_local = (cu_global // world_size).to(q.device)
        if int(cu_local[-1]) != q.shape[0]:
            raise ValueError(f"local shard has {q.shape[0]} tokens, cu_seqlens/world_size implies {int(cu_local[-1])}")
        out, lse = RingAttnFunc.apply(q, k, v, group, cu_local, causal, scale, backend)
        return (out, lse) if return_lse else out
    if q.dim() != 4:
        raise ValueError(f"q/k/v must be [batch, seq_local, heads, dim], got {tuple(q.shape)}")
    b, s, h, d = q.shape
    if s % 2 or k.shape[1] != s:
        raise ValueError(f"local zigzag shard needs an even length equal for q and k, got {s} and {k.shape[1]}")
    cu_local = _fa.uniform_cu_seqlens(b, s, q.device)
    out, lse = RingAttnFunc.apply(
        q.reshape(b * s, h, d), k.reshape(b * s, k.shape[2], d), v.reshape(b * s, v.shape[2], d),
        group, cu_local, causal, scale, backend,
    )  # fmt: skip
    out = out.view(b, s, h, d)
    if return_lse:
        return out, lse.view(h, b, s).transpose(0, 1).contiguous()
    return out
