"""Triton flash attention: forward and backward, causal or not, GQA, natural-log LSE, packed documents.

Layout. Every launcher works on *packed* tensors: ``q [total_q, heads, dim]``, ``k/v [total_k, kv_heads, dim]``
with ``cu_seqlens_q``/``cu_seqlens_k`` (int32 prefix sums, one segment per document) as in flash-attn's varlen
API. A batched ``[batch, seq, heads, dim]`` input is the special case of ``batch`` equal-length segments. Tokens
never attend across segments. With ``causal=True`` and ``seqlen_q != seqlen_k`` the mask is aligned to the
bottom-right corner (query ``i`` sees key ``j`` iff ``j <= i + seqlen_k - seqlen_q``), flash-attn's convention.

GQA. Query head ``h`` reads kv head ``h // (heads // kv_heads)`` by index arithmetic; K/V are never repeated.
The dK/dV kernel runs one program per (kv block, kv head) and loops over the query heads of its group, so the
group's gradients accumulate in registers without atomics.

Numerics. Softmax runs in base 2 (``exp2`` with ``scale * log2(e)`` folded into the scores); the stored LSE is
converted back to natural log, fp32, shape ``[heads, total_q]``. Accumulation is fp32; P is cast to the input
dtype before the P@V / dS@K products as in FlashAttention-2. Gradients are written in fp32 (the ring passes them
around in fp32); :class:`FlashAttnFunc` casts them back to the input dtype.

On a machine without a GPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1`` set before this
module is imported), in fp32; that is how the tests check these kernels on CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from megatron_agentic.kernels import torch_attention as _ta

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    seqlen_k,
    diag,
    lo,
    hi,
    qk_scale,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None].to(tl.int64) * stride_kt + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vt + offs_d[None, :]
        if MASKED:
            n_ok = offs_n < seqlen_k
            k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        if MASKED:
            keep = n_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + diag)
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    Out,
    LSE,
    CU_Q,
    CU_K,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    stride_lh,
    num_heads,
    qk_scale,
    tune_seqlen,  # autotune cache key only (power-of-two bucket of the longest segment)
    GROUP: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    # (segment x head) on grid axis 0 (2^31 - 1 programs), query tiles on axis 1 (65,535: 1M+ tokens at BM >= 16);
    # longest causal rows first for a shorter tail
    start_m = tl.num_programs(1) - 1 - tl.program_id(1)
    off_zh = tl.program_id(0)
    z = off_zh // num_heads
    h = off_zh % num_heads
    q_start = tl.load(CU_Q + z)
    seqlen_q = tl.load(CU_Q + z + 1) - q_start
    k_start = tl.load(CU_K + z)
    seqlen_k = tl.load(CU_K + z + 1) - k_start
    if start_m * BLOCK_M >= seqlen_q:
        return
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_ok = offs_m < seqlen_q
    q_ptrs = Q + (q_start + offs_m)[:, None].to(tl.int64) * stride_qt + h * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)
    k_base = K + k_start.to(tl.int64) * stride_kt + hk * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + hk * stride_vh
    diag = seqlen_k - seqlen_q
    if CAUSAL:
        hi = tl.maximum(tl.minimum(seqlen_k, (start_m + 1) * BLOCK_M + diag), 0)
        full_end = tl.maximum(tl.minimum(start_m * BLOCK_M + diag + 1, seqlen_k), 0)
    else:
        hi = seqlen_k
        full_end = seqlen_k
    full_end = (full_end // BLOCK_N) * BLOCK_N
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, seqlen_k, diag, 0, full_end, qk_scale,
        False, CAUSAL, BLOCK_N, HEAD_DIM, PREC,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, seqlen_k, diag, full_end, hi, qk_scale,
        True, CAUSAL, BLOCK_N, HEAD_DIM, PREC,
    )  # fmt: skip
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    o_ptrs = Out + (q_start + offs_m)[:, None].to(tl.int64) * stride_ot + h * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_ok[:, None])
    tl.store(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, lse, mask=m_ok)


@triton.jit
def _bwd_dkdv_inner(
    dk,
    dv,
    k,
    v,
    q_base,
    do_base,
    lse_base,
    delta_base,
    dq_base,
    stride_qt,
    stride_dot,
    stride_dqt,
    offs_n,
    n_ok,
    seqlen_q,
    diag,
    lo,
    hi,
    sm_scale,
    qk_scale,
    MASKED: tl.constexpr,
    FUSED_DQ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < seqlen_q
        q = tl.load(q_base + offs_m[:, None].to(tl.int64) * stride_qt + offs_d[None, :], mask=m_ok[:, None], other=0.0)
        do = tl.load(
            do_base + offs_m[:, None].to(tl.int64) * stride_dot + offs_d[None, :], mask=m_ok[:, None], other=0.0
        )
        lse2 = tl.load(lse_base + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
        lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)  # a row that saw no key: P = 0 everywhere
        delta = tl.load(delta_base + offs_m, mask=m_ok, other=0.0)
        qk_t = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale  # [BLOCK_N, BLOCK_M]
        # padding keys of a partial key tile (k = v = 0) must get P = 0: with a very negative LSE their
        # exp2(-lse2) overflows, dS becomes +-inf and dQ += dS^T K computes inf x 0 = NaN
        if MASKED:
            keep = n_ok[:, None] & m_ok[None, :] & (offs_m[None, :] + diag >= offs_n[:, None])
            p_t = tl.math.exp2(tl.where(keep, qk_t - lse2[None, :], float("-inf")))
        else:
            p_t = tl.math.exp2(tl.where(n_ok[:, None], qk_t - lse2[None, :], float("-inf")))
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
        dk = tl.dot(ds_t, q, dk, input_precision=PREC)
        if FUSED_DQ:
            # the 5th matmul: this tile pair's dQ, accumulated in fp32 in global memory (FlashAttention-2/3 style)
            dq = tl.dot(tl.trans(ds_t), k, input_precision=PREC) * sm_scale
            dq_ptrs = dq_base + offs_m[:, None].to(tl.int64) * stride_dqt + offs_d[None, :]
            tl.atomic_add(dq_ptrs, dq, mask=m_ok[:, None], sem="relaxed")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    DQ,
    CU_Q,
    CU_K,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    stride_dqt,
    stride_dqh,
    stride_lh,
    num_head_progs,
    sm_scale,
    qk_scale,
    tune_seqlen,  # autotune cache key only (power-of-two bucket of the longest segment)
    GROUP: tl.constexpr,
    HEADS: tl.constexpr,
    FUSED_DQ: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    # One program per (segment x head program, key tile). A head program covers HEADS query heads of one kv head:
    # HEADS == GROUP sums the group's dK/dV in registers (deterministic); HEADS == 1 runs the group's query heads in
    # parallel and reduces dK/dV in fp32 with atomics. FUSED_DQ adds dQ with fp32 atomics (5 matmuls per tile pair).
    off_zh = tl.program_id(0)
    start_n = tl.program_id(1)
    z = off_zh // num_head_progs
    h_first = (off_zh % num_head_progs) * HEADS
    hk = h_first // GROUP
    q_start = tl.load(CU_Q + z)
    seqlen_q = tl.load(CU_Q + z + 1) - q_start
    k_start = tl.load(CU_K + z)
    seqlen_k = tl.load(CU_K + z + 1) - k_start
    if start_n * BLOCK_N >= seqlen_k:
        return
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    n_ok = offs_n < seqlen_k
    k_rows = (k_start + offs_n)[:, None].to(tl.int64)
    k = tl.load(K + k_rows * stride_kt + hk * stride_kh + offs_d[None, :], mask=n_ok[:, None], other=0.0)
    v = tl.load(V + k_rows * stride_vt + hk * stride_vh + offs_d[None, :], mask=n_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    diag = seqlen_k - seqlen_q
    if CAUSAL:
        # first query row that sees any key of this block, and first one that sees all of them
        lo = tl.minimum(tl.maximum(start_n * BLOCK_N - diag, 0), seqlen_q)
        lo = (lo // BLOCK_M) * BLOCK_M
        full = tl.minimum(tl.maximum(start_n * BLOCK_N + BLOCK_N - 1 - diag, 0), seqlen_q)
        full = tl.cdiv(full, BLOCK_M) * BLOCK_M
    else:
        lo = 0
        full = 0
    for g in range(HEADS):
        h = h_first + g
        q_base = Q + q_start.to(tl.int64) * stride_qt + h * stride_qh
        do_base = DO + q_start.to(tl.int64) * stride_dot + h * stride_doh
        dq_base = DQ + q_start.to(tl.int64) * stride_dqt + h * stride_dqh
        lse_base = LSE + h.to(tl.int64) * stride_lh + q_start
        delta_base = DELTA + h.to(tl.int64) * stride_lh + q_start
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_base, stride_qt, stride_dot, stride_dqt, offs_n,
            n_ok, seqlen_q, diag, lo, full, sm_scale, qk_scale, True, FUSED_DQ, BLOCK_M, HEAD_DIM, PREC,
        )  # fmt: skip
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, dq_base, stride_qt, stride_dot, stride_dqt, offs_n,
            n_ok, seqlen_q, diag, full, seqlen_q, sm_scale, qk_scale, False, FUSED_DQ, BLOCK_M, HEAD_DIM, PREC,
        )  # fmt: skip
    dk = dk * sm_scale
    dk_ptrs = DK + (k_start + offs_n)[:, None].to(tl.int64) * stride_dkt + hk * stride_dkh + offs_d[None, :]
    dv_ptrs = DV + (k_start + offs_n)[:, None].to(tl.int64) * stride_dvt + hk * stride_dvh + offs_d[None, :]
    if HEADS < GROUP:  # several programs share this kv head: fp32 reduction in global memory
        tl.atomic_add(dk_ptrs, dk, mask=n_ok[:, None], sem="relaxed")
        tl.atomic_add(dv_ptrs, dv, mask=n_ok[:, None], sem="relaxed")
    else:
        tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=n_ok[:, None])
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=n_ok[:, None])


@triton.jit
def _bwd_dq_inner(
    dq,
    q,
    do,
    lse2,
    delta,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    seqlen_k,
    diag,
    lo,
    hi,
    qk_scale,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None].to(tl.int64) * stride_kt + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vt + offs_d[None, :]
        if MASKED:
            n_ok = offs_n < seqlen_k
            k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        if MASKED:
            keep = n_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + diag)
            p = tl.math.exp2(tl.where(keep, qk - lse2[:, None], float("-inf")))
        else:
            p = tl.math.exp2(qk - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PREC)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    CU_Q,
    CU_K,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    stride_lh,
    num_heads,
    sm_scale,
    qk_scale,
    tune_seqlen,  # autotune cache key only (power-of-two bucket of the longest segment)
    GROUP: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PREC: tl.constexpr,
):
    # (segment x head) on grid axis 0 (2^31 - 1 programs), query tiles on axis 1 (65,535: 1M+ tokens at BM >= 16);
    # longest causal rows first for a shorter tail
    start_m = tl.num_programs(1) - 1 - tl.program_id(1)
    off_zh = tl.program_id(0)
    z = off_zh // num_heads
    h = off_zh % num_heads
    q_start = tl.load(CU_Q + z)
    seqlen_q = tl.load(CU_Q + z + 1) - q_start
    k_start = tl.load(CU_K + z)
    seqlen_k = tl.load(CU_K + z + 1) - k_start
    if start_m * BLOCK_M >= seqlen_q:
        return
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_ok = offs_m < seqlen_q
    rows = (q_start + offs_m)[:, None].to(tl.int64)
    q = tl.load(Q + rows * stride_qt + h * stride_qh + offs_d[None, :], mask=m_ok[:, None], other=0.0)
    do = tl.load(DO + rows * stride_dot + h * stride_doh + offs_d[None, :], mask=m_ok[:, None], other=0.0)
    lse2 = tl.load(LSE + h.to(tl.int64) * stride_lh + q_start + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
    lse2 = tl.where(lse2 == float("-inf"), float("inf"), lse2)  # a row that saw no key: P = 0 everywhere
    delta = tl.load(DELTA + h.to(tl.int64) * stride_lh + q_start + offs_m, mask=m_ok, other=0.0)
    k_base = K + k_start.to(tl.int64) * stride_kt + hk * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + hk * stride_vh
    diag = seqlen_k - seqlen_q
    if CAUSAL:
        hi = tl.maximum(tl.minimum(seqlen_k, (start_m + 1) * BLOCK_M + diag), 0)
        full_end = tl.maximum(tl.minimum(start_m * BLOCK_M + diag + 1, seqlen_k), 0)
    else:
        hi = seqlen_k
        full_end = seqlen_k
    full_end = (full_end // BLOCK_N) * BLOCK_N
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt, offs_m, seqlen_k, diag, 0, full_end, qk_scale,
        False, CAUSAL, BLOCK_N, HEAD_DIM, PREC,
    )  # fmt: skip
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, stride_kt, stride_vt, offs_m, seqlen_k, diag, full_end, hi, qk_scale,
        True, CAUSAL, BLOCK_N, HEAD_DIM, PREC,
    )  # fmt: skip
    dq_ptrs = DQ + rows * stride_dqt + h * stride_dqh + offs_d[None, :]
    dq = dq * sm_scale + tl.load(dq_ptrs, mask=m_ok[:, None], other=0.0)  # accumulate: the ring passes its dQ
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=m_ok[:, None])


@triton.jit
def _attn_delta_kernel(
    Out,
    DO,
    DELTA,
    total,
    stride_ot,
    stride_oh,
    stride_dot,
    stride_doh,
    stride_lh,
    BLOCK_T: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    # delta[h, t] = sum_d O[t, h, d] * dO[t, h, d], read in the input dtype and accumulated in fp32
    h = tl.program_id(1)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    t_ok = offs_t < total
    rows = offs_t[:, None].to(tl.int64)
    o = tl.load(Out + rows * stride_ot + h * stride_oh + offs_d[None, :], mask=t_ok[:, None], other=0.0)
    do = tl.load(DO + rows * stride_dot + h * stride_doh + offs_d[None, :], mask=t_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + h.to(tl.int64) * stride_lh + offs_t, delta, mask=t_ok)


DELTA_BLOCK_T = 64


def aot_targets() -> list:
    """sm_90 compile targets of this module's kernels outside :data:`AOT_KERNELS` (the delta kernel).

    The four attention kernels of :data:`AOT_KERNELS` are compiled with their resource table by
    :mod:`megatron_agentic.kernels.aot`; this list is what the race check adds for the other kernels.
    """
    from megatron_agentic.kernels.aot import CompileTarget

    targets = []
    for dtype in ("bf16",):  # fp16/fp32 lower to the same layouts
        for head_dim in SUPPORTED_HEAD_DIMS:
            sig = {n: "i32" for n in _attn_delta_kernel.arg_names}
            sig.update(Out=f"*{dtype}", DO=f"*{dtype}", DELTA="*fp32", BLOCK_T="constexpr", HEAD_DIM="constexpr")
            targets.append(
                CompileTarget(
                    label=f"delta d={head_dim} {dtype}", module=__name__, function="_attn_delta_kernel",
                    signature=tuple(sig.items()),
                    constexprs=(("BLOCK_T", DELTA_BLOCK_T), ("HEAD_DIM", head_dim)),
                    aligned=("Out", "DO", "DELTA", "stride_ot", "stride_oh", "stride_dot", "stride_doh"),
                )
            )  # fmt: skip
    return targets


# kernel name -> (jit function, constexprs beyond the common ones given the GQA group), for ``megatron_agentic.kernels.aot``
AOT_KERNELS: dict[str, tuple[triton.JITFunction, Callable[[int], dict[str, object]]]] = {
    "fwd": (_attn_fwd_kernel, lambda group: {}),
    "bwd_dkdv": (_attn_bwd_dkdv_kernel, lambda group: {"HEADS": group, "FUSED_DQ": False}),
    "bwd_fused": (_attn_bwd_dkdv_kernel, lambda group: {"HEADS": 1, "FUSED_DQ": True}),
    "bwd_dq": (_attn_bwd_dq_kernel, lambda group: {}),
}


# ----------------------------------------------------------------------------------------------------------------
# Launch configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch parameters of one kernel (one config per head dim; no autotuning)."""

    block_m: int
    """Query rows per tile."""
    block_n: int
    """Key rows per tile."""
    num_warps: int
    """Warps per program."""
    num_stages: int
    """Software-pipelining stages of the K/V (or Q/dO) loads."""

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 16, got {value}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"KernelConfig.num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")
        if self.num_stages < 1:
            raise ValueError(f"KernelConfig.num_stages must be >= 1, got {self.num_stages}")


# GPU configurations per (kernel, head dim), every one compiled for sm_90 by ``python -m megatron_agentic.kernels.aot`` and chosen from
# that output: each dot on wgmma, no duplicated MMA (warps never cover more rows than a tile has), no spills, shared
# memory within 227 KiB. ``bwd_dkdv`` is the deterministic dK/dV kernel (a program sums its GQA group in registers;
# dQ then runs in ``bwd_dq``); ``bwd_fused`` is the default backward (one query head per program, dQ and the GQA
# dK/dV reduction with fp32 atomics). For the backward kernels BM is the query tile and BN the key tile.
GPU_CONFIGS: dict[tuple[str, int], KernelConfig] = {
    ("fwd", 16): KernelConfig(128, 64, 4, 3),
    ("fwd", 32): KernelConfig(128, 64, 4, 3),
    ("fwd", 64): KernelConfig(128, 64, 4, 3),
    ("fwd", 128): KernelConfig(128, 64, 8, 3),
    ("fwd", 256): KernelConfig(64, 32, 4, 1),
    ("bwd_dkdv", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 128): KernelConfig(64, 128, 8, 2),
    ("bwd_dkdv", 256): KernelConfig(64, 64, 4, 1),
    ("bwd_fused", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 128): KernelConfig(64, 128, 8, 2),
    ("bwd_fused", 256): KernelConfig(64, 64, 4, 1),
    ("bwd_dq", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 128): KernelConfig(128, 64, 8, 2),
    ("bwd_dq", 256): KernelConfig(64, 64, 4, 1),
}
# Interpreter configuration: small tiles so short test sequences still span several blocks.
INTERPRETER_CONFIG = KernelConfig(32, 32, 4, 1)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
_FORCE_GPU_CONFIGS = False
_FORCE_AUTOTUNE = False  # tests: drive the autotuned launch path under the interpreter


def check_head_dim(head_dim: int) -> None:
    """The one head-dim policy of these kernels, on every device and block backend (GPU, interpreter, torch).

    Raises ``ValueError`` for a head dim the GPU kernels cannot run, so that a model that would fail at its first
    GPU forward fails the same way on CPU, when its attention module is built.
    """
    if int(head_dim) not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"head dim {head_dim} is not supported by the Triton attention kernels (use one of "
            f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}; model.kv_channels sets it)"
        )


def _is_interpreter() -> bool:
    return triton.knobs.runtime.interpret


def gpu_config(kind: str, head_dim: int) -> KernelConfig:
    """The H100 tile configuration of kernel ``kind`` (``fwd``, ``bwd_dkdv``, ``bwd_fused``, ``bwd_dq``)."""
    try:
        return GPU_CONFIGS[(kind, head_dim)]
    except KeyError:
        raise ValueError(f"no GPU configuration for kernel {kind!r} at head dim {head_dim}") from None


def kernel_config(kind: str, head_dim: int, device: torch.device) -> KernelConfig:
    """The tile configuration for kernel ``kind`` at ``head_dim`` (GPU table on CUDA, small tiles otherwise)."""
    if device.type != "cuda" and not _FORCE_GPU_CONFIGS:
        return INTERPRETER_CONFIG
    return gpu_config(kind, head_dim)


@contextlib.contextmanager
def gpu_configs_on_cpu() -> Iterator[None]:
    """Run the interpreter with the GPU tile configurations (tests use it to check the H100 tiles' semantics)."""
    global _FORCE_GPU_CONFIGS
    previous, _FORCE_GPU_CONFIGS = _FORCE_GPU_CONFIGS, True
    try:
        yield
    finally:
        _FORCE_GPU_CONFIGS = previous


def deterministic_default() -> bool:
    """Deterministic backward (no atomics) when torch's deterministic algorithms are on."""
    return torch.are_deterministic_algorithms_enabled()


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs must not silently drop to TF32 on GPU; fp16/bf16 use the tensor cores either way.
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"packed q/k/v must be [tokens, heads, dim], got {tuple(q.shape)}, {tuple(k.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    check_head_dim(q.shape[-1])
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device.type != "cuda" and not _is_interpreter():
        raise RuntimeError(
            "Triton attention got CPU tensors but the Triton interpreter is off: set TRITON_INTERPRET=1 before "
            "importing megatron_agentic.kernels.flash_attention, or use the torch block backend (megatron_agentic.kernels.torch_attention)"
        )


MAX_GRID_X = 2**31 - 1  # CUDA's gridDim.x limit: segments x heads go there
MAX_GRID_Y = 65535  # CUDA's gridDim.y limit: tiles along the longest segment go there


def _grid(num_seqs: int, heads: int, max_seqlen: int, block: int) -> tuple[int, int]:
    """``(segments x heads, tiles of the longest segment)``, checked against CUDA's grid limits."""
    tiles = triton.cdiv(max(max_seqlen, 1), block)
    if tiles > MAX_GRID_Y:
        raise ValueError(
            f"a segment of {max_seqlen} tokens needs {tiles} tiles of {block}, over CUDA's grid limit {MAX_GRID_Y}; "
            "split the sequence (context parallelism) or use larger tiles"
        )
    if num_seqs * heads > MAX_GRID_X:
        raise ValueError(f"{num_seqs} segments x {heads} heads exceeds CUDA's grid limit {MAX_GRID_X}")
    return num_seqs * heads, tiles


def _bucket(max_seqlen: int) -> int:
    return triton.next_power_of_2(max(int(max_seqlen), 1))


def _launch(
    kind: str,
    device: torch.device,
    head_dim: int,
    num_seqs: int,
    head_progs: int,
    max_seqlen: int,
    tile: str,
    args: tuple,
    constexprs: dict[str, object],
) -> None:
    """Launch kernel ``kind``: autotuned on CUDA (cached per shape), else with its fixed configuration.

    ``tile`` names the config field that tiles the grid's sequence axis (``block_m`` or ``block_n``).
    """
    from megatron_agentic.kernels import autotune

    fn = AOT_KERNELS[kind][0]
    if autotune.enabled(device) or _FORCE_AUTOTUNE:
        meta_key = {"block_m": "BLOCK_M", "block_n": "BLOCK_N"}[tile]
        tuned = autotune.autotuned_kernel(kind, head_dim)
        tuned[lambda meta: _grid(num_seqs, head_progs, max_seqlen, meta[meta_key])](*args, **constexprs)
        if getattr(tuned, "best_config", None) is not None:
            key = (
                _bucket(max_seqlen),
                head_progs,
                constexprs.get("GROUP"),
                constexprs.get("CAUSAL"),
                str(args[0].dtype),
            )
            autotune.log_choice_once(kind, head_dim, autotune.config_of(tuned.best_config), "autotuned", key)
        return
    cfg = kernel_config(kind, head_dim, device)
    why = "deterministic algorithms: fixed" if torch.are_deterministic_algorithms_enabled() else "fixed"
    autotune.log_choice_once(kind, head_dim, cfg, why if device.type == "cuda" else "interpreter")
    grid = _grid(num_seqs, head_progs, max_seqlen, getattr(cfg, tile))
    fn[grid](
        *args, **constexprs, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )  # fmt: skip


def _contig(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def flash_attn_block_forward(
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
    """Packed forward: ``out [total_q, heads, dim]`` (``out_dtype``, default q's) and fp32 ``lse [heads, total_q]``.

    The LSE is natural-log. The ring asks for an fp32 ``out`` so block results merge without a bf16 round trip.
    """
    _check_inputs(q, k, v)
    q, k, v = _contig(q), _contig(k), _contig(v)
    total_q, heads, dim = q.shape
    num_seqs = cu_seqlens_q.numel() - 1
    out = torch.empty(q.shape, device=q.device, dtype=out_dtype or q.dtype)
    lse = torch.empty(heads, total_q, device=q.device, dtype=torch.float32)
    if total_q == 0 or num_seqs == 0:
        return out, lse
    _launch(
        "fwd", q.device, dim, num_seqs, heads, max_seqlen_q, "block_m",
        (q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
         q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
         lse.stride(0), heads, softmax_scale * LOG2E, _bucket(max_seqlen_q)),
        dict(GROUP=heads // k.shape[1], CAUSAL=causal, HEAD_DIM=dim, PREC=_precision(q.dtype)),
    )  # fmt: skip
    return out, lse


DELTA_TORCH_CHUNK = 1024  # tokens per fp32 chunk on the torch path


def attention_delta(out: torch.Tensor, dout: torch.Tensor) -> torch.Tensor:
    """``rowsum(dO * O)`` in fp32 as ``[heads, total]`` (the D term of the FlashAttention-2 backward).

    No fp32 copy of ``out``/``dout`` is made: on CUDA (and under the interpreter for CPU tensors when asked through
    :func:`attention_delta_triton`) one Triton kernel reads both in their dtype and accumulates in fp32; on the torch
    path the product is formed in fp32 chunks of :data:`DELTA_TORCH_CHUNK` tokens.
    """
    if out.shape != dout.shape or out.dim() != 3:
        raise ValueError(
            f"out and dout must be [tokens, heads, dim] of one shape, got {tuple(out.shape)}, {tuple(dout.shape)}"
        )
    if out.is_cuda and out.shape[-1] in SUPPORTED_HEAD_DIMS:
        return attention_delta_triton(out, dout)
    total, heads, _ = out.shape
    delta = torch.empty(heads, total, device=out.device, dtype=torch.float32)
    for start in range(0, total, DELTA_TORCH_CHUNK):
        end = min(total, start + DELTA_TORCH_CHUNK)
        chunk = (out[start:end].float() * dout[start:end].float()).sum(-1)
        delta[:, start:end] = chunk.transpose(0, 1)
    return delta


def attention_delta_triton(out: torch.Tensor, dout: torch.Tensor) -> torch.Tensor:
    """:func:`attention_delta` with the Triton kernel (CUDA, or CPU tensors under the interpreter)."""
    out, dout = _contig(out), _contig(dout.to(out.dtype))
    total, heads, dim = out.shape
    delta = torch.empty(heads, total, device=out.device, dtype=torch.float32)
    if total:
        _attn_delta_kernel[(triton.cdiv(total, DELTA_BLOCK_T), heads)](
            out, dout, delta, total, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), delta.stride(0),
            BLOCK_T=DELTA_BLOCK_T, HEAD_DIM=dim,
        )  # fmt: skip
    return delta


def flash_attn_block_backward(
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
    deterministic: bool | None = None,
    dq_accum: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed backward given the (possibly ring-merged) ``lse`` and ``delta``; returns fp32 ``dq, dk, dv``.

    ``deterministic`` (default: :func:`deterministic_default`) selects the atomics-free backward: dK/dV summed over
    the GQA group in registers, dQ in its own kernel (7 matmuls per tile pair). Otherwise one kernel does 5 matmuls
    per tile pair, with a program per query head, and accumulates dQ and the group's dK/dV with fp32 atomics.
    ``dq_accum`` (fp32, q's shape, contiguous) makes the kernels add dQ into that buffer in place (the ring's running
    dQ) and return it as ``dq``.
    """
    _check_inputs(q, k, v)
    q, k, v, dout = _contig(q), _contig(k), _contig(v), _contig(dout.to(q.dtype))
    lse, delta = lse.contiguous(), delta.contiguous()
    total_q, heads, dim = q.shape
    kv_heads = k.shape[1]
    num_seqs = cu_seqlens_q.numel() - 1
    if dq_accum is not None:
        if dq_accum.shape != q.shape or dq_accum.dtype != torch.float32 or not dq_accum.is_contiguous():
            raise ValueError(f"dq_accum must be a contiguous fp32 tensor of shape {tuple(q.shape)}")
        dq = dq_accum
    else:
        dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dk = torch.zeros(k.shape, device=q.device, dtype=torch.float32)
    dv = torch.zeros(v.shape, device=q.device, dtype=torch.float32)
    if total_q == 0 or k.shape[0] == 0 or num_seqs == 0:
        return dq, dk, dv
    group = heads // kv_heads
    prec = _precision(q.dtype)
    if deterministic is None:
        deterministic = deterministic_default()
    kind = "bwd_dkdv" if deterministic else "bwd_fused"
    heads_per_prog = group if deterministic else 1
    _launch(
        kind, q.device, dim, num_seqs, heads // heads_per_prog, max_seqlen_k, "block_n",
        (q, k, v, dout, lse, delta, dk, dv, dq, cu_seqlens_q, cu_seqlens_k,
         q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
         dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1), dq.stride(0), dq.stride(1), lse.stride(0),
         heads // heads_per_prog, softmax_scale, softmax_scale * LOG2E, _bucket(max_seqlen_k)),
        dict(GROUP=group, HEADS=heads_per_prog, FUSED_DQ=not deterministic, CAUSAL=causal, HEAD_DIM=dim, PREC=prec),
    )  # fmt: skip
    if not deterministic:
        return dq, dk, dv
    _launch(
        "bwd_dq", q.device, dim, num_seqs, heads, max_seqlen_q, "block_m",
        (q, k, v, dout, lse, delta, dq, cu_seqlens_q, cu_seqlens_k,
         q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
         dq.stride(0), dq.stride(1), lse.stride(0), heads, softmax_scale, softmax_scale * LOG2E,
         _bucket(max_seqlen_q)),
        dict(GROUP=group, CAUSAL=causal, HEAD_DIM=dim, PREC=prec),
    )  # fmt: skip
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockBackend:
    """One implementation of packed block attention (forward returns out + natural-log LSE; backward fp32 grads)."""

    name: str
    """``triton`` or ``torch``."""
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    """``(q, k, v, cu_q, cu_k, max_q, causal, scale, out_dtype=None) -> (out, lse[heads, total_q])``."""
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    """``(dout, q, k, v, lse, delta, cu_q, cu_k, max_q, max_k, causal, scale) -> fp32 (dq, dk, dv)``."""


def get_block_backend(name: str | None, device: torch.device) -> BlockBackend:
    """Resolve ``name``: ``triton``, ``torch``, or ``None``/``auto`` (Triton on CUDA, torch elsewhere)."""
    if name in (None, "auto"):
        name = "triton" if device.type == "cuda" else "torch"
    if name == "triton":
        return BlockBackend("triton", flash_attn_block_forward, flash_attn_block_backward)
    if name == "torch":
        return BlockBackend("torch", _ta.torch_block_forward, _ta.torch_block_backward)
    raise ValueError(f"unknown attention block backend {name!r} (choose triton, torch or auto)")


class FlashAttnFunc(torch.autograd.Function):
    """Packed attention through a :class:`BlockBackend` (Triton by default); the LSE output is not differentiable."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, backend):
        out, lse = backend.forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, softmax_scale)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.args = (max_seqlen_q, max_seqlen_k, causal, softmax_scale, backend)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
        max_q, max_k, causal, scale, backend = ctx.args
        delta = attention_delta(out, dout)
        dq, dk, dv = backend.backward(dout, q, k, v, lse, delta, cu_q, cu_k, max_q, max_k, causal, scale)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None, None, None


def checked_max_seqlen(cu_seqlens: torch.Tensor, total_q: int, total_k: int, max_seqlen: int | None) -> int:
    """The longest document of ``cu_seqlens``, checked against the packed lengths and a caller's ``max_seqlen``.

    The kernels' grid is sized by ``max_seqlen`` and their outputs are not pre-filled, so a ``max_seqlen`` below
    the longest document would leave rows unwritten; it is refused here (one host read of ``cu_seqlens``).
    A larger ``max_seqlen`` is allowed (the extra tiles exit at once).
    """
    bounds = cu_seqlens.detach().to("cpu", torch.int64)
    if bounds.dim() != 1 or bounds.numel() < 1 or int(bounds[0]) != 0:
        raise ValueError(f"cu_seqlens must be a 1-D prefix sum starting at 0, got {bounds.tolist()[:8]}")
    lengths = bounds[1:] - bounds[:-1]
    if bool((lengths < 0).any()):
        bad = int(torch.nonzero(lengths < 0)[0])
        raise ValueError(
            f"cu_seqlens must be non-decreasing: cu_seqlens[{bad}]={int(bounds[bad])} > cu_seqlens[{bad + 1}]={int(bounds[bad + 1])}"
        )
    if int(bounds[-1]) != total_q or int(bounds[-1]) != total_k:
        raise ValueError(f"cu_seqlens[-1]={int(bounds[-1])} must equal the packed length {total_q}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_seqlen is None:
        return longest
    if int(max_seqlen) < longest:
        doc = int(lengths.argmax())
        raise ValueError(
            f"max_seqlen={int(max_seqlen)} is smaller than document {doc} of cu_seqlens ({longest} tokens, "
            f"{int(bounds[doc])}..{int(bounds[doc + 1])}); pass max_seqlen=None to compute it"
        )
    return int(max_seqlen)


def uniform_cu_seqlens(batch: int, seqlen: int, device: torch.device) -> torch.Tensor:
    """``cu_seqlens`` (int32) of ``batch`` equal-length segments of ``seqlen`` tokens."""
    return torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=device)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    softmax_scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    return_lse: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Flash attention in flash-attn's conventions.

    Args:
        q: ``[batch, seq_q, heads, dim]``, or packed ``[total, heads, dim]`` when ``cu_seqlens`` is given.
        k: ``[batch, seq_k, kv_heads, dim]`` (or packed ``[total, kv_heads, dim]``); ``heads % kv_heads == 0``.
        v: same shape as ``k``.
        causal: causal mask (bottom-right aligned when ``seq_q != seq_k``).
        softmax_scale: defaults to ``dim ** -0.5``.
        cu_seqlens: int32 ``[num_docs + 1]`` document boundaries of the packed layout; no cross-document attention.
        max_seqlen: longest document (computed from ``cu_seqlens`` when omitted; refused when smaller than the
            longest document of ``cu_seqlens``).
        return_lse: also return the natural-log LSE, fp32, ``[batch, heads, seq_q]`` (packed: ``[heads, total]``).
        backend: block implementation: ``triton``, ``torch`` (materialises scores; the CPU path) or ``auto``
            (Triton on CUDA, torch elsewhere). Default: Triton on CUDA or under the Triton interpreter
            (``TRITON_INTERPRET=1``), torch on CPU otherwise.

    Returns:
        ``out`` shaped like ``q`` (and ``lse`` when ``return_lse``).
    """
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if backend is None:
        backend = "triton" if q.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1" else "torch"
    be = get_block_backend(backend, q.device)
    if cu_seqlens is not None:
        if q.dim() != 3:
            raise ValueError(f"with cu_seqlens q must be packed [total, heads, dim], got {tuple(q.shape)}")
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        max_seqlen = checked_max_seqlen(cu_seqlens, q.shape[0], k.shape[0], max_seqlen)
        out, lse = FlashAttnFunc.apply(q, k, v, cu, cu, max_seqlen, max_seqlen, causal, scale, be)
        return (out, lse) if return_lse else out
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q/k/v must be [batch, seq, heads, dim], got {tuple(q.shape)} and {tuple(k.shape)}")
    b, sq, h, d = q.shape
    sk = k.shape[1]
    cu_q = uniform_cu_seqlens(b, sq, q.device)
    cu_k = uniform_cu_seqlens(b, sk, q.device)
    out, lse = FlashAttnFunc.apply(
        q.reshape(b * sq, h, d), k.reshape(b * sk, k.shape[2], d), v.reshape(b * sk, v.shape[2], d),
        cu_q, cu_k, sq, sk, causal, scale, be,
    )  # fmt: skip
    out = out.view(b, sq, h, d)
    if return_lse:
        return out, lse.view(h, b, sq).transpose(0, 1).contiguous()
    return out
