"""Per-document attention on CPU: the packed ``thd`` path vs megatron-core's dense document mask, same documents.

Both are megatron-core ``core_attention`` modules on the same q/k/v of one micro-batch whose documents end at EOD
tokens: the packed path is ``TritonAttention`` with ``PackedSeqParams`` from ``pack_documents`` (what
``data.document_attention`` trains with; torch block compute on CPU), the dense path megatron-core's local
``DotProductAttention`` with the ``[b, 1, s, s]`` mask its ``GPTDataset`` builds with ``reset_attention_mask``.
Prints the forward+backward time of each, their ratio (measured in the same run) and the largest output and
gradient difference::

    python benchmarks/bench_document_attention_cpu.py                        # 2 x 2048 tokens, 256-token documents
    python benchmarks/bench_document_attention_cpu.py --seq 1024 --doc-length 64 --batch 1
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

EOD = 0


def _init() -> None:
    from megatron.core import parallel_state

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel()
    from megatron_agentic.training.builders import seed_everything

    seed_everything(0)  # megatron-core's RNG tracker (attention dropout fork)


def _modules(heads: int, kv_heads: int, dim: int):
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_agentic.kernels.megatron_attention import TritonAttention

    config = TransformerConfig(
        num_layers=1, hidden_size=heads * dim, num_attention_heads=heads, num_query_groups=kv_heads,
        kv_channels=dim, attention_dropout=0.0, use_cpu_initialization=True,
    )  # fmt: skip
    dense = DotProductAttention(config, 1, AttnMaskType.padding_causal, "self")
    packed = TritonAttention(config, 1, AttnMaskType.causal, "self", block_backend="torch")
    return dense, packed


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=2048, help="tokens per sample")
    parser.add_argument("--batch", type=int, default=2, help="samples per micro-batch")
    parser.add_argument("--doc-length", type=int, default=256, help="tokens per document (EOD every N tokens)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    from megatron_agentic.platform import setup_platform
    from megatron_agentic.training.packing import pack_documents

    setup_platform()
    _init()
    b, s, h, kvh, d = args.batch, args.seq, args.heads, args.kv_heads, args.dim
    tokens = torch.ones(b, s, dtype=torch.long)
    tokens[:, args.doc_length - 1 :: args.doc_length] = EOD
    masks = torch.stack([_get_ltor_masks_and_position_ids(t, EOD, True, True, False, True)[0] for t in tokens])
    batch = {"tokens": tokens, "labels": tokens, "loss_mask": torch.ones(b, s)}
    params = pack_documents(batch, EOD)["packed_seq_params"]
    dense, packed = _modules(h, kvh, d)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(s, b, h, d, generator=g)
    k = torch.randn(s, b, kvh, d, generator=g)
    v = torch.randn(s, b, kvh, d, generator=g)
    dout = torch.randn(s, b, h * d, generator=g)

    def to_thd(x: torch.Tensor) -> torch.Tensor:  # [s, b, n, d] -> [b * s, n, d], samples end to end
        return x.transpose(0, 1).reshape(b * s, x.shape[2], x.shape[3])

    def run_dense() -> tuple[torch.Tensor, ...]:
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = dense(qq, kk, vv, masks)
        out.backward(dout)
        return out.detach(), qq.grad, kk.grad, vv.grad

    def run_packed() -> tuple[torch.Tensor, ...]:
        qq, kk, vv = (to_thd(t).detach().requires_grad_(True) for t in (q, k, v))
        out = packed(qq, kk, vv, None, packed_seq_params=params)
        out.backward(to_thd(dout.reshape(s, b, h, d)).reshape(b * s, h * d))
        return out.detach(), qq.grad, kk.grad, vv.grad

    ref, got = run_dense(), run_packed()
    diff = max(
        (to_thd(ref[0].reshape(s, b, h, d)).reshape(b * s, -1) - got[0]).abs().max().item(),
        *((to_thd(r) - g_).abs().max().item() for r, g_ in zip(ref[1:], got[1:])),
    )
    t_dense, t_packed = _time(run_dense, args.reps), _time(run_packed, args.reps)
    docs = b * s // args.doc_length
    print(f"CPU ({torch.get_num_threads()} threads), {b} x {s} tokens = {docs} documents of {args.doc_length}, "
          f"{h}:{kvh} heads, d={d}, fp32, forward+backward")  # fmt: skip
    print(f"  dense document mask (megatron-core DotProductAttention + reset_attention_mask): {t_dense * 1e3:9.1f} ms")
    print(f"  packed thd (TritonAttention + PackedSeqParams, torch blocks):                   {t_packed * 1e3:9.1f} ms")
    print(f"  ratio dense / packed: {t_dense / t_packed:.2f}x   max |difference| (output, dq, dk, dv): {diff:.2e}")
    print(f"  dense mask memory: {masks.numel() * masks.element_size() / 2**20:.1f} MiB for {b} samples (packed: "
          f"{params.cu_seqlens_q.numel() * 4} bytes of cu_seqlens)")  # fmt: skip
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
