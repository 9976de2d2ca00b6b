"""The project's real sbatch scripts on a real (one-node, CPU) Slurm: `.ci/run` starts one via .ci/slurm_up.sh.

Skipped when ``sbatch`` is absent. The stage-1 script runs the tiny recipe on 2 CPU ranks (srun + torchrun):

- one job chain requeued twice: ``scontrol requeue`` after a periodic save (Slurm's SIGTERM: the ranks save at the
  step reached), then ``scancel --signal=USR1 --batch`` in the resumed run (the ranks save, the job requeues itself:
  exit 3 -> ``scontrol requeue``); it resumes each time and finishes with every step logged once and the completion
  marker; stage 2, submitted as the docs say (``--dependency=afterany:<stage 1>``), stays pending through both
  requeues and starts from stage 1's final checkpoint only after it finished;
- a missing blend file is found by the pre-flight before training starts, reported once (exit 2), not retried;
- stage 2 after a stage 1 that ended without its ``COMPLETED`` marker refuses to start (exit 4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.train.launch import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,  # submits real jobs
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="no Slurm (sbatch) on this machine"),
]
ITERS = 20
SIZES = (
    "--set train.train_tokens=null --set train.seq_length=128 --set model.num_layers=2 --set train.eval_interval=null "
    "--set log.tensorboard=false"
)
SMALL_VOCAB = "--set model.vocab_size=512"
"""The jobs that train use a 512-id vocabulary on the mock data: these tests are about the job's life cycle
(signals, requeue, resume, dependencies), and Qwen3's 151,936-id output layer made a step ~4 s on 2 shared cores.
A job given a blend keeps the tokenizer's vocabulary (the pre-flight checks it against the blend's tokenizer)."""


def _submit(
    root: Path, script: str = "examples/slurm/stage1_32k.sbatch", sbatch_args: tuple[str, ...] = (), **env_extra: str
) -> str:
    """Submit one of the project's sbatch scripts with the CPU overrides (tiny recipe, 2 ranks, no GPU)."""
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
        MASTER_PORT=str(free_port()),
        MAX_RESTARTS="2",
        RESTART_DELAY="1",
        EXTRA_SETS=f"{SIZES} {SMALL_VOCAB} --set train.iters={ITERS} --set checkpoint.interval=100",
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
            *sbatch_args,
            script,
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


def _start_requeued_now(job: str) -> None:
    """A requeued job waits ~2 min (BeginTime) before it starts again: start it now, once the node is free.

    slurmd refuses a job credential issued in the same second as the requeue revoked the old one ("Job credential
    revoked": the job then fails), so wait for the node to be idle and a little more before moving the start time.
    """
    _wait(lambda: _state(job) == "PENDING", 120, "the requeued job to be pending")
    _wait(
        lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout,
        120,
        "the node to be idle",
    )
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)


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


def test_config_error_is_found_before_training_and_not_retried(root):
    job = _submit(root, BLEND_FILE=str(root / "missing_blend.json"), EXTRA_SETS=f"{SIZES} --set train.iters={ITERS}")
    try:
        _wait(lambda: _state(job) in ("FAILED", "COMPLETED", "CANCELLED", "TIMEOUT"), 300, "the job to end")
    finally:
        subprocess.run(["scancel", job], check=False)
    out = "".join(p.read_text() for p in root.glob("slurm-*.out"))
    assert "missing_blend.json" in out and "pre-flight failed" in out
    assert out.count("pre-flight failed") == 1 and "attempt" not in out
    assert not (root / "tiny-moe-stage1" / "metrics.jsonl").exists()  # no rank ever started


def _stage2(root: Path, after: str) -> str:
    """Submit stage 2 the way docs/recipes.md does: afterany on stage 1, initialised from stage 1's checkpoints."""
    return _submit(
        root,
        "examples/slurm/stage2_128k.sbatch",
        (f"--dependency=afterany:{after}",),
        RECIPE="tiny-moe-stage2",
        CKPT_DIR=str(root / "ckpt2"),
        PRETRAINED=str(root / "ckpt"),
        STAGE1_RUN_DIR=str(root / "tiny-moe-stage1"),
        EXTRA_SETS=f"{SIZES} {SMALL_VOCAB} --set train.iters=3 --set checkpoint.interval=100",
    )


def _ended(job: str) -> bool:
    return _state(job) in ("FAILED", "COMPLETED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _exit_code(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    return next((t.split("=", 1)[1] for t in out.stdout.split() if t.startswith("ExitCode=")), "")


def test_stage2_refuses_when_stage1_ended_without_its_marker(root):
    # fails in its pre-flight: no marker
    stage1 = _submit(root, BLEND_FILE=str(root / "missing_blend.json"), EXTRA_SETS=f"{SIZES} --set train.iters={ITERS}")
    stage2 = _stage2(root, stage1)
    try:
        _wait(lambda: _ended(stage1) and _ended(stage2), 300, "both jobs to end")
    finally:
        subprocess.run(["scancel", stage1, stage2], check=False)
    assert _state(stage1) == "FAILED" and _state(stage2) == "FAILED"
    assert _exit_code(stage2) == "4:0"  # documented in stage2_128k.sbatch and docs/recipes.md
    out = (root / f"slurm-{stage2}.out").read_text()
    assert f"stage 1 is not finished ({root / 'tiny-moe-stage1'}/COMPLETED missing)" in out
    assert not (root / "tiny-moe-stage2").exists()  # nothing of stage 2 started


def _job_processes(root: Path) -> list[str]:
    """Processes still running something of this test's job (their command line or environment names ``root``)."""
    import psutil

    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(root) in cmd or str(root) in " ".join(f"{k}={v}" for k, v in proc.environ().items()):
                left.append(f"{proc.pid} {cmd[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return left


def _node_logs(run: Path, job: str) -> str:
    return "".join(p.read_text() for p in (run / "jobs" / job).glob("*.log") if p.name != "restarts.log")


def _requeues(run: Path, job: str) -> int:
    path = run / "jobs" / job / "restarts.log"
    return path.read_text().count("requeueing") if path.exists() else 0


def test_stage1_requeued_by_scontrol_then_by_usr1_resumes_each_time_and_stage2_waits_for_it(root):
    """Stage 1 is requeued twice, as a long job on a cluster is, and one job chain checks both ways:

    1. ``scontrol requeue`` (an operator or a preemption) at a step after a periodic save: Slurm's SIGTERM reaches the
       launcher and the ranks, which save at the step they reached (the stop-save works although a save already ran
       in the process); the job runs again and resumes there;
    2. ``scancel --signal=USR1 --batch`` (the walltime warning) in the resumed run: the ranks save at the step
       reached and the job requeues itself (exit 3 -> ``scontrol requeue``), runs again and resumes there.

    The run logs every step once and ends with its completion marker; stage 2, submitted as the docs say
    (``--dependency=afterany:<stage 1>``), stays pending through both requeues and starts from stage 1's final
    checkpoint only after it finished; nothing of the jobs is left running."""
    stage1 = _submit(root, EXTRA_SETS=f"{SIZES} {SMALL_VOCAB} --set train.iters={ITERS} --set checkpoint.interval=3")
    stage2 = _stage2(root, stage1)
    run1, run2 = root / "tiny-moe-stage1", root / "tiny-moe-stage2"
    latest = root / "ckpt" / "latest_checkpointed_iteration.txt"
    try:
        # 1. scontrol requeue after a periodic save
        _wait(lambda: latest.exists() and len(_steps(run1)) >= 5, 600, "a periodic save and 5 steps")
        subprocess.run(["scontrol", "requeue", stage1], check=True)
        _wait(lambda: _state(stage1) == "PENDING", 180, "the requeued job to be pending")
        first = int(latest.read_text())
        assert _state(stage2) == "PENDING" and not (run1 / "COMPLETED").exists()  # stage 1 is not finished
        requeues = _requeues(run1, stage1)
        _start_requeued_now(stage1)
        # 2. USR1 once the resumed run trained two more steps (the resume drops logged steps after its checkpoint)
        _wait(lambda: _node_logs(run1, stage1).count("resumed from") >= 1 and len(_steps(run1)) >= first + 2, 600,
              "2 steps after the first resume")  # fmt: skip
        subprocess.run(["scancel", "--signal=USR1", "--batch", stage1], check=True)
        _wait(lambda: _requeues(run1, stage1) > requeues, 300, "the job to requeue itself")
        second = int(latest.read_text())
        _wait(lambda: _state(stage1) == "PENDING", 120, "stage 1 to be pending again")
        assert _state(stage2) == "PENDING" and not (run1 / "COMPLETED").exists()
        _start_requeued_now(stage1)
        _wait(lambda: (run1 / "COMPLETED").exists(), 600, "the resumed stage 1 to finish")
        finished1 = (run1 / "COMPLETED").stat().st_mtime
        _wait(lambda: _ended(stage2), 500, "stage 2 to end")
    finally:
        subprocess.run(["scancel", stage1, stage2], check=False)
    out1 = (root / f"slurm-{stage1}.out").read_text()[-4000:]
    assert _state(stage1) == "COMPLETED", out1
    assert 5 <= first < second < ITERS, (first, second)
    assert _steps(run1) == list(range(1, ITERS + 1))
    logs = _node_logs(run1, stage1)
    # the stop-saves (not periodic ones) wrote the latest checkpoints, on every rank
    assert logs.count(f"saved checkpoint at iteration {first} for ") == 2, logs[-4000:]
    assert logs.count(f"saved checkpoint at iteration {second} for stop file") == 2, logs[-4000:]
    assert logs.count("resumed from") == 2 and "BrokenPipeError" not in logs
    assert _state(stage2) == "COMPLETED", (root / f"slurm-{stage2}.out").read_text()
    assert (run2 / "COMPLETED").exists() and _steps(run2) == [1, 2, 3]
    assert (run2 / "jobs" / stage2).stat().st_mtime >= finished1  # created by stage 2's launcher, after the marker
    stage2_logs = "".join(p.read_text() for p in (run2 / "jobs" / stage2).glob("*.log"))
    assert f"initialised weights from {root / 'ckpt'}" in stage2_logs
    _wait(lambda: not _job_processes(root), 60, "every process of the jobs to exit")
