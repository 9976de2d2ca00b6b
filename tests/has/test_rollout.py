"""Rollouts against the BM25 environment produce valid trajectories in the ingested format; resume; limits."""

from __future__ import annotations

import asyncio
import json

from data_tools.synthesis import rollout as R
from data_tools.synthesis.env.questions import Question, builtin_questions, read_questions
from data_tools.synthesis.trajectory import (
    LLM_LIMIT_TEXT,
    LoadReport,
    load_trajectories,
    match_answer,
    parse_trajectory,
)

from .conftest import write_jsonl


def _count(tok):
    return lambda text: len(tok.encode(text))


def test_scripted_rollouts_are_valid(small_env, qwen3_tok):
    questions = builtin_questions(small_env.docs, 12)
    assert len({q.id for q in questions}) == 12 and all(q.answer for q in questions)
    cfg = R.RolloutConfig(max_calls=8)
    recs = [
        asyncio.run(R.rollout(q, R.scripted_act(small_env, q, 0), small_env, cfg, _count(qwen3_tok))) for q in questions
    ]
    judged = []
    for q, rec in zip(questions, recs):
        t = parse_trajectory(json.loads(json.dumps(rec)))  # the ingestion path accepts what rollout writes
        assert t.steps[0].tool_calls[0].name == "search" and t.steps[-1].answer == rec["prediction"]
        assert rec["termination"] == "answer" and len(t.steps) <= cfg.max_calls
        for step in t.steps[:-1]:
            # every recorded response is exactly what the environment returns for that call, re-executed here
            assert step.responses == [small_env.call(c.name, c.arguments) for c in step.tool_calls]
        assert rec["judgment"] == match_answer(rec["prediction"], q.answer, "contains")
        judged.append(rec["judgment"])
    assert True in judged and False in judged  # a realistic mix of successes and failures


def test_limits_calls_and_context(small_env, qwen3_tok):
    """The DeepResearch ``react_agent.py`` endings: limit texts overwrite the last message."""
    q = Question("q1", "Which subject is described as an unanswerable riddle?", "nothing")

    async def searcher(messages, call):  # a policy that never answers unless forced
        if messages[-1]["content"] == R.FORCE_ANSWER:
            return "<think>\nforced\n</think>\n<answer>nothing at all</answer>"
        return f'<think>\nsearch {call}\n</think>\n<tool_call>\n{{"name": "search", "arguments": {{"query": ["city {call}"]}}}}\n</tool_call>'

    rec = asyncio.run(R.rollout(q, searcher, small_env, R.RolloutConfig(max_calls=3), _count(qwen3_tok)))
    assert rec["termination"] == "exceed available llm calls" and rec["prediction"] == "No answer found."
    assert sum(m["role"] == "assistant" for m in rec["messages"]) == 3
    assert rec["messages"][-1]["content"] == LLM_LIMIT_TEXT  # the last tool response, overwritten
    assert "judgment" not in rec and parse_trajectory(rec).outcome == "unfinished"

    rec = asyncio.run(
        R.rollout(q, searcher, small_env, R.RolloutConfig(max_calls=50, max_context_tokens=600), _count(qwen3_tok))
    )
    assert rec["termination"] == "generate an answer as token limit reached"
    assert rec["prediction"] == "nothing at all" and rec["messages"][-2]["content"] == R.FORCE_ANSWER
    assert rec["messages"][-3]["role"] == "assistant" and rec["judgment"] is True

    async def bad_json(messages, call):
        return (
            '<think>\nx\n</think>\n<tool_call>\n{"name": "search", "arguments": \n</tool_call>'
            if call == 0
            else None
            if call == 1
            else "<answer>a</answer>"
        )

    rec = asyncio.run(R.rollout(q, bad_json, small_env, R.RolloutConfig(max_calls=4), _count(qwen3_tok)))
    assert rec["messages"][2]["content"] == f"<tool_response>\n{R.TOOL_JSON_ERROR}\n</tool_response>"
    assert rec["messages"][3]["content"].startswith("vllm server error!!!")  # a failed call, as DeepResearch writes
    t = parse_trajectory(rec)
    assert t.dropped_turns == 1 and t.steps[0].tool_calls[0].raw is not None and t.prediction == "a"


def rollout_records(env, tok, n: int) -> list[dict]:
    cfg = R.RolloutConfig(max_calls=8)
    return [
        asyncio.run(R.rollout(q, R.scripted_act(env, q, 0), env, cfg, _count(tok)))
        for q in builtin_questions(env.docs, n)
    ]


def test_rollout_round_trip(small_env, qwen3_tok, tmp_path):
    """Everything ``data rollout`` writes is ingested: every ending, no malformed record, steps preserved."""

    async def flaky(messages, call):
        if messages[-1]["content"] == R.FORCE_ANSWER:
            return "<think>\nforced\n</think>\nno tags"
        return [
            '<think>\na\n</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["paris",],}}\n</tool_call>',
            None,
            '<tool_call>\n{"name": "search", "arguments": {"query": [}\n</tool_call>',
            "<think>\nonly thinking\n</think>",
            '<tool_call>\n{"name": "visit", "arguments": {"url": ["x"], "goal": "g"}}\n</tool_call>\n<tool_call>\n{}\n</tool_call>',
        ][call % 5]

    recs = []
    for i, (calls, ctx) in enumerate([(4, 32768), (7, 32768), (50, 700)]):
        q = Question(f"q{i}", "Which subject is described as the capital of France?", "Paris")
        recs.append(asyncio.run(R.rollout(q, flaky, small_env, R.RolloutConfig(calls, ctx), _count(qwen3_tok))))
    recs += rollout_records(small_env, qwen3_tok, 10)
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    report = LoadReport()
    trajs = list(load_trajectories(path, report))
    assert report.ok == len(recs) and not report.malformed
    assert {recs[0]["termination"], recs[2]["termination"]} == {
        "exceed available llm calls",
        "format error: generate an answer as token limit reached",
    }
    for t in trajs:
        back = parse_trajectory(t.to_record())
        assert back.steps == t.steps and back.termination == t.termination


def test_read_questions_skips_bad_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "a", "question": "Q1?", "answer": "x"},
            "{broken",
            {"question": 3},
            {"question": "Q2?", "ground_truth": 7},
        ],
    )
    bad = []
    qs = list(read_questions(path, bad))
    assert [(q.id, q.answer) for q in qs] == [("a", "x"), (qs[1].id, "7")]
    assert [b.reason for b in bad] == ["invalid_json", "bad_field_type"] and bad[0].lineno == 2


def test_cli_resume_equals_uninterrupted(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    from data_tools.synthesis.corpus import write_wiki_corpus

    write_wiki_corpus(corpus, limit=300)
    base = ["--questions", "builtin:10", "--corpus", str(corpus), "--max-calls", "8"]
    full = tmp_path / "full.jsonl"
    assert R.main([*base, "--output", str(full)]) == 0
    assert "written 10" in capsys.readouterr().out
    part = tmp_path / "part.jsonl"
    assert R.main([*base, "--output", str(part), "--limit", "4"]) == 0
    with open(part, "a", encoding="utf-8") as f:
        f.write('{"id": "torn-write", "messa')  # a killed writer leaves a partial last line
    assert R.main([*base, "--output", str(part)]) == 0
    assert "already done 4" in capsys.readouterr().out
    assert part.read_bytes() == full.read_bytes()
    got = list(load_trajectories(full))
    assert len(got) == 10


def test_openai_policy_against_fake_server(tmp_path, capsys):
    from data_tools.synthesis.llm.fake_server import FakeLLMServer

    corpus = tmp_path / "corpus.jsonl"
    from data_tools.synthesis.corpus import write_wiki_corpus

    write_wiki_corpus(corpus, limit=200)

    def responder(body):
        msgs = body["messages"]
        assert body["stop"] == R.STOP and msgs[0]["role"] == "system" and "<tools>" in msgs[0]["content"]
        turns = sum(m["role"] == "assistant" for m in msgs)
        if turns == 0:
            q = msgs[1]["content"]
            return f"<think>\nLook it up.\n</think>\n<tool_call>\n{json.dumps({'name': 'search', 'arguments': {'query': [q[:60]]}})}\n</tool_call>"
        first = msgs[-1]["content"].split("1. [", 1)[1].split("]", 1)[0]
        return f"<think>\nThe top result is {first}.\n</think>\n<answer>{first}</answer>"

    out = tmp_path / "traj.jsonl"
    with FakeLLMServer(responder) as url:
        args = ["--questions", "builtin:6", "--corpus", str(corpus), "--output", str(out), "--backend", "openai"]
        assert R.main([*args, "--llm-url", url, "--concurrency", "4"]) == 0
        assert "written 6" in capsys.readouterr().out
        # a rerun is answered from the request cache and writes nothing new
        out.unlink()
        assert R.main([*args, "--llm-url", url]) == 0
    summary = json.loads((tmp_path / "traj.jsonl.summary.json").read_text())
    assert summary["llm"]["cache_hits"] == 12 and summary["written"] == 6
    trajs = list(load_trajectories(out))
    assert len(trajs) == 6 and all(len(t.steps) == 2 and t.termination == "answer" for t in trajs)
    assert all(t.steps[1].answer == t.steps[0].responses[0].split("1. [", 1)[1].split("]", 1)[0] for t in trajs)


def test_rerun_keeps_summary(tmp_path):
    """A rerun of a finished ``data rollout`` writes nothing and keeps the summary's totals (issue 17 interface)."""
    out = tmp_path / "t.jsonl"
    args = ["--questions", "builtin:6", "--corpus", "builtin:200", "--output", str(out), "--max-calls", "2"]
    assert R.main(args) == 0
    first = json.loads((tmp_path / "t.jsonl.summary.json").read_text())
    assert R.main(args) == 0
    again = json.loads((tmp_path / "t.jsonl.summary.json").read_text())
    assert first["trajectories_ok"] == again["trajectories_ok"] == 6 and again["already_done"] == 6
    assert again["terminations"] == first["terminations"] and sum(first["terminations"].values()) == 6
