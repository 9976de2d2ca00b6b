"""Runs that survive a cluster, through the real CLI on CPU/gloo (``torchrun -m megatron_agentic train``).

One chain of 2-rank runs is compared with an uninterrupted 2-rank reference:

1. kill -9 of torchrun and both workers while both ranks are inside the save of iteration 8 (a test hook pauses
   them after their shard files are written, before the latest marker moves);
2. the same command again: the partial ``iter_0000008`` is removed, training resumes from iteration 4, and
   SIGTERM to the process group mid-training makes both ranks save at the step they reached and exit 3;
3. the same command again finishes. metrics.jsonl holds every step exactly once with the reference's losses.

Single-process runs check the exit code (3), ``train.scheduler_from`` and the config comparison on resume;
the reference checks retention (``keep_last``/``keep_every``) and that rerunning a finished run changes nothing
(decided without loading the checkpoint's tensors).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.zygote import run_command
from tests.train.launch import train_argv

pytestmark = pytest.mark.slow  # trains under torchrun (module fixture)

REPO = Path(__file__).resolve().parents[2]
ITERS = 24
WARMUP = 2
LR, MIN_LR = 3.0e-3, 3.0e-4


def _records(log_dir: Path) -> list[dict]:
    path = log_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steps(log_dir: Path) -> list[dict]:
    return [r for r in _records(log_dir) if "loss" in r]


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root

    def command(self, name: str, *overrides: str, nproc: int = 2) -> list[str]:
        sets = [
            "model.num_layers=2",
            "model.vocab_size=512",
            f"train.iters={ITERS}",
            "train.seq_length=64",
            f"train.lr={LR}",
            f"train.min_lr={MIN_LR}",
            f"train.lr_warmup_iters={WARMUP}",
            "train.eval_iters=1",
            "log.tensorboard=false",
            f"log.dir={self.root / name}",
            f"checkpoint.dir={self.root / name / 'ckpt'}",
            *overrides,
        ]
        args = ["--config", str(REPO / "examples/configs/tiny_moe.yaml")]
        for item in sets:
            args += ["--set", item]
        return train_argv(args, nproc)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
        return env

    def run(self, cmd: list[str], **extra: str) -> subprocess.CompletedProcess:
        return run_command(cmd, env=self.env(**extra))

    def start(self, cmd: list[str], log: Path, **extra: str) -> subprocess.Popen:
        handle = log.open("w")
        return subprocess.Popen(
            cmd, cwd=REPO, env=self.env(**extra), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill_tree(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to torchrun and its workers (torchrun starts each worker in a session of its own)."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    if sig == signal.SIGKILL:
        psutil.wait_procs(procs, timeout=30)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc={proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def chain():
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_signals_"))
    try:
        yield _chain(root)
    except AssertionError:
        for log in sorted(root.glob("*.log")):
            sys.stderr.write(f"==== {log}\n{log.read_text()[-6000:]}\n")
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _chain(root: Path) -> dict:
    r = Runner(root)
    out: dict = {"root": root, "runner": r}
    ref = r.run(r.command("ref", "checkpoint.interval=4", "checkpoint.keep_last=2", "checkpoint.keep_every=8"))
    assert ref.returncode == 0, ref.stderr[-4000:]
    out["ref_summary_bytes"] = (root / "ref" / "summary.json").read_bytes()
    out["ref_metrics_bytes"] = (root / "ref" / "metrics.jsonl").read_bytes()
    # The rerun of the finished run must decide from the checkpoint's common state, without reading its tensors:
    # the shard files are moved away meanwhile (a load would fail), and back for the tests that resume from it.
    final_dir = root / "ref" / "ckpt" / f"iter_{ITERS:07d}"
    shards = sorted(final_dir.glob("*.distcp"))
    assert shards, sorted(final_dir.iterdir())
    aside = root / "shards_aside"
    aside.mkdir()
    for shard in shards:
        shard.rename(aside / shard.name)
    out["ref_rerun"] = r.run(
        r.command("ref", "checkpoint.interval=4", "checkpoint.keep_last=2", "checkpoint.keep_every=8")
    )
    for shard in shards:
        (aside / shard.name).rename(shard)

    cmd = r.command("chain", "checkpoint.interval=4")
    ckpt = root / "chain" / "ckpt"
    # 1. kill -9 while both ranks are inside the save of iteration 8.
    log1 = root / "kill9.log"
    proc = r.start(cmd, log1, MEGATRON_AGENTIC_TEST_SAVE_HOOK="sleep:120@8")
    try:
        _wait_for(
            lambda: log1.read_text().count("pausing 120 s inside the save of iteration 8") >= 2, proc, 300, "save"
        )
        out["marker_during_save"] = (ckpt / "latest_checkpointed_iteration.txt").read_text().strip()
        out["partial_exists"] = (ckpt / "iter_0000008").is_dir()
        _kill_tree(proc, signal.SIGKILL)  # every process of the job, as Slurm does
    finally:
        _kill_tree(proc, signal.SIGKILL)
        proc.wait()
    # 2. rerun; SIGTERM to the process group once a few steps after the resume point are logged.
    log2 = root / "sigterm.log"
    proc = r.start(cmd, log2)
    try:
        _wait_for(lambda: "resumed from" in log2.read_text(), proc, 300, "resume")
        _wait_for(lambda: len(_steps(root / "chain")) >= 7, proc, 300, "step 7")
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        _kill_tree(proc, signal.SIGKILL)
        proc.wait()
    out["sigterm_log"] = log2.read_text()
    out["sigterm_marker"] = int((ckpt / "latest_checkpointed_iteration.txt").read_text())
    out["sigterm_steps"] = [s["step"] for s in _steps(root / "chain")]
    out["sigterm_status"] = json.loads((root / "chain" / "exit_status.json").read_text())
    # 3. rerun to the end.
    final = r.run(cmd)
    assert final.returncode == 0, final.stderr[-4000:]
    out["final_stderr"] = final.stderr
    return out


def test_retention_keeps_last_and_milestones(chain):
    ckpt = chain["root"] / "ref" / "ckpt"
    assert sorted(p.name for p in ckpt.glob("iter_*")) == [f"iter_{i:07d}" for i in (8, 16, 20, 24)]


def test_rerunning_a_finished_run_changes_nothing_and_loads_no_tensors(chain):
    assert chain["ref_rerun"].returncode == 0, chain["ref_rerun"].stderr[-3000:]
    assert "already finished" in chain["ref_rerun"].stderr
    assert (chain["root"] / "ref" / "metrics.jsonl").read_bytes() == chain["ref_metrics_bytes"]
    assert (chain["root"] / "ref" / "summary.json").read_bytes() == chain["ref_summary_bytes"]
    evals = [r for r in _records(chain["root"] / "ref") if "eval" in r]
    assert [e["step"] for e in evals] == [ITERS]


def test_kill9_during_save_leaves_previous_checkpoint(chain):
    assert chain["partial_exists"] and chain["marker_during_save"] == "4"
    log = chain["sigterm_log"]
    assert "iter_0000008: an interrupted save" in log  # removed at the next start
    assert "resumed from" in log and "at iteration 4" in log


def test_sigterm_saves_at_reached_step_on_every_rank(chain):
    n = chain["sigterm_marker"]
    assert 7 <= n < ITERS
    log = chain["sigterm_log"]
    for rank in (0, 1):
        assert f"rank {rank}: saved checkpoint at iteration {n} for SIGTERM; exiting with code 3" in log
    assert chain["sigterm_status"] == {"code": 3, "reason": "saved for SIGTERM", "iteration": n}
    assert chain["sigterm_steps"] == list(range(1, n + 1))


def test_merged_metrics_equal_uninterrupted_run(chain):
    ref, merged = _steps(chain["root"] / "ref"), _steps(chain["root"] / "chain")
    assert [s["step"] for s in merged] == list(range(1, ITERS + 1))
    assert [s["loss"] for s in merged] == [s["loss"] for s in ref]
    assert [s["lr"] for s in merged] == [s["lr"] for s in ref]
    assert not any(s["skipped"] for s in merged)


def _cosine_lr(num_steps: int, decay_steps: int) -> float:
    """megatron-core's warmup + cosine schedule, written out independently."""
    if num_steps < WARMUP:
        return LR * num_steps / WARMUP
    ratio = (num_steps - WARMUP) / (decay_steps - WARMUP)
    return MIN_LR + (LR - MIN_LR) * 0.5 * (math.cos(math.pi * ratio) + 1.0)


def test_scheduler_from_and_config_changes_on_resume(chain):
    r: Runner = chain["runner"]
    ref_steps = _steps(chain["root"] / "ref")
    for s in ref_steps:  # the independent formula reproduces the reference's schedule
        assert s["lr"] == pytest.approx(_cosine_lr(s["step"] - 1, ITERS), rel=1e-9, abs=1e-12)
    longer = r.command("ref", "train.iters=30", nproc=1)
    refused = r.run(longer)
    assert refused.returncode == 2
    assert "train.scheduler_from" in refused.stderr and "lr_decay_steps: checkpoint 24 -> config 30" in refused.stderr
    changed = r.run(r.command("ref", "train.seq_length=32", nproc=1))
    assert changed.returncode == 2 and "train.seq_length: checkpoint 64 -> now 32" in changed.stderr
    # scheduler_from=config: steps 25-26 on one rank (the dp_reshardable optimizer state re-shards over DP)
    extended = r.run(r.command("ref", "train.iters=26", "train.scheduler_from=config", nproc=1))
    assert extended.returncode == 0, extended.stderr[-3000:]
    new = [s for s in _steps(chain["root"] / "ref") if s["step"] > ITERS]
    assert [s["step"] for s in new] == [25, 26]
    assert new[0]["lr"] == pytest.approx(_cosine_lr(24, 26), rel=1e-9) and new[0]["lr"] > MIN_LR * 1.01


def test_single_process_sigterm_exits_3(tmp_path):
    r = Runner(tmp_path)
    proc = r.start(r.command("one", "train.iters=200", nproc=1), tmp_path / "one.log")
    try:
        _wait_for(lambda: len(_steps(tmp_path / "one")) >= 2, proc, 300, "step 2")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    n = int((tmp_path / "one" / "ckpt" / "latest_checkpointed_iteration.txt").read_text())
    assert f"saved checkpoint at iteration {n} for SIGTERM" in (tmp_path / "one.log").read_text()
