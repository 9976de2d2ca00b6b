"""Fused ring merge: fold one block's ``(out_b, lse_b)`` into the running fp32 ``(out, lse)`` in one kernel.

The ring (:mod:`megatron_agentic.kernels.ring_attention`) merges every step's block result with the stable form
``out -= sigmoid(lse_b - lse) * (out - out_b)``, ``lse += softplus(lse_b - lse)``. Done with torch ops this is
~6 elementwise passes over ``out`` per step (plus a gather and a scatter when only the second half of the local
queries took part); here it is one read of ``out``/``out_b`` and one write of ``out``, in place, with the optional
row index applied inside the kernel. Rows whose block saw no key (``lse_b = -inf``) are left unchanged, also when
the running row has seen no key yet either (``lse = lse_b = -inf``).

In place is safe for ``out``: every thread writes exactly the elements it read (one pointer tensor, one layout that
gives each element to one warp). It is not for ``lse``: compiled for sm_90 the kernel reads ``lse`` in two layouts
spread over all warps (the ``[rows]`` slice that weights ``out`` and the 1-D row vector) and writes it from one
warp, so a barrier separates every warp's read of the old LSE from the write of the new one.
:mod:`megatron_agentic.kernels.race_check` verifies this on the compiled code (``python -m
megatron_agentic.kernels.aot``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megatron_agentic.kernels.attention_config import SUPPORTED_HEAD_DIMS
from megatron_agentic.kernels.compile_target import CompileTarget

DEFAULT_BLOCK_T = 32


@triton.jit
def _ring_merge_kernel(
    Out,
    Lse,
    OutB,
    LseB,
    Rows,
    n_rows,
    stride_ot,
    stride_oh,
    stride_bt,
    stride_bh,
    stride_lh,
    stride_lbh,
    HAS_ROWS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    h = tl.program_id(1)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    t_ok = offs_t < n_rows
    if HAS_ROWS:
        rows = tl.load(Rows + offs_t, mask=t_ok, other=0).to(tl.int64)
    else:
        rows = offs_t.to(tl.int64)
    lse = tl.load(Lse + h * stride_lh + rows, mask=t_ok, other=0.0)
    lse_b = tl.load(LseB + h * stride_lbh + offs_t, mask=t_ok, other=float("-inf"))
    no_key = lse_b == float("-inf")  # the block saw no key for this row: leave it unchanged (even if lse = -inf)
    diff = tl.where(no_key, 0.0, lse_b - lse)  # +inf when only the running row is empty: w = 1, new_lse = lse_b
    w = tl.where(no_key, 0.0, 1.0 / (1.0 + tl.exp(-diff)))  # sigmoid(lse_b - lse)
    new_lse = tl.where(no_key, lse, tl.maximum(lse, lse_b) + tl.log(1.0 + tl.exp(-tl.abs(diff))))
    o_ptrs = Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :]
    b_ptrs = OutB + offs_t[:, None].to(tl.int64) * stride_bt + h * stride_bh + offs_d[None, :]
    out = tl.load(o_ptrs, mask=t_ok[:, None], other=0.0)
    out_b = tl.load(b_ptrs, mask=t_ok[:, None], other=0.0).to(tl.float32)
    out = out - w[:, None] * (out - out_b)
    tl.store(o_ptrs, out, mask=t_ok[:, None])
    # every warp has read the old LSE (in both layouts) before any warp writes the new one
    tl.debug_barrier()
    tl.store(Lse + h * stride_lh + rows, new_lse, mask=t_ok)


def ring_merge_(
    out: torch.Tensor,
    lse: torch.Tensor,
    out_b: torch.Tensor,
    lse_b: torch.Tensor,
    rows: torch.Tensor | None = None,
    block_t: int = DEFAULT_BLOCK_T,
) -> None:
    """In place: merge ``out_b [n, heads, d]`` / ``lse_b [heads, n]`` into fp32 ``out [T, heads, d]`` / ``lse [heads, T]``.

    ``rows`` (``[n]`` indices into ``T``) says which rows of ``out``/``lse`` the block covers (all, in order, when
    ``None``). ``out`` and ``lse`` must be fp32 with unit stride along the head dim and the token axis.
    """
    if out.dtype != torch.float32 or lse.dtype != torch.float32:
        raise ValueError(f"running out/lse must be fp32, got {out.dtype} and {lse.dtype}")
    if out.stride(-1) != 1 or lse.stride(-1) != 1:
        raise ValueError("running out/lse must be contiguous in their last dimension")
    out_b = out_b if out_b.stride(-1) == 1 else out_b.contiguous()
    lse_b = lse_b.float().contiguous()
    n, heads, dim = out_b.shape
    if n == 0:
        return
    if rows is not None:
        rows = rows.to(device=out.device, dtype=torch.int64).contiguous()
    grid = (triton.cdiv(n, block_t), heads)
    _ring_merge_kernel[grid](
        out, lse, out_b, lse_b, rows if rows is not None else lse_b, n,
        out.stride(0), out.stride(1), out_b.stride(0), out_b.stride(1), lse.stride(0), lse_b.stride(0),
        HAS_ROWS=rows is not None, BLOCK_T=block_t, HEAD_DIM=dim,
    )  # fmt: skip


def aot_targets() -> list:
    """The sm_90 compile targets of this module's kernel (every head dim, with and without a row index)."""
    sig = {n: "i32" for n in _ring_merge_kernel.arg_names}
    sig.update({n: "*fp32" for n in ("Out", "Lse", "OutB", "LseB")}, Rows="*i64")
    aligned = ("Out", "Lse", "OutB", "LseB", "Rows", "stride_ot", "stride_oh", "stride_bt", "stride_bh")
    targets = []
    for head_dim in SUPPORTED_HEAD_DIMS:
        for has_rows in (False, True):
            constexprs = {"HAS_ROWS": has_rows, "BLOCK_T": DEFAULT_BLOCK_T, "HEAD_DIM": head_dim}
            sig.update({n: "constexpr" for n in constexprs})
            targets.append(
                CompileTarget(
                    label=f"ring_merge d={head_dim} {'rows' if has_rows else 'all rows'}", module=__name__,
                    function="_ring_merge_kernel", signature=tuple(sig.items()), constexprs=tuple(constexprs.items()),
                    aligned=aligned,
                )
            )  # fmt: skip
    return targets
