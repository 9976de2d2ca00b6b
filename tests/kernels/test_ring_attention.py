"""Zigzag ring attention on CP=2, 3 and 4 gloo ranks vs single-rank full attention (forward and all gradients)."""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.kernels.ring_attention import zigzag_indices, zigzag_merge, zigzag_split
from tests.kernels import kernel_ring_worker
from tests.support import zygote


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ring_matches_full_attention(world_size, tmp_path):
    """Torch and Triton-interpreter block backends, batched/GQA/non-causal/packed documents (see CASES)."""
    zygote.spawn(kernel_ring_worker.worker, (world_size, str(tmp_path / "init")), world_size)


def test_zigzag_split_and_merge_roundtrip():
    x = torch.arange(2 * 24).view(2, 24)
    shards = [zigzag_split(x, 1, r, 3) for r in range(3)]
    assert shards[0][0].tolist() == [0, 1, 2, 3, 20, 21, 22, 23]  # chunks 0 and 5 of 6
    assert shards[1][0].tolist() == [4, 5, 6, 7, 16, 17, 18, 19]  # chunks 1 and 4
    assert torch.equal(zigzag_merge(shards, 1), x)
    cu = torch.tensor([0, 12, 36], dtype=torch.int32)
    y = torch.arange(36)
    packed = [zigzag_split(y, 0, r, 3, cu) for r in range(3)]
    assert packed[2].tolist() == [4, 5, 6, 7, 20, 21, 22, 23, 24, 25, 26, 27]  # per document chunks 2 and 3
    assert torch.equal(zigzag_merge(packed, 0, cu), y)
    with pytest.raises(ValueError, match="not divisible by 2 \\* world_size"):
        zigzag_indices(10, 0, 2)


def test_zigzag_matches_megatron_core_cp_slicing():
    """Our shard is what megatron-core's get_batch_on_this_cp_rank gives each CP rank (tokens, labels, positions)."""
    from unittest import mock

    from megatron.core import utils as mcore_utils

    tokens = torch.arange(3 * 32).view(3, 32)
    for rank in range(4):
        with (
            mock.patch.object(mcore_utils.parallel_state, "get_context_parallel_world_size", return_value=4),
            mock.patch.object(mcore_utils.parallel_state, "get_context_parallel_rank", return_value=rank),
        ):
            theirs = mcore_utils.get_batch_on_this_cp_rank({"tokens": tokens.clone()})["tokens"]
        assert torch.equal(theirs, zigzag_split(tokens, 1, rank, 4))


def test_zigzag_matches_megatron_core_rope_slicing():
    """megatron-core's RoPE keeps the positions of our shard (get_pos_emb_on_this_cp_rank), so RoPE is global."""
    import types
    from unittest import mock

    from megatron.core.models.common.embeddings import rope_utils

    real_tensor = torch.tensor

    def cpu_tensor(*args, **kwargs):  # its index tensor is pinned and moved to CUDA; keep it on the CPU here
        kwargs.pop("pin_memory", None)
        return real_tensor(*args, **kwargs)

    positions = torch.arange(48).view(48, 1, 1, 1).float()  # [s, 1, 1, dim] like the rotary table
    for rank in range(3):
        group = types.SimpleNamespace(size=lambda: 3, rank=lambda r=rank: r)
        with mock.patch("torch.tensor", cpu_tensor), mock.patch.object(torch.Tensor, "cuda", lambda t, **_: t):
            theirs = rope_utils.get_pos_emb_on_this_cp_rank(positions, 0, group)
        assert torch.equal(theirs.flatten(), zigzag_indices(48, rank, 3).float())


def test_single_rank_ring_and_input_errors(tmp_path):
    """A ring of one rank is plain attention; malformed shards are refused with a clear message."""
    import torch.distributed as dist

    from megatron_agentic.kernels.ring_attention import ring_attn_func
    from tests.kernels.kernel_test_reference import reference_attention

    if dist.is_initialized():
        pytest.skip("a default process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(3)
        q, k, v = (torch.randn(2, 10, n, 16, generator=g) for n in (4, 2, 2))
        out = ring_attn_func(q, k, v, None, causal=True)
        ref, _ = reference_attention(q, k, v, True)
        assert (out - ref).abs().max().item() < 1e-5
        with pytest.raises(ValueError, match="even length"):
            ring_attn_func(q[:, :9], k[:, :9], v[:, :9], None)
        with pytest.raises(ValueError, match="divisible by 2 \\* world_size"):
            ring_attn_func(q[0], k[0], v[0], None, cu_seqlens=torch.tensor([0, 3, 10], dtype=torch.int32))
        with pytest.raises(ValueError, match="incompatible"):
            ring_attn_func(q, k[..., :8], v[..., :8], None)
    finally:
        dist.destroy_process_group()
