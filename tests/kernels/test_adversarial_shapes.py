"""Adversarial shapes and scores for the Triton kernels under the interpreter, against a float64 reference.

What the 32 x 32 interpreter tiles and well-behaved inputs of ``test_flash_attention.py`` do not reach: every
(BLOCK_M, BLOCK_N) pair of the Hopper autotune space with packed documents whose boundaries fall inside tiles, query
and key lengths that are not tile multiples in both directions, non-causal blocks with very negative scores (an LSE
below fp32's exp range: padding keys of a partial key tile must not turn dQ into NaN) and very positive scores,
rows with no visible key, for the forward and both backward modes. bf16 cannot run under the interpreter (its bf16
arithmetic is wrong, DESIGN.md); the GPU-marked test in ``test_flash_attention.py`` covers it.
"""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.kernels import attention_config, autotune
from megatron_agentic.kernels import flash_attention as fa
from tests.kernels.kernel_test_reference import doc_ids_from_cu, reference_attention

MODES = {"fused_dq": False, "deterministic": True}


def _tensors(sq, sk, h, hk, d, seed, shift=0.0):
    """Random q/k/v/dout; ``shift`` moves q along +e and k along -e (``e = 1/sqrt(d)``): scores ~ -shift^2 * scale."""
    g = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(n, hh, d, generator=g) for n, hh in ((sq, h), (sk, hk), (sk, hk), (sq, h)))
    e = torch.full((d,), d**-0.5)
    return q + shift * e, k - shift * e, v, dout


def _reference(q, k, v, dout, cu_q, cu_k, causal, scale):
    """float64 out, lse, dq, dk, dv of packed documents (documents may differ in query and key length)."""
    qr, kr, vr = (t.double().requires_grad_(True) for t in (q, k, v))
    outs, lses = [], []
    for z in range(len(cu_q) - 1):
        a, b, c, e = int(cu_q[z]), int(cu_q[z + 1]), int(cu_k[z]), int(cu_k[z + 1])
        # rows that see no key (no keys at all, or causal rows above the bottom-right diagonal): zero output, -inf LSE
        blind = b - a if e == c else max(0, (b - a) - (e - c)) if causal else 0
        outs.append(torch.zeros(blind, q.shape[1], q.shape[2], dtype=torch.float64))
        lses.append(torch.full((q.shape[1], blind), float("-inf"), dtype=torch.float64))
        if blind == b - a:
            continue
        rows = slice(a + blind, b)
        o, lse = reference_attention(qr[None, rows], kr[None, c:e], vr[None, c:e], causal, softmax_scale=scale)
        outs.append(o[0])
        lses.append(lse[0])
    out, lse = torch.cat(outs), torch.cat(lses, dim=1)
    grads = torch.autograd.grad(out, (qr, kr, vr), dout.double(), allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, (qr, kr, vr))]
    return out.detach(), lse.detach(), grads


def _run_blocks(q, k, v, dout, cu_q, cu_k, causal, scale, deterministic):
    max_q = int((cu_q[1:] - cu_q[:-1]).max())
    max_k = int((cu_k[1:] - cu_k[:-1]).max())
    out, lse = fa.flash_attn_block_forward(q, k, v, cu_q, cu_k, max_q, causal, scale)
    delta = fa.attention_delta(out, dout)
    grads = fa.flash_attn_block_backward(
        dout, q, k, v, lse, delta, cu_q, cu_k, max_q, max_k, causal, scale, deterministic=deterministic
    )
    return out, lse, grads


def _assert_matches(got, want, rel=1e-4, what=""):
    out, lse, grads = got
    ref_out, ref_lse, ref_grads = want
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref_out, *ref_grads)):
        assert torch.isfinite(a).all(), f"{what} {name}: {int((~torch.isfinite(a)).sum())} non-finite values"
        scale = max(1.0, b.abs().max().item())
        err = (a.double() - b).abs().max().item()
        assert err <= rel * scale, f"{what} {name}: max abs error {err:.3g} > {rel * scale:.3g}"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), f"{what} lse: -inf rows differ"
    assert (lse[finite].double() - ref_lse[finite]).abs().max().item() <= rel * max(1.0, ref_lse[finite].abs().max())


def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sign", [-1.0, 1.0], ids=["scores_-144", "scores_+144"])
def test_noncausal_partial_key_tile_extreme_scores(mode, sign):
    """Non-causal (every ring step after the first), 40 keys (a partial second 32-key tile), scores ~ -144 (LSE far
    below fp32's exp range: padding keys got P = exp2(-lse2) = inf, and dQ = inf x 0 = NaN) and ~ +144."""
    cu_q, cu_k = _cu([24]), _cu([40])
    q, k, v, dout = _tensors(24, 40, 2, 1, 16, seed=1)
    e = torch.full((16,), 0.25)  # unit vector: q.k gains sign * 24^2, times the 0.25 scale
    q, k = q + 24.0 * e, k + sign * 24.0 * e
    want = _reference(q, k, v, dout, cu_q, cu_k, False, 0.25)
    assert want[1].abs().min() > 88.7  # |LSE| beyond fp32's exp range: the adversarial case
    _assert_matches(_run_blocks(q, k, v, dout, cu_q, cu_k, False, 0.25, MODES[mode]), want, what=mode)


@pytest.mark.parametrize(
    "sq,sk,causal,mode",
    [
        (45, 77, False, "fused_dq"),  # queries and keys both ragged, seq_q < seq_k
        (77, 45, False, "deterministic"),  # seq_q > seq_k
        (77, 45, True, "fused_dq"),  # causal, bottom-right: the first 32 query rows see no key
    ],
)
def test_lengths_not_tile_multiples(sq, sk, causal, mode):
    q, k, v, dout = _tensors(sq, sk, 4, 2, 16, seed=sq + sk)
    cu_q, cu_k = _cu([sq]), _cu([sk])
    want = _reference(q, k, v, dout, cu_q, cu_k, causal, 0.25)
    _assert_matches(_run_blocks(q, k, v, dout, cu_q, cu_k, causal, 0.25, MODES[mode]), want, what=mode)


@pytest.mark.parametrize("mode", MODES)
def test_rows_with_no_visible_key_noncausal(mode):
    """A document with queries but no keys (non-causal): zero output, -inf LSE, zero dQ; neighbours unaffected."""
    cu_q, cu_k = _cu([20, 13, 30]), _cu([37, 0, 9])
    q, k, v, dout = _tensors(63, 46, 2, 2, 16, seed=4, shift=20.0)
    got = _run_blocks(q, k, v, dout, cu_q, cu_k, False, 0.25, MODES[mode])
    _assert_matches(got, _reference(q, k, v, dout, cu_q, cu_k, False, 0.25), what=mode)
    assert torch.isneginf(got[1][:, 20:33]).all() and torch.equal(got[0][20:33], torch.zeros_like(got[0][20:33]))
    assert torch.equal(got[2][0][20:33], torch.zeros_like(got[2][0][20:33]))


# every (BLOCK_M, BLOCK_N) of the Hopper autotune space, taken from autotune.hopper_configs (all kernels, all dims)
TILE_PAIRS = sorted(
    {
        (c.block_m, c.block_n)
        for kind in fa.AOT_KERNELS
        for hd in fa.SUPPORTED_HEAD_DIMS
        for c in autotune.hopper_configs(kind, hd)
    }
)
FAST_PAIR = (64, 128)  # the d=128 backward tile; the other pairs run with -m slow


@pytest.mark.parametrize(
    "tiles",
    [pytest.param(p, marks=() if p == FAST_PAIR else pytest.mark.slow, id=f"{p[0]}x{p[1]}") for p in TILE_PAIRS],
)
def test_autotune_tile_pairs_packed_documents(tiles, monkeypatch):
    """Packed documents whose boundaries fall inside every tile size (70, 1, 100, 45 tokens), causal, GQA 2, with the
    tile pair forced on the interpreter: forward, fused and deterministic backward against the reference."""
    assert len(TILE_PAIRS) == 6  # BM 64/128 x BN 32/64/128
    forced = fa.KernelConfig(tiles[0], tiles[1], 4, 1)
    monkeypatch.setattr(attention_config, "INTERPRETER_CONFIG", forced)  # the tile table lives there
    cu = _cu([70, 1, 100, 45])
    q, k, v, dout = _tensors(216, 216, 2, 1, 16, seed=7)
    assert fa.kernel_config("bwd_fused", 16, q.device) == forced  # the launcher really runs the forced pair
    docs = doc_ids_from_cu(cu)
    qr, kr, vr = (t.double()[None].requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = reference_attention(qr, kr, vr, True, softmax_scale=0.25, doc_ids=docs)
    ref_grads = [g[0] for g in torch.autograd.grad(ref_out, (qr, kr, vr), dout.double()[None])]
    want = (ref_out[0].detach(), ref_lse[0].detach(), ref_grads)
    out, lse = fa.flash_attn_block_forward(q, k, v, cu, cu, 100, True, 0.25)
    delta = fa.attention_delta(out, dout)
    for mode, deterministic in MODES.items():
        grads = fa.flash_attn_block_backward(dout, q, k, v, lse, delta, cu, cu, 100, 100, True, 0.25, deterministic)
        _assert_matches((out, lse, grads), want, what=f"{tiles} {mode}")
