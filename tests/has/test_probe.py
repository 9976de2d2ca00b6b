"""The tell probe: it finds a planted tell, and the template backend's options carry (almost) none."""

from __future__ import annotations

import asyncio
import json

import pytest

from data_tools import rollout as R
from data_tools.env import SearchEnvironment
from data_tools.env.questions import builtin_questions
from data_tools.has import main as has_main
from data_tools.has.probe import ProbeDecision, read_decisions, run_probe
from data_tools.has.probe import main as probe_main

from .conftest import write_jsonl

# The bound: chance + 0.05. Measured on this test's data (2 x 200 scripted rollouts, 706 held-out
# decisions): accuracy 0.276 at chance 0.250. The old template backend (strategy-specific phrasing, original
# verbatim) reached 1.000 on the same kind of data. Other data sets measure higher: see docs/has.md.
MAX_EXCESS = 0.05


@pytest.fixture(scope="module")
def has_splits(tmp_path_factory, qwen3_tok):
    """HAS output of the template backend on two disjoint sets of offline rollouts (held-out split)."""
    d = tmp_path_factory.mktemp("probe")
    env = SearchEnvironment.builtin(limit=1500)
    cfg = R.RolloutConfig(max_calls=8)
    count = lambda text: len(qwen3_tok.encode(text))  # noqa: E731
    qs = builtin_questions(env.docs, 400)
    recs = [asyncio.run(R.rollout(q, R.scripted_act(env, q, 0), env, cfg, count)) for q in qs]
    out = []
    for name, part in (("a", recs[: len(recs) // 2]), ("b", recs[len(recs) // 2 :])):
        src = write_jsonl(d / f"traj_{name}.jsonl", part)
        dst = d / f"has_{name}.jsonl"
        args = [
            "--input",
            str(src),
            "--output",
            str(dst),
            "--candidates",
            "3",
            "--seed",
            "0",
            "--corpus",
            "builtin:1500",
        ]
        assert has_main(args) == 0
        out.append(dst)
    return out


@pytest.mark.slow
def test_probe_finds_a_planted_tell(has_splits):
    """The probe can fail: mark every original with one extra word and it finds it."""
    planted = []
    for path in has_splits:
        decisions = read_decisions(path)
        for d in decisions:
            d.options[d.original] = d.options[d.original].replace("<think>\n", "<think>\nIndeed. ", 1)
        planted.append(decisions)
    res = run_probe(*planted)
    assert res.accuracy > 0.95 and res.chance < 0.3
    assert res.top_features[0][0] in ("w:indeed", "b:indeed .", "b:> indeed")


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
def test_template_backend_has_no_strong_tell(has_splits, tmp_path, capsys):
    out = tmp_path / "probe.json"
    rc = probe_main(["--train", str(has_splits[0]), "--test", str(has_splits[1]), "--output", str(out),
                     "--max-excess", str(MAX_EXCESS)])  # fmt: skip
    res = json.loads(out.read_text())
    line = capsys.readouterr().out
    assert "held-out accuracy" in line and "chance" in line
    assert res["test_decisions"] > 500  # enough decisions for the bound to mean something (SE ~ 0.016)
    assert res["accuracy"] <= res["chance"] + MAX_EXCESS and rc == 0, res
