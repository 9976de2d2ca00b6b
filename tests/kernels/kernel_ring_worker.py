"""Worker for the multi-rank ring attention tests (spawned on CPU with gloo and a ``file://`` init method)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from tests.kernels.kernel_test_reference import doc_ids_from_cu, reference_attention

# (name, batch, seqlen, heads, kv_heads, dim, causal, backend, document lengths or None[, score shift])
# A score shift s moves q along +e and k along -e (e a unit vector): scores ~ -s^2 / sqrt(dim), an LSE far below
# fp32's exp range, in non-causal blocks whose key tiles are partial (chunks of 11 tokens at CP=2, 6 and 8 at CP=3).
CASES = {
    2: [
        ("gqa4_causal_torch", 2, 24, 8, 2, 16, True, "torch", None),
        ("noncausal_torch", 1, 20, 4, 4, 16, False, "torch", None),
        ("packed_docs_torch", 1, 0, 4, 1, 16, True, "torch", [8, 20, 4]),
        ("gqa2_causal_triton", 1, 44, 4, 2, 16, True, "triton", None),
        ("packed_docs_triton", 1, 0, 2, 1, 16, True, "triton", [12, 32]),
        ("neg_scores_noncausal_triton", 1, 44, 2, 1, 16, False, "triton", None, 24.0),
    ],
    3: [
        ("gqa3_causal_torch", 1, 36, 6, 2, 16, True, "torch", None),
        ("gqa3_causal_triton", 1, 24, 3, 1, 16, True, "triton", None),
        ("packed_docs_gqa3_triton", 1, 0, 3, 1, 16, True, "triton", [12, 24]),
        ("neg_scores_packed_noncausal_triton", 1, 0, 2, 2, 16, False, "triton", [36, 48], 24.0),
    ],
    4: [
        ("gqa8_causal_torch", 2, 40, 8, 1, 16, True, "torch", None),
        ("packed_docs_torch", 1, 0, 4, 2, 16, True, "torch", [16, 8, 40]),
        ("gqa1_causal_triton", 1, 56, 2, 2, 16, True, "triton", None),
    ],
}


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    err = (got.double() - want.double()).abs().max().item()
    if not err <= atol:  # NaN-safe: a NaN error must fail (``nan > atol`` is False)
        raise AssertionError(f"{name}: max abs error {err:.3g} > {atol:.3g}")


def _gather(x: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return parts


def run_case(rank: int, world_size: int, case: tuple) -> None:
    from megatron_agentic.kernels.ring_attention import ring_attn_func, zigzag_merge, zigzag_split

    name, b, s, h, hk, d, causal, backend, docs = case[:9]
    shift = case[9] if len(case) > 9 else 0.0
    cu = None
    if docs is not None:
        cu = torch.tensor([0, *torch.tensor(docs).cumsum(0).tolist()], dtype=torch.int32)
        s = int(cu[-1])
    g = torch.Generator().manual_seed(1234)  # identical full tensors on every rank
    q, k, v, dout = (torch.randn(b, s, n, d, generator=g) for n in (h, hk, hk, h))
    q, k = q + shift * d**-0.5, k - shift * d**-0.5
    ref_q, ref_k, ref_v = (t.double().requires_grad_(True) for t in (q, k, v))
    doc_ids = doc_ids_from_cu(cu) if cu is not None else None
    ref_out, ref_lse = reference_attention(ref_q, ref_k, ref_v, causal, doc_ids=doc_ids)
    ref_out.backward(dout.double())

    if cu is None:
        shard = [zigzag_split(t, 1, rank, world_size).requires_grad_(True) for t in (q, k, v)]
        out, lse = ring_attn_func(*shard, None, causal=causal, backend=backend, return_lse=True)
        out.backward(zigzag_split(dout, 1, rank, world_size))
        seq_dim = 1
    else:
        shard = [zigzag_split(t[0], 0, rank, world_size, cu).requires_grad_(True) for t in (q, k, v)]
        out, lse = ring_attn_func(*shard, None, causal=causal, cu_seqlens=cu, backend=backend, return_lse=True)
        out.backward(zigzag_split(dout[0], 0, rank, world_size, cu))
        seq_dim = 0
    results = {"out": out.detach(), "dq": shard[0].grad, "dk": shard[1].grad, "dv": shard[2].grad}
    full = {key: zigzag_merge(_gather(val, world_size), seq_dim, cu) for key, val in results.items()}
    lse_full = zigzag_merge(_gather(lse, world_size), lse.dim() - 1, cu)
    want = {"out": ref_out, "dq": ref_q.grad, "dk": ref_k.grad, "dv": ref_v.grad}
    # fp32 scores of size |q||k| carry errors ~ eps * |q||k|: the tolerances grow with the score magnitude
    # (x9 at scores ~ -144); a NaN or a wrong mask is off by O(1)
    loose = max(1.0, shift**2 / d**0.5 / 16)
    for key, val in full.items():
        _close(f"CP={world_size} {name} {key}", val if cu is None else val[None], want[key].detach(), 1e-4 * loose)
    _close(f"CP={world_size} {name} lse", lse_full if cu is None else lse_full[None], ref_lse.detach(), 1e-5 * loose)


def worker(rank: int, world_size: int, init_file: str) -> None:
    """Entry point for ``mp.spawn``: runs every case of ``CASES[world_size]`` and raises on any mismatch."""
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for case in CASES[world_size]:
            run_case(rank, world_size, case)
    finally:
        dist.destroy_process_group()
