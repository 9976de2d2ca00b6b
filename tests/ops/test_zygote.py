"""The pre-imported test launcher (``tests/support/zygote.py``) behaves like the processes it replaces.

Reference: the same command started as real processes (``python -m megatron_agentic``, ``torchrun``): the training
metrics must be identical, exit codes, output, environment and working directory must reach the command, and a
failing rank must stop the others as torchrun does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import zygote
from tests.train.launch import run_train, train_argv

pytestmark = pytest.mark.slow  # starts processes

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *("--config", str(REPO / "examples/configs/tiny_moe.yaml")),
    *("--set", "model.num_layers=1", "--set", "model.vocab_size=256", "--set", "train.seq_length=32"),
    *("--set", "train.iters=3", "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2"),
    *("--set", "log.tensorboard=false", "--set", "train.eval_interval=null", "--set", "checkpoint.dir=null"),
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def _metrics(log_dir: Path) -> list[dict]:
    records = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: r[k] for k in ("step", "loss", "lr", "grad_norm", "tokens")} for r in records if "loss" in r]


@pytest.mark.parametrize("nproc", [1, 2])
def test_training_equals_a_real_process(tmp_path, nproc):
    args = [*TINY, "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    real = subprocess.run(
        train_argv([*args, "--set", f"log.dir={tmp_path / 'real'}"], nproc),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert real.returncode == 0, real.stderr[-3000:]
    forked = run_train([*args, "--set", f"log.dir={tmp_path / 'forked'}"], nproc, env=_env())
    assert forked.returncode == 0, forked.stderr[-3000:]
    assert _metrics(tmp_path / "forked") == _metrics(tmp_path / "real")
    assert len(_metrics(tmp_path / "real")) == 3


def test_exit_code_output_environment_and_directory_reach_the_command(tmp_path):
    code = "import os, sys; print(os.getcwd(), os.environ['PROBE'], sys.argv[1:]); print('err', file=sys.stderr); "
    code += "sys.exit(7)"
    out = zygote.run([code, "a", "b"], module="-c", env=dict(_env(), PROBE="x1"), cwd=tmp_path)
    assert out.returncode == 7
    assert out.stdout.strip() == f"{tmp_path} x1 ['a', 'b']"
    assert out.stderr.strip() == "err"
    bad = zygote.run_command(train_argv([*TINY, "--set", "bogus.x=1"]), env=_env())
    assert bad.returncode == 2 and "unknown section 'bogus'" in bad.stderr


def test_a_failing_rank_stops_the_others_like_torchrun():
    code = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(120)"
    start = time.monotonic()
    out = zygote.run([code], module="-c", nproc=2, env=_env(), timeout=100)
    assert out.returncode == 1  # torchrun reports 1 for any failed worker
    assert time.monotonic() - start < 60  # rank 0 was stopped, not waited for


def test_shim_runs_the_cli_with_the_shells_streams(tmp_path):
    folder, extra = zygote.shim_dir()
    env = dict(_env(), PATH=folder + os.pathsep + os.environ["PATH"], **extra)
    script = "megatron-agentic train --set bogus.x=1 2>err.txt || echo rc=$?; megatron-agentic --help | head -1"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["rc=2", "usage: megatron-agentic COMMAND [SUBCOMMAND] [ARGS...]"]
    assert "unknown section 'bogus'" in (tmp_path / "err.txt").read_text()
    assert sys.executable in (Path(folder) / "megatron-agentic").read_text().splitlines()[0]


def test_torchrun_shim_runs_the_ranks_and_falls_back_to_the_real_torchrun():
    folder, extra = zygote.shim_dir()
    path = os.pathsep.join([folder, str(Path(sys.executable).parent), os.environ["PATH"]])
    env = dict(_env(), PATH=path, **extra)
    code = 'import os; print(os.environ["RANK"], os.environ["WORLD_SIZE"])'
    script = (
        f"torchrun --nproc-per-node 2 --master-port=1 -m tests.support.run_code '{code}'\ntorchrun --help | head -1"
    )
    out = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sorted(lines[:2]) == ["0 2", "1 2"]
    assert lines[2].startswith("usage: torchrun")  # not a -m form: the real torchrun answered
