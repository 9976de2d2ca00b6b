"""``DRY_RUN=1 ... tokenize_array.sbatch`` prints the command only: it creates no output directory and no logs/."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "slurm" / "tokenize_array.sbatch"


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, INPUT="/data/web/*.jsonl.zst", OUTPUT_PREFIX=str(tmp_path / "tok" / "deep" / "web"),
                NUM_SHARDS="8", DRY_RUN="1", PYTHON="python", WORKERS="2")  # fmt: skip
    full.update(env)
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, cwd=tmp_path, capture_output=True, text=True)


@pytest.mark.slow
def test_dry_run_prints_the_tokenize_command_and_creates_nothing(tmp_path):
    res = _run(tmp_path, SLURM_ARRAY_TASK_ID="3")
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout)
    assert argv[:3] == ["python", "-m", "data_tools.indexed.tokenize_dataset"]
    assert argv[argv.index("--shard-index") + 1] == "3" and argv[argv.index("--num-shards") + 1] == "8"
    assert argv[argv.index("--output-prefix") + 1] == str(tmp_path / "tok" / "deep" / "web")
    assert list(tmp_path.iterdir()) == []  # neither tok/deep/ nor logs/


@pytest.mark.slow
def test_dry_run_merge_and_submit_create_nothing(tmp_path):
    res = _run(tmp_path, MODE="merge")
    assert res.returncode == 0, res.stderr
    assert "data_tools.indexed.merge" in res.stdout and "web_text_document" in res.stdout
    res = _run(tmp_path, "--submit", "--parsable", "--array=0-7")
    assert res.returncode == 0, res.stderr
    assert shlex.split(res.stdout) == ["sbatch", "--parsable", "--array=0-7", str(SCRIPT)]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_real_run_still_creates_the_output_directory(tmp_path):
    """Without DRY_RUN the script makes the prefix's directory (``PYTHON=true`` stands in for the tokenizer)."""
    res = _run(tmp_path, DRY_RUN="0", PYTHON="true")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "tok" / "deep").is_dir()
