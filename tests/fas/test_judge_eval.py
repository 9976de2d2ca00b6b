"""The judge's measured accuracy: the shipped labelled set, the precision/recall bookkeeping (checked with judges
whose figures are known), the template judge's figures as docs/synthesis.md states them, and the LLM judge path."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from data_tools.common.jsonl import read_jsonl
from data_tools.synthesis.fas import judge_eval
from data_tools.synthesis.fas.judge import SampleVerdict
from data_tools.synthesis.fas.scripted import FasResponder
from data_tools.synthesis.llm.client import LLMClient, LLMConfig
from data_tools.synthesis.llm.fake_server import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def samples():
    return read_jsonl(judge_eval.DEFAULT_SET)


def test_labelled_set_has_good_and_planted_defects(samples):
    assert len(samples) >= 200
    kinds = Counter((s["type"], s["defect"]) for s in samples)
    for kind, defects in judge_eval.DEFECTS.items():
        assert kinds[(kind, None)] == sum(v for (k, _), v in kinds.items() if k == kind) / 2
        assert all(kinds[(kind, d)] >= 10 for d in defects), kinds
    leak = next(s for s in samples if s["defect"] == "answer_leak")
    assert leak["question"]["answer"][:40] in leak["question"]["question"]
    bad_call = [s for s in samples if s["defect"] == "malformed_call"]
    assert all(
        s["plan"]["action"]["name"] not in ("search", "google_scholar", "visit")
        or not isinstance(s["plan"]["action"]["arguments"].get("query", s["plan"]["action"]["arguments"]), list)
        or s["plan"]["action"]["arguments"] == {"url": []}
        for s in bad_call
    )


def test_metrics_bookkeeping_against_known_judges(samples):
    accept = judge_eval.metrics(samples, [SampleVerdict(True, None, "", "t") for _ in samples])
    assert accept["precision"] is None and accept["recall"] == 0.0
    assert accept["accuracy_before"] == accept["accuracy_after"] == 0.5
    reject = judge_eval.metrics(samples, [SampleVerdict(False, "other", "", "t") for _ in samples])
    assert reject["precision"] == 0.5 and reject["recall"] == 1.0 and reject["accuracy_after"] is None
    # an oracle that rejects exactly the defective samples
    oracle = judge_eval.metrics(samples, [SampleVerdict(s["defect"] is None, None, "", "t") for s in samples])
    assert oracle["precision"] == oracle["recall"] == oracle["accuracy_after"] == 1.0
    # a failed request is left out and counted
    some = judge_eval.metrics(samples, [None] + [SampleVerdict(True, None, "", "t")] * (len(samples) - 1))
    assert some["failed_requests"] == 1 and some["samples"] == len(samples) - 1


def test_template_judge_figures_are_the_documented_ones(samples):
    got = judge_eval.evaluate_template()
    assert got["precision"] >= 0.9 and got["recall"] >= 0.8 and got["accuracy_after"] > got["accuracy_before"]
    doc = (ROOT / "docs" / "synthesis.md").read_text(encoding="utf-8")
    row = re.search(r"\| template judge \(all\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", doc)
    assert row, "docs/synthesis.md lacks the template judge row"
    assert [float(x) for x in row.groups()] == [
        got["precision"],
        got["recall"],
        got["accuracy_before"],
        got["accuracy_after"],
    ]


@pytest.mark.slow
def test_llm_judge_is_measured_through_the_client(samples):
    few = samples[:: len(samples) // 40]
    path = Path(judge_eval.DEFAULT_SET)
    with FakeLLMServer(FasResponder(reject_every=2)) as url:
        client = LLMClient(LLMConfig(urls=[url], model="fake", concurrency=8, backoff_base_s=0.001))
        import asyncio

        async def run():
            try:
                return await judge_eval.llm_verdicts(few, client, "fake")
            finally:
                await client.aclose()

        verdicts = asyncio.run(run())
    assert all(v is not None for v in verdicts)
    structural = sum(v.judge == "rules" for v in verdicts)  # malformed calls never reach the model
    assert structural == sum(s["defect"] == "malformed_call" for s in few) and structural > 0
    assert {v.judge for v in verdicts} == {"rules", "llm:fake"} and path.is_file()
    m = judge_eval.metrics(few, verdicts)
    assert m["samples"] == len(few) and m["recall_by_defect"]["malformed_call"] == 1.0
