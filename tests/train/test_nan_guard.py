"""``perf.check_for_nan_in_grad`` and the NaN/spike guard agree: a NaN gradient on one rank is a skipped step.

megatron-core's DDP check (``check_for_nan_in_grad``) raises a RuntimeError on the rank whose *local* gradients are
NaN, before the data-parallel reduce, while the other ranks wait in that reduce. The project therefore detects
the same NaN/Inf after the reduce (it propagates into the global gradient norm, identical on every rank), where all
ranks skip the step together (``training/builders.py``). These runs go through the real CLI
(``torchrun -m megatron_agentic train``, 2 CPU ranks, gloo) with a test hook that makes rank 1's gradients NaN at
chosen steps while its loss stays finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.zygote import run_command
from tests.train.launch import free_port

REPO = Path(__file__).resolve().parents[2]
ITERS = 5


def _train(log_dir: Path, nan_grad: str, *sets: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    args = ["--config", str(REPO / "examples/configs/tiny_moe.yaml")]
    for item in (
        "model.num_layers=2",
        "model.vocab_size=512",
        f"train.iters={ITERS}",
        "train.seq_length=64",
        "train.eval_interval=null",
        "log.tensorboard=false",
        "perf.check_for_nan_in_grad=true",
        f"log.dir={log_dir}",
        *sets,
    ):
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MEGATRON_AGENTIC_TEST_NAN_GRAD=nan_grad)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}"]
    proc = run_command([*cmd, "-m", "megatron_agentic", "train", *args], cwd=REPO, env=env, timeout=300)
    path = log_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return proc, [r for r in records if "loss" in r]


@pytest.mark.slow
def test_nan_grad_on_one_rank_is_skipped_and_the_run_continues(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc, steps = _train(tmp_path / "nan", "1@3", f"checkpoint.dir={ckpt}", "checkpoint.interval=3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [s["step"] for s in steps] == list(range(1, ITERS + 1))
    assert [s["skipped"] for s in steps] == [False, False, True, False, False]
    bad = steps[2]
    assert "non-finite gradient norm" in bad["skip_reason"] and bad["skipped_total"] == 1
    assert math.isnan(bad["grad_norm"]) and math.isfinite(bad["loss"])  # only the gradients were poisoned
    assert steps[1]["lr"] != steps[2]["lr"]  # the schedule moves every step ...
    assert steps[3]["lr"] == steps[2]["lr"]  # ... except over a skipped one
    assert all(math.isfinite(s["loss"]) and math.isfinite(s["grad_norm"]) for s in steps[3:])
    # The checkpoint saved at the skipped step is the state the run continued from (no NaN update in it): resume
    # there (marker moved back to 3; iter 5 is then cleaned as an interrupted save) and steps 4-5 repeat exactly.
    (ckpt / "latest_checkpointed_iteration.txt").write_text("3")
    again, resumed = _train(tmp_path / "nan", "", f"checkpoint.dir={ckpt}", "checkpoint.interval=3")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert resumed == steps[:3] + [
        dict(s, step_time_s=r["step_time_s"], tokens_per_s=r["tokens_per_s"]) for s, r in zip(steps[3:], resumed[3:])
    ]


@pytest.mark.slow
def test_too_many_nan_steps_in_a_row_stop_the_run(tmp_path):
    proc, steps = _train(tmp_path / "nan", "1@2,3,4", "train.max_skipped_in_a_row=2")
    assert proc.returncode != 0
    assert [s["skipped"] for s in steps] == [False, True, True]
    log = proc.stdout + proc.stderr
    assert "step 4: 3 steps skipped in a row" in log and "train.max_skipped_in_a_row=2" in log


def test_injected_nan_grad_spec(monkeypatch):
    from megatron_agentic.testing import faults

    monkeypatch.delenv(faults.NAN_GRAD, raising=False)
    assert not faults.nan_grad(0, 1) and not faults.active(faults.NAN_GRAD)
    monkeypatch.setenv(faults.NAN_GRAD, "1@2,4")
    assert [faults.nan_grad(r, s) for r in (0, 1) for s in (1, 2, 3, 4)] == [False] * 4 + [False, True, False, True]
    monkeypatch.setenv(faults.NAN_GRAD, "*@3")
    assert faults.nan_grad(0, 3) and faults.nan_grad(5, 3) and not faults.nan_grad(0, 2)
