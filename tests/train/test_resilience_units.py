"""Pure decisions behind resilient runs: retention, partial-save cleanup, the step guard, resume rules,
stop requests and the optimizer-format rule (no process groups needed)."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest

from megatron_agentic.config import ConfigError, load_config
from megatron_agentic.training.guard import StepGuard, TooManySkippedSteps
from megatron_agentic.training.stop import StopRequest, job_end_time, walltime_reached
from tests.support.lazy import lazy_import

ckpt = lazy_import("megatron_agentic.training.checkpoint")  # megatron-core: imported when a test runs
resume = lazy_import("megatron_agentic.training.resume")


def _fake_checkpoints(root: Path, iterations: list[int], latest: int | None) -> None:
    for i in iterations:
        d = ckpt.checkpoint_path(root, i)
        d.mkdir(parents=True)
        (d / "metadata.json").write_text("{}")
    if latest is not None:
        ckpt.write_latest_marker(root, latest)


@pytest.mark.parametrize(
    ("iterations", "latest", "keep_last", "keep_every", "deleted"),
    [
        ([10, 20, 30, 40, 50], 50, 2, None, [10, 20, 30]),
        ([10, 20, 30, 40, 50], 50, 2, 20, [10, 30]),
        ([10, 20, 30, 40, 50], 50, None, None, []),
        ([10, 20, 30], 30, 5, None, []),
        # a directory newer than the marker is an interrupted save: never counted or deleted by retention
        ([10, 20, 30, 40], 30, 1, None, [10, 20]),
    ],
)
def test_retention_victims(iterations, latest, keep_last, keep_every, deleted):
    assert ckpt.retention_victims(iterations, latest, keep_last, keep_every) == deleted


def test_prune_and_clean_partial(tmp_path):
    _fake_checkpoints(tmp_path, [2, 4, 6, 8, 10], latest=8)
    assert ckpt.partial_checkpoints(tmp_path) == [10]
    assert ckpt.clean_partial_checkpoints(tmp_path) == [10]
    assert ckpt.prune_checkpoints(tmp_path, keep_last=2, keep_every=4) == [2]  # 6, 8 newest; 4 a milestone
    assert ckpt.checkpoint_iterations(tmp_path) == [4, 6, 8]
    assert ckpt.prune_checkpoints(tmp_path, keep_last=1, keep_every=None) == [4, 6]
    assert ckpt.latest_iteration(tmp_path) == 8
    assert (tmp_path / ckpt.LATEST_FILE).read_text() == "8\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary marker left


def test_clean_partial_without_marker_removes_all(tmp_path):
    _fake_checkpoints(tmp_path, [3], latest=None)
    assert ckpt.clean_partial_checkpoints(tmp_path) == [3]
    assert ckpt.checkpoint_iterations(tmp_path) == []


def test_step_guard_skips_nan_and_spikes_and_stops():
    guard = StepGuard(spike_factor=3.0, window=8, max_in_a_row=2)
    for step, loss in enumerate([5.0, 4.9, 4.8, 4.7, 4.6], start=1):
        verdict = guard.check_loss(loss)
        assert verdict.apply
        guard.record(step, loss, verdict)
    assert guard.check_loss(14.0).apply  # below 3 x median 4.8
    spike = guard.check_loss(15.0)
    assert not spike.apply and "spike" in spike.reason
    nan = guard.check_loss(float("nan"))
    assert not nan.apply and "non-finite" in nan.reason
    assert not guard.check_grad_norm(math.inf).apply
    assert guard.check_grad_norm(1.0).apply and guard.check_grad_norm(None).apply
    guard.record(6, 15.0, spike)
    guard.record(7, float("nan"), nan)
    assert guard.in_a_row == 2 and list(guard.recent) == [5.0, 4.9, 4.8, 4.7, 4.6]  # skipped losses not kept
    with pytest.raises(TooManySkippedSteps, match="max_skipped_in_a_row=2"):
        guard.record(8, float("nan"), nan)


def test_step_guard_without_spike_test_needs_history():
    guard = StepGuard(spike_factor=None, window=4, max_in_a_row=0)
    assert guard.check_loss(1e9).apply
    guard = StepGuard(spike_factor=2.0, window=20, max_in_a_row=0)
    assert guard.check_loss(1e9).apply  # no history yet: no spike test
    with pytest.raises(TooManySkippedSteps):
        guard.record(1, float("inf"), guard.check_loss(float("inf")))


def _cfg(*sets: str) -> dict:
    return load_config(None, list(sets)).to_dict()


def test_config_differences_name_field_and_values():
    saved = _cfg("train.seq_length=128", "data.split=98,2,0")
    assert resume.config_differences(saved, _cfg("train.seq_length=128", "train.lr=0.01", "train.iters=99")) == []
    # runtime-only model fields may change
    assert resume.config_differences(saved, _cfg("model.attention_backend=local", "model.recompute=true")) == []
    problems = resume.config_differences(saved, _cfg("train.seq_length=256", "model.num_layers=3", "train.seed=1"))
    assert "train.seq_length: checkpoint 128 -> now 256" in problems
    assert any(p.startswith("model.num_layers: checkpoint") for p in problems)
    assert any(p.startswith("train.seed:") for p in problems)
    with pytest.raises(ConfigError, match=r"train\.seq_length: checkpoint 128 -> now 256"):
        resume.check_config_compatible(saved, _cfg("train.seq_length=256"), "ckpt/iter_0000020")
    resume.check_config_compatible(None, _cfg(), "old checkpoint")  # no saved config: nothing to compare


def test_scheduler_from_rule():
    saved = {"max_lr": 1e-3, "min_lr": 1e-4, "lr_warmup_steps": 0, "lr_decay_steps": 20, "lr_decay_style": "cosine"}
    same = dict(saved, num_steps=5)
    assert resume.resolve_scheduler_source(saved, same, None, "x") == "checkpoint"
    longer = dict(saved, lr_decay_steps=30)
    with pytest.raises(ConfigError, match="train.scheduler_from") as err:
        resume.resolve_scheduler_source(saved, longer, None, "ckpt")
    assert "lr_decay_steps: checkpoint 20 -> config 30" in str(err.value)
    assert resume.resolve_scheduler_source(saved, longer, "config", "ckpt") == "config"
    assert resume.resolve_scheduler_source(saved, longer, "checkpoint", "ckpt") == "checkpoint"


def test_data_position_from_consumed_samples():
    assert resume.data_start_iteration(160, 16, "c") == 10
    assert resume.data_start_iteration(160, 32, "c") == 5  # a larger batch continues at the same sample
    with pytest.raises(ConfigError, match="train.global_batch_size=48"):
        resume.data_start_iteration(160, 48, "c")


def test_walltime_and_end_time():
    assert job_end_time({"SLURM_JOB_END_TIME": "1700000000"}) == 1700000000.0
    assert job_end_time({"MEGATRON_AGENTIC_JOB_END_TIME": "1700000100"}) == 1700000100.0
    assert job_end_time({"SLURM_JOB_END_TIME": "0", "MEGATRON_AGENTIC_JOB_END_TIME": "junk"}) is None
    assert walltime_reached(now=1000.0, end_time=1500.0, margin_s=600)
    assert not walltime_reached(now=1000.0, end_time=1700.0, margin_s=600)
    assert not walltime_reached(now=1000.0, end_time=1500.0, margin_s=0)
    assert not walltime_reached(now=1000.0, end_time=None, margin_s=600)


def test_stop_request_records_signals_and_stop_file(tmp_path, monkeypatch):
    stop_file = tmp_path / "stop"
    monkeypatch.setenv("MEGATRON_AGENTIC_STOP_FILE", str(stop_file))
    monkeypatch.setenv("MEGATRON_AGENTIC_JOB_END_TIME", "4000000000")
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopRequest(save_before_walltime_s=600)
    try:
        import torch

        assert stop.local_reason() == "" and stop.agreed(torch.device("cpu")) == ""
        assert stop.local_reason(now=4000000000 - 10) == "walltime"
        stop_file.write_text("")
        assert stop.agreed(torch.device("cpu")) == "stop file"
        os.kill(os.getpid(), signal.SIGUSR1)  # recorded, not fatal
        assert stop.agreed(torch.device("cpu")) == "SIGUSR1"
    finally:
        stop.restore_handlers()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_optimizer_format_rule():
    layout = {"world": 4, "tp": 2, "pp": 1, "ep": 1, "cp": 1}
    assert ckpt.optimizer_format_for_load(None, None, layout) == "fully_reshardable"  # old checkpoints
    assert ckpt.optimizer_format_for_load("dp_reshardable", dict(layout, world=8), layout) == "dp_reshardable"
    assert ckpt.optimizer_format_for_load("fully_reshardable", dict(layout, tp=1), layout) == "fully_reshardable"
    with pytest.raises(RuntimeError, match="optimizer_format=fully_reshardable"):
        ckpt.optimizer_format_for_load("dp_reshardable", dict(layout, tp=1), layout)
    assert ckpt.optimizer_metadata("dp_reshardable")["distrib_optim_sharding_type"] == "dp_reshardable"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("checkpoint.keep_every=-1", "checkpoint.keep_every"),
        ("checkpoint.optimizer_format=bucket", "checkpoint.optimizer_format"),
        ("checkpoint.async_save=maybe", "checkpoint.async_save"),
        ("checkpoint.save_before_walltime_s=-5", "checkpoint.save_before_walltime_s"),
        ("train.spike_factor=0.5", "train.spike_factor"),
        ("train.max_skipped_in_a_row=-1", "train.max_skipped_in_a_row"),
        ("train.scheduler_from=latest", "train.scheduler_from"),
    ],
)
def test_new_fields_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
