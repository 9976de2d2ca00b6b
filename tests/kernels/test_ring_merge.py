"""The fused ring merge kernel (interpreter on CPU) against the torch merge, with and without a row index."""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.kernels.ring_attention import _merge
from megatron_agentic.kernels.ring_merge import ring_merge_


def _state(t, h, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, h, d, generator=g), torch.randn(h, t, generator=g) * 3


def test_fused_merge_matches_torch_merge_all_rows():
    out, lse = _state(37, 3, 32, 0)
    out_b, lse_b = _state(37, 3, 32, 1)
    lse_b[1, 5:9] = float("-inf")  # rows whose block saw no key keep their state
    want_out, want_lse = out.clone(), lse.clone()
    _merge(want_out, want_lse, out_b, lse_b)
    ring_merge_(out, lse, out_b, lse_b)
    assert (out - want_out).abs().max().item() < 1e-6
    assert (lse - want_lse).abs().max().item() < 1e-6
    assert torch.isfinite(out).all()


def test_fused_merge_with_row_index():
    out, lse = _state(40, 2, 16, 2)
    out_b, lse_b = _state(20, 2, 16, 3)
    rows = torch.cat([torch.arange(10, 20), torch.arange(30, 40)])  # second halves of two documents
    want_out, want_lse = out.clone(), lse.clone()
    sub_out, sub_lse = want_out[rows], want_lse[:, rows]
    _merge(sub_out, sub_lse, out_b, lse_b)
    want_out[rows], want_lse[:, rows] = sub_out, sub_lse
    ring_merge_(out, lse, out_b, lse_b, rows)
    assert (out - want_out).abs().max().item() < 1e-6
    assert (lse - want_lse).abs().max().item() < 1e-6
    untouched = torch.ones(40, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(out[untouched], _state(40, 2, 16, 2)[0][untouched])


def _merges():
    """The fused kernel and the torch merge the ring uses with the torch block backend (same contract)."""
    return {"fused": ring_merge_, "torch": lambda out, lse, out_b, lse_b: _merge(out, lse, out_b, lse_b)}


@pytest.mark.parametrize("merge", ["fused", "torch"])
def test_merge_rows_without_keys_on_either_side_stay_unchanged(merge):
    """``lse = lse_b = -inf`` (neither the running state nor the block saw a key): the row stays as it is (the
    docstring's promise; it was NaN), ``lse = -inf`` only: the block's result is taken over exactly."""
    out, lse = _state(40, 2, 16, 5)
    out_b, lse_b = _state(40, 2, 16, 6)
    out[3:7] = 0.0
    lse[:, 3:7] = float("-inf")
    lse_b[:, 3:5] = float("-inf")  # rows 3, 4: both -inf; rows 5, 6: only the running state is empty
    before_out = out.clone()
    _merges()[merge](out, lse, out_b, lse_b)
    assert torch.isfinite(out).all()
    assert torch.equal(out[3:5], before_out[3:5]) and torch.isneginf(lse[:, 3:5]).all()
    assert (out[5:7] - out_b[5:7]).abs().max().item() < 1e-6
    assert (lse[:, 5:7] - lse_b[:, 5:7]).abs().max().item() < 1e-6


@pytest.mark.parametrize("merge", ["fused", "torch"])
def test_merge_extreme_lse_against_float64(merge):
    """LSEs of +-1e4 and differences far beyond exp's range merge like the float64 definition."""
    out, lse = _state(33, 3, 16, 7)
    out_b, lse_b = _state(33, 3, 16, 8)
    lse = lse * 3000.0
    lse_b = lse_b * 3000.0
    lse_b[0, :5] = lse[0, :5] + 1e-3  # nearly equal halves
    want_lse = torch.logaddexp(lse.double(), lse_b.double())
    w_a = torch.exp(lse.double() - want_lse).transpose(0, 1).unsqueeze(-1)
    w_b = torch.exp(lse_b.double() - want_lse).transpose(0, 1).unsqueeze(-1)
    want_out = w_a * out.double() + w_b * out_b.double()
    _merges()[merge](out, lse, out_b, lse_b)
    assert (out.double() - want_out).abs().max().item() < 1e-5
    assert ((lse.double() - want_lse).abs() / want_lse.abs().clamp_min(1.0)).max().item() < 1e-6
