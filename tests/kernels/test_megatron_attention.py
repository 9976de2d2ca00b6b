"""``TritonAttention`` as megatron-core ``core_attention``: equal to megatron's own DotProductAttention."""

from __future__ import annotations

import pytest

from tests.kernels import kernel_megatron_worker
from tests.support import zygote


@pytest.mark.slow
@pytest.mark.parametrize("cp,backend", [(1, None), (2, None), (1, "triton"), (2, "triton")])
def test_triton_attention_matches_dot_product_attention(cp, backend, tmp_path):
    """Default block backend (torch on CPU) and the Triton kernels (interpreter), without and with the CP ring."""
    zygote.spawn(kernel_megatron_worker.worker, (cp, str(tmp_path / "init"), backend), cp)


def test_refuses_unsupported_features():
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_agentic.kernels.megatron_attention import TritonAttention

    cfg, _ = kernel_megatron_worker._configs(1)
    cfg.attention_dropout = 0.1
    with pytest.raises(ValueError, match="attention dropout"):
        TritonAttention(cfg, 1, AttnMaskType.causal, "self", pg_collection=object())


def test_refuses_unsupported_head_dim_at_build_time():
    """kv_channels 80 trains nowhere with these kernels: refused when the module is built, on CPU as on GPU, with the
    kernels' own message (before, the CPU torch path trained it and the first GPU forward failed)."""
    import types

    from megatron.core.transformer.enums import AttnMaskType

    from megatron_agentic.kernels.megatron_attention import TritonAttention

    cfg, _ = kernel_megatron_worker._configs(1)
    cfg.kv_channels = 80
    with pytest.raises(ValueError, match="head dim 80 is not supported by the Triton attention kernels"):
        TritonAttention(cfg, 1, AttnMaskType.causal, "self", pg_collection=types.SimpleNamespace(tp=None, cp=None))


def test_packed_thd_sequences_match_reference():
    """``thd`` inputs with ``PackedSeqParams``: per-document causal attention, ``[t, heads * d]`` output."""
    import types

    import torch
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_agentic.kernels.megatron_attention import TritonAttention
    from tests.kernels.kernel_test_reference import doc_ids_from_cu, reference_attention

    cfg, _ = kernel_megatron_worker._configs(1)
    pgs = types.SimpleNamespace(tp=None, cp=None)
    attn = TritonAttention(cfg, 1, AttnMaskType.causal, "self", pg_collection=pgs, block_backend="torch")
    cu = torch.tensor([0, 7, 30, 41], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=23, max_seqlen_kv=23)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(41, n, 16, generator=g) for n in (8, 2, 2))
    out = attn(q, k, v, attention_mask=None, packed_seq_params=params)
    ref, _ = reference_attention(q[None], k[None], v[None], True, doc_ids=doc_ids_from_cu(cu))
    assert out.shape == (41, 8 * 16)
    assert (out - ref[0].reshape(41, -1)).abs().max().item() < 1e-5


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_packed_thd_with_cp_padding(backend):
    """``cu_seqlens_q_padded`` documents longer than ``max_seqlen_q``: every padded row is computed (the grid follows
    the padded lengths), real rows never see padding, and the result equals per-padded-document attention."""
    import types

    import torch
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_agentic.kernels.megatron_attention import TritonAttention
    from tests.kernels.kernel_test_reference import doc_ids_from_cu, reference_attention

    cfg, _ = kernel_megatron_worker._configs(1)
    pgs = types.SimpleNamespace(tp=None, cp=None)
    attn = TritonAttention(cfg, 1, AttnMaskType.causal, "self", pg_collection=pgs, block_backend=backend)
    cu = torch.tensor([0, 30, 33], dtype=torch.int32)
    cu_pad = torch.tensor([0, 36, 40], dtype=torch.int32)  # 36 > 32: a second interpreter tile the real max misses
    params = PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, cu_seqlens_q_padded=cu_pad, cu_seqlens_kv_padded=cu_pad,
        max_seqlen_q=30, max_seqlen_kv=30,
    )  # fmt: skip
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(40, n, 16, generator=g) for n in (8, 2, 2))
    out = attn(q, k, v, attention_mask=None, packed_seq_params=params)
    ref, _ = reference_attention(q[None], k[None], v[None], True, doc_ids=doc_ids_from_cu(cu_pad))
    assert out.shape == (40, 8 * 16)
    assert torch.isfinite(out).all()
    assert (out - ref[0].reshape(40, -1)).abs().max().item() < 1e-5
