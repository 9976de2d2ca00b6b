"""Problems found before any process group starts (issue 25): ``train --validate-only`` and the start of ``train``
check the directories, the checkpoint lock, the latest checkpoint against the config and layout, and the data files;
a run that finds another live run holding its checkpoint.dir exits 5 and writes nothing into that run's
directories (only the per-job exit status the launcher names)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools.common.lock import LOCK_NAME
from megatron_agentic import train as train_cli
from tests.support.zygote import run_command

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples/configs/tiny_moe.yaml")


def _main(tmp_path: Path, *sets: str, validate_only: bool = False) -> int:
    argv = ["--config", EXAMPLE, "--set", "log.tensorboard=false"]
    for item in sets:
        argv += ["--set", item]
    return train_cli.main(argv + (["--validate-only"] if validate_only else []))


@pytest.mark.parametrize("validate_only", [True, False])
def test_directory_that_is_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch, validate_only):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    rc = _main(tmp_path, f"log.dir={blocker}", validate_only=validate_only)
    err = capsys.readouterr().err
    assert rc == 2 and f"log.dir {blocker}: is a file, not a directory" in err
    rc = _main(
        tmp_path, f"log.dir={tmp_path / 'log'}", f"checkpoint.dir={blocker / 'ckpt'}", validate_only=validate_only
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"checkpoint.dir {blocker / 'ckpt'}: cannot be created: {blocker} is a file" in err
    assert len(err.strip().splitlines()) == 1  # one line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _main(tmp_path, f"log.dir={locked / 'log'}", validate_only=True) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_empty_data_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _main(tmp_path, f"log.dir={tmp_path}", "data.mock=false", validate_only=True) == 2
    assert "data.mock is false" in capsys.readouterr().err


@pytest.mark.slow
def test_second_run_on_a_live_checkpoint_dir_exits_5_and_writes_nothing_there(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    log_dir, ckpt = tmp_path / "live", tmp_path / "live" / "ckpt"
    ckpt.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (ckpt / LOCK_NAME).write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "job": None, "started": time.time()})
        )
        (log_dir / "exit_status.json").write_text('{"code": 0}')  # the live run's
        job_status = tmp_path / "job" / "exit_status.json"
        monkeypatch.setenv("MEGATRON_AGENTIC_EXIT_STATUS", str(job_status))
        before = sorted(p.name for p in log_dir.rglob("*"))
        for validate_only in (True, False):
            rc = _main(tmp_path, f"log.dir={log_dir}", f"checkpoint.dir={ckpt}", validate_only=validate_only)
            err = capsys.readouterr().err
            assert rc == 5 and f"locked by pid {holder.pid}" in err
            assert json.loads(job_status.read_text())["code"] == 5
        assert sorted(p.name for p in log_dir.rglob("*")) == before
        assert (log_dir / "exit_status.json").read_text() == '{"code": 0}'
        # a config error of such a run (here: an impossible layout) must not touch the live run's files either
        rc = _main(tmp_path, f"log.dir={log_dir}", f"checkpoint.dir={ckpt}", "parallel.tensor=3", validate_only=True)
        assert rc == 2 and (log_dir / "exit_status.json").read_text() == '{"code": 0}'
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the checks pass
    assert _main(tmp_path, f"log.dir={log_dir}", f"checkpoint.dir={ckpt}", validate_only=True) == 0


@pytest.mark.slow
def test_checkpoint_checked_against_config_and_layout_before_training(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    base = [
        sys.executable,
        "-m",
        "megatron_agentic",
        "train",
        "--config",
        EXAMPLE,
        *("--set", "model.num_layers=2", "--set", "model.vocab_size=512", "--set", "train.seq_length=64"),
        *("--set", "train.iters=2", "--set", "checkpoint.interval=2", "--set", "log.tensorboard=false"),
        *("--set", f"log.dir={tmp_path}", "--set", f"checkpoint.dir={tmp_path / 'ckpt'}"),
        *("--set", "checkpoint.optimizer_format=dp_reshardable"),
    ]
    done = run_command(base, cwd=REPO, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    layout = run_command([*base, "--set", "parallel.tensor=2", "--validate-only"], env=dict(env, WORLD_SIZE="2"))
    assert layout.returncode == 2 and "dp_reshardable" in layout.stderr and "'tp': 1" in layout.stderr, layout.stderr
    changed = run_command([*base, "--set", "train.seq_length=32"], cwd=REPO, env=env, timeout=200)
    assert changed.returncode == 2 and "train.seq_length: checkpoint 64 -> now 32" in changed.stderr, changed.stderr
    assert "process group" not in changed.stderr.lower() and "building" not in changed.stderr.lower()
    assert json.loads((tmp_path / "exit_status.json").read_text())["code"] == 2
