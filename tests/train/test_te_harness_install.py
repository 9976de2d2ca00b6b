"""The TE harness's one-time install (``te_harness.ensure_installed``): reuse, one installer at a time, clear skip."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from tests.train import te_harness


def _fake_pip(calls: list[list[str]], returncode: int = 0, stderr: str = ""):
    def run(cmd, **kwargs):
        calls.append(cmd)
        time.sleep(0.2)  # long enough for a second caller to arrive while the first installs
        if returncode == 0:
            target = Path(cmd[cmd.index("--target") + 1])
            (target / "transformer_engine").mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run


def test_installs_once_for_concurrent_callers_and_reuses(monkeypatch, tmp_path):
    monkeypatch.setenv(te_harness.CACHE_ENV, str(tmp_path / "te"))
    calls: list[list[str]] = []
    monkeypatch.setattr(te_harness.subprocess, "run", _fake_pip(calls))
    results = []
    threads = [threading.Thread(target=lambda: results.append(te_harness.ensure_installed())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(tmp_path / "te", "")] * 3
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-deps" in cmd and "--target" in cmd
    assert "transformer_engine==2.10.0" in cmd and "transformer_engine_cu13==2.10.0" in cmd
    assert (tmp_path / "te" / ".complete").is_file() and not (tmp_path / "te.partial").exists()
    assert te_harness.ensure_installed() == (tmp_path / "te", "") and len(calls) == 1  # reused, no pip


def test_impossible_install_gives_a_one_line_skip_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(te_harness.CACHE_ENV, str(tmp_path / "te"))
    calls: list[list[str]] = []
    stderr = (
        "WARNING: Retrying (Retry(total=4...)) after connection broken\n"
        "ERROR: Could not find a version that satisfies the requirement transformer_engine==2.10.0\n"
    )
    monkeypatch.setattr(te_harness.subprocess, "run", _fake_pip(calls, returncode=1, stderr=stderr))
    directory, why = te_harness.ensure_installed()
    assert directory is None and "\n" not in why
    assert why.startswith("cannot pip install Transformer Engine 2.10.0: ERROR: Could not find a version")
    assert not (tmp_path / "te").exists()  # nothing half-installed is taken for an install next time


def test_killed_install_is_redone(monkeypatch, tmp_path):
    monkeypatch.setenv(te_harness.CACHE_ENV, str(tmp_path / "te"))
    (tmp_path / "te" / "transformer_engine").mkdir(parents=True)  # no .complete: an interrupted install
    calls: list[list[str]] = []
    monkeypatch.setattr(te_harness.subprocess, "run", _fake_pip(calls))
    assert te_harness.ensure_installed() == (tmp_path / "te", "") and len(calls) == 1
