"""The launcher's stop handling without Slurm (issue 25): examples/slurm/launch_train.sh run as a batch shell with a
stand-in ``srun`` (drops its options, runs the command) and ``torchrun`` (torch.distributed.run) on PATH, and the
CI scripts that start and stop a one-node Slurm.

- a USR1 that reaches the batch shell during the pre-flight (before training) is not fatal: the shell records it and
  stops (exit 3 without REQUEUE) without starting any rank;
- a USR1 sent to every process of the job mid-training, after a periodic save, does not kill torchrun (it runs with
  USR1 ignored): the ranks save at the step reached, exit_status.json says 3, and only then does the launcher log
  "checkpoint saved"; no process of the job is left;
- a save margin longer than the time left is cut with a warning (unit);
- ``.ci/slurm_up.sh`` leaves an existing Slurm configuration alone; ``.ci/slurm_down.sh`` stops exactly what its
  state file names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from megatron_agentic.training.stop import effective_margin
from tests.train.launch import free_port

REPO = Path(__file__).resolve().parents[2]

FAKE_SRUN = """#!/usr/bin/env bash
# stand-in for srun on one node: drop srun's options, run the command
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in --*=*) shift ;; *) shift 2 ;; esac
done
exec "$@"
"""
FAKE_TORCHRUN = f"""#!/usr/bin/env bash
exec {sys.executable} -m torch.distributed.run "$@"
"""


def test_save_margin_longer_than_the_time_left_is_cut(caplog):
    assert effective_margin(600, 10_000.0, 1_000.0) == 600  # 9000 s left: kept
    assert effective_margin(600, None, 1_000.0) == 600  # no end time known
    assert effective_margin(0, 1_100.0, 1_000.0) == 0  # disabled
    with caplog.at_level("WARNING"):
        assert effective_margin(600, 1_300.0, 1_000.0) == pytest.approx(30.0)  # 300 s left: 10 % of it
    assert "save_before_walltime_s=600 is not shorter than the 300 s" in caplog.text


def _launcher_env(root: Path, **extra: str) -> dict[str, str]:
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("torchrun", FAKE_TORCHRUN)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE")}
    env.update(
        PATH=f"{bindir}:{Path(sys.executable).parent}:{env.get('PATH', '')}",
        RECIPE="tiny-moe-stage1",
        GPUS_PER_NODE="2",
        NODES="1",
        HEAD_NODE="127.0.0.1",
        MASTER_PORT=str(free_port()),
        MEGATRON_AGENTIC_FORCE_CPU="1",
        OMP_NUM_THREADS="1",
        RUN_ROOT=str(root),
        CKPT_DIR=str(root / "ckpt"),
        BLEND_FILE="",
        PYTHON=sys.executable,
        PYTHONPATH=str(REPO),
        MAX_RESTARTS="0",
        REQUEUE="0",
        EXTRA_SETS=(
            "--set train.train_tokens=null --set train.iters=400 --set checkpoint.interval=2 "
            "--set train.seq_length=64 --set model.num_layers=2 --set model.vocab_size=512 "
            "--set train.eval_interval=null --set log.tensorboard=false"
        ),
    )
    env.update(extra)
    return env


def _start(root: Path) -> tuple[subprocess.Popen, Path]:
    log = root / "launcher.log"
    proc = subprocess.Popen(
        ["bash", "examples/slurm/launch_train.sh"],
        cwd=REPO,
        env=_launcher_env(root),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def _wait(predicate, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"launcher ended (rc={proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_all(procs: dict[int, psutil.Process]) -> None:
    for p in procs.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
def test_usr1_during_preflight_stops_before_training(tmp_path):
    proc, log = _start(tmp_path)
    run_dir = tmp_path / "tiny-moe-stage1"
    try:
        _wait(lambda: any(run_dir.glob("jobs/*/plan.txt")), proc, "the planner (pre-flight) to start")
        proc.send_signal(signal.SIGUSR1)  # the batch shell only, as `scancel --signal=USR1 --batch` does
        assert proc.wait(timeout=300) == 3, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert "stop requested before training started" in out, out
    assert "checkpoint saved" not in out
    assert not (run_dir / "metrics.jsonl").exists()  # no rank ever started


@pytest.mark.slow
def test_usr1_to_every_process_after_a_save_saves_and_leaves_nothing(tmp_path):
    proc, log = _start(tmp_path)
    run_dir = tmp_path / "tiny-moe-stage1"
    marker = tmp_path / "ckpt" / "latest_checkpointed_iteration.txt"
    seen: dict[int, psutil.Process] = {}

    def tree() -> list[psutil.Process]:
        try:
            top = psutil.Process(proc.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            seen.setdefault(p.pid, p)
        return procs

    def saved_and_stepped() -> bool:
        tree()
        return marker.exists() and int(marker.read_text() or 0) >= 2 and (run_dir / "metrics.jsonl").exists()

    try:
        _wait(saved_and_stepped, proc, "the first periodic save")
        torchruns = [p for p in tree() if "torch.distributed.run" in " ".join(p.cmdline())]
        assert torchruns
        for p in tree():  # `scancel --signal=USR1 JOB` (no --batch): every process of the job
            try:
                p.send_signal(signal.SIGUSR1)
            except psutil.NoSuchProcess:
                pass
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    status = json.loads((run_dir / "exit_status.json").read_text())
    n = int(marker.read_text())
    try:
        assert rc == 3, out[-4000:]
        assert status == {"code": 3, "reason": "saved for SIGUSR1", "iteration": n}, out[-4000:]
        assert "checkpoint saved for a stop request (exit 3)" in out
        assert "rc=138" not in out and "attempt" not in out
        end = time.monotonic() + 15
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in seen.values()):
            assert time.monotonic() < end, [" ".join(p.cmdline()) for p in seen.values() if p.is_running()]
            time.sleep(0.2)
    finally:
        _kill_all(seen)


@pytest.mark.slow
def test_slurm_up_leaves_an_existing_configuration_alone(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=production\n")
    env = dict(os.environ, SLURM_CONF_PATH=str(conf), SLURM_CI_STATE=str(tmp_path / "state"))
    env["PATH"] = "/usr/bin:/bin"  # no sinfo: nodes look down
    out = subprocess.run(["bash", ".ci/slurm_up.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    if "already running" in out.stdout:
        pytest.skip("a Slurm is running on this machine")
    assert out.returncode == 0 and "not touching it" in out.stderr, out.stderr
    assert conf.read_text() == "ClusterName=production\n" and not (tmp_path / "state").exists()


@pytest.mark.slow
def test_slurm_down_stops_only_what_slurm_up_recorded(tmp_path):
    started = subprocess.Popen(["sleep", "300"])
    other = subprocess.Popen(["sleep", "300"])
    try:
        (tmp_path / "started.pid").write_text(f"{started.pid}\n")
        written = tmp_path / "slurm.conf"
        written.write_text("ClusterName=ci\n")
        state = tmp_path / "state"
        state.write_text(f"file={written}\npidfile={tmp_path / 'started.pid'}\n")
        env = dict(os.environ, SLURM_CI_STATE=str(state))
        out = subprocess.run(["bash", ".ci/slurm_down.sh"], cwd=REPO, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert started.wait(timeout=30) is not None and other.poll() is None
        assert not written.exists() and not state.exists()
        again = subprocess.run(["bash", ".ci/slurm_down.sh"], cwd=REPO, env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        for p in (started, other):
            p.kill()
            p.wait()
