"""Triton flash attention (interpreter on CPU) and the torch block backend vs an independent torch reference."""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.kernels import attention_config
from megatron_agentic.kernels import flash_attention as fa
from megatron_agentic.kernels import torch_attention as ta
from megatron_agentic.testing import faults
from tests.kernels.kernel_test_reference import deterministic_algorithms, doc_ids_from_cu, reference_attention

# dtype -> (forward atol, gradient atol); bf16 is not tested under the interpreter (its bf16 arithmetic is wrong):
# test_compiled_kernels_on_gpu checks bf16 against torch SDPA's own bf16 error.
TOLERANCES = {torch.float32: (2e-5, 1e-4), torch.float16: (3e-3, 2e-2)}
if torch.cuda.is_available():
    TOLERANCES[torch.bfloat16] = (2e-2, 6e-2)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b, sq, sk, h, hk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g).to(device=DEVICE, dtype=dtype).requires_grad_(True)  # noqa: E731
    return mk(b, sq, h, d), mk(b, sk, hk, d), mk(b, sk, hk, d), torch.randn(b, sq, h, d, generator=g).to(DEVICE, dtype)


def _grads(out, q, k, v, dout):
    return torch.autograd.grad(out, (q, k, v), dout)


def _assert_close(name, got, want, atol):
    err = (got.double().cpu() - want.double().cpu()).abs().max().item()
    assert err <= atol, f"{name}: max abs error {err:.3g} > {atol:.3g}"


@pytest.mark.parametrize(
    "b,sq,sk,h,hk,d,causal",
    [
        (2, 37, 37, 4, 4, 32, True),  # GQA 1, odd length, two batch rows
        (1, 77, 77, 8, 2, 64, True),  # GQA 4
        (1, 50, 50, 8, 1, 16, False),  # GQA 8, non-causal
        (1, 21, 45, 2, 1, 32, True),  # seq_q < seq_k: bottom-right causal alignment
    ],
)
def test_triton_matches_reference_fp32(b, sq, sk, h, hk, d, causal):
    q, k, v, dout = _inputs(b, sq, sk, h, hk, d, torch.float32)
    out, lse = fa.flash_attn_func(q, k, v, causal=causal, return_lse=True)
    ref_out, ref_lse = reference_attention(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), causal)
    atol, gtol = TOLERANCES[torch.float32]
    assert out.shape == q.shape and lse.shape == (b, h, sq) and lse.dtype == torch.float32
    _assert_close("out", out, ref_out, atol)
    _assert_close("lse", lse, ref_lse, atol)
    qr, kr, vr = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    ref_g = _grads(reference_attention(qr, kr, vr, causal)[0], qr, kr, vr, dout.cpu().double())
    for name, got, want in zip(("dq", "dk", "dv"), _grads(out, q, k, v, dout), ref_g):
        _assert_close(name, got, want, gtol)


@pytest.mark.parametrize("dtype", [dt for dt in TOLERANCES if dt != torch.float32])
def test_triton_half_precision(dtype):
    q, k, v, dout = _inputs(1, 45, 45, 4, 2, 32, dtype, seed=3)
    out = fa.flash_attn_func(q, k, v, causal=True, softmax_scale=0.2)
    assert out.dtype == dtype
    qr, kr, vr = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    ref_out, _ = reference_attention(qr, kr, vr, True, softmax_scale=0.2)
    atol, gtol = TOLERANCES[dtype]
    _assert_close("out", out, ref_out, atol)
    ref_g = _grads(ref_out, qr, kr, vr, dout.cpu().double())
    for name, got, want in zip(("dq", "dk", "dv"), _grads(out, q, k, v, dout), ref_g):
        assert got.dtype == dtype
        _assert_close(name, got, want, gtol)


@pytest.mark.parametrize("lengths", [[53], [17, 40, 1, 33]])
def test_triton_packed_documents(lengths):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    total = int(cu[-1])
    q, k, v, dout = _inputs(1, total, total, 4, 2, 32, torch.float32, seed=len(lengths))
    out, lse = fa.flash_attn_func(
        q[0], k[0], v[0], causal=True, cu_seqlens=cu.to(DEVICE), max_seqlen=max(lengths), return_lse=True
    )
    docs = doc_ids_from_cu(cu)
    ref_out, ref_lse = reference_attention(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), True, doc_ids=docs)
    atol, gtol = TOLERANCES[torch.float32]
    _assert_close("out", out, ref_out[0], atol)
    _assert_close("lse", lse, ref_lse[0], atol)
    qr, kr, vr = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    ref_g = _grads(reference_attention(qr, kr, vr, True, doc_ids=docs)[0], qr, kr, vr, dout.cpu().double())
    for name, got, want in zip(("dq", "dk", "dv"), _grads(out, q, k, v, dout[0]), ref_g):
        _assert_close(name, got, want[0], gtol)


def test_packed_documents_do_not_attend_across_boundaries():
    """Changing document 0's keys must leave document 1's outputs bit-identical."""
    cu = torch.tensor([0, 20, 45], dtype=torch.int32)
    q, k, v, _ = _inputs(1, 45, 45, 2, 1, 16, torch.float32, seed=7)
    q, k, v = q[0].detach(), k[0].detach(), v[0].detach()
    out1 = fa.flash_attn_func(q, k, v, cu_seqlens=cu)
    k2, v2 = k.clone(), v.clone()
    k2[:20] += 5.0
    v2[:20] -= 3.0
    out2 = fa.flash_attn_func(q, k2, v2, cu_seqlens=cu)
    assert torch.equal(out1[20:], out2[20:])
    assert not torch.allclose(out1[:20], out2[:20])


@pytest.mark.parametrize("causal", [True, False])
def test_torch_block_backend_matches_reference(causal):
    """The CPU block backend used by the ring (packed, GQA 4, uneven documents) against the reference."""
    cu = torch.tensor([0, 9, 40, 41, 64], dtype=torch.int32)
    q, k, v, dout = _inputs(1, 64, 64, 8, 2, 16, torch.float32, seed=11)
    q, k, v, dout = q[0].detach(), k[0].detach(), v[0].detach(), dout[0]
    out, lse = ta.torch_block_forward(q.cpu(), k.cpu(), v.cpu(), cu, cu, 31, causal, 0.3)
    docs = doc_ids_from_cu(cu)
    qr, kr, vr = (t.cpu().double()[None].requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = reference_attention(qr, kr, vr, causal, softmax_scale=0.3, doc_ids=docs)
    _assert_close("out", out, ref_out[0], 2e-5)
    _assert_close("lse", lse, ref_lse[0], 2e-5)
    delta = fa.attention_delta(out, dout.cpu())
    grads = ta.torch_block_backward(dout.cpu(), q.cpu(), k.cpu(), v.cpu(), lse, delta, cu, cu, 31, 31, causal, 0.3)
    ref_g = _grads(ref_out, qr, kr, vr, dout.cpu().double()[None])
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_g):
        assert got.dtype == torch.float32
        _assert_close(name, got, want[0], 1e-4)


def test_bad_inputs_raise_clear_errors():
    q = torch.randn(1, 8, 3, 16)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        fa.flash_attn_func(q, torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 16))
    with pytest.raises(ValueError, match="head dim 24"):
        fa.flash_attn_func(torch.randn(1, 8, 2, 24), torch.randn(1, 8, 2, 24), torch.randn(1, 8, 2, 24))
    with pytest.raises(ValueError, match="cu_seqlens"):
        fa.flash_attn_func(q[0], q[0], q[0], cu_seqlens=torch.tensor([0, 5], dtype=torch.int32))


def _sdpa_packed(q, k, v, dout, cu, causal, dtype):
    """torch SDPA per document in ``dtype`` (out, dq, dk, dv in fp32): the reference in fp32, a peer in bf16/fp16."""
    outs, grads = [], [torch.zeros(t.shape, device=t.device, dtype=torch.float32) for t in (q, k, v)]
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (t[a:b].detach().to(dtype).transpose(0, 1).requires_grad_(True) for t in (q, k, v))
        o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=True)
        gs = torch.autograd.grad(o, (qs, ks, vs), dout[a:b].to(dtype).transpose(0, 1))
        outs.append(o.transpose(0, 1).float())
        for acc, gr in zip(grads, gs):
            acc[a:b] = gr.transpose(0, 1).float()
    return [torch.cat(outs), *grads]


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compiled_kernels_on_gpu(dim, dtype, causal):
    """The GPU tile configurations (d=64/128), GQA 8:1, ragged packed documents, causal and not, bf16/fp16, against
    torch SDPA in fp32 on the same rounded inputs. Tolerance: at most twice the error of torch's own SDPA run in the
    same dtype (the rounding of P and dS to bf16/fp16 is inherent to a half-precision flash attention; being twice
    as far from fp32 as torch's kernels is not), plus 1e-3 of the largest reference value."""
    cu = torch.tensor([0, 300, 1001], dtype=torch.int32, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1001, 16, dim, device="cuda", generator=g).to(dtype).requires_grad_(True)
    k = torch.randn(1001, 2, dim, device="cuda", generator=g).to(dtype).requires_grad_(True)
    v = torch.randn(1001, 2, dim, device="cuda", generator=g).to(dtype).requires_grad_(True)
    dout = torch.randn(1001, 16, dim, device="cuda", generator=g).to(dtype)
    out = fa.flash_attn_func(q, k, v, causal=causal, cu_seqlens=cu)
    ours = [out.float(), *(t.float() for t in _grads(out, q, k, v, dout))]
    ref = _sdpa_packed(q, k, v, dout, cu, causal, torch.float32)
    peer = _sdpa_packed(q, k, v, dout, cu, causal, dtype)
    for name, got, want, other in zip(("out", "dq", "dk", "dv"), ours, ref, peer):
        err, peer_err = (got - want).abs().max().item(), (other - want).abs().max().item()
        bound = 2 * peer_err + 1e-3 * want.abs().max().item()
        assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g} (torch SDPA in {dtype}: {peer_err:.3g})"


def _check_against_reference(q, k, v, dout, causal, rows=slice(None)):
    """Forward, LSE and gradients vs the float64 reference; query rows outside ``rows`` must see no key."""
    out, lse = fa.flash_attn_func(q, k, v, causal=causal, return_lse=True)
    grads = _grads(out, q, k, v, dout)
    qr, kr, vr = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    ref_out, ref_lse = reference_attention(qr[:, rows], kr, vr, causal)
    ref_g = torch.autograd.grad(ref_out, (qr, kr, vr), dout.cpu().double()[:, rows])
    atol, gtol = TOLERANCES[torch.float32]
    _assert_close("out", out[:, rows], ref_out, atol)
    _assert_close("lse", lse[:, :, rows], ref_lse, atol)
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_g):
        _assert_close(name, got, want, gtol)
    return out, lse, grads


@pytest.mark.parametrize("deterministic", [False, True], ids=["fused_dq", "deterministic"])
def test_gpu_tile_configs_head_dim_128(deterministic):
    """The H100 tiles (fwd 128x64, backward per GPU_CONFIGS) at head dim 128, GQA 3, ragged tail, both backwards."""
    q, k, v, dout = _inputs(1, 136, 136, 3, 1, 128, torch.float32, seed=5)
    with fa.gpu_configs_on_cpu(), deterministic_algorithms(deterministic):
        assert fa.kernel_config("fwd", 128, q.device) == fa.GPU_CONFIGS[("fwd", 128)]
        _check_against_reference(q, k, v, dout, causal=True)


@pytest.mark.parametrize("deterministic", [False, True], ids=["fused_dq", "deterministic"])
def test_rows_without_visible_keys(deterministic):
    """Causal with seq_q > seq_k: the first seq_q - seq_k query rows see no key -> zero output, lse -inf, zero dQ."""
    sq, sk = 72, 30
    q, k, v, dout = _inputs(2, sq, sk, 6, 2, 32, torch.float32, seed=9)  # GQA 3
    with deterministic_algorithms(deterministic):
        out, lse, (dq, _, _) = _check_against_reference(q, k, v, dout, causal=True, rows=slice(sq - sk, None))
    blind = slice(0, sq - sk)
    assert torch.equal(out[:, blind], torch.zeros_like(out[:, blind]))
    assert torch.isneginf(lse[:, :, blind]).all()
    assert torch.equal(dq[:, blind], torch.zeros_like(dq[:, blind]))


def test_fused_and_deterministic_backward_agree():
    """The 5-matmul backward (atomics) and the deterministic one give the same gradients; GQA 3, packed documents."""
    cu = torch.tensor([0, 33, 34, 90], dtype=torch.int32)
    q, k, v, dout = _inputs(1, 90, 90, 3, 1, 16, torch.float32, seed=13)
    q, k, v, dout = q[0], k[0], v[0], dout[0]
    results = []
    for deterministic in (False, True):
        with deterministic_algorithms(deterministic):
            out = fa.flash_attn_func(q, k, v, cu_seqlens=cu)
            results.append(_grads(out, q, k, v, dout))
    for name, a, b in zip(("dq", "dk", "dv"), *results):
        _assert_close(name, a, b, 1e-5)


def test_grid_limits_are_checked_not_overflowed():
    """Segments x heads go on grid axis x (no 65,535 cap); only tiles per segment are bounded, with a clear error."""
    assert attention_config.launch_grid(100_000, 32, 8192, 64) == (3_200_000, 128)
    with pytest.raises(ValueError, match="grid limit 65535"):
        attention_config.launch_grid(1, 32, 65_536 * 16 + 1, 16)


def test_autotuned_launch_path(monkeypatch):
    """The CUDA path through ``triton.autotune`` (grid from META, key arguments) driven under the interpreter with
    one candidate (the interpreter cannot benchmark several), fused backward included."""
    from megatron_agentic.kernels import autotune

    autotune.autotuned_kernel.cache_clear()
    monkeypatch.setattr(autotune, "hopper_configs", lambda kind, head_dim: [fa.INTERPRETER_CONFIG])
    monkeypatch.setitem(faults.FORCED, faults.AUTOTUNE_ANYWHERE, True)
    try:
        q, k, v, dout = _inputs(1, 40, 40, 3, 1, 16, torch.float32, seed=21)
        with deterministic_algorithms(False):
            _check_against_reference(q, k, v, dout, causal=True)
    finally:
        autotune.autotuned_kernel.cache_clear()


def test_hopper_autotune_space_is_pruned():
    from megatron_agentic.kernels import autotune

    for kind in fa.AOT_KERNELS:
        for head_dim in fa.SUPPORTED_HEAD_DIMS:
            configs = autotune.hopper_configs(kind, head_dim)
            assert configs[0] == fa.gpu_config(kind, head_dim)  # the AOT-checked one is always a candidate
            assert len(configs) == len(set(configs)) and len(configs) > 1, (kind, head_dim)
            for cfg in configs[1:]:
                assert not (cfg.num_warps == 8 and cfg.block_m * cfg.block_n < 128 * 128), cfg
                rows = cfg.block_n if kind.startswith("bwd_") and kind != "bwd_dq" else cfg.block_m
                assert rows >= 16 * cfg.num_warps, (kind, cfg)
                assert autotune.smem_estimate(kind, head_dim, cfg) <= 227 * 1024
    # the estimate reproduces the compile metadata of kernels/README.md's table (to within its 0.5 KiB extras)
    assert autotune.smem_estimate("fwd", 128, fa.KernelConfig(128, 64, 8, 3)) == 128 * 1024
    assert autotune.smem_estimate("bwd_fused", 128, fa.KernelConfig(64, 128, 8, 2)) == 160 * 1024
    assert autotune.smem_estimate("bwd_dq", 128, fa.KernelConfig(128, 64, 8, 2)) == 128 * 1024
    assert not autotune.enabled(torch.device("cpu"))


@pytest.mark.parametrize("deterministic", [False, True], ids=["fused_dq", "deterministic"])
def test_backward_accumulates_dq_in_place(deterministic):
    """``dq_accum``: the kernels add dQ into the caller's running fp32 buffer (what the ring passes)."""
    cu = fa.uniform_cu_seqlens(1, 40, torch.device(DEVICE))
    q, k, v, dout = (t[0].detach() for t in _inputs(1, 40, 40, 3, 1, 16, torch.float32, seed=17))
    out, lse = fa.flash_attn_block_forward(q, k, v, cu, cu, 40, True, 0.25)
    delta = fa.attention_delta(out, dout)
    args = (dout, q, k, v, lse, delta, cu, cu, 40, 40, True, 0.25, deterministic)
    dq, dk, dv = fa.flash_attn_block_backward(*args)
    running = torch.full_like(dq, 0.5)
    dq2, dk2, dv2 = fa.flash_attn_block_backward(*args, dq_accum=running)
    assert dq2 is running
    _assert_close("dq", running, dq + 0.5, 1e-6)
    _assert_close("dk", dk2, dk, 1e-6)
    _assert_close("dv", dv2, dv, 1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_max_seqlen_is_checked_against_cu_seqlens(backend):
    """Documents of 10 and 70 tokens with ``max_seqlen=10``: the grid would cover 10 rows of the 70-token document
    and leave the rest of ``torch.empty`` unwritten; refused with the document named. Omitted: computed."""
    cu = torch.tensor([0, 10, 80], dtype=torch.int32)
    q, k, v, _ = _inputs(1, 80, 80, 2, 1, 16, torch.float32, seed=19)
    q, k, v = q[0].detach(), k[0].detach(), v[0].detach()
    with pytest.raises(
        ValueError, match=r"max_seqlen=10 is smaller than document 1 of cu_seqlens \(70 tokens, 10..80\)"
    ):
        fa.flash_attn_func(q, k, v, cu_seqlens=cu, max_seqlen=10, backend=backend)
    out = fa.flash_attn_func(q, k, v, cu_seqlens=cu, backend=backend)
    ref, _ = reference_attention(q[None], k[None], v[None], True, doc_ids=doc_ids_from_cu(cu))
    _assert_close("out", out, ref[0], TOLERANCES[torch.float32][0])
    with pytest.raises(ValueError, match="non-decreasing"):
        fa.flash_attn_func(q, k, v, cu_seqlens=torch.tensor([0, 50, 40, 80], dtype=torch.int32), backend=backend)


def test_one_head_dim_policy_for_every_backend():
    """Head dim 80 is refused with the same message by the Triton kernels (GPU/interpreter) and the torch block
    backend (CPU training), so a model cannot train on CPU and then fail at its first GPU forward."""
    q = torch.randn(1, 8, 2, 80)
    messages = []
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match="head dim 80 is not supported") as err:
            fa.flash_attn_func(q, q, q, backend=backend)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    for d in fa.SUPPORTED_HEAD_DIMS:
        fa.check_head_dim(d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_delta_kernel(dtype):
    """The Triton delta kernel (what CUDA runs) and the chunked torch path vs float64, ragged token count."""
    g = torch.Generator().manual_seed(23)
    out, dout = (torch.randn(77, 3, 32, generator=g).to(dtype) for _ in range(2))
    want = (out.double() * dout.double()).sum(-1).transpose(0, 1)
    for got in (fa.attention_delta_triton(out, dout), fa.attention_delta(out, dout)):
        assert got.dtype == torch.float32 and got.shape == (3, 77)
        _assert_close("delta", got, want, 1e-5)


def test_attention_delta_makes_no_full_fp32_copy(monkeypatch):
    """The torch path never materialises an fp32 tensor the size of O (the old ``out.float() * dout.float()`` made
    three: ~1.5 GiB at 32K tokens x 32 heads x 128 in bf16)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    biggest = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for t in result if isinstance(result, (tuple, list)) else (result,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                    biggest.append(t.numel())
            return result

    monkeypatch.setattr(fa, "DELTA_TORCH_CHUNK", 64)
    out, dout = (torch.randn(300, 2, 16).to(torch.bfloat16) for _ in range(2))
    with Watch():
        delta = fa.attention_delta(out, dout)
    assert max(biggest) < out.numel() // 2
    _assert_close("delta", delta, (out.double() * dout.double()).sum(-1).transpose(0, 1), 1e-5)
