"""The tell probe: it finds a planted tell, and the template backend's options carry (almost) none."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from data_tools.synthesis import rollout as R
from data_tools.synthesis.env.questions import builtin_questions
from data_tools.synthesis.env.search import SearchEnvironment
from data_tools.synthesis.has.cli import main as has_main
from data_tools.synthesis.has.probe import ProbeDecision, read_decisions, run_probe
from data_tools.synthesis.has.probe import main as probe_main

from .conftest import write_jsonl

# The bound: chance + 0.05. Measured on this test's data (2 x 200 scripted rollouts over builtin:1500,
# 704-706 held-out decisions): with --corpus 0.286 at chance 0.250, without 0.264 at 0.250 (before equally long
# recombined queries: 0.412 at 0.272 on 2 x 350 rollouts). The old template backend (strategy-specific phrasing,
# original verbatim) reached 1.000. Other data sets: see docs/has.md.
MAX_EXCESS = 0.05


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory, qwen3_tok):
    """Two disjoint sets of offline scripted rollouts (train / held-out split)."""
    d = tmp_path_factory.mktemp("rollouts")
    env = SearchEnvironment.builtin(limit=1500)
    cfg = R.RolloutConfig(max_calls=8)
    count = lambda text: len(qwen3_tok.encode(text))  # noqa: E731
    qs = builtin_questions(env.docs, 400)
    recs = [asyncio.run(R.rollout(q, R.scripted_act(env, q, 0), env, cfg, count)) for q in qs]
    return [write_jsonl(d / f"traj_{name}.jsonl", part) for name, part in (("a", recs[:200]), ("b", recs[200:]))]


def _expand(rollouts, d, extra: list[str]):
    out = []
    for src, name in zip(rollouts, "ab"):
        dst = d / f"has_{name}.jsonl"
        assert has_main(["--input", str(src), "--output", str(dst), "--candidates", "3", "--seed", "0", *extra]) == 0
        out.append(dst)
    return out


@pytest.fixture(scope="module")
def has_splits(rollouts, tmp_path_factory):
    """HAS output of the template backend with ``--corpus`` (related pages feed the alternatives)."""
    return _expand(rollouts, tmp_path_factory.mktemp("probe_corpus"), ["--corpus", "builtin:1500"])


@pytest.fixture(scope="module")
def has_splits_no_corpus(rollouts, tmp_path_factory):
    """HAS output without ``--corpus``: first-step alternatives have only the question and the trajectory."""
    return _expand(rollouts, tmp_path_factory.mktemp("probe_plain"), [])


@pytest.mark.slow
def test_probe_finds_a_planted_tell(has_splits):
    """The probe can fail: mark every original with one extra word and it finds it."""
    planted = []
    for path in has_splits:
        decisions = read_decisions(path)
        for d in decisions:
            d.options[d.original] = "Indeed. " + d.options[d.original]
        planted.append(decisions)
    res = run_probe(*planted)
    assert res.accuracy > 0.95 and res.chance < 0.3
    assert res.top_features[0][0] in ("w:indeed", "b:indeed .", "b:. <")


def test_probe_length_tell():
    """A length difference alone is found too."""

    def decisions(n, seed):
        import random

        rng = random.Random(seed)
        out = []
        for _ in range(n):
            opts = [" ".join(f"w{rng.randrange(50)}" for _ in range(rng.randint(5, 9))) for _ in range(4)]
            k = rng.randrange(4)
            opts[k] += " " + " ".join(f"w{rng.randrange(50)}" for _ in range(6))
            out.append(ProbeDecision(opts, k))
        return out

    res = run_probe(decisions(300, 0), decisions(300, 1))
    assert res.accuracy > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["corpus", "no_corpus"])
def test_template_backend_has_no_strong_tell(setting, request, tmp_path, capsys):
    splits = request.getfixturevalue("has_splits" if setting == "corpus" else "has_splits_no_corpus")
    out = tmp_path / "probe.json"
    rc = probe_main(["--train", str(splits[0]), "--test", str(splits[1]), "--output", str(out),
                     "--max-excess", str(MAX_EXCESS)])  # fmt: skip
    res = json.loads(out.read_text())
    line = capsys.readouterr().out
    assert "held-out accuracy" in line and "chance" in line
    assert res["test_decisions"] > 500  # enough decisions for the bound to mean something (SE ~ 0.016)
    assert res["accuracy"] <= res["chance"] + MAX_EXCESS and rc == 0, res


def test_first_step_search_alternatives_match_the_original_length(has_splits_no_corpus):
    """The tell this guards against: without a corpus the original first query was the longest one (all the
    question's keywords; alternatives were subsets). Now most first-step search alternatives are as long."""
    near = total = longest = decisions = 0
    for line in has_splits_no_corpus[1].read_text().splitlines():
        step = json.loads(line)["meta"]["steps"][0]
        queries = [re.search(r'"query": \["([^"]*)"', o) for o in step["options"]]
        if step["step"] != 1 or not queries[step["original_index"]]:
            continue
        lens = [len(q.group(1).split()) if q else 0 for q in queries]
        orig = lens.pop(step["original_index"])
        if not lens:
            continue
        decisions += 1
        near += sum(abs(n - orig) <= 1 for n in lens)
        total += len(lens)
        longest += orig > max(lens)
    assert total > 300
    assert near / total > 0.8, (near, total)
    assert longest / decisions < 0.2, (longest, decisions)  # strictly longest in few decisions (was most)
