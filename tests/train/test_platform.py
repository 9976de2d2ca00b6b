"""Platform layer: CPU redirections do what they claim, are undone, fail loudly, and stay off on CUDA."""

from __future__ import annotations

import pytest
import torch

from megatron_agentic import platform


@pytest.fixture(autouse=True)
def _clean_redirections():
    platform.deactivate_cpu_redirections()
    yield
    platform.deactivate_cpu_redirections()


def test_cpu_redirections_active_and_undone(monkeypatch):
    monkeypatch.delenv("MEGATRON_AGENTIC_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    original_current_device = torch.cuda.current_device
    plat = platform.setup_platform()
    assert plat.device_type == "cpu" and plat.backend == "gloo"
    assert set(plat.redirections) == set(platform.REDIRECTIONS)

    # torch.cuda.current_device() and hard-coded device="cuda" factories land on the CPU.
    assert torch.cuda.current_device() == "cpu"
    assert torch.zeros(3, device="cuda").device.type == "cpu"
    assert torch.tensor([1.0], device=torch.device("cuda", 0)).device.type == "cpu"
    assert torch.ones(2).cuda().device.type == "cpu"
    torch.cuda.synchronize()  # no-op instead of "Torch not compiled with CUDA enabled"
    assert torch.empty(2, pin_memory=True).device.type == "cpu"
    # megatron-core's optimizer / clip_grads type checks see CUDA type names.
    assert torch.ones(2).type() == "torch.cuda.FloatTensor"
    assert torch.ones(2, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    # Casting still works as usual.
    assert torch.ones(2).type(torch.float64).dtype == torch.float64

    # megatron-core's causal mask helper (hard-codes device="cuda") now works.
    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(4)
    assert mask.device.type == "cpu"
    assert torch.equal(mask, torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1))

    # moe_utils.te_general_gemm is defined (None) so the router GEMM falls back to torch.
    from megatron.core.transformer.moe import moe_utils

    assert moe_utils.te_general_gemm is None

    platform.deactivate_cpu_redirections()
    assert platform.active_redirections() == ()
    assert torch.cuda.current_device is original_current_device
    assert torch.ones(2).type() == "torch.FloatTensor"


@pytest.mark.skipif(torch.cuda.is_available(), reason="device='cuda' is valid on a GPU machine")
def test_device_mode_suspended_keeps_the_causal_mask_on_the_cpu(monkeypatch):
    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.transformer.utils as transformer_utils

    originals = (transformer_utils.get_default_causal_mask, fused_softmax.get_default_causal_mask)
    monkeypatch.delenv("MEGATRON_AGENTIC_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    platform.setup_platform()
    reference = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    with platform.device_mode_suspended():
        with pytest.raises((AssertionError, RuntimeError)):  # no mapping of device="cuda" inside the block
            torch.zeros(1, device="cuda")
        assert torch.ones(2).type() == "torch.FloatTensor"
        for module in (transformer_utils, fused_softmax):  # what megatron-core's softmax calls
            mask = module.get_default_causal_mask(5)
            assert mask.device.type == "cpu" and torch.equal(mask, reference)
    assert torch.zeros(1, device="cuda").device.type == "cpu"  # the mode is back
    platform.deactivate_cpu_redirections()
    assert (transformer_utils.get_default_causal_mask, fused_softmax.get_default_causal_mask) == originals
    with platform.device_mode_suspended():  # nothing to suspend: a no-op
        assert torch.ones(2).type() == "torch.FloatTensor"


def test_rng_tracker_uses_cpu_generator_states(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    platform.setup_platform()
    from megatron.core.tensor_parallel import random as mrandom

    tracker = mrandom.get_cuda_rng_tracker()
    tracker.add("model-parallel-rng", 123)
    torch.manual_seed(7)
    outside_before = torch.get_rng_state()
    with tracker.fork("model-parallel-rng"):
        inside = torch.rand(5)
    # The forked draw equals a fresh generator seeded 123 (reference), and the default stream is untouched.
    reference = torch.rand(5, generator=torch.Generator().manual_seed(123))
    assert torch.equal(inside, reference)
    assert torch.equal(torch.get_rng_state(), outside_before)
    # A second fork continues the tracked stream.
    with tracker.fork("model-parallel-rng"):
        second = torch.rand(5)
    gen = torch.Generator().manual_seed(123)
    torch.rand(5, generator=gen)
    assert torch.equal(second, torch.rand(5, generator=gen))


def test_inactive_when_cuda_is_reported(monkeypatch):
    monkeypatch.delenv("MEGATRON_AGENTIC_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda idx: calls.append(idx))
    original_current_device = torch.cuda.current_device
    plat = platform.setup_platform(local_rank=0)
    assert plat.device_type == "cuda" and plat.backend == "nccl"
    assert plat.redirections == ()
    assert platform.active_redirections() == ()
    assert calls == [0]
    assert torch.cuda.current_device is original_current_device
    assert torch.ones(2).type() == "torch.FloatTensor"


def test_missing_target_fails_loudly(monkeypatch):
    from megatron.core.tensor_parallel import random as mrandom

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(mrandom, "_get_cuda_rng_state")
    with pytest.raises(RuntimeError, match=r"rng_tracker.*_get_cuda_rng_state.*megatron-core"):
        platform.setup_platform()


def test_alltoall_dispatcher_redirection(monkeypatch):
    """The alltoall dispatcher's CUDA side stream and NumPy split sizes work on CPU, and are undone."""
    import numpy as np
    from megatron.core.transformer.moe import token_dispatcher as td

    monkeypatch.delenv("MEGATRON_AGENTIC_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    original_stream, original_move = torch.cuda.Stream, td.maybe_move_tensor_to_cpu
    plat = platform.setup_platform()
    assert "alltoall_dispatcher" in plat.redirections
    stream = torch.cuda.Stream()
    assert isinstance(stream, platform.CpuStream)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        splits = td.maybe_move_tensor_to_cpu(torch.tensor([3, 5]), as_numpy=True)
    stream.record_event().synchronize()
    assert isinstance(splits, np.ndarray) and splits.tolist() == [3, 5]
    tokens = torch.tensor([1, 2])
    assert td.maybe_move_tensor_to_cpu(tokens) is tokens
    platform.deactivate_cpu_redirections()
    assert torch.cuda.Stream is original_stream and td.maybe_move_tensor_to_cpu is original_move


def test_detect_platform_has_no_side_effects(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plat = platform.detect_platform()
    assert plat.device_type == "cpu" and plat.redirections == () and platform.active_redirections() == ()
    assert not plat.has_transformer_engine and not plat.has_deep_ep and not plat.has_hybrid_ep


def test_manual_gc_collects_at_the_interval(monkeypatch):
    import gc

    from megatron_agentic.training.builders import ManualGC

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(1) or 0)
    manual = ManualGC(True, interval=3)
    try:
        assert not gc.isenabled()
        for iteration in range(1, 8):
            manual.step(iteration)
        assert len(calls) == 1 + 2  # once at start, then at steps 3 and 6
    finally:
        manual.close()
    assert gc.isenabled()
    off = ManualGC(False, interval=1)
    off.step(1)
    assert len(calls) == 3 and gc.isenabled()
