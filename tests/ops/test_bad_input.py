"""Bad input gets one line, not a traceback (issue 25): a table of commands x bad inputs through the one console
entry point (``megatron_agentic.cli.main``), each asserting the exit code, a one-line message naming the flag, field
or file, and no traceback. The cases run in this process (argparse errors exit 2 via SystemExit) except the file
size limit, which needs a child process with ``RLIMIT_FSIZE``."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_agentic.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples/configs/tiny_moe.yaml")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    (tmp_path / "afile").write_text("")
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "Paris is the capital of France."}) + "\n")
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "garbage.yaml").write_bytes(bytes(range(128, 256)) * 4)
    return tmp_path


# (id, argv, expected exit code, text the single error line must contain)
CASES = [
    ("tokenize-output-under-file", ["data", "tokenize", "--input", "in.jsonl", "--output-prefix", "afile/x/y",
                                    "--workers", "1", "--no-progress"], 1, "afile"),
    ("tokenize-no-valid-document", ["data", "tokenize", "--input", "empty.jsonl", "--output-prefix", "tok",
                                    "--workers", "1", "--no-progress"], 1, "no valid document in empty.jsonl"),
    ("tokenize-missing-key", ["data", "tokenize", "--input", "q.jsonl", "--output-prefix", "tok2",
                              "--workers", "1", "--no-progress"], 1, "no valid document in q.jsonl"),
    ("memory-output-under-file", ["data", "memory", "--input", "in.jsonl", "--output", "afile/m.jsonl"], 1, "afile"),
    ("has-output-under-file", ["data", "has", "--input", "in.jsonl", "--output", "afile/h.jsonl"], 1,
     "afile: exists and is a file, not a directory"),
    ("rollout-output-under-file", ["data", "rollout", "--questions", "q.jsonl", "--output", "afile/r.jsonl"], 1,
     "afile: exists and is a file, not a directory"),
    ("fas-output-under-file", ["data", "fas", "--memory", "in.jsonl", "--output-dir", "afile/fas"], 1, "afile"),
    ("memory-limit-zero", ["data", "memory", "--input", "in.jsonl", "--output", "m.jsonl", "--limit", "0"], 2,
     "argument --limit: must be >= 1, got 0"),
    ("rollout-limit-negative", ["data", "rollout", "--questions", "q.jsonl", "--output", "r.jsonl", "--limit", "-1"],
     2, "argument --limit: must be >= 1, got -1"),
    ("has-limit-zero", ["data", "has", "--input", "in.jsonl", "--output", "h.jsonl", "--limit", "0"], 2,
     "argument --limit: must be >= 1"),
    ("fas-max-items-zero", ["data", "fas", "--memory", "in.jsonl", "--output-dir", "fas", "--max-items", "0"], 2,
     "argument --max-items: must be >= 1"),
    ("mix-zero-sizes", ["data", "mix", "--output", "mix.json", "--global-batch-size", "0", "--seq-length", "0"], 2,
     "argument --global-batch-size: must be >= 1"),
    ("train-lr-not-a-number", ["train", "--config", EXAMPLE, "--set", "train.lr=abc", "--validate-only"], 2,
     "train.lr must be float, got 'abc'"),
    ("train-iters-float", ["train", "--config", EXAMPLE, "--set", "train.iters=2.5", "--validate-only"], 2,
     "train.iters must be int, got 2.5"),
    ("train-empty-config", ["train", "--config", "empty.yaml", "--validate-only"], 2, "empty.yaml: empty config"),
    ("train-binary-config", ["train", "--config", "garbage.yaml", "--validate-only"], 2,
     "garbage.yaml: not a UTF-8 text file"),
    ("train-mock-false-without-data", ["train", "--config", EXAMPLE, "--set", "data.mock=false", "--validate-only"],
     2, "data.mock is false but neither data.blend nor data.blend_file is set"),
    ("train-log-dir-is-a-file", ["train", "--config", EXAMPLE, "--set", "log.dir=afile", "--validate-only"], 2,
     "log.dir afile: is a file, not a directory"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(files, capsys, argv, code, needle):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and needle in lines[0], err


def test_yaml_floats_without_a_dot_are_numbers(files, capsys):
    assert main(["train", "--config", EXAMPLE, "--set", "train.lr=1e-3", "--set", "train.min_lr=1E-5",
                 "--print-config"]) == 0  # fmt: skip
    train = json.loads(capsys.readouterr().out)["train"]
    assert train["lr"] == 0.001 and train["min_lr"] == 1e-05


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.slow
def test_write_failure_is_one_line(tmp_path):
    """A write that fails midway (here: past a 4 KiB file size limit, as a full disk fails) is one line, exit 1."""
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " + "word " * 200}) + "\n" for i in range(50)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "megatron_agentic", "data", "tokenize", "--input", str(src), "--output-prefix",
         str(tmp_path / "tok"), "--workers", "1", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "file too large" in out.stderr.strip().splitlines()[-1]
