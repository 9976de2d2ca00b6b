"""Asynchronous checkpoint saves (dist_checkpointing's async path; CUDA only, skipped without a GPU).

A 1-GPU run saves every 2 steps in the background with retention; the marker and the kept directories must be
those of a synchronous run, and resuming from the async checkpoint continues with the same losses as resuming
from a synchronous one (same weights, optimizer state and data position).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.zygote import run_command
from tests.train.launch import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu


def _run(root: Path, name: str, *sets: str) -> list[dict]:
    args = ["--config", str(REPO / "examples/configs/tiny_moe.yaml")]
    for item in (
        "model.num_layers=2",
        "train.seq_length=128",
        "train.precision=fp32",
        "log.tensorboard=false",
        f"log.dir={root / name}",
        f"checkpoint.dir={root / name / 'ckpt'}",
        "checkpoint.interval=2",
        "checkpoint.keep_last=2",
        *sets,
    ):
        args += ["--set", item]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", f"--master-port={free_port()}"]
    cmd += ["-m", "megatron_agentic", "train", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = run_command(cmd, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = (root / name / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def test_async_save_matches_sync(tmp_path):
    sync = _run(tmp_path, "sync", "train.iters=6", "checkpoint.async_save=false")
    asyn = _run(tmp_path, "async", "train.iters=6", "checkpoint.async_save=true")
    for name in ("sync", "async"):
        ckpt = tmp_path / name / "ckpt"
        assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "6"
        assert sorted(p.name for p in ckpt.glob("iter_*")) == ["iter_0000004", "iter_0000006"]
    assert [r["loss"] for r in asyn] == pytest.approx([r["loss"] for r in sync], rel=1e-5)
    resumed_sync = _run(tmp_path, "sync", "train.iters=8", "train.scheduler_from=config", "checkpoint.async_save=false")
    resumed_async = _run(
        tmp_path, "async", "train.iters=8", "train.scheduler_from=config", "checkpoint.async_save=true"
    )
    assert [r["step"] for r in resumed_async] == list(range(1, 9))
    assert [r["loss"] for r in resumed_async] == pytest.approx([r["loss"] for r in resumed_sync], rel=1e-5)
