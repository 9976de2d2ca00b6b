"""Autotuning of the attention kernels: off under deterministic algorithms, accumulation buffers restored outside
the timed trials, the tile choice logged once. Driven under the interpreter with a stand-in benchmark."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import pytest
import torch

from megatron_agentic.kernels import attention_config, autotune
from megatron_agentic.kernels import flash_attention as fa
from megatron_agentic.testing import faults
from tests.kernels.kernel_test_reference import deterministic_algorithms


def test_autotune_off_when_deterministic_algorithms_are_requested(monkeypatch):
    """Tiles chosen by timing differ between processes and change the fp32 summation order: deterministic mode
    must use the fixed configurations."""
    monkeypatch.setattr(attention_config, "is_interpreter", lambda: False)  # as on a GPU machine
    monkeypatch.delenv(autotune.ENV, raising=False)
    cuda = torch.device("cuda")
    with deterministic_algorithms(False):
        assert autotune.enabled(cuda)
    with deterministic_algorithms(True):
        assert not autotune.enabled(cuda)
    monkeypatch.setenv(autotune.ENV, "0")
    assert not autotune.enabled(cuda)
    assert not autotune.enabled(torch.device("cpu"))


@pytest.fixture
def two_candidates(monkeypatch):
    """The autotuned launch path under the interpreter with two candidates and a stand-in benchmark that calls each
    trial twice (a warm-up and a timed call, like ``triton.testing.do_bench``) and prefers the second candidate."""
    trials = []
    real = autotune.autotuned_kernel

    def bench(kernel_call, quantiles):
        kernel_call()
        kernel_call()
        trials.append(len(trials))
        return [float(-len(trials))] * len(quantiles)

    @functools.cache
    def with_bench(kind, head_dim):
        tuned = real.__wrapped__(kind, head_dim)
        tuned._do_bench = bench
        return tuned

    candidates = [fa.KernelConfig(32, 32, 4, 1), fa.KernelConfig(16, 32, 4, 1)]
    monkeypatch.setattr(autotune, "hopper_configs", lambda kind, head_dim: candidates)
    monkeypatch.setattr(autotune, "autotuned_kernel", with_bench)
    monkeypatch.setitem(faults.FORCED, faults.AUTOTUNE_ANYWHERE, True)
    monkeypatch.setattr(autotune, "_LOGGED", set(), raising=False)
    return trials


def _block(seed=29):
    g = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(32, n, 16, generator=g) for n in (2, 1, 1, 2))
    cu = fa.uniform_cu_seqlens(1, 32, q.device)
    return q, k, v, dout, cu


def test_tuning_restores_accumulators_without_a_copy_per_trial(two_candidates, monkeypatch):
    """The fused backward adds into dQ (the ring's running buffer), dK and dV: after tuning they hold exactly one
    launch's contribution, and the buffers were copied once per tuning, not around every timed trial (Triton's
    ``restore_value`` clones them inside each timed call: 4 trials x 3 buffers here)."""
    q, k, v, dout, cu = _block()
    with deterministic_algorithms(False):
        out, lse = fa.flash_attn_block_forward(q, k, v, cu, cu, 32, True, 0.25)
        delta = fa.attention_delta(out, dout)
        monkeypatch.setitem(faults.FORCED, faults.AUTOTUNE_ANYWHERE, False)
        want = fa.flash_attn_block_backward(dout, q, k, v, lse, delta, cu, cu, 32, 32, True, 0.25)
        monkeypatch.setitem(faults.FORCED, faults.AUTOTUNE_ANYWHERE, True)
        clones = []
        real_clone = torch.Tensor.clone

        def counting_clone(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            clones.append((self.numel(), f"{Path(caller.co_filename).name}:{caller.co_name}"))
            return real_clone(self, *args, **kwargs)

        running = torch.full_like(q, 0.5)
        before = len(two_candidates)
        monkeypatch.setattr(torch.Tensor, "clone", counting_clone)
        dq, dk, dv = fa.flash_attn_block_backward(
            dout, q, k, v, lse, delta, cu, cu, 32, 32, True, 0.25, dq_accum=running
        )
        monkeypatch.setattr(torch.Tensor, "clone", real_clone)
    assert len(two_candidates) - before == 2  # both candidates were timed
    # copies made by the tuning machinery (ours, or Triton's restore_value); other code may clone for its own reasons
    tuning = [c for c in clones if c[1].split(":")[0] in ("autotune.py", "autotuner.py")]
    assert len(tuning) <= 3, f"{len(tuning)} buffer copies during one tuning: {clones}"
    assert dq is running
    assert (running - (want[0] + 0.5)).abs().max().item() < 1e-5
    assert (dk - want[1]).abs().max().item() < 1e-5 and (dv - want[2]).abs().max().item() < 1e-5


def test_tile_choice_logged_once(two_candidates, caplog):
    """Which tiles a kernel runs with is logged, once per (kernel, head dim, key), not per call."""
    q, k, v, dout, cu = _block()
    with caplog.at_level(logging.INFO, logger=autotune.__name__):
        for _ in range(2):
            fa.flash_attn_block_forward(q, k, v, cu, cu, 32, True, 0.25)
    records = [r.getMessage() for r in caplog.records if "attention kernel fwd" in r.getMessage()]
    assert len(records) == 1, records
    assert "BLOCK_M=16 BLOCK_N=32" in records[0] and "autotuned" in records[0]  # the stand-in prefers candidate 2
