"""Process groups are torn down on every exit path of a training run: ``Trainer.__init__`` raising after
``init_distributed`` (model build), ``init_distributed`` raising between the default group and megatron-core's groups,
and a run that fails. In-process, gloo, world size 1; the checkpoint-dir lock is released too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_tools.common.lock import LOCK_NAME
from megatron_agentic.config import load_config
from megatron_agentic.platform import deactivate_cpu_redirections
from tests.support.lazy import lazy_import

parallel_state = lazy_import("megatron.core.parallel_state")  # collection imports no megatron-core
builders = lazy_import("megatron_agentic.training.builders")
loop = lazy_import("megatron_agentic.training.loop")

EXAMPLE = "examples/configs/tiny_moe.yaml"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not torch.distributed.is_initialized()
    yield load_config(
        EXAMPLE,
        ["model.num_layers=1", "train.iters=1", f"checkpoint.dir={tmp_path / 'ckpt'}", f"log.dir={tmp_path / 'log'}"],
    )
    if torch.distributed.is_initialized():  # keep later tests clean even when an assertion failed
        builders.teardown_distributed()
    deactivate_cpu_redirections()


def _assert_torn_down(cfg) -> None:
    assert not torch.distributed.is_initialized()
    assert not parallel_state.model_parallel_is_initialized()
    assert not (Path(cfg.checkpoint.dir) / LOCK_NAME).exists()  # the checkpoint-dir lock is released


def _boom(*_args, **_kwargs):
    raise RuntimeError("boom")


def test_trainer_init_failing_after_init_distributed(cfg, monkeypatch):
    seen = {}

    def build_then_fail(*args, **kwargs):
        seen["initialized"] = torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized()
        _boom()

    monkeypatch.setattr("megatron_agentic.training.loop.build_model_chunks", build_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        loop.Trainer(cfg)
    assert seen == {"initialized": True}
    _assert_torn_down(cfg)
    with pytest.raises(RuntimeError, match="boom"):
        loop.train(cfg)
    _assert_torn_down(cfg)


def test_init_distributed_failing_between_the_groups(cfg, monkeypatch):
    monkeypatch.setattr(builders.parallel_state, "initialize_model_parallel", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        loop.train(cfg)
    _assert_torn_down(cfg)


def test_run_failing(cfg, monkeypatch):
    monkeypatch.setattr(loop.Trainer, "run", lambda self: _boom())
    with pytest.raises(RuntimeError, match="boom"):
        loop.train(cfg)
    _assert_torn_down(cfg)


def test_teardown_destroys_the_default_group_when_megatron_teardown_raises(cfg, monkeypatch):
    monkeypatch.setattr(loop.Trainer, "run", lambda self: {"final_step": 0})
    monkeypatch.setattr(builders.parallel_state, "destroy_model_parallel", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        loop.train(cfg)  # the run succeeds; megatron-core's teardown raises
    assert not torch.distributed.is_initialized()
    monkeypatch.undo()
    parallel_state.destroy_model_parallel()
