"""Shared JSONL/resume/sharding/CLI utilities."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys

import pytest

from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import BadLine, ResumableJsonlWriter, iter_jsonl, read_jsonl
from data_tools.synthesis.common.cli_args import add_llm_args, llm_config_from_args
from data_tools.synthesis.common.sharding import add_shard_args, shard_from_args, shard_of


def test_iter_jsonl_reports_bad_lines_by_reason(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(
        b'{"id": 1, "text": "a"}\n\n[1, 2]\n{"id": 2\n\xff\xfe\n{"id": 3}\n{"id": 4, "text": 5}\n{"id": 5, "text": "b"}'
    )
    out = list(iter_jsonl(p, required=["text"], types={"text": str}))
    got = [(n, r.reason if isinstance(r, BadLine) else r["id"]) for n, r in out]
    assert got == [
        (1, 1),
        (3, "not_object"),
        (4, "invalid_json"),
        (5, "invalid_utf8"),
        (6, "missing_field"),
        (7, "bad_field_type"),
        (8, 5),
    ]
    bad = out[1][1]
    assert str(bad).startswith(f"{p}:3: not_object")


def test_iter_jsonl_reads_gzip(tmp_path):
    p = tmp_path / "in.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"a": 1}\n{"a": 2}\n')
    assert [r["a"] for _, r in iter_jsonl(p)] == [1, 2]


def test_resumable_writer_truncates_partial_line_and_skips_done(tmp_path):
    p = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(p) as w:
        assert w.write({"id": "a", "v": 1}) and w.write({"id": "b", "v": 2})
        assert not w.write({"id": "a", "v": 99})
    with open(p, "a") as f:  # a killed writer leaves a partial line
        f.write('{"id": "c", "v"')
    w = ResumableJsonlWriter(p)
    assert w.done == {"a", "b"} and w.recovered == 2 and w.truncated_bytes == len('{"id": "c", "v"')
    assert "a" in w and len(w) == 2
    w.write({"id": "c", "v": 3})
    w.close()
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]


def test_resumable_writer_rejects_corruption_in_the_middle(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"out.jsonl:2"):
        ResumableJsonlWriter(p)


def test_atomic_write_json(tmp_path):
    p = tmp_path / "d" / "s.json"
    atomic_write_json(p, {"x": [1, 2]})
    assert json.loads(p.read_text()) == {"x": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["s.json"]


@pytest.mark.slow
def test_shard_of_is_stable_across_processes_and_balanced():
    keys = [f"mem-{i}" for i in range(4000)]
    here = [shard_of(k, 7) for k in keys[:50]]
    code = (
        "from data_tools.synthesis.common.sharding import shard_of; print([shard_of(f'mem-{i}', 7) for i in range(50)])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    ).stdout
    assert json.loads(there) == here
    counts = [0] * 4
    for k in keys:
        counts[shard_of(k, 4)] += 1
    assert min(counts) > 850 and sum(counts) == 4000
    with pytest.raises(ValueError):
        shard_of("x", 0)


def test_shard_args_from_slurm_env(monkeypatch):
    p = argparse.ArgumentParser()
    add_shard_args(p)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert shard_from_args(p.parse_args([])) == (3, 4)
    assert shard_from_args(p.parse_args(["--shard-index", "1", "--num-shards", "2"])) == (1, 2)
    with pytest.raises(SystemExit):
        shard_from_args(p.parse_args(["--shard-index", "2", "--num-shards", "2"]))


def test_llm_args(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    p = argparse.ArgumentParser()
    add_llm_args(p)
    args = p.parse_args(
        [
            "--backend",
            "openai",
            "--llm-url",
            "http://a:1/v1",
            "--llm-url",
            "http://b:2/v1",
            "--concurrency",
            "3",
            "--model",
            "q",
        ]
    )
    cfg = llm_config_from_args(args, default_cache="/tmp/x.sqlite")
    assert cfg.urls == ["http://a:1/v1", "http://b:2/v1"] and cfg.concurrency == 3 and cfg.model == "q"
    assert cfg.cache_path == "/tmp/x.sqlite"
    with pytest.raises(SystemExit):
        llm_config_from_args(p.parse_args(["--backend", "openai"]))


def test_iter_jsonl_skips_oversize_lines_without_holding_them(tmp_path):
    import tracemalloc

    big = json.dumps({"text": "x" * (24 << 20)})  # a 24 MiB line between two good ones
    for name, opener in (("a.jsonl", open), ("a.jsonl.gz", gzip.open)):
        path = tmp_path / name
        with opener(path, "wt", encoding="utf-8") as f:
            f.write('{"text": "first"}\n' + big + '\n{"text": "last"}\n')
        tracemalloc.start()
        got = list(iter_jsonl(path, required=["text"], max_line_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert [r["text"] for _, r in got if not isinstance(r, BadLine)] == ["first", "last"]
        bad = [(n, r.reason) for n, r in got if isinstance(r, BadLine)]
        assert bad == [(2, "line_too_long")] and got[2][0] == 3
        assert peak < 8 << 20, peak  # never the 24 MiB line
    # a larger cap lets the same line through
    got = iter_jsonl(tmp_path / "a.jsonl", max_line_bytes=32 << 20)
    assert len([r for _, r in got if not isinstance(r, BadLine)]) == 3


def test_progress_bar_shows_eta_tokens_per_second_and_failures(tmp_path):
    import io

    from rich.console import Console

    from data_tools.synthesis.common.progress import SynthesisProgress, count_lines
    from data_tools.synthesis.llm.client import LLMStats

    (tmp_path / "m.jsonl").write_bytes(b"a\nb\nc\n")
    assert count_lines(str(tmp_path / "m.jsonl")) == 3 and count_lines(str(tmp_path / "x.jsonl.gz")) is None
    stats = LLMStats()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with SynthesisProgress("fas", 4, unit="item", enabled=True, stats=stats, console=console) as bar:
        stats.add_usage({"prompt_tokens": 300, "completion_tokens": 100})
        stats.failures["timeout"] += 2
        bar.advance(1, failed=1)
        bar.advance(1)
        text = bar.rates(2)
    assert "item/s" in text and "tok/s" in text and "2 failed requests" in text and "1 failed items" in text
    shown = out.getvalue()
    assert "fas" in shown and "2/4" in shown and "eta" in shown and "tok/s" in shown
    quiet = SynthesisProgress("fas", 4, enabled=False)
    quiet.advance(3, failed=1)
    quiet.close()
    assert quiet.failed == 1
