"""Attention speed on GPU: our Triton flash attention vs torch SDPA (flash backend) and flash-attn, and ring scaling.

Single GPU (H100/H200), causal, head dim 128, GQA 8:1 (32 query / 4 KV heads, Qwen3-30B-A3B), bf16::

    python benchmarks/bench_attention.py                      # 8K..128K, forward and forward+backward
    python benchmarks/bench_attention.py --seqlens 4096 16384 # a subset

Ring (context-parallel) scaling on several GPUs of one node (CP = number of processes)::

    torchrun --nproc-per-node 8 benchmarks/bench_attention.py --ring --seqlens 131072

Per-document (packed ``thd``) attention, what ``data.document_attention`` trains with: a sequence made of
``--doc-length`` documents vs the same tokens attended as one document (ours, and flash-attn's varlen kernel when
installed)::

    python benchmarks/bench_attention.py --packed --seqlens 32768 131072 --doc-length 1024

Compared: ours (autotuned on first use per shape; ``MEGATRON_AGENTIC_ATTN_AUTOTUNE=0`` for the fixed AOT-checked
tiles; the backward is the fused 5-matmul one unless ``torch.use_deterministic_algorithms`` is on), torch SDPA's
flash backend, flash-attn 2 and FlashAttention-3 (``flash_attn_interface``) when installed.
Prints TFLOP/s (causal FLOPs: forward 2 * 2 * s^2/2 * heads * dim per batch row, backward 2.5x forward) and the ratio
to the baseline measured in the same run. On a machine without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def causal_flops(batch: int, seqlen: int, heads: int, dim: int, backward: bool) -> float:
    """FLOPs of causal attention (forward, or forward + backward)."""
    fwd = 4.0 * batch * heads * dim * seqlen * seqlen / 2
    return fwd * (3.5 if backward else 1.0)


def _bench(fn: Callable[[], object], reps: int) -> float:
    """Median milliseconds of ``fn`` (triton's do_bench: warmup, L2 flush, CUDA events)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, rep=reps, return_mode="median"))


def _bench_fixed(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Mean milliseconds over a fixed number of calls: every rank of a ring must make the same calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _implementations(q, k, v, causal: bool) -> dict[str, Callable[[], torch.Tensor]]:
    from megatron_agentic.kernels.flash_attention import flash_attn_func

    impls: dict[str, Callable[[], torch.Tensor]] = {"triton (ours)": lambda: flash_attn_func(q, k, v, causal=causal)}
    group = q.shape[2] // k.shape[2]
    # SDPA's flash backend has no GQA: give it repeated K/V, prepared outside the timed region.
    qt = q.transpose(1, 2).detach().requires_grad_(q.requires_grad)
    kt = k.repeat_interleave(group, dim=2).transpose(1, 2).detach().requires_grad_(k.requires_grad)
    vt = v.repeat_interleave(group, dim=2).transpose(1, 2).detach().requires_grad_(v.requires_grad)

    def sdpa() -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

    impls["torch SDPA flash"] = sdpa
    try:
        from flash_attn import flash_attn_func as fa2  # type: ignore[import-not-found]

        impls["flash-attn"] = lambda: fa2(q, k, v, causal=causal)
    except ImportError:
        pass
    try:  # FlashAttention-3 (Hopper); older builds return (out, lse), newer ones out
        from flash_attn_interface import flash_attn_func as fa3  # type: ignore[import-not-found]

        def flash3() -> torch.Tensor:
            result = fa3(q, k, v, causal=causal)
            return result[0] if isinstance(result, tuple) else result

        impls["flash-attn 3"] = flash3
    except ImportError:
        pass
    return impls


def _check(q, k, v) -> float:
    """Max abs difference between our output and SDPA's (sanity check before timing)."""
    impls = _implementations(q, k, v, True)
    ours = impls["triton (ours)"]().float()
    ref = impls["torch SDPA flash"]().transpose(1, 2).float()
    return (ours - ref).abs().max().item()


def single_gpu(args: argparse.Namespace) -> None:
    """Forward and forward+backward TFLOP/s for each sequence length."""
    dev = torch.device("cuda")
    heads, kv_heads, dim = args.heads, args.kv_heads, args.dim
    print(f"device: {torch.cuda.get_device_name(dev)}; causal, d={dim}, {heads}:{kv_heads} GQA, {args.dtype}")
    dtype = getattr(torch, args.dtype)
    for seqlen in args.seqlens:
        batch = max(1, args.tokens // seqlen)
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(batch, seqlen, heads, dim, device=dev, dtype=dtype, generator=g)
        k = torch.randn(batch, seqlen, kv_heads, dim, device=dev, dtype=dtype, generator=g)
        v = torch.randn(batch, seqlen, kv_heads, dim, device=dev, dtype=dtype, generator=g)
        err = _check(q, k, v)
        rows = {}
        for backward in (False, True):
            qq, kk, vv = (t.detach().requires_grad_(backward) for t in (q, k, v))
            for name, fn in _implementations(qq, kk, vv, True).items():
                if backward:
                    dout = torch.randn_like(fn())

                    def step(fn=fn, dout=dout) -> None:
                        fn().backward(dout)
                else:

                    def step(fn=fn) -> None:
                        with torch.no_grad():
                            fn()

                try:
                    ms = _bench(step, args.reps)
                except torch.OutOfMemoryError:
                    ms = float("nan")
                rows[(name, backward)] = causal_flops(batch, seqlen, heads, dim, backward) / (ms * 1e-3) / 1e12
            torch.cuda.empty_cache()
        base_f, base_b = rows[("torch SDPA flash", False)], rows[("torch SDPA flash", True)]
        print(f"\nseqlen {seqlen} x batch {batch} (max |ours - SDPA| = {err:.2e})")
        print(f"  {'implementation':<18} {'fwd TFLOP/s':>12} {'vs SDPA':>8} {'fwd+bwd TFLOP/s':>16} {'vs SDPA':>8}")
        for name in dict.fromkeys(n for n, _ in rows):
            f, b = rows[(name, False)], rows[(name, True)]
            print(f"  {name:<18} {f:>12.1f} {f / base_f:>8.2f} {b:>16.1f} {b / base_b:>8.2f}")


def packed(args: argparse.Namespace) -> None:
    """A sequence of ``doc_length`` documents (thd, ``cu_seqlens``) vs the same tokens as one causal document."""
    from megatron_agentic.kernels.flash_attention import flash_attn_func, uniform_cu_seqlens

    dev = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    print(f"device: {torch.cuda.get_device_name(dev)}; packed documents of {args.doc_length} tokens, d={args.dim}, "
          f"{args.heads}:{args.kv_heads} GQA, {args.dtype}")  # fmt: skip
    for seqlen in args.seqlens:
        if seqlen % args.doc_length:
            print(f"\nseqlen {seqlen}: not a multiple of --doc-length {args.doc_length}, skipped")
            continue
        docs = seqlen // args.doc_length
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(seqlen, args.heads, args.dim, device=dev, dtype=dtype, generator=g)
        k = torch.randn(seqlen, args.kv_heads, args.dim, device=dev, dtype=dtype, generator=g)
        v = torch.randn(seqlen, args.kv_heads, args.dim, device=dev, dtype=dtype, generator=g)
        cu = uniform_cu_seqlens(docs, args.doc_length, dev)
        impls: dict[str, Callable[..., torch.Tensor]] = {
            "ours, one document": lambda q, k, v: flash_attn_func(q[None], k[None], v[None], causal=True)[0],
            "ours, packed thd": lambda q, k, v, cu=cu: flash_attn_func(
                q, k, v, causal=True, cu_seqlens=cu, max_seqlen=args.doc_length
            ),
        }
        try:
            from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]

            impls["flash-attn varlen"] = lambda q, k, v, cu=cu: flash_attn_varlen_func(
                q, k, v, cu, cu, args.doc_length, args.doc_length, causal=True
            )
        except ImportError:
            pass
        rows = {}
        for backward in (False, True):
            qq, kk, vv = (t.detach().requires_grad_(backward) for t in (q, k, v))
            for name, fn in impls.items():
                if backward:
                    dout = torch.randn_like(qq)

                    def step(fn=fn, dout=dout, qq=qq, kk=kk, vv=vv) -> None:
                        fn(qq, kk, vv).backward(dout)
                else:

                    def step(fn=fn, qq=qq, kk=kk, vv=vv) -> None:
                        with torch.no_grad():
                            fn(qq, kk, vv)

                rows[(name, backward)] = _bench(step, args.reps)
            torch.cuda.empty_cache()
        whole = rows[("ours, one document", False)], rows[("ours, one document", True)]
        print(f"\nseqlen {seqlen} = {docs} documents x {args.doc_length} (attention FLOPs of the packed case: "
              f"{1 / docs:.2%} of one document)")  # fmt: skip
        print(f"  {'implementation':<20} {'fwd ms':>9} {'vs one doc':>10} {'fwd+bwd ms':>11} {'vs one doc':>10} "
              f"{'fwd+bwd TFLOP/s':>16}")  # fmt: skip
        for name in impls:
            f, b = rows[(name, False)], rows[(name, True)]
            n_docs = 1 if name == "ours, one document" else docs
            flops = causal_flops(n_docs, seqlen // n_docs, args.heads, args.dim, True)
            print(f"  {name:<20} {f:>9.3f} {f / whole[0]:>10.3f} {b:>11.3f} {b / whole[1]:>10.3f} "
                  f"{flops / (b * 1e-3) / 1e12:>16.1f}")  # fmt: skip


def ring(args: argparse.Namespace) -> None:
    """Ring attention on CP = world size GPUs vs one GPU doing the whole sequence (scaling efficiency)."""
    import torch.distributed as dist

    from megatron_agentic.kernels.flash_attention import flash_attn_func
    from megatron_agentic.kernels.ring_attention import ring_attn_func, zigzag_split

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", local_rank)
    dtype = getattr(torch, args.dtype)
    for seqlen in args.seqlens:
        g = torch.Generator(device=dev).manual_seed(0)
        full = [
            torch.randn(1, seqlen, n, args.dim, device=dev, dtype=dtype, generator=g)
            for n in (args.heads, args.kv_heads, args.kv_heads)
        ]
        local = [zigzag_split(t, 1, rank, world).requires_grad_(True) for t in full]
        dout = torch.randn_like(local[0])
        results = {}
        for backward in (False, True):

            def ring_step(backward=backward, local=local, dout=dout) -> None:
                with torch.set_grad_enabled(backward):
                    out = ring_attn_func(*local, None, causal=True)
                    if backward:
                        out.backward(dout)

            def single_step(backward=backward, full=full) -> None:
                q, k, v = (t.detach().requires_grad_(backward) for t in full)
                with torch.set_grad_enabled(backward):
                    out = flash_attn_func(q, k, v, causal=True)
                    if backward:
                        out.backward(torch.ones_like(out))

            dist.barrier()
            t_ring = _bench_fixed(ring_step, warmup=3, iters=args.ring_iters)
            dist.barrier()
            t_single = _bench(single_step, args.reps) if rank == 0 else float("nan")
            dist.barrier()
            results[backward] = (t_ring, t_single)
        if rank == 0:
            print(f"\nring CP={world}, seqlen {seqlen}: ideal time = single-GPU time / CP")
            for backward, (t_ring, t_single) in results.items():
                label = "fwd+bwd" if backward else "fwd"
                eff = t_single / (world * t_ring)
                tflops = causal_flops(1, seqlen, args.heads, args.dim, backward) / world / (t_ring * 1e-3) / 1e12
                print(f"  {label:<8} ring {t_ring:8.2f} ms  single {t_single:8.2f} ms  per-GPU {tflops:6.1f} TFLOP/s  "
                      f"scaling efficiency {eff:5.2f}")  # fmt: skip
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (exit 0 with a message when there is no GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqlens", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per measurement (batch = tokens // seqlen)")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--reps", type=int, default=200, help="milliseconds of repetitions per measurement")
    parser.add_argument("--ring", action="store_true", help="ring scaling (launch with torchrun on several GPUs)")
    parser.add_argument("--ring-iters", type=int, default=10, help="timed ring calls per measurement")
    parser.add_argument("--packed", action="store_true", help="packed documents (thd) vs one document per sequence")
    parser.add_argument("--doc-length", type=int, default=1024, help="with --packed: tokens per document")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_attention: no CUDA GPU found; this benchmark needs an H100/H200 (nothing measured).")
        return 0
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench_attention: unset TRITON_INTERPRET to benchmark compiled kernels", file=sys.stderr)
        return 2
    if args.ring:
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            print("bench_attention --ring: launch with torchrun on 2+ GPUs (nothing measured).")
            return 0
        ring(args)
    elif args.packed:
        packed(args)
    else:
        single_gpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
