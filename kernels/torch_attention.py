"""Torch block attention with the same packed interface as the Triton launchers in :mod:`megatron_agentic.kernels.flash_attention`.

This is the CPU block backend of the ring attention (training on CPU through the Triton interpreter would be far
too slow) and the fallback of :class:`megatron_agentic.kernels.megatron_attention.TritonAttention` on CPU. It computes one segment
batch at a time in fp32, materialising the ``[kv_heads, group, seq_q, seq_k]`` scores of that batch, so it is meant
for short CPU sequences, not for 128K. The backward uses the explicit FlashAttention formulas from the saved LSE
(``P = exp(S - LSE)``, ``dS = P * (dP - delta)``) so that the ring can drive it with the merged LSE, exactly as it
drives the Triton kernels. GQA is handled by reshaping query heads into ``[kv_heads, group]``; K/V are not repeated.
"""

from __future__ import annotations

import torch

from megatron_agentic.kernels.attention_config import check_head_dim


def _segments(cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor) -> list[tuple[int, int, int, int, int]]:
    """Group consecutive segments of equal lengths: ``(q_start, k_start, count, len_q, len_k)`` per run."""
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    runs: list[tuple[int, int, int, int, int]] = []
    for i in range(len(cq) - 1):
        lq, lk = cq[i + 1] - cq[i], ck[i + 1] - ck[i]
        if runs:
            qs, ks, n, rq, rk = runs[-1]
            if (rq, rk) == (lq, lk) and qs + n * rq == cq[i] and ks + n * rk == ck[i]:
                runs[-1] = (qs, ks, n + 1, rq, rk)
                continue
        runs.append((cq[i], ck[i], 1, lq, lk))
    return runs


def _mask(len_q: int, len_k: int, causal: bool, device: torch.device) -> torch.Tensor | None:
    if not causal:
        return None
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    return j <= i + (len_k - len_q)  # bottom-right aligned, like the Triton kernel


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    """``q [n, sq, hk, g, d]``, ``k [n, sk, hk, d]`` -> fp32 scores ``[n, hk, g, sq, sk]``."""
    s = torch.einsum("nqhgd,nkhd->nhgqk", q.float(), k.float()) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s


def torch_block_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    causal: bool,
    softmax_scale: float,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed forward; same contract as :func:`megatron_agentic.kernels.flash_attention.flash_attn_block_forward`."""
    del max_seqlen_q
    check_head_dim(q.shape[-1])  # the GPU kernels' policy, so that CPU training refuses what a GPU would
    total_q, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    out = torch.zeros(total_q, heads, dim, device=q.device, dtype=out_dtype or q.dtype)
    lse = torch.full((heads, total_q), float("-inf"), device=q.device, dtype=torch.float32)
    for q0, k0, n, lq, lk in _segments(cu_seqlens_q, cu_seqlens_k):
        if lq == 0:
            continue
        qs = q[q0 : q0 + n * lq].view(n, lq, kv_heads, group, dim)
        if lk == 0:
            continue
        ks = k[k0 : k0 + n * lk].view(n, lk, kv_heads, dim)
        vs = v[k0 : k0 + n * lk].view(n, lk, kv_heads, dim)
        s = _scores(qs, ks, softmax_scale, _mask(lq, lk, causal, q.device))
        seg_lse = torch.logsumexp(s, dim=-1)  # [n, hk, g, sq]
        p = torch.exp(s - torch.where(torch.isinf(seg_lse), 0.0, seg_lse)[..., None])
        o = torch.einsum("nhgqk,nkhd->nqhgd", p, vs.float())
        out[q0 : q0 + n * lq] = o.reshape(n * lq, heads, dim).to(out.dtype)
        lse[:, q0 : q0 + n * lq] = seg_lse.permute(1, 2, 0, 3).reshape(heads, n * lq)
    return out, lse


def torch_block_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool,
    softmax_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed backward; same contract as :func:`megatron_agentic.kernels.flash_attention.flash_attn_block_backward`."""
    del max_seqlen_q, max_seqlen_k
    check_head_dim(q.shape[-1])
    total_q, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dk = torch.zeros(k.shape, device=q.device, dtype=torch.float32)
    dv = torch.zeros(v.shape, device=q.device, dtype=torch.float32)
    for q0, k0, n, lq, lk in _segments(cu_seqlens_q, cu_seqlens_k):
        if lq == 0 or lk == 0:
            continue
        qs = q[q0 : q0 + n * lq].view(n, lq, kv_heads, group, dim).float()
        dos = dout[q0 : q0 + n * lq].view(n, lq, kv_heads, group, dim).float()
        ks = k[k0 : k0 + n * lk].view(n, lk, kv_heads, dim).float()
        vs = v[k0 : k0 + n * lk].view(n, lk, kv_heads, dim).float()
        seg_lse = lse[:, q0 : q0 + n * lq].reshape(kv_heads, group, n, lq).permute(2, 0, 1, 3)
        seg_delta = delta[:, q0 : q0 + n * lq].reshape(kv_heads, group, n, lq).permute(2, 0, 1, 3)
        s = _scores(qs, ks, softmax_scale, _mask(lq, lk, causal, q.device))
        p = torch.exp(s - torch.where(torch.isinf(seg_lse), 0.0, seg_lse)[..., None])  # masked entries -> 0
        dv[k0 : k0 + n * lk] = torch.einsum("nhgqk,nqhgd->nkhd", p, dos).reshape(n * lk, kv_heads, dim)
        dp = torch.einsum("nqhgd,nkhd->nhgqk", dos, vs)
        ds = p * (dp - seg_delta[..., None])
        dq[q0 : q0 + n * lq] = (torch.einsum("nhgqk,nkhd->nqhgd", ds, ks) * softmax_scale).reshape(n * lq, heads, dim)
        dk[k0 : k0 + n * lk] = (torch.einsum("nhgqk,nqhgd->nkhd", ds, qs) * softmax_scale).reshape(
            n * lk, kv_heads, dim
        )
    return dq, dk, dv
