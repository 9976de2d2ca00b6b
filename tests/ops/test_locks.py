"""Output-directory locks: a second writer fails at once naming the holder; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools.common.lock import LOCK_NAME, OutputLock, hold_lock, holder_is_stale

REPO = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from data_tools.common.lock import lock_output_dir; "
    "lock_output_dir(sys.argv[1], 'holder'); print('held', flush=True); time.sleep(120)"
)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SLURM_JOB_ID", None)
    return env


@pytest.mark.slow
def test_second_writer_process_names_holder(tmp_path):
    with OutputLock(tmp_path / LOCK_NAME):
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from data_tools.common.lock import OutputLock; OutputLock({str(tmp_path / LOCK_NAME)!r}).acquire()",
            ],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        assert other.returncode != 0
        assert f"is locked by pid {os.getpid()} on host {socket.gethostname()}" in other.stderr
        assert hold_lock(tmp_path / LOCK_NAME).held  # re-entrant in the holding process
    OutputLock(tmp_path / LOCK_NAME).acquire().release()  # released: free again
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_file_of_this_pid_without_a_live_lock_is_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": None}))
    OutputLock(tmp_path / LOCK_NAME).acquire().release()  # e.g. a pid reused after a crash


@pytest.mark.slow
def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "job": None}))
    lock = OutputLock(tmp_path / LOCK_NAME).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_stale_rules_for_other_hosts_and_requeued_jobs():
    me = {"pid": 10, "host": "a", "job": "77"}
    assert holder_is_stale({"pid": 5, "host": "b", "job": "77"}, 1.0, 300, me)  # same Slurm job, earlier run
    assert not holder_is_stale({"pid": 5, "host": "b", "job": "78"}, 1.0, 300, me)  # live heartbeat elsewhere
    assert "heartbeat" in holder_is_stale({"pid": 5, "host": "b", "job": None}, 301.0, 300, me)


def test_heartbeat_refreshes_lock(tmp_path):
    lock = OutputLock(tmp_path / LOCK_NAME, heartbeat_s=0.1).acquire()
    try:
        os.utime(tmp_path / LOCK_NAME, (0, 0))
        time.sleep(0.5)
        assert time.time() - (tmp_path / LOCK_NAME).stat().st_mtime < 5
    finally:
        lock.release()


@pytest.mark.slow
def test_second_data_fas_on_same_output_dir_exits_locked(tmp_path):
    out = tmp_path / "fas"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        memory = tmp_path / "memory.jsonl"
        memory.write_text("")
        t0 = time.monotonic()
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "megatron_agentic",
                "data",
                "fas",
                "--memory",
                str(memory),
                "--output-dir",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO,
            timeout=120,
        )
        assert second.returncode != 0
        assert "locked" in second.stderr and f"pid {holder.pid}" in second.stderr, second.stderr
        assert time.monotonic() - t0 < 60  # at once, not after doing any work
        assert not any(p.name != LOCK_NAME for p in out.iterdir())  # wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and the next writer takes it over
    lock = OutputLock(out / LOCK_NAME).acquire()
    lock.release()
