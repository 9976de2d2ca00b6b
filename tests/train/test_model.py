"""Model pieces: SP-capable RMSNorm, attention backend choice, layer spec, parameter names, LR schedules."""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap

import pytest
import torch

from megatron_agentic.config import load_config
from tests.support.lazy import lazy_import
from tests.support.zygote import run_command

# megatron-core is imported when a test runs, not when the suite is collected
_mcore = lazy_import("megatron.core.transformer.transformer_config")
_norm = lazy_import("megatron_agentic.models.qwen3_moe.norm")
_spec = lazy_import("megatron_agentic.models.qwen3_moe.spec")
_builders = lazy_import("megatron_agentic.training.builders")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tconfig(**kw):
    base = dict(
        num_layers=1, hidden_size=16, num_attention_heads=2, normalization="RMSNorm", use_cpu_initialization=True
    )
    base.update(kw)
    return _mcore.TransformerConfig(**base)


def test_sp_rmsnorm_matches_torch_rmsnorm_forward_and_backward():
    torch.manual_seed(0)
    norm = _norm.SequenceParallelRMSNorm(_tconfig(), 16, eps=1e-6)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        w = torch.randn(16)
        norm.weight.copy_(w)
        ref.weight.copy_(w)
    x = torch.randn(5, 3, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = norm(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(norm.weight.grad, ref.weight.grad)
    # bf16 input is normalised in fp32 and returned in bf16.
    yb = norm(x.detach().bfloat16())
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), y_ref.detach(), atol=3e-2, rtol=3e-2)


def test_sp_rmsnorm_marks_weight_for_tensor_parallel_grad_reduction():
    norm = _norm.SequenceParallelRMSNorm(_tconfig(tensor_model_parallel_size=2, sequence_parallel=True), 16)
    assert norm.weight.sequence_parallel is True
    assert _norm.SequenceParallelRMSNorm(_tconfig(), 16).weight.sequence_parallel is False


def test_attention_backend_resolution():
    assert _spec.resolve_attention_backend("auto", 1, te_available=False) == "local"
    assert _spec.resolve_attention_backend("auto", 2, te_available=False) == "triton"
    assert _spec.resolve_attention_backend("auto", 2, te_available=True) == "te"
    with pytest.raises(ValueError, match="needs Transformer Engine"):
        _spec.resolve_attention_backend("te", 1, te_available=False)
    with pytest.raises(ValueError, match="cannot run parallel.context > 1"):
        _spec.resolve_attention_backend("local", 2, te_available=False)


def test_local_spec_swaps_norms_and_attention():
    spec = _spec.qwen3_moe_layer_spec("local", num_experts=4)
    sub = spec.submodules
    assert sub.input_layernorm is _norm.SequenceParallelRMSNorm  # fused into linear_qkv in the TE spec: no extra state
    # the TE spec's TENorm positions carry TE's _extra_state (checkpoints hold the objects the TE model requests)
    assert (
        sub.pre_mlp_layernorm is _norm.ExtraStateRMSNorm
        and sub.self_attention.submodules.q_layernorm is _norm.ExtraStateRMSNorm
    )
    assert (
        issubclass(_norm.ExtraStateRMSNorm, _norm.SequenceParallelRMSNorm)
        and _norm.ExtraStateRMSNorm(_tconfig(), 16).state_dict()["_extra_state"] is None
    )
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    assert sub.self_attention.submodules.core_attention is DotProductAttention
    triton_spec = _spec.qwen3_moe_layer_spec("triton", num_experts=4, init_seed=3)
    from megatron_agentic.kernels.megatron_attention import TritonAttention

    assert triton_spec.submodules.self_attention.submodules.core_attention is TritonAttention
    assert triton_spec.params["init_seed"] == 3


BUILD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from megatron_agentic.config import load_config
    from megatron_agentic.platform import setup_platform
    from megatron_agentic.training.builders import init_distributed
    from megatron_agentic.models.qwen3_moe.model import build_model
    cfg = load_config(None, ["model.num_layers=2", "model.vocab_size=512"])
    plat = setup_platform()
    init_distributed(cfg, plat)
    model = build_model(cfg)
    print(json.dumps({n: list(p.shape) for n, p in model.named_parameters()}))
    """
)


@pytest.mark.slow
def test_parameter_names_are_standard_megatron_core():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    out = run_command([sys.executable, "-c", BUILD_SCRIPT], cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shapes = json.loads(out.stdout.strip().splitlines()[-1])
    # tiny-moe: hidden 64, 4 heads x 16, 2 KV groups, 4 experts with FFN 64 (SwiGLU -> fc1 rows 2*64).
    expected = {
        "embedding.word_embeddings.weight": [512, 64],
        "decoder.layers.0.input_layernorm.weight": [64],
        "decoder.layers.0.self_attention.linear_qkv.weight": [(4 + 2 * 2) * 16, 64],
        "decoder.layers.0.self_attention.q_layernorm.weight": [16],
        "decoder.layers.0.self_attention.k_layernorm.weight": [16],
        "decoder.layers.0.self_attention.linear_proj.weight": [64, 64],
        "decoder.layers.0.pre_mlp_layernorm.weight": [64],
        "decoder.layers.0.mlp.router.weight": [4, 64],
        "decoder.layers.1.mlp.experts.local_experts.3.linear_fc1.weight": [128, 64],
        "decoder.layers.1.mlp.experts.local_experts.3.linear_fc2.weight": [64, 64],
        "decoder.final_layernorm.weight": [64],
        "output_layer.weight": [512, 64],
    }
    for name, shape in expected.items():
        assert shapes.get(name) == shape, (name, shapes.get(name))
    assert not any("bias" in n for n in shapes)  # Qwen3-MoE has no biases
    assert len([n for n in shapes if "local_experts" in n]) == 2 * 4 * 2


def _lr_sequence(overrides, n):
    cfg = load_config(None, overrides)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = _builders.build_scheduler(cfg, opt, total_iters=n)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step(increment=1)
    return lrs


def test_cosine_schedule_matches_formula():
    lrs = _lr_sequence(["train.lr=1.0", "train.min_lr=0.1", "train.lr_warmup_iters=4"], 20)
    for step, lr in enumerate(lrs):
        if step <= 4:
            expected = step / 4
        else:
            ratio = (step - 4) / (20 - 4)
            expected = 0.1 + 0.5 * (1 + math.cos(math.pi * ratio)) * 0.9
        assert lr == pytest.approx(expected, abs=1e-9), step


def test_wsd_schedule_is_flat_then_decays():
    lrs = _lr_sequence(
        [
            "train.lr=1.0",
            "train.min_lr=0.0",
            "train.lr_warmup_iters=2",
            "train.lr_schedule=wsd",
            "train.wsd_decay_fraction=0.25",
            "train.wsd_decay_style=linear",
        ],
        20,
    )
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert lrs[3:15] == pytest.approx([1.0] * 12)  # stable phase
    for step in range(15, 20):
        assert lrs[step] == pytest.approx(1.0 - (step - 15) / 5, abs=1e-9)


class _StubGroup:
    def __init__(self, rank: int, size: int) -> None:
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


@pytest.mark.parametrize("cp", [2, 4])
def test_context_parallel_split_matches_megatron_rope_and_kernels_zigzag(cp):
    from megatron.core.models.common.embeddings.rope_utils import get_pos_emb_on_this_cp_rank

    from megatron_agentic import platform
    from megatron_agentic.kernels.ring_attention import zigzag_split
    from megatron_agentic.training.data import split_for_context_parallel

    seq = 8 * cp
    positions = torch.arange(seq).repeat(2, 1)  # [b, s]
    batch = {
        "tokens": positions + 100,
        "labels": positions + 1,
        "loss_mask": torch.ones(2, seq),
        "position_ids": positions,
    }
    try:
        platform.activate_cpu_redirections()  # megatron's RoPE slicing pins memory and calls .cuda()
        for rank in range(cp):
            shard = split_for_context_parallel(dict(batch, attention_mask=None), rank, cp)
            chunk = seq // (2 * cp)
            expected = list(range(rank * chunk, (rank + 1) * chunk)) + list(
                range((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk)
            )
            assert shard["position_ids"][0].tolist() == expected
            assert torch.equal(shard["tokens"], zigzag_split(batch["tokens"], 1, rank, cp))
            rope = get_pos_emb_on_this_cp_rank(torch.arange(seq).view(seq, 1, 1, 1), 0, _StubGroup(rank, cp))
            assert rope.view(-1).tolist() == expected  # RoPE positions line up with the token shard
            assert shard["attention_mask"] is None
    finally:
        platform.deactivate_cpu_redirections()
