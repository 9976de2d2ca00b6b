"""Stop requests after periodic saves, through the real CLI on CPU/gloo (issue 25).

megatron-core writes each save through helper processes (a results-queue manager started at the first save, forked
writers); a SIGTERM/SIGUSR1 sent to every process of the job, as Slurm does, used to kill the manager, and the save
made for that signal then died with ``BrokenPipeError`` (no checkpoint, no ``exit_status.json``). Each run here
saves once or twice (``checkpoint.interval=2``), is signalled like a Slurm job (every process of the tree, helpers
included; torchrun ignores USR1 as the launcher starts it), and must save at the step it reached, record code 3 in
``exit_status.json`` only after that checkpoint is the latest, and leave no process behind. A ``kill -9`` of the
ranks must not leave their helpers running either. Asynchronous saves (``checkpoint.async_save``) need CUDA: that
case is skipped on CPU.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.train.launch import train_argv

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 2


def _command(root: Path, nproc: int, *extra: str) -> list[str]:
    sets = [
        "model.num_layers=2",
        "model.vocab_size=512",
        "train.iters=400",
        "train.seq_length=64",
        "train.eval_iters=1",
        "log.tensorboard=false",
        f"log.dir={root}",
        f"checkpoint.dir={root / 'ckpt'}",
        f"checkpoint.interval={INTERVAL}",
        *extra,
    ]
    args = ["--config", str(REPO / "examples/configs/tiny_moe.yaml")]
    for item in sets:
        args += ["--set", item]
    return train_argv(args, nproc)


def _ignore_usr1() -> None:  # what launch_train.sh does for torchrun: USR1 reaches the trainer, never kills torchrun
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class Job:
    """A training job started in a session of its own, with every process it ever had (for the orphan check)."""

    def __init__(self, root: Path, nproc: int, *extra: str) -> None:
        self.root = root
        self.log = root / "run.log"
        root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            _command(root, nproc, *extra),
            cwd=REPO,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_ignore_usr1,
        )
        self.seen: dict[int, psutil.Process] = {}

    def tree(self) -> list[psutil.Process]:
        try:
            top = psutil.Process(self.proc.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def marker(self) -> int:
        path = self.root / "ckpt" / "latest_checkpointed_iteration.txt"
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def steps(self) -> list[int]:
        path = self.root / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]

    def wait_until(self, predicate, what: str, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.tree()
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"job ended (rc={self.proc.returncode}) before {what}:\n{self.log.read_text()[-4000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def signal_all(self, sig: int, only=None) -> None:
        """Send ``sig`` to every live process of the job (Slurm's proctrack signals each one it tracks)."""
        for p in self.tree():
            if only is None or only(p):
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass

    def finish(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_leftovers()

    def leftovers(self, grace_s: float = 15.0) -> list[str]:
        end = time.monotonic() + grace_s
        while True:
            left = []
            for p in self.seen.values():
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                except psutil.NoSuchProcess:
                    pass
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.2)

    def kill_leftovers(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in self.seen.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def _stop_after_saves(root: Path, nproc: int, sig: signal.Signals, saves: int, *extra: str) -> dict:
    job = Job(root, nproc, *extra)
    try:
        target = saves * INTERVAL
        job.wait_until(lambda: job.marker() >= target and max(job.steps(), default=0) > target, f"save {target}")
        helpers_before = [p for p in job.tree() if "multiprocessing" in " ".join(p.cmdline())]
        job.signal_all(sig)
        rc = job.finish()
        log = job.log.read_text()
        return {
            "rc": rc,
            "log": log,
            "marker": job.marker(),
            "steps": job.steps(),
            "status": json.loads((root / "exit_status.json").read_text())
            if (root / "exit_status.json").exists()
            else None,
            "helpers_before": helpers_before,
            "leftovers": job.leftovers(),
            "seen": len(job.seen),
        }
    finally:
        job.kill_leftovers()


def _check_stop(out: dict, sig: signal.Signals, saves: int, nproc: int) -> None:
    log = out["log"]
    assert "BrokenPipeError" not in log, log[-4000:]
    # no rank failed (torchrun's own SignalException traceback after a SIGTERM is expected)
    assert not re.search(r"\[rank\d\]: Traceback", log) and (nproc > 1 or "Traceback" not in log), log[-4000:]
    n = out["marker"]
    assert n > saves * INTERVAL, log[-3000:]  # the stop-save wrote a newer checkpoint than the periodic ones
    assert out["status"] == {"code": 3, "reason": f"saved for {sig.name}", "iteration": n}, log[-3000:]
    for rank in range(nproc):
        assert f"rank {rank}: saved checkpoint at iteration {n} for {sig.name}; exiting with code 3" in log
    assert out["steps"] == list(range(1, n + 1))
    assert out["helpers_before"], "no checkpoint helper process was running when the signal came (nothing tested)"
    assert out["leftovers"] == [], out["leftovers"]
    if nproc == 1:
        assert out["rc"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "saves"), [(signal.SIGTERM, 1), (signal.SIGUSR1, 2)])
def test_two_ranks_stop_after_periodic_saves(tmp_path, sig, saves):
    out = _stop_after_saves(tmp_path / "run", 2, sig, saves)
    _check_stop(out, sig, saves, 2)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "saves"), [(signal.SIGUSR1, 1), (signal.SIGTERM, 2)])
def test_one_rank_stop_after_periodic_saves(tmp_path, sig, saves):
    out = _stop_after_saves(tmp_path / "run", 1, sig, saves)
    _check_stop(out, sig, saves, 1)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="checkpoint.async_save needs CUDA")
@pytest.mark.parametrize(("sig", "saves"), [(signal.SIGTERM, 1), (signal.SIGUSR1, 2)])
def test_async_save_stop_after_periodic_saves(tmp_path, sig, saves):
    out = _stop_after_saves(tmp_path / "run", 1, sig, saves, "checkpoint.async_save=true")
    _check_stop(out, sig, saves, 1)


@pytest.mark.slow
def test_kill9_of_the_ranks_leaves_no_process(tmp_path):
    job = Job(tmp_path / "run", 2)
    try:
        job.wait_until(lambda: job.marker() >= INTERVAL, "the first save")
        tree = job.tree()
        helpers = [p for p in tree if "multiprocessing" in " ".join(p.cmdline())]
        assert helpers, [" ".join(p.cmdline()) for p in tree]
        ranks = [p for p in tree if "megatron_agentic" in " ".join(p.cmdline()) and p.pid != job.proc.pid]
        assert len(ranks) == 2, [" ".join(p.cmdline()) for p in tree]
        for p in ranks:  # the ranks only, as the OOM killer or a crashed node does: their helpers are orphaned
            p.kill()
        job.finish()
        assert job.leftovers() == []
    finally:
        job.kill_leftovers()
