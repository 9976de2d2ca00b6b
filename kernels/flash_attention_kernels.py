"""Triton device code of the flash attention: forward, the two backward variants, the delta kernel, and the kernel
table the AOT check compiles.

Conventions (packed layout, GQA by index arithmetic, base-2 softmax with a natural-log LSE, fp32 accumulation) are
described in :mod:`megatron_agentic.kernels.flash_attention`, which launches these kernels. Under the Triton
interpreter (``TRITON_INTERPRET=1`` set before this module is imported) they run as Python on CPU tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import triton
import triton.language as tl

from megatron_agentic.kernels.attention_config import SUPPORTED_HEAD_DIMS
from megatron_agentic.kernels.compile_target import CompileTarget

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
