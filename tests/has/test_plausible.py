"""The expert's step is kept verbatim, and the alternatives are plausible: no rule or surface probe finds the original.

Data: ``fixtures/deepresearch_natural.jsonl`` (120 DeepResearch-style trajectories with natural-language queries and
several sentences of reasoning per step, written by ``fixtures/make_deepresearch.py``) and the offline pipeline
(scripted rollouts of the built-in corpus). Bounds (issue 22): the content-masked surface probe <= chance + 0.05;
the query-style rule and the answer-in-evidence rule <= chance + 0.10; zero fragment answers and zero
pasted-question goals among the alternatives. The rules are also shown to fire on planted tells, so they can fail.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from data_tools.synthesis import rollout as R
from data_tools.synthesis.env.goals import goal_for, is_pasted_question, missing_fact
from data_tools.synthesis.env.questions import builtin_questions
from data_tools.synthesis.has.cli import main as has_main
from data_tools.synthesis.has.plausible import is_fragment, query_is_natural
from data_tools.synthesis.has.probe import main as probe_main
from data_tools.synthesis.has.probe import read_decisions, run_probe
from data_tools.synthesis.has.probe_context import (
    alternative_defects,
    answer_in_evidence_rule,
    query_style_rule,
    read_context_decisions,
)
from data_tools.synthesis.trajectory import load_trajectories

from .conftest import write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "deepresearch_natural.jsonl"
SURFACE_EXCESS = 0.05
RULE_EXCESS = 0.10


def _expand(src: Path, out: Path, *extra: str) -> Path:
    assert has_main(["--input", str(src), "--output", str(out), "--candidates", "3", "--seed", "0", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def natural_has(tmp_path_factory) -> Path:
    return _expand(FIXTURE, tmp_path_factory.mktemp("nat") / "has.jsonl")


@pytest.fixture(scope="module")
def offline_has(tmp_path_factory, small_env, qwen3_tok) -> Path:
    d = tmp_path_factory.mktemp("off")
    cfg = R.RolloutConfig(max_calls=8)
    count = lambda text: len(qwen3_tok.encode(text))  # noqa: E731
    qs = builtin_questions(small_env.docs, 120)
    recs = [asyncio.run(R.rollout(q, R.scripted_act(small_env, q, 0), small_env, cfg, count)) for q in qs]
    return _expand(write_jsonl(d / "traj.jsonl", recs), d / "has.jsonl", "--corpus", "builtin:600")


def _data(request, which: str) -> Path:
    return request.getfixturevalue("natural_has" if which == "natural" else "offline_has")


def test_fixture_is_deepresearch_style():
    trajs = list(load_trajectories(FIXTURE))
    assert len(trajs) >= 100
    queries = [c.arguments["query"][0] for t in trajs for s in t.steps for c in s.tool_calls if c.name == "search"]
    assert sum(map(query_is_natural, queries)) == len(queries)  # natural-language queries
    assert all(len(s.think.split(". ")) >= 2 for t in trajs for s in t.steps)  # several sentences of reasoning
    outcomes = {t.answer == t.prediction for t in trajs}
    assert outcomes == {True, False}


@pytest.mark.parametrize("which", ["natural", "offline"])
def test_expert_steps_verbatim(which, request):
    """Every original thought and call (or answer) appears byte-exact, right after the choice."""
    path = _data(request, which)
    src = FIXTURE if which == "natural" else path.with_name("traj.jsonl")
    trajs = {t.id: t for t in load_trajectories(src)}
    raw = {json.loads(line)["id"]: json.loads(line) for line in src.read_text().splitlines()}
    checked = 0
    for line in path.read_text().splitlines():
        s = json.loads(line)
        traj = trajs[s["meta"]["trajectory_id"]]
        written = [m["content"] for m in raw[traj.id]["messages"] if m["role"] == "assistant"]
        for st in s["meta"]["steps"]:
            step = traj.steps[st["step"] - 1]
            assert written[st["step"] - 1].strip() == step.verbatim()  # the message as the agent wrote it
            assert f"I will choose option {st['original_index'] + 1}\n\n{step.verbatim()}" in s["text"]
            assert step.think in s["text"] and "<think>" not in "".join(st["options"])
            checked += 1
    assert checked > 200


@pytest.mark.slow
@pytest.mark.parametrize("which", ["natural", "offline"])
def test_content_masked_surface_probe_at_chance(which, request, tmp_path):
    """Two-fold: fitted on half the trajectories, scored on the other half, both ways."""
    lines = _data(request, which).read_text().splitlines()
    halves = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    halves[0].write_text("".join(x + "\n" for x in lines[::2]))
    halves[1].write_text("".join(x + "\n" for x in lines[1::2]))
    a, b = (read_decisions(h, mask=True) for h in halves)
    r1, r2 = run_probe(a, b), run_probe(b, a)
    n = r1.test_decisions + r2.test_decisions
    acc = (r1.accuracy * r1.test_decisions + r2.accuracy * r2.test_decisions) / n
    chance = (r1.chance * r1.test_decisions + r2.chance * r2.test_decisions) / n
    assert n > 300
    assert acc <= chance + SURFACE_EXCESS, (acc, chance, r1.top_features, r2.top_features)


@pytest.mark.parametrize("which", ["natural", "offline"])
def test_rules_at_chance_and_no_defects(which, request):
    decisions = list(read_context_decisions(_data(request, which)))
    style, evidence = query_style_rule(decisions), answer_in_evidence_rule(decisions)
    assert style["decisions"] > 50 and evidence["decisions"] > 50
    assert style["accuracy"] <= style["chance"] + RULE_EXCESS, style
    assert evidence["accuracy"] <= evidence["chance"] + RULE_EXCESS, evidence
    defects = alternative_defects(decisions)
    assert defects["alternatives"] > 300
    assert defects["fragment_answers"] == 0 and defects["pasted_question_goals"] == 0, defects


def test_rules_and_checks_find_planted_tells(natural_has):
    """The checks can fail: lower-case keyword alternatives, fragment answers and pasted goals are found."""
    decisions = list(read_context_decisions(natural_has))
    for d in decisions:
        for i, o in enumerate(d.options):
            if i != d.original and '"query": ["' in o:
                head, rest = o.split('"query": ["', 1)
                q, tail = rest.split('"]', 1)
                d.options[i] = head + '"query": ["' + " ".join(w.lower() for w in q.split() if len(w) > 3) + '"]' + tail
    style = query_style_rule(decisions)
    assert style["accuracy"] > style["chance"] + 0.3, style
    assert is_fragment("Time to answer: of Westphalia is the collective.") and is_fragment(
        "the screenplay with Arthur C."
    )
    assert is_fragment("of Westphalia is the") and not is_fragment("Peace of Westphalia") and not is_fragment("68,062")
    q = "Who directed the 1968 film whose screenplay was co-written by the novelist Arthur C. Clarke?"
    assert is_pasted_question(q, q) and is_pasted_question("Find: " + q.lower(), q)
    goal = goal_for(q, "Stanley Kubrick - Wikipedia")
    assert not is_pasted_question(goal, q) and goal.endswith("on the Stanley Kubrick page")
    assert missing_fact(q).startswith("the person who directed")


def test_has_probe_reports_the_context_aware_figure(natural_has, tmp_path, capsys):
    lines = natural_has.read_text().splitlines()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(x + "\n" for x in lines[::2]))
    b.write_text("".join(x + "\n" for x in lines[1::2]))
    out = tmp_path / "p.json"
    assert probe_main(["--train", str(a), "--test", str(b), "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "context-aware accuracy" in text and "query-style-rule" in text and "answer-in-evidence-rule" in text
    ctx = res["context"]
    assert set(ctx["context_aware"]["weights"]) == {"question_overlap", "response_overlap", "url_rank",
                                                    "answer_in_evidence"}  # fmt: skip
    assert ctx["defects"]["fragment_answers"] == 0 and res["mask"] == "content"


def test_malformed_steps_cut_or_skipped(tmp_path, capsys):
    """An unparseable call in the middle: the trajectory is kept up to it (Unfinished); an empty answer first:
    skipped; each counted by kind."""
    recs = [json.loads(x) for x in FIXTURE.read_text().splitlines()[:3]]
    bad = recs[0]["messages"]
    idx = [i for i, m in enumerate(bad) if m["role"] == "assistant"]
    bad[idx[1]]["content"] = bad[idx[1]]["content"].replace('{"name"', "{'name' oops", 1)
    recs[1]["messages"] = recs[1]["messages"][:1] + [{"role": "assistant", "content": "<answer></answer>"}]
    src = write_jsonl(tmp_path / "t.jsonl", recs)
    out = tmp_path / "o.jsonl"
    assert has_main(["--input", str(src), "--output", str(out)]) == 0
    line = capsys.readouterr().out
    assert "malformed steps: unparseable_call=1, empty_step=1 (cut 1, skipped 1)" in line
    samples = {json.loads(x)["meta"]["trajectory_id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert set(samples) == {recs[0]["id"], recs[2]["id"]}
    cut = samples[recs[0]["id"]]
    assert cut["meta"]["cut"] == {"step": 2, "kind": "unparseable_call"} and len(cut["meta"]["steps"]) == 1
    assert cut["meta"]["outcome"] == "unfinished" and "oops" not in cut["text"]
    assert "There are 4 candidate actions for step 1:" in cut["text"]


def test_duplicate_trajectory_ids_are_left_out(tmp_path):
    """Two inputs holding the same trajectory id (e.g. two rollouts of one question): the second is skipped."""
    rec = json.loads(FIXTURE.read_text().splitlines()[0])
    a, b = write_jsonl(tmp_path / "a.jsonl", [rec]), write_jsonl(tmp_path / "b.jsonl", [rec])
    out = tmp_path / "o.jsonl"
    assert has_main(["--input", str(a), "--input", str(b), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1
    assert json.loads((tmp_path / "o.jsonl.summary.json").read_text())["skipped_duplicate_id"] == 1


def test_rollout_outcomes_depend_on_the_policys_decisions(small_env, qwen3_tok):
    """Every built-in question style has both outcomes at the default mistake rates; with no mistakes the policy
    is right more often, and always wrong answers need no special question style."""
    cfg = R.RolloutConfig(max_calls=8)
    count = lambda text: len(qwen3_tok.encode(text))  # noqa: E731
    qs = builtin_questions(small_env.docs, 60)

    def outcomes(**rates) -> dict[tuple[str, bool], int]:
        out: dict[tuple[str, bool], int] = {}
        for q in qs:
            rec = asyncio.run(R.rollout(q, R.scripted_act(small_env, q, 0, **rates), small_env, cfg, count))
            key = (q.style, bool(rec.get("judgment")))
            out[key] = out.get(key, 0) + 1
        return out

    default = outcomes()
    for style in {q.style for q in qs}:
        assert default.get((style, True)) and default.get((style, False)), default
    careful = outcomes(wrong_pick_prob=0.0, misleading_query_prob=0.0, premature_answer_prob=0.0)
    sloppy = outcomes(wrong_pick_prob=1.0, misleading_query_prob=1.0, premature_answer_prob=1.0)
    right = lambda o: sum(v for (_, ok), v in o.items() if ok)  # noqa: E731
    assert right(sloppy) < right(default) <= right(careful), (sloppy, default, careful)
