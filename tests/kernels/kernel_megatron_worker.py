"""Worker: ``TritonAttention`` (CP = world size) vs megatron-core's ``DotProductAttention`` on the full sequence."""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import torch
import torch.distributed as dist


def _configs(cp: int):
    from megatron.core.transformer.transformer_config import TransformerConfig

    common = dict(
        num_layers=1, hidden_size=64, num_attention_heads=8, num_query_groups=2, kv_channels=16,
        attention_dropout=0.0, hidden_dropout=0.0, params_dtype=torch.float32, masked_softmax_fusion=False,
    )  # fmt: skip
    return TransformerConfig(context_parallel_size=cp, **common), TransformerConfig(**common)


def compare(rank: int, world_size: int, backend: str | None = None) -> None:
    """Forward and input gradients of both implementations agree on every rank's zigzag shard."""
    from megatron.core import parallel_state
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.utils import get_batch_on_this_cp_rank

    from megatron_agentic.kernels.megatron_attention import TritonAttention

    cfg_cp, cfg_ref = _configs(world_size)
    ours = TritonAttention(
        cfg_cp, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self", block_backend=backend
    )
    ref_pg = _ref_pg()
    ref = DotProductAttention(
        cfg_ref, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self", pg_collection=ref_pg
    )
    s, b = 32, 2
    g = torch.Generator().manual_seed(5)
    q, k, v, dout = (torch.randn(s, b, n, 16, generator=g) for n in (8, 2, 2, 8))
    # megatron's reference: full sequence, explicit causal mask (True = masked)
    ref_in = [t.clone().requires_grad_(True) for t in (q, k, v)]
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)[None, None]
    # megatron's reference is CUDA-only in two places (memory buffer device, dropout RNG tracker): redirect both
    tracker = mock.Mock(fork=contextlib.nullcontext)
    with (
        mock.patch.object(torch.cuda, "current_device", lambda: "cpu"),
        mock.patch("megatron.core.tensor_parallel.get_cuda_rng_tracker", lambda: tracker),
    ):
        ref_out = ref(*ref_in, attention_mask=mask)
    ref_out.backward(dout.reshape(s, b, -1))
    # ours: this CP rank's shard as megatron-core slices a batch ([b, s, ...] with seq dim 1)
    shard = lambda t: get_batch_on_this_cp_rank({"x": t.transpose(0, 1)})["x"].transpose(0, 1)  # noqa: E731
    ours_in = [shard(t).clone().requires_grad_(True) for t in (q, k, v)]
    out = ours(*ours_in, attention_mask=None)
    assert out.shape == (s // world_size, b, 8 * 16), out.shape
    out.backward(shard(dout).reshape(s // world_size, b, -1))
    checks = [("out", out, shard(ref_out.detach().view(s, b, 8, 16)).reshape(s // world_size, b, -1))]
    checks += [(n, a.grad, shard(r.grad)) for n, a, r in zip(("dq", "dk", "dv"), ours_in, ref_in)]
    for name, got, want in checks:
        err = (got - want).abs().max().item()
        if not err <= 2e-5:  # NaN-safe
            raise AssertionError(f"CP={world_size} {backend} rank {rank} {name}: max abs error {err:.3g}")
    parallel_state.destroy_model_parallel()


def _ref_pg():
    from megatron.core.process_groups_config import ProcessGroupCollection

    pgs = ProcessGroupCollection()
    pgs.tp = dist.new_group([dist.get_rank()])  # the reference runs unsharded on each rank
    return pgs


def worker(rank: int, world_size: int, init_file: str, backend: str | None = None) -> None:
    """``mp.spawn`` entry: initialise megatron's parallel state with CP = world size and run :func:`compare`."""
    from megatron.core import parallel_state

    os.environ.setdefault("TRITON_INTERPRET", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        parallel_state.initialize_model_parallel(context_parallel_size=world_size)
        compare(rank, world_size, backend)
    finally:
        dist.destroy_process_group()
