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

This module is the launcher and the autograd entry; the device code is in
:mod:`~megatron_agentic.kernels.flash_attention_kernels`, the tile table in
:mod:`~megatron_agentic.kernels.attention_config`, the Hopper autotuning in :mod:`~megatron_agentic.kernels.autotune`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton

from megatron_agentic.kernels import autotune
from megatron_agentic.kernels import torch_attention as _ta
from megatron_agentic.kernels.attention_config import GPU_CONFIGS as GPU_CONFIGS
from megatron_agentic.kernels.attention_config import INTERPRETER_CONFIG as INTERPRETER_CONFIG
from megatron_agentic.kernels.attention_config import (
    SUPPORTED_HEAD_DIMS,
    check_head_dim,
    is_interpreter,
    kernel_config,
    launch_grid,
    seqlen_bucket,
)
from megatron_agentic.kernels.attention_config import KernelConfig as KernelConfig
from megatron_agentic.kernels.attention_config import gpu_config as gpu_config
from megatron_agentic.kernels.attention_config import gpu_configs_on_cpu as gpu_configs_on_cpu
from megatron_agentic.kernels.flash_attention_kernels import AOT_KERNELS, DELTA_BLOCK_T, _attn_delta_kernel
from megatron_agentic.testing import faults

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------------------------
# Launch
# ----------------------------------------------------------------------------------------------------------------


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
    if q.device.type != "cuda" and not is_interpreter():
        raise RuntimeError(
            "Triton attention got CPU tensors but the Triton interpreter is off: set TRITON_INTERPRET=1 before "
            "importing megatron_agentic.kernels.flash_attention, or use the torch block backend (megatron_agentic.kernels.torch_attention)"
        )


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
    fn = AOT_KERNELS[kind][0]
    if autotune.enabled(device) or faults.active(faults.AUTOTUNE_ANYWHERE):
        meta_key = {"block_m": "BLOCK_M", "block_n": "BLOCK_N"}[tile]
        tuned = autotune.autotuned_kernel(kind, head_dim)
        tuned[lambda meta: launch_grid(num_seqs, head_progs, max_seqlen, meta[meta_key])](*args, **constexprs)
        if getattr(tuned, "best_config", None) is not None:
            key = (
                seqlen_bucket(max_seqlen),
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
    grid = launch_grid(num_seqs, head_progs, max_seqlen, getattr(cfg, tile))
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
         lse.stride(0), heads, softmax_scale * LOG2E, seqlen_bucket(max_seqlen_q)),
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
         heads // heads_per_prog, softmax_scale, softmax_scale * LOG2E, seqlen_bucket(max_seqlen_k)),
        dict(GROUP=group, HEADS=heads_per_prog, FUSED_DQ=not deterministic, CAUSAL=causal, HEAD_DIM=dim, PREC=prec),
    )  # fmt: skip
    if not deterministic:
        return dq, dk, dv
    _launch(
        "bwd_dq", q.device, dim, num_seqs, heads, max_seqlen_q, "block_m",
        (q, k, v, dout, lse, delta, dq, cu_seqlens_q, cu_seqlens_k,
         q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), dout.stride(0), dout.stride(1),
         dq.stride(0), dq.stride(1), lse.stride(0), heads, softmax_scale, softmax_scale * LOG2E,
         seqlen_bucket(max_seqlen_q)),
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
