"""Equally long recombined search alternatives (the no-``--corpus`` tell of issue 12)."""

from __future__ import annotations

import random

from data_tools.synthesis.answers import content_words
from data_tools.synthesis.has.action import Action, first_search_query, keywords
from data_tools.synthesis.has.collapse import CollapseGuard
from data_tools.synthesis.has.step_context import StepContext, topic_terms
from data_tools.synthesis.has.strategies import by_length, s_recombine
from data_tools.synthesis.trajectory import parse_trajectory

from .conftest import deepresearch_record


def test_topic_terms_leave_out_question_answer_numbers_and_labels():
    t = parse_trajectory(deepresearch_record())
    terms = topic_terms(t)
    banned = set(content_words(t.question + " " + (t.answer or "") + " " + (t.prediction or "")))
    assert terms and not banned & set(terms)
    assert not any(ch.isdigit() for w in terms for ch in w)
    assert not {"summary", "evidence", "results"} & set(terms)
    assert "gustave" in terms  # a page title seen in the results, ranked high (title words count three times)


def test_recombine_keeps_the_length_and_is_another_decision():
    t = parse_trajectory(deepresearch_record())
    orig = Action.from_step(t.steps[0])
    ctx = StepContext.of(t, 0)
    guard = CollapseGuard()
    n_words = len(keywords(first_search_query(orig)))
    made = [s_recombine(orig, ctx, random.Random(i)) for i in range(30)]
    made = [a for a in made if a is not None]
    assert len(made) > 20
    for a in made:
        assert len(keywords(first_search_query(a))) == n_words
        assert not guard.same(a, orig)  # never the original in other words
        assert set(keywords(first_search_query(a))) <= set(keywords(t.question)) | set(ctx.terms)


def test_by_length_puts_queries_near_the_original_length_first():
    qs = ["alpha beta", "alpha beta gamma delta epsilon", "alpha beta gamma delta", "beta gamma"]
    acts = [Action.make("", [{"name": "search", "arguments": {"query": [q]}}]) for q in qs]
    got = [first_search_query(a) for a in by_length(acts, 5)]
    assert got == ["alpha beta gamma delta epsilon", "alpha beta gamma delta", "alpha beta", "beta gamma"]
