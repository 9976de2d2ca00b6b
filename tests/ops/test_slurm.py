"""The project's real sbatch scripts on a real (one-node, CPU) Slurm: `.ci/run` starts one via .ci/slurm_up.sh.

Skipped when ``sbatch`` is absent. The stage-1 script runs the tiny recipe on 2 CPU ranks (srun + torchrun):

- ``scancel --signal=USR1 --batch`` mid-training: the ranks save at the step reached, the job requeues itself
  (exit 3 -> ``scontrol requeue``), resumes and finishes with every step logged once and the completion marker;
- a missing blend file is found by the pre-flight before training starts, reported once (exit 2), not retried.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("sbatch") is None, reason="no Slurm (sbatch) on this machine")
ITERS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(root: Path, **env_extra: str) -> str:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID"):
        env.pop(key, None)
    env.update(
        RECIPE="tiny-moe-stage1",
        GPUS_PER_NODE="2",
        NODES="1",
        MEGATRON_AGENTIC_FORCE_CPU="1",
        OMP_NUM_THREADS="1",
        RUN_ROOT=str(root),
        CKPT_DIR=str(root / "ckpt"),
        BLEND_FILE="",
        PYTHON=sys.executable,
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        MASTER_PORT=str(_free_port()),
        MAX_RESTARTS="2",
        RESTART_DELAY="1",
        EXTRA_SETS=(
            f"--set train.train_tokens=null --set train.iters={ITERS} --set checkpoint.interval=100 --set train.seq_length=128 "
            "--set model.num_layers=2 --set train.eval_interval=null --set log.tensorboard=false"
        ),
    )
    env.update(env_extra)
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--export=ALL",
            "--nodes=1",
            "--gpus-per-node=0",
            "--time=20",
            f"--output={root}/slurm-%j.out",
            "examples/slurm/stage1_32k.sbatch",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    for token in out.stdout.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return "UNKNOWN"


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="megatron_agentic_slurm_"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_usr1_saves_requeues_and_finishes_every_step_once(root):
    job = _submit(root)
    run_dir = root / "tiny-moe-stage1"
    try:
        _wait(lambda: len(_steps(run_dir)) >= 2, 600, "2 training steps")
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
        restarts = run_dir / "jobs" / job / "restarts.log"
        _wait(lambda: restarts.exists() and "requeueing" in restarts.read_text(), 300, "the requeue")
        saved_at = int((root / "ckpt" / "latest_checkpointed_iteration.txt").read_text())
        assert 2 <= saved_at < ITERS
        # a requeued job waits ~2 min (BeginTime) before it starts again: start it now
        _wait(lambda: _state(job) == "PENDING", 120, "the requeued job to be pending")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
        _wait(lambda: (run_dir / "COMPLETED").exists(), 500, "the resumed job to finish")
    finally:
        subprocess.run(["scancel", job], check=False)
    assert _steps(run_dir) == list(range(1, ITERS + 1))
    node_logs = "".join(p.read_text() for p in (run_dir / "jobs" / job).glob("*.log") if p.name != "restarts.log")
    assert f"saved checkpoint at iteration {saved_at} for stop file" in node_logs
    assert "resumed from" in node_logs


def test_config_error_is_found_before_training_and_not_retried(root):
    job = _submit(root, BLEND_FILE=str(root / "missing_blend.json"))
    try:
        _wait(lambda: _state(job) in ("FAILED", "COMPLETED", "CANCELLED", "TIMEOUT"), 300, "the job to end")
    finally:
        subprocess.run(["scancel", job], check=False)
    out = "".join(p.read_text() for p in root.glob("slurm-*.out"))
    assert "missing_blend.json" in out and "pre-flight failed" in out
    assert out.count("pre-flight failed") == 1 and "attempt" not in out
    assert not (root / "tiny-moe-stage1" / "metrics.jsonl").exists()  # no rank ever started
