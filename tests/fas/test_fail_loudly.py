"""Synthesis fails loudly: the failure-rate helper, grounded memory, garbage servers make `data memory`, `data fas`
and `data rollout` exit non-zero naming the figure, and a length-truncated reply whose JSON is complete is used."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import pytest

from data_tools.synthesis.common.failure_rate import DEFAULT_MAX_FAILURE_RATE, add_failure_rate_arg, check_failure_rate
from data_tools.synthesis.fas.cli import main as fas_main
from data_tools.synthesis.fas.grounding import ground_statements, grounding_problem
from data_tools.synthesis.fas.memory_build import RawStatement
from data_tools.synthesis.fas.scripted import FasResponder
from data_tools.synthesis.llm.client import LLMClient, LLMConfig
from data_tools.synthesis.llm.fake_server import FakeLLMServer, FakeReply
from data_tools.synthesis.memory import main as memory_main

DOC = (
    "Ada Lovelace was an English mathematician born in London in 1815. She worked with Charles Babbage on the "
    "Analytical Engine. Her notes of 1843 contain 3 tables."
)


def test_failure_rate_helper():
    p = argparse.ArgumentParser()
    add_failure_rate_arg(p)
    assert p.parse_args([]).max_failure_rate == DEFAULT_MAX_FAILURE_RATE == 0.1
    assert p.parse_args(["--max-failure-rate", "0.5"]).max_failure_rate == 0.5
    with pytest.raises(SystemExit):
        p.parse_args(["--max-failure-rate", "1.5"])
    assert check_failure_rate("data x", failed=1, total=10, max_rate=0.1, listed_in="f") is None
    msg = check_failure_rate("data x", failed=2, total=10, max_rate=0.1, listed_in="out/rejected.jsonl")
    assert msg == (
        "data x: failure rate 2/10 = 20.0% exceeds --max-failure-rate 10.0%; the failures are listed in "
        "out/rejected.jsonl"
    )
    assert check_failure_rate("data x", failed=0, total=0, max_rate=0.0, listed_in="f") is None
    with pytest.raises(ValueError):
        check_failure_rate("data x", failed=3, total=2, max_rate=0.1, listed_in="f")


def _st(primary, text, mentions=()):
    return RawStatement("st-1", text, {"doc_id": "d"}, [], "neutral", primary, list(mentions))


def test_grounding_rejects_what_the_document_does_not_support():
    assert grounding_problem("Ada Lovelace", "Ada Lovelace was born in London in 1815.", [], DOC) is None
    assert grounding_problem("Queen (band)", "Queen played jazz concerts.", [], "Queen is a rock band.") == (
        "words_not_in_document"
    )
    assert grounding_problem("election entity visit", "visit 42 dynasty", [], DOC) == "entity_not_in_document"
    assert grounding_problem("Ada Lovelace", "Ada Lovelace met Gauss.", ["Gauss"], DOC) == "mention_not_in_document"
    assert grounding_problem("Ada Lovelace", "Ada Lovelace was born in 1816.", [], DOC) == "number_not_in_document"
    made_up = "Ada Lovelace sailed across oceans collecting tropical butterflies everywhere."
    assert grounding_problem("Ada Lovelace", made_up, [], DOC) == "words_not_in_document"
    rejected: Counter = Counter()
    kept = ground_statements(
        [_st("Ada Lovelace", "Ada Lovelace worked with Charles Babbage."), _st("Zork", "Zork was here.")],
        DOC,
        rejected,
    )
    assert [s.primary for s in kept] == ["Ada Lovelace"] and rejected == {"entity_not_in_document": 1}


@pytest.mark.slow
@pytest.mark.parametrize("fault", [None, "http_500", "bad_json", "length"])
def test_memory_with_a_garbage_server_exits_nonzero(tmp_path, capsys, fault):
    """Schema-valid garbage (the fake server's default reply), HTTP 500, non-JSON and cut replies on every
    request: the run writes its summary and exits 1 naming the rate and where the failures are listed."""
    server = FakeLLMServer(fault_rates={fault: 1.0} if fault else None)
    out = tmp_path / "memory.jsonl"
    with server as url:
        rc = memory_main(
            ["--builtin-wiki", "--limit", "6", "--output", str(out), "--backend", "openai", "--llm-url", url]
            + ["--max-retries", "1", "--max-reasks", "0", "--timeout", "5"]
        )
    err = capsys.readouterr().err
    assert rc == 1 and "failure rate 6/6 = 100.0% exceeds --max-failure-rate 10.0%" in err, err
    summary = json.loads((tmp_path / "memory.jsonl.summary.json").read_text())
    assert sum(summary["failed_documents"].values()) == 6 and "memory.jsonl.summary.json" in err
    if fault is None:  # garbage that parses: every statement fails grounding, counted by reason
        assert summary["failed_documents"] == {"no_grounded_statement": 6}
        assert summary["ungrounded_statements"]["entity_not_in_document"] >= 6 and summary["statements"] == 0


@pytest.mark.slow
def test_memory_with_a_sound_server_keeps_grounded_statements(tmp_path):
    out = tmp_path / "memory.jsonl"
    with FakeLLMServer(FasResponder()) as url:
        args = ["--builtin-wiki", "--limit", "8", "--output", str(out), "--backend", "openai", "--llm-url", url]
        assert memory_main(args) == 0
    summary = json.loads((tmp_path / "memory.jsonl.summary.json").read_text())
    assert summary["statements"] > 0 and sum(summary["failed_documents"].values()) <= 0.1 * 8


@pytest.mark.slow
def test_fas_with_a_garbage_server_exits_nonzero(wiki_memory, tmp_path, capsys):
    out = tmp_path / "fas"
    with FakeLLMServer() as url:
        args = ["--memory", wiki_memory, "--output-dir", str(out), "--max-items", "4", "--backend", "openai"]
        rc = fas_main([*args, "--llm-url", url, "--judge-set", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "exceeds --max-failure-rate 10.0%" in err and str(out / "rejected.jsonl") in err, err
    # the same run is accepted when the caller allows every item to fail
    with FakeLLMServer() as url:
        rc = fas_main([*args, "--llm-url", url, "--judge-set", "none", "--no-progress", "--max-failure-rate", "1"])
    assert rc == 0


@pytest.mark.slow
def test_rollout_with_a_failing_server_exits_nonzero(tmp_path, capsys):
    from data_tools.synthesis import rollout as R
    from data_tools.synthesis.corpus import write_wiki_corpus

    corpus = tmp_path / "corpus.jsonl"
    write_wiki_corpus(corpus, limit=50)
    out = tmp_path / "traj.jsonl"
    with FakeLLMServer(fault_rates={"http_500": 1.0}) as url:
        args = ["--questions", "builtin:3", "--corpus", str(corpus), "--output", str(out), "--backend", "openai"]
        rc = R.main([*args, "--llm-url", url, "--max-retries", "0", "--max-calls", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "data rollout: failure rate 3/3" in err and str(out) in err, err


def test_length_truncated_reply_with_complete_json_is_used(tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with FakeLLMServer(lambda body: FakeReply(content={"a": 7}, finish_reason="length")) as url:
        client = LLMClient(LLMConfig(urls=[url], model="m", max_retries=1, backoff_base_s=0.001))
        (res,) = client.run_batch([{"messages": [{"role": "user", "content": "q"}], "schema": schema}])
    assert res.ok and res.parsed == {"a": 7} and client.stats.length_parsed == 1
    assert client.stats.length_retries == 0  # complete JSON: no second request with a larger budget
    with FakeLLMServer(lambda body: FakeReply(content='{"a": ', finish_reason="length")) as url:
        client = LLMClient(LLMConfig(urls=[url], model="m", max_retries=1, backoff_base_s=0.001))
        (res,) = client.run_batch([{"messages": [{"role": "user", "content": "q"}], "schema": schema}])
    assert res.error == "truncated" and client.stats.length_retries == 1
