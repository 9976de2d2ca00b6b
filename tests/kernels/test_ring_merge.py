"""The fused ring merge kernel (interpreter on CPU) against the torch merge, with and without a row index."""

from __future__ import annotations

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
