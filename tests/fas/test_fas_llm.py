"""FAS with the openai backend against the loopback fake server: resume after SIGKILL, faults, judge, cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from data_tools.common.jsonl import read_jsonl
from data_tools.synthesis.fas.cli import main as fas_main
from data_tools.synthesis.fas.pipeline import FasConfig, run_fas
from data_tools.synthesis.fas.scripted import FasResponder
from data_tools.synthesis.llm.client import LLMConfig
from data_tools.synthesis.llm.fake_server import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("planning.jsonl", "reasoning.jsonl", "rejected.jsonl", "progress.jsonl")


def _llm(url, **kw):
    base = dict(
        urls=[url],
        model="fake-model",
        concurrency=8,
        timeout_s=5.0,
        max_retries=3,
        backoff_base_s=0.001,
        backoff_max_s=0.01,
    )
    base.update(kw)
    return LLMConfig(**base)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(wiki_memory, tmp_path):
    server = FakeLLMServer(FasResponder(), latency_s=0.005)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with server as url:
        cmd = [
            sys.executable,
            "-m",
            "data_tools.synthesis.fas",
            "--memory",
            wiki_memory,
            "-k",
            "3",
            "--max-items",
            "16",
            "--backend",
            "openai",
            "--llm-url",
            url,
            "--model",
            "fake-model",
            "--concurrency",
            "6",
            "--window",
            "3",
        ]
        # the uninterrupted reference and the resume run use the same CLI in-process; only the run that gets
        # killed needs its own process
        assert fas_main([*cmd[3:], "--output-dir", str(tmp_path / "ref")]) == 0
        killed = tmp_path / "killed"
        proc = subprocess.Popen(
            [*cmd, "--output-dir", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while _lines(killed / "planning.jsonl") < 8 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        done_before = _lines(killed / "progress.jsonl")
        assert 0 < done_before < 16, "the kill must land mid-run"
        before = len(server.requests)
        assert fas_main([*cmd[3:], "--output-dir", str(killed)]) == 0
        resumed_requests = len(server.requests) - before
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    ref_summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["counts"] == ref_summary["counts"]
    assert summary["this_run"]["resumed_items"] == done_before
    # the resumed run only paid for unfinished work: fewer requests than the whole job
    assert resumed_requests < ref_summary["llm"]["requests"]
    assert summary["llm"]["cache_hits"] > 0


def test_faults_are_retried_or_recorded_and_counted(wiki_memory, tmp_path):
    rates = {
        "http_500": 0.04,
        "http_503": 0.02,
        "http_429": 0.04,
        "timeout": 0.01,
        "reset": 0.03,
        "malformed": 0.03,
        "truncated": 0.03,
        "empty": 0.04,
        "bad_json": 0.04,
    }
    server = FakeLLMServer(FasResponder(), fault_rates=rates, seed=7, hang_s=2.0, retry_after=0.01)
    with server as url:
        cfg = FasConfig(
            memory_path=wiki_memory,
            output_dir=str(tmp_path / "o"),
            questions_per_memory=3,
            backend="openai",
            max_items=25,
            llm=_llm(url, timeout_s=0.5, max_retries=1, max_reasks=1, concurrency=16),
        )
        summary = run_fas(cfg)
    out = {n: read_jsonl(tmp_path / "o" / n) for n in OUTPUTS}
    failures = [r for r in out["rejected.jsonl"] if r["rejection"]["kind"] == "failure"]
    llm = summary["llm"]
    assert failures, "with these rates some requests must fail for good"
    assert llm["failed"] == len(failures) == sum(summary["counts"]["failures"].values())
    expected = Counter()
    for r in failures:
        reason = r["rejection"]["reason"]
        assert reason.startswith(("llm_", "judge_"))
        expected[reason.split("_", 1)[1]] += 1
    assert dict(expected) == llm["failures"]
    assert set(llm["retried_errors"]) >= {
        "http_500",
        "http_429",
        "connection",
        "malformed_response",
        "empty_completion",
        "invalid_json",
    }
    assert llm["succeeded"] + llm["failed"] == llm["requests"]
    # an attempt the client gave up on may never have been read by the server
    assert 0 < len(server.requests) <= llm["http_requests"]
    # every question of every committed item ended in exactly one planning and one reasoning outcome
    seen = Counter((r["question_id"], r["type"]) for r in out["planning.jsonl"] + out["reasoning.jsonl"])
    seen.update(
        (r.get("question_id"), r["type"]) for r in out["rejected.jsonl"] if r["type"] in ("planning", "reasoning")
    )
    qids = [q["id"] for p in out["progress.jsonl"] for q in p["questions"]]
    assert len(out["progress.jsonl"]) == 25 and set(seen.values()) == {1}
    assert {k for k in seen} == {(q, t) for q in qids for t in ("planning", "reasoning")}

    # a rerun with --retry-failed against a healthy server replaces every failure with a real outcome
    with FakeLLMServer(FasResponder()) as url:
        again = run_fas(FasConfig(**{**cfg.__dict__, "retry_failed": True, "llm": _llm(url)}))
    out = {n: read_jsonl(tmp_path / "o" / n) for n in OUTPUTS}
    assert again["counts"]["failures"] == {} and again["counts"]["memory_items"] == 25
    assert not any(r["rejection"]["kind"] == "failure" for r in out["rejected.jsonl"])
    seen = Counter((r["question_id"], r["type"]) for r in out["planning.jsonl"] + out["reasoning.jsonl"])
    seen.update(
        (r.get("question_id"), r["type"]) for r in out["rejected.jsonl"] if r["type"] in ("planning", "reasoning")
    )
    qids = [q["id"] for p in out["progress.jsonl"] for q in p["questions"]]
    assert len(qids) == len(set(qids)) and set(seen.values()) == {1}
    assert set(seen) == {(q, t) for q in qids for t in ("planning", "reasoning")}


def test_judge_bookkeeping_and_cache_reruns(wiki_memory, tmp_path):
    responder = FasResponder(reject_every=3)
    server = FakeLLMServer(responder)
    cache = str(tmp_path / "cache.sqlite")
    with server as url:
        cfg = FasConfig(
            memory_path=wiki_memory,
            output_dir=str(tmp_path / "a"),
            questions_per_memory=4,
            backend="openai",
            max_items=20,
            llm=_llm(url, cache_path=cache),
        )
        summary = run_fas(cfg)
        first_requests = len(server.requests)
        again = run_fas(FasConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "b")}))
        assert len(server.requests) == first_requests  # everything came from the cache
    assert again["llm"]["cache_hits"] == again["llm"]["requests"] == summary["llm"]["requests"]
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the stored verdicts are exactly what the judge server said
    expected = {"planning": Counter(), "reasoning": Counter()}
    for body in server.requests:
        name = body["response_format"]["json_schema"]["name"]
        if name.startswith("fas_judge"):
            reply = responder(body)
            kind = name.removeprefix("fas_judge_")
            expected[kind]["accepted" if reply["verdict"] == "accept" else reply["reason"]] += 1
    c = summary["counts"]
    dups = Counter(
        r["type"]
        for r in read_jsonl(tmp_path / "a" / "rejected.jsonl")
        if r["rejection"]["kind"] == "duplicate" and r["verdict"]["accepted"]
    )
    for kind in ("planning", "reasoning"):
        got = Counter(c[kind]["rejected_by_reason"])
        want = {k: v for k, v in expected[kind].items() if k != "accepted"}
        assert sum(want.values()) >= 1
        assert got == want or sum(got.values()) <= sum(want.values())  # near-duplicates are filed as duplicates
        assert c[kind]["accepted"] + dups[kind] == expected[kind]["accepted"]
    recs = read_jsonl(tmp_path / "a" / "planning.jsonl")
    assert recs and all(r["verdict"]["judge"] == "llm:fake-model" for r in recs)
    assert all(r["provenance"]["model"] == "fake-model" and not r["provenance"]["synthetic_template"] for r in recs)
    assert all("fas/planning@v1#" in r["provenance"]["templates"]["planning"] for r in recs)


def test_llm_memory_backend(tmp_path):
    from data_tools.synthesis.corpus import write_wiki_corpus
    from data_tools.synthesis.memory import main as memory_main

    corpus = tmp_path / "c.jsonl"
    write_wiki_corpus(corpus, limit=12)
    with open(corpus, "a") as f:
        f.write("{broken\n")
    server = FakeLLMServer(FasResponder())
    with server as url:
        assert (
            memory_main(
                [
                    "--input",
                    str(corpus),
                    "--output",
                    str(tmp_path / "m.jsonl"),
                    "--backend",
                    "openai",
                    "--llm-url",
                    url,
                    "--min-statements",
                    "1",
                ]
            )
            == 0
        )
    items = {it["entity"]: it for it in read_jsonl(tmp_path / "m.jsonl")}
    docs = [json.loads(x) for x in open(corpus) if x != "{broken\n"]
    assert len(server.requests) == len(docs)
    for d in docs:
        it = items[d["title"]]
        assert it["kind"] == "extracted" and it["backend"] == "openai"
        own = [s for s in it["statements"] if s["source"]["doc_id"] == d["id"]]
        assert own and all(s["text"] in " ".join(d["text"].split()) for s in own)
        assert all(s["source"]["url"] == d["url"] for s in own)
    summary = json.loads((tmp_path / "m.jsonl.summary.json").read_text())
    assert summary["bad_lines"] == {"invalid_json": 1} and summary["llm"]["requests"] == len(docs)
