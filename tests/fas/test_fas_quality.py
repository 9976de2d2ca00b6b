"""The offline FAS text is varied enough to train on: measured with ``data_tools.synthesis.fas.quality`` on real
memory."""

from __future__ import annotations

from data_tools.synthesis.fas.cli import main as fas_main
from data_tools.synthesis.fas.judge import REASONS as judge_reasons
from data_tools.synthesis.fas.quality import fas_quality, think_sentences


def test_think_sentences_mask_quoted_spans():
    a = think_sentences('The question asks about "Dijon ___ 1856". I will search for it.')
    b = think_sentences('The question asks about "Paris in ___". I will search for it.')
    assert a == b == {'the question asks about "q".', "i will search for it."}


def test_offline_fas_meets_the_diversity_targets(wiki_memory, tmp_path):
    assert fas_main(["--memory", wiki_memory, "--output-dir", str(tmp_path), "-k", "3"]) == 0
    q = fas_quality(tmp_path)
    plan, reas, judge = q["planning"], q["reasoning"], q["judge"]
    assert plan["samples"] >= 80 and reas["samples"] >= 80
    assert plan["top_sentence_share"] <= 0.05, plan["top_sentences"]  # no stock sentence
    assert reas["distinct_a1_drafts"] >= 0.5
    assert {"search", "google_scholar"} <= set(plan["first_actions"])
    # what the judge catches is measured on the labelled set (tests/fas/test_judge_eval.py); here it keeps most of
    # the template output and says why it rejects the rest
    assert judge["reasoning"]["acceptance_rate"] > 0.9
    assert all(r in judge_reasons for r in judge["reasoning"]["rejected_by_reason"])
