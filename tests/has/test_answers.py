"""The one answer judge (data_tools.synthesis.answers), shared by FAS and HAS."""

from __future__ import annotations

import pytest

from data_tools.synthesis.answers import content_words, judge_answer, normalize_answer, rubric, split_sentences
from data_tools.synthesis.fas import knowledge
from data_tools.synthesis.fas.judge import answers_agree
from data_tools.synthesis.trajectory import match_answer


def test_normalize_answer():
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("1,083 ft.") == "1083 ft"
    assert normalize_answer("U.S.A.") == "u s" and normalize_answer("-3.5 %") == "-3.5"
    assert normalize_answer("Zürich — “city”") == "zürich city"


def test_one_implementation():
    # FAS and the environment use the same functions, not copies
    assert knowledge.content_words is content_words and knowledge.split_sentences is split_sentences
    from data_tools.synthesis.env import search

    assert search.content_words is content_words and search.split_sentences is split_sentences


def test_split_and_words():
    assert split_sentences("Dr. J. R. R. Tolkien wrote it. It sold well! Did it?") == [
        "Dr. J. R. R. Tolkien wrote it.",
        "It sold well!",
        "Did it?",
    ]
    assert content_words("The São Paulo state-owned bank, the bank") == ["são", "paulo", "state-owned", "bank"]


@pytest.mark.parametrize(
    ("pred", "gold", "kw", "correct", "method"),
    [
        ("Eiffel Tower", "the eiffel tower", {}, True, "exact"),
        ("It is 330 metres tall.", "330 metres", {}, True, "numeric"),
        ("330.2 m", "330 metres", {"rel_tol": 1e-2}, True, "numeric"),
        ("3300 metres", "330 metres", {}, False, "numeric"),
        ("1,083", "1083", {}, True, "exact"),
        ("Gustave Eiffel built it", "Alexandre Gustave Eiffel", {"aliases": ["Gustave Eiffel"]}, True, "alias"),
        ("It was Oscar Wilde.", "Oscar Wilde", {}, True, "contains"),
        ("Wilde", "Oscar Wilde", {}, False, "exact"),
        ("", "x", {}, False, "empty"),
        ("x", None, {}, None, "no_gold"),
    ],
)
def test_short_answers(pred, gold, kw, correct, method):
    v = judge_answer(pred, gold, **kw)
    assert (v.correct, v.method) == (correct, method) and v.reason


def test_report_rubric():
    facts = ["Tourist arrivals in France reached 4,222 thousand in June 2025.", "Most visitors came from Germany."]
    good = "France saw 4,222 thousand tourist arrivals in June 2025; most came from Germany."
    half = "France saw 4,222 thousand tourist arrivals in June 2025."
    assert rubric(good, facts) == (2, 2) and rubric(half, facts) == (1, 2)
    v = judge_answer(good, " ".join(facts), style="report_synthesis")
    assert v.correct is True and v.method == "rubric" and "2/2" in v.reason
    assert judge_answer(half, " ".join(facts), style="report_synthesis").correct is False  # needs 60%
    assert judge_answer(half, "x", required_facts=facts[:1]).correct is True
    # a long gold answer is a report whatever the style: the old substring match called this Incorrect
    long_gold = "The tower was designed by Gustave Eiffel's company, built from 1887 to 1889, and opened for the fair."
    pred = "Gustave Eiffel's company designed the tower; it was built 1887-1889 and opened for the fair."
    assert match_answer(pred, long_gold) is True


def test_fas_and_has_agree():
    cases = [("It was 24 years.", "24"), ("25", "24"), ("Paris, France", "Paris"), ("Lyon", "Paris")]
    for pred, gold in cases:
        assert answers_agree(pred, gold, "numerical_computation") == bool(match_answer(pred, gold))
