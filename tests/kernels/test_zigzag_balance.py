"""Causal work per rank under the ring's actual sharding and schedule: zigzag is balanced, contiguous is not."""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.kernels.ring_attention import _step_kind, zigzag_indices


def _visible_pairs(q_idx: torch.Tensor, k_idx: torch.Tensor) -> int:
    """Causal (query, key) pairs between two sets of global positions: the attention FLOPs are proportional."""
    return int((k_idx[None, :] <= q_idx[:, None]).sum())


def _contiguous_indices(seqlen: int, rank: int, world_size: int) -> torch.Tensor:
    per = seqlen // world_size
    return torch.arange(rank * per, (rank + 1) * per)


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_zigzag_work_balance(world_size):
    seqlen = 2 * world_size * 24
    zig = [zigzag_indices(seqlen, r, world_size) for r in range(world_size)]
    con = [_contiguous_indices(seqlen, r, world_size) for r in range(world_size)]
    work_zig = [_visible_pairs(zig[r], torch.arange(seqlen)) for r in range(world_size)]
    work_con = [_visible_pairs(con[r], torch.arange(seqlen)) for r in range(world_size)]
    assert sum(work_zig) == sum(work_con) == seqlen * (seqlen + 1) // 2
    ratio_zig = max(work_zig) / (sum(work_zig) / world_size)
    ratio_con = max(work_con) / (sum(work_con) / world_size)
    assert ratio_zig == 1.0
    expected_con = (2 * world_size - 1) / world_size  # last rank's share, ~2x for large CP (1.875 at CP=8)
    assert abs(ratio_con - expected_con) < 0.01
    if world_size == 8:
        assert 1.8 < ratio_con < 2.0


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_ring_schedule_blocks_cover_exactly_the_causal_pairs(world_size):
    """At each ring step the launched block (diag / kv first half / q second half) contains every causal pair
    between the local queries and the visiting K/V and nothing else, and each step costs every rank the same."""
    chunk = 6
    seqlen = 2 * world_size * chunk
    idx = [zigzag_indices(seqlen, r, world_size) for r in range(world_size)]
    for step in range(world_size):
        per_rank = []
        for rank in range(world_size):
            src = (rank - step) % world_size
            q_idx, k_idx = idx[rank], idx[src]
            kind = _step_kind(step, rank, causal=True)
            if kind == "diag":
                launched = _visible_pairs(q_idx, k_idx)  # causal kernel on the local block
                assert launched == 2 * chunk * (2 * chunk + 1) // 2
            elif kind == "kv_first_half":
                launched = len(q_idx) * chunk
                assert _visible_pairs(q_idx, k_idx[:chunk]) == launched and _visible_pairs(q_idx, k_idx[chunk:]) == 0
            else:
                launched = chunk * len(k_idx)
                assert _visible_pairs(q_idx[chunk:], k_idx) == launched and _visible_pairs(q_idx[:chunk], k_idx) == 0
            assert launched == _visible_pairs(q_idx, k_idx)
            per_rank.append(launched)
        assert len(set(per_rank)) == 1, f"step {step}: unequal work {per_rank}"


def test_ring_analysis_matches_the_schedule():
    """The README's per-step FLOPs times CP steps equals each rank's share of the causal FLOPs (up to the diagonal)."""
    from megatron_agentic.kernels.ring_analysis import AttentionShape, ring_step

    shape = AttentionShape()
    seqlen = 131072
    total_fwd = 4.0 * seqlen * seqlen / 2 * shape.heads * shape.head_dim
    for cp in (4, 8, 16):
        st = ring_step(seqlen, cp, shape)
        assert st.chunk == seqlen // (2 * cp)
        assert abs(st.fwd_flops * cp - total_fwd / cp) / (total_fwd / cp) < 1e-9
        assert st.fwd_bytes == 2 * (seqlen // cp) * shape.kv_heads * shape.head_dim * 2
    with pytest.raises(ValueError, match="divisible"):
        ring_step(1000, 3, shape)


def test_readme_analysis_is_current():
    """kernels/README.md holds exactly what `python -m megatron_agentic.kernels.ring_analysis` prints with its defaults."""
    from pathlib import Path

    from megatron_agentic.kernels.ring_analysis import tables

    readme = (Path(__file__).resolve().parents[2] / "kernels" / "README.md").read_text()
    assert tables(131072, [4, 8, 16], 400.0, 300.0, 370.0, 45.0) in readme
