"""Checkpoint helper processes (megatron_agentic.training.save_procs) without training: each test starts a child
(tests/train/save_procs_child.py) that starts the results-queue manager and a writer forked as megatron-core's
writers are, then signals them as Slurm or torchrun would and checks the process table with psutil."""

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

REPO = Path(__file__).resolve().parents[2]


def _start(*args: str) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train.save_procs_child", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    assert line, f"child ended early (rc={proc.poll()})"
    return proc, json.loads(line)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _cleanup(proc: subprocess.Popen, info: dict) -> None:
    for pid in (proc.pid, info.get("manager"), info.get("writer")):
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_helpers_ignore_job_signals_and_leave_its_process_group():
    proc, info = _start("exit")
    try:
        assert info["writer_pgid"] != info["pgid"]  # out of the trainer's process group
        assert os.getpgid(info["manager"]) != info["pgid"]  # a session of its own
        # what Slurm does: the signal to every process of the job, then what torchrun does: to the group
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            for pid in (info["manager"], info["writer"]):
                os.kill(pid, sig)
            os.killpg(info["pgid"], sig)
        time.sleep(1.0)
        assert _alive(info["manager"]) and _alive(info["writer"])
        assert proc.poll() is None
    except AssertionError:
        _cleanup(proc, info)
        raise
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline()) == {"got": "still served"}  # the queue still works after the signals
    assert proc.wait(timeout=30) == 0
    assert _wait_gone([info["manager"], info["writer"]]) == []  # shut down on the normal exit path


@pytest.mark.slow
def test_helpers_die_with_a_killed_parent():
    proc, info = _start()
    try:
        assert _alive(info["manager"]) and _alive(info["writer"])
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the rank only: its helpers are orphaned
        proc.wait(timeout=30)
        assert _wait_gone([info["manager"], info["writer"]]) == []
    finally:
        _cleanup(proc, info)
