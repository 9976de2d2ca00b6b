"""HAS expansion: decision invariants, determinism, collapse guard, long-context splitting, LLM backend, resume."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools.synthesis import rollout as R
from data_tools.synthesis.env.questions import builtin_questions
from data_tools.synthesis.has.action import Action
from data_tools.synthesis.has.cli import main as has_main
from data_tools.synthesis.has.collapse import CollapseGuard
from data_tools.synthesis.serialize import DECISION_CORRECT, DECISION_INCORRECT, DECISION_UNFINISHED
from data_tools.synthesis.trajectory import Step, judge, load_trajectories, parse_action_text

from .conftest import deepresearch_record, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def rollout_records(env, tok, n: int) -> list[dict]:
    cfg = R.RolloutConfig(max_calls=8)
    count = lambda text: len(tok.encode(text))  # noqa: E731
    return [
        asyncio.run(R.rollout(q, R.scripted_act(env, q, 0), env, cfg, count)) for q in builtin_questions(env.docs, n)
    ]


@pytest.fixture(scope="module")
def traj_file(tmp_path_factory, small_env, qwen3_tok):
    """24 scripted rollouts + 2 hand-written DeepResearch trajectories (one wrong) + 2 malformed lines."""
    recs = rollout_records(small_env, qwen3_tok, 24)
    recs += [deepresearch_record("dr-ok"), deepresearch_record("dr-wrong", prediction="300 metres")]
    bad = deepresearch_record("dr-bad")
    del bad["messages"][3]  # missing tool response
    return write_jsonl(tmp_path_factory.mktemp("has") / "traj.jsonl", recs + [bad, "not json"])


def run_has(tmp_path, traj_file, name="out.jsonl", *extra):
    out = tmp_path / name
    assert has_main(["--input", str(traj_file), "--output", str(out), *extra]) == 0
    return out, [json.loads(line) for line in out.read_text().splitlines()]


def test_decision_invariants(tmp_path, traj_file, capsys):
    out, samples = run_has(
        tmp_path, traj_file, "o.jsonl", "--candidates", "3", "--seed", "5", "--corpus", "builtin:600"
    )
    line = capsys.readouterr().out
    # the trajectory whose first call has no response is never taught: its first step is malformed, so it is skipped
    assert "read 28 trajectories, malformed 1 (invalid_line=1)" in line
    assert "samples written 26" in line and "malformed steps: call_without_response=1 (cut 0, skipped 1)" in line
    trajs = {t.id: t for t in load_trajectories(traj_file)}
    positions = set()
    guard = CollapseGuard(0.8)
    for s in samples:
        meta, text = s["meta"], s["text"]
        traj = trajs[meta["trajectory_id"]]
        judge(traj)
        assert meta["num_parts"] == 1 and len(meta["steps"]) == len(traj.steps)
        choices = re.findall(r"I will choose option (\d+)", text)
        for k, st in enumerate(meta["steps"]):
            # the expert's step is in the sample byte for byte (thinking and call or answer), after the choice
            assert traj.steps[k].think in text and traj.steps[k].verbatim() in text
            assert f"I will choose option {st['original_index'] + 1}\n\n{traj.steps[k].verbatim()}" in text
            original = Action.from_step(traj.steps[k])
            assert len(st["options"]) == 4  # N + 1
            same = [i for i, o in enumerate(st["options"]) if _action(o).tool_calls == original.tool_calls
                    and _action(o).answer == original.answer]  # fmt: skip
            assert same == [st["original_index"]]
            assert st["chosen_index"] == st["original_index"] and st["sources"][st["original_index"]] == "original"
            assert int(choices[k]) == st["chosen_index"] + 1
            positions.add(st["original_index"])
            acts = [_action(o) for o in st["options"]]
            assert not any(guard.same(a, b) for i, a in enumerate(acts) for b in acts[i + 1 :])  # no collapse
        # the real responses follow the choices, in order
        assert re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S) == [
            r for st in traj.steps for r in st.responses
        ]
        assert meta["judgment"] is traj.judgment
        ending = {True: DECISION_CORRECT, False: DECISION_INCORRECT, None: DECISION_UNFINISHED}[traj.judgment]
        assert text.endswith(f"<|im_start|>assistant\n{ending}<|im_end|>\n")  # the verdict is its own turn
    assert positions == {0, 1, 2, 3}  # the original is not always in the same place
    assert {s["meta"]["judgment"] for s in samples} == {True, False}
    summary = json.loads(out.with_name("o.jsonl.summary.json").read_text())
    assert summary["malformed"] == {"invalid_line": 1}
    assert summary["diversity"]["candidates"]["accepted"] == 3 * summary["decisions"] - summary["short_decisions"]
    assert summary["short_decisions"] <= 0.1 * summary["decisions"]
    assert 0.3 < summary["diversity"]["mean_pairwise_distance"] <= 1.0


def _action(text: str) -> Action:
    think, calls, answer = parse_action_text(text)
    return Action.from_step(Step(think, calls, answer, ["r"] if calls else []))


def test_deterministic_under_seed(tmp_path, traj_file):
    a = run_has(tmp_path, traj_file, "a.jsonl", "--seed", "1")[0].read_bytes()
    b = run_has(tmp_path, traj_file, "b.jsonl", "--seed", "1")[0].read_bytes()
    c = run_has(tmp_path, traj_file, "c.jsonl", "--seed", "2")[0].read_bytes()
    assert a == b and a != c


def test_split_never_cuts_inside_a_step(tmp_path, traj_file, qwen3_tok):
    limit = 1300  # the agent system turn (tool declarations) takes ~450 tokens of every part
    _, samples = run_has(tmp_path, traj_file, "s.jsonl", "--max-sample-tokens", str(limit), "--history-fraction", "0.3")
    by_traj: dict[str, list[dict]] = {}
    for s in samples:
        by_traj.setdefault(s["meta"]["trajectory_id"], []).append(s)
    trajs = {t.id: t for t in load_trajectories(traj_file)}
    assert any(len(parts) > 1 for parts in by_traj.values())
    replayed = 0
    for tid, parts in by_traj.items():
        covered = [st["step"] for p in parts for st in p["meta"]["steps"]]
        assert covered == list(range(1, len(trajs[tid].steps) + 1))  # every step exactly once, in order
        for i, p in enumerate(parts):
            text, meta = p["text"], p["meta"]
            assert meta["tokens"] == len(qwen3_tok.encode(text))
            assert meta["tokens"] <= limit or (meta["oversize"] and len(meta["steps"]) == 1)
            assert text.count("candidate actions for step") == len(meta["steps"])
            last = i == len(parts) - 1
            assert ("Result of the entire trajectory" in text) == last
            h0, h1 = meta["history_steps"]
            replayed += h1 > h0
            # options, choice and response of a step are all inside the part: responses = replayed + decided steps
            resp = [r for k in range(h0, h1) for r in trajs[tid].steps[k].responses]
            resp += [r for st in meta["steps"] for r in trajs[tid].steps[st["step"] - 1].responses]
            assert re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S) == resp
            steps_text = text.split("<|im_start|>user\n", 1)[1]  # after the system turn's tool-call example
            for body in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", steps_text, re.S):
                json.loads(body.split("\n<code>")[0])  # no tool call is cut
    assert replayed > 0
    hist = json.loads((tmp_path / "s.jsonl.summary.json").read_text())["length_histogram_tokens"]
    assert sum(hist.values()) == len(samples) and hist[">131072"] == 0


def _expert_step(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    return prompt.split("(style reference; do not repeat its action):\n", 1)[1].split("\n\nWrite ", 1)[0]


def test_llm_backend_checks_regenerates_and_counts_fills(tmp_path, traj_file):
    """Implausible model alternatives are rejected and asked again; only then does the template fill in, counted
    in the summary, marked in the sources and flagged ``synthetic_template``; the expert's step is never sent
    back rewritten."""
    from data_tools.synthesis.llm.fake_server import FakeLLMServer

    def responder(body):
        original = _expert_step(body)
        call = re.search(r"<tool_call>\n(.*?)\n</tool_call>", original, re.S)
        dup = json.loads(call.group(1).split("\n<code>")[0]) if call else None
        alts = [
            {"tool": dup["name"], "arguments": dup["arguments"]}
            if dup
            else {"tool": "answer", "answer": re.search(r"<answer>(.*?)</answer>", original).group(1)},
            {"tool": "search", "arguments": {"query": ["history of science overview"]}},
            {"tool": "calculator", "arguments": {"x": 1}},  # not an available tool
            {"tool": "answer", "answer": "the screenplay with Arthur C."},  # a cut-off fragment
            {"tool": "visit", "arguments": {"url": ["https://example.org/never-seen"], "goal": "g"}},  # unseen URL
        ]
        return {"alternatives": alts}

    with FakeLLMServer(responder) as url:
        out = tmp_path / "l.jsonl"
        rc = has_main(["--input", str(traj_file), "--output", str(out), "--backend", "openai", "--llm-url", url,
                       "--max-regenerate", "1", "--max-fill-rate", "1.0"])  # fmt: skip
        assert rc == 0
        samples = [json.loads(x) for x in out.read_text().splitlines()]
    summary = json.loads(out.with_name("l.jsonl.summary.json").read_text())
    llm = summary["llm_backend"]
    assert llm["rejected:fragment_answer"] > 0 and llm["rejected:url_not_seen"] > 0 and llm["invalid_items"] > 0
    assert llm["regenerated_steps"] > 0  # short steps were asked again before any template fill
    assert summary["diversity"]["candidates"]["dup_original"] >= summary["decisions"]
    fills = sum(src.startswith("template:") for s in samples for st in s["meta"]["steps"] for src in st["sources"])
    assert fills == summary["template_fills"] == llm["filled_by_template"] > 0
    assert summary["fill_rate"] == round(fills / summary["alternatives"], 4)
    trajs = {t.id: t for t in load_trajectories(traj_file)}
    for s in samples:
        meta = s["meta"]
        assert meta["synthetic_template"] == any(
            x.startswith("template") for st in meta["steps"] for x in st["sources"]
        )
        for st in meta["steps"]:
            assert st["sources"].count("original") == 1
            assert sum('"history of science overview"' in o for o in st["options"]) == (
                "llm" in st["sources"]
            )  # the one plausible-looking reply, when accepted
            assert not any("Arthur C." in o for o in st["options"])
            assert trajs[meta["trajectory_id"]].steps[st["step"] - 1].verbatim() in s["text"]


def test_failing_llm_server_exits_with_the_fill_rate(tmp_path, capsys):
    """A server that always fails: every alternative is a template fill; ``data has`` says so and exits 1."""
    from data_tools.synthesis.llm.fake_server import FakeLLMServer, FakeReply

    src = write_jsonl(tmp_path / "t.jsonl", [deepresearch_record()])
    with FakeLLMServer(lambda body: FakeReply(fault="http_400")) as url:
        rc = has_main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--backend", "openai",
                       "--llm-url", url, "--max-retries", "0", "--max-regenerate", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    summary = json.loads((tmp_path / "o.jsonl.summary.json").read_text())
    assert summary["fill_rate"] == 1.0 and summary["max_fill_rate"] == 0.1
    assert "template fill rate 100.0%" in err and "exceeds --max-failure-rate 10.0%" in err
    rec = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert rec["meta"]["synthetic_template"] is True and rec["meta"]["backend"] == "openai"


def test_resume_after_torn_write_equals_uninterrupted(tmp_path, traj_file):
    full = run_has(tmp_path, traj_file, "full.jsonl")[0]
    part = run_has(tmp_path, traj_file, "part.jsonl", "--limit", "9")[0]
    assert 0 < len(part.read_text().splitlines()) < len(full.read_text().splitlines())
    with open(part, "a", encoding="utf-8") as f:
        f.write('{"id": "x:p0/1", "text": "torn')
    resumed = run_has(tmp_path, traj_file, "part.jsonl")[0]
    assert resumed.read_bytes() == full.read_bytes()


@pytest.mark.slow
def test_sigkill_and_resume(tmp_path, small_env, qwen3_tok):
    src = write_jsonl(tmp_path / "big.jsonl", rollout_records(small_env, qwen3_tok, 80))
    cmd = [sys.executable, "-m", "data_tools.synthesis.has", "--input", str(src), "--batch", "1", "--candidates", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = tmp_path / "full.jsonl"
    assert has_main([*cmd[3:], "--output", str(full)]) == 0  # uninterrupted reference, in-process
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([*cmd, "--output", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or killed.stat().st_size < 8000):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_full = len(full.read_text().splitlines())
    assert len(killed.read_bytes().split(b"\n")) - 1 < n_full  # it really died part-way
    assert has_main([*cmd[3:], "--output", str(killed)]) == 0  # resume
    assert killed.read_bytes() == full.read_bytes()


def test_long_trajectory_128k(small_env, qwen3_tok):
    """A ~180K-token trajectory is split into parts of at most 128K tokens at step boundaries."""
    from data_tools.synthesis.env.search import EnvConfig, SearchEnvironment
    from data_tools.synthesis.has.expand import HasConfig, length_histogram, make_decisions, render_samples
    from data_tools.synthesis.has.template_backend import TemplateBackend
    from data_tools.synthesis.trajectory import ToolCall, Trajectory

    env = SearchEnvironment(small_env.docs, EnvConfig(top_k=10, snippet_chars=2000, max_queries=5))
    titles = [d.title for d in small_env.docs]
    steps = []
    for k in range(40):
        queries = titles[5 * k : 5 * k + 5]
        call = ToolCall("search", {"query": queries})
        steps.append(Step(f"Step {k}: look up {queries[0]}.", [call], None, [env.call("search", call.arguments)]))
    steps.append(Step("Done.", [], titles[0], []))
    traj = Trajectory("long-1", "Summarize these topics: " + ", ".join(titles[:10]), steps, titles[0], titles[0])
    judge(traj)
    cfg = HasConfig(candidates=3, seed=0)
    alts = TemplateBackend(CollapseGuard(cfg.similarity), env=env).generate([traj], 3, 0)[traj.id]
    count = lambda text: len(qwen3_tok.encode(text))  # noqa: E731
    samples = render_samples(traj, make_decisions(traj, alts, 0), count, cfg, "template")
    tokens = [s["meta"]["tokens"] for s in samples]
    total_plain = count("".join(s.action_text() + (s.response_text() or "") for s in steps))
    assert total_plain > 131072 and len(samples) == 2
    assert all(t <= 131072 for t in tokens) and tokens[0] > 131072 * 0.9  # greedy: the first part is nearly full
    assert [st["step"] for s in samples for st in s["meta"]["steps"]] == list(range(1, 42))
    h0, h1 = samples[1]["meta"]["history_steps"]
    assert h1 == samples[1]["meta"]["steps"][0]["step"] - 1 and h0 < h1  # recent steps replayed without options
    replay = count("".join(steps[k].action_text() + (steps[k].response_text() or "") for k in range(h0, h1)))
    assert replay <= 131072 * cfg.history_fraction
    assert samples[1]["text"].endswith(f"{DECISION_CORRECT}<|im_end|>\n")
    hist = length_histogram(tokens)
    assert hist["<=131072"] == 1 and sum(hist.values()) == 2 and hist[">131072"] == 0


def test_shards_partition_the_output(tmp_path, traj_file):
    full = run_has(tmp_path, traj_file, "full.jsonl")[0].read_text().splitlines()
    shards = [
        run_has(tmp_path, traj_file, f"s{i}.jsonl", "--shard-index", str(i), "--num-shards", "2")[0]
        .read_text()
        .splitlines()
        for i in range(2)
    ]
    assert shards[0] and shards[1] and sorted(shards[0] + shards[1]) == sorted(full)


def test_cli_llm_judge(tmp_path, traj_file):
    from data_tools.synthesis.llm.fake_server import FakeLLMServer

    def responder(body):  # a judge that accepts everything
        assert body["response_format"]["type"] == "json_schema"
        return {"verdict": "correct", "reason": "ok"}

    with FakeLLMServer(responder) as url:
        out, samples = run_has(tmp_path, traj_file, "j.jsonl", "--judge", "llm", "--llm-url", url)
    assert samples and all(s["meta"]["judgment"] is True for s in samples)
    assert all(s["meta"]["judge"].startswith("llm (has/judge@v1)") for s in samples)
    assert all(s["text"].endswith(f"{DECISION_CORRECT}<|im_end|>\n") for s in samples)
    summary = json.loads(out.with_name("j.jsonl.summary.json").read_text())
    assert summary["judge_correct"] == len(samples) and summary["llm"]["requests"] == len(samples)


def test_llm_backend_sends_the_expert_step_as_style_reference(tmp_path):
    """The model sees the expert's step verbatim and writes only alternatives; the sample keeps the step as is."""
    from data_tools.synthesis.llm.fake_server import FakeLLMServer

    seen = []

    def responder(body):
        seen.append(_expert_step(body))
        queries = ["Eiffel Tower lift capacity", "Gustave Eiffel engineering firm", "Champ de Mars park size"]
        alts = [{"tool": "search", "arguments": {"query": [q]}} for q in queries]
        return {"alternatives": alts}

    src = write_jsonl(tmp_path / "t.jsonl", [deepresearch_record()])
    with FakeLLMServer(responder) as url:
        _, samples = run_has(tmp_path, src, "o.jsonl", "--backend", "openai", "--llm-url", url)
    traj = next(iter(load_trajectories(src)))
    assert sorted(seen) == sorted(st.verbatim() for st in traj.steps)
    for k, st in enumerate(samples[0]["meta"]["steps"]):
        orig = st["options"][st["original_index"]]
        assert "<think>" not in orig  # options are actions; the reasoning follows the choice
        assert _action(orig).tool_calls == Action.from_step(traj.steps[k]).tool_calls
        assert traj.steps[k].verbatim() in samples[0]["text"]
