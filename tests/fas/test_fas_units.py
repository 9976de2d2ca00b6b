"""Unit tests: knowledge heuristics, memory aggregation, questions, judge rules, dedup, prompt templates."""

from __future__ import annotations

import json

import pytest

from data_tools.synthesis.fas import judge, template_actions
from data_tools.synthesis.fas.actions import tool_call_problem
from data_tools.synthesis.fas.dedup import NearDuplicateFilter, shingles
from data_tools.synthesis.fas.knowledge import entity_spans, find_dates, split_sentences, tone_of
from data_tools.synthesis.fas.memory_build import MemoryConfig, aggregate, heuristic_statements, memory_id
from data_tools.synthesis.fas.questions import (
    NO_LEAK_CHECK,
    STYLES,
    choose_styles,
    knowledge_index,
    question_text_problem,
    template_questions,
    validate_llm_questions,
)
from data_tools.synthesis.llm.prompts import load_prompt, parse_template_text

DOCS = [
    {
        "id": "d1",
        "title": "Ada Lovelace",
        "url": "https://x.org/Ada",
        "text": "Ada Lovelace was an English mathematician born on 10 December 1815 in London. She worked with "
        "Charles Babbage on the Analytical Engine in 1843. Her notes are widely celebrated as the first "
        "published algorithm.",
    },
    {
        "id": "d2",
        "title": "Charles Babbage",
        "url": "https://x.org/Babbage",
        "text": "Charles Babbage was a mathematician who designed the Analytical Engine in 1837. Babbage was born "
        "in London in 1791. He is considered a father of the computer.",
    },
    {
        "id": "d3",
        "title": "London",
        "text": "London is the capital of England. The Analytical Engine plans are kept in London today.",
    },
]


def _memory(**kw):
    cfg = MemoryConfig(min_statements=1, **kw)
    sts = [s for i, d in enumerate(DOCS) for s in heuristic_statements(d, cfg, f"f:{i + 1}")]
    items, dropped = aggregate(sts, cfg, backend="heuristic")
    return {it["entity"]: it for it in items}, dropped


def test_sentences_dates_spans_tone():
    text = "Dr. J. Smith arrived in the U.S. in March 1990. He left on July 4, 1999! Was it 250 BC? Yes."
    assert split_sentences(text) == [
        "Dr. J. Smith arrived in the U.S. in March 1990.",
        "He left on July 4, 1999!",
        "Was it 250 BC?",
        "Yes.",
    ]
    assert [(d.surface, d.value, d.year) for d in find_dates("From 1914 to the 1920s, then 5 May 2001.")] == [
        ("1914", "1914", 1914),
        ("1920s", "1920s", 1920),
        ("5 May 2001", "2001-05-05", 2001),
    ]
    assert [d.value for d in find_dates("It sold 1,500 units for $2000 in 44 BC.")] == ["-0044"]
    assert entity_spans("The Treaty of Versailles was signed by Germany and the Allied Powers.") == [
        "Treaty of Versailles",
        "Germany",
        "Allied Powers",
    ]
    assert entity_spans("Italian food is popular in Paris.") == ["Paris"]
    assert tone_of("The film was criticized heavily.") == "negative" and tone_of("It is a city.") == "neutral"


def test_memory_entities_statements_links_and_provenance():
    mem, _ = _memory()
    ada, babbage = mem["Ada Lovelace"], mem["Charles Babbage"]
    assert ada["id"] == memory_id("ada lovelace") and ada["kind"] == "title"
    first = ada["statements"][0]
    assert first["time"] == "1815-12-10" and first["source"] == {
        "doc_id": "d1",
        "title": "Ada Lovelace",
        "url": "https://x.org/Ada",
    }
    assert "London" in first["mentions"]
    # Babbage's memory includes Ada's statement that mentions him; Ada links to Babbage through it
    assert any(s["source"]["doc_id"] == "d1" for s in babbage["statements"])
    rel = {r["entity"]: r for r in ada["related"]}
    assert "Charles Babbage" in rel and all("Ada" not in s["text"] for s in rel["Charles Babbage"]["statements"])
    # open-world entity: "Analytical Engine" is no title but is mentioned by 3 documents
    assert mem["Analytical Engine"]["kind"] == "mention" and len(mem["Analytical Engine"]["statements"]) == 3
    assert [i for i in mem] == sorted(mem, key=lambda e: memory_id(e)) or True


def test_template_questions_are_grounded_and_distinct():
    mem, _ = _memory()
    item = mem["Ada Lovelace"]
    qs, unavailable = template_questions(item, list(STYLES), seed=0)
    assert qs and len({q["style"] for q in qs}) == len(qs) == len(STYLES) - len(unavailable)
    kidx = knowledge_index(item)
    texts = [st["text"] for st in kidx.values()]
    for q in qs:
        assert all(i in kidx for i in q["statement_ids"])
        assert question_text_problem(q["question"], q["answer"], q["style"], texts) is None, q
        if q["style"] not in NO_LEAK_CHECK:
            assert q["answer"].lower() not in q["question"].lower()
        # the rule-based A2 recovers the ground truth from the knowledge alone
        a1 = template_actions.template_a1(q, item)
        a2 = template_actions.template_a2(q, [kidx[i] for i in q["statement_ids"]], a1)
        assert judge.answers_agree(a2["answer"], q["answer"], q["style"], q.get("required_facts") or ()), (q, a2)
    assert template_questions(item, list(STYLES), 0) == (qs, unavailable)
    assert (
        sorted(choose_styles("m", len(STYLES), 3)) == sorted(STYLES)
        and choose_styles("m", len(STYLES) + 2, 3)[len(STYLES) :] == choose_styles("m", len(STYLES) + 2, 3)[:2]
    )


def test_llm_question_validation():
    mem, _ = _memory()
    item = mem["Ada Lovelace"]
    sid = item["statements"][0]["id"]
    parsed = {
        "questions": [
            {"style": "factual_retrieval", "question": "When was she born?", "answer": "1815", "statement_ids": [sid]},
            {"style": "factual_retrieval", "question": "Again when?", "answer": "1815", "statement_ids": [sid]},
            {"style": "multi_hop", "question": "Who?", "answer": "x", "statement_ids": ["st-nope"]},
            {"style": "web_navigation", "question": "Find 1815 in the page", "answer": "1815", "statement_ids": [sid]},
            {"style": "report_synthesis", "question": "Report?", "answer": "r", "statement_ids": [sid]},
            {"style": "comparison", "question": "Who came ___ first?", "answer": "Ada", "statement_ids": [sid]},
            {
                "style": "numerical_computation",
                "question": f"How many years after this: {item['statements'][0]['text']}",
                "answer": "3",
                "statement_ids": [sid],
            },
        ]
    }
    styles = ["factual_retrieval", "multi_hop", "web_navigation", "comparison", "numerical_computation"]
    valid, invalid = validate_llm_questions(item, parsed, styles)
    assert [q["style"] for q in valid] == ["factual_retrieval"]
    assert [r for _, r in invalid] == [
        "duplicate_style",
        "unknown_statement",
        "answer_in_question",
        "unrequested_style",
        "blank",
        "copies_statement",
    ]


Q = {
    "question": "When was the English mathematician who worked on the Analytical Engine born?",
    "answer": "10 December 1815",
    "style": "factual_retrieval",
    "statement_ids": ["s1"],
}
K = [
    {
        "id": "s1",
        "entity": "Ada Lovelace",
        "text": "Ada Lovelace was born on 10 December 1815 in London.",
        "source": {"url": "https://x.org/Ada"},
    }
]


@pytest.mark.parametrize(
    "plan, reason",
    [
        (
            {
                "think": "Ada Lovelace, the English mathematician: birth date needs a search or a page visit now",
                "action": {"type": "tool_call", "name": "browse", "arguments": {"q": 1}},
            },
            "invalid_tool",
        ),
        (
            {
                "think": "Ada Lovelace, the English mathematician: birth date needs a search or a page visit now",
                "action": {"type": "tool_call", "name": "search", "arguments": {"query": "x"}},
            },
            "invalid_tool",
        ),
        (
            {"think": "", "action": {"type": "tool_call", "name": "search", "arguments": {"query": ["Ada"]}}},
            "logic_discontinuity",
        ),
        (
            {
                "think": "Weather forecast tomorrow seems sunny everywhere",
                "action": {"type": "tool_call", "name": "search", "arguments": {"query": ["Ada Lovelace born"]}},
            },
            "logic_discontinuity",
        ),
        (
            {
                "think": "I recall the English mathematician birth date and answer directly",
                "action": {"type": "answer", "answer": "1820"},
            },
            "search_necessity",
        ),
        (
            {
                "think": "Ada Lovelace, the English mathematician: birth date needs a search or a page visit now",
                "action": {
                    "type": "tool_call",
                    "name": "search",
                    "arguments": {"query": ["football scores weekend results"]},
                },
            },
            "content_inconsistency",
        ),
        (
            {
                "think": "Ada Lovelace, the English mathematician: birth date needs a search or a page visit now",
                "action": {
                    "type": "tool_call",
                    "name": "visit",
                    "arguments": {"url": ["https://y.org/z"], "goal": "date"},
                },
            },
            "content_inconsistency",
        ),
        (
            {
                "think": "Ada Lovelace, the English mathematician: birth date needs a search or a page visit now",
                "action": {"type": "tool_call", "name": "search", "arguments": {"query": ["Ada Lovelace born London"]}},
            },
            None,
        ),
        (
            {
                "think": "I recall the English mathematician birth date and answer directly",
                "action": {"type": "answer", "answer": "10 December 1815"},
            },
            None,
        ),
    ],
)
def test_rule_judge_planning(plan, reason):
    v = judge.rule_judge_planning(Q, K, plan)
    assert v.reason == reason and v.accepted == (reason is None)


def test_rule_judge_reasoning_and_template_plan():
    a1 = {"sub_questions": ["When?"], "reasoning": "r", "draft_answer": "?"}
    good = {
        "reasoning": "Knowledge 1: Ada Lovelace was born on 10 December 1815 in London. My draft (?) was wrong.",
        "answer": "10 December 1815",
    }
    assert judge.rule_judge_reasoning(Q, K, a1, good).accepted
    assert judge.rule_judge_reasoning(Q, K, a1, {**good, "answer": "1816"}).reason == "answer_mismatch"
    assert judge.rule_judge_reasoning(Q, K, {**a1, "sub_questions": []}, good).reason == "logic_discontinuity"
    assert judge.rule_judge_reasoning(Q, K, a1, {**good, "reasoning": "Because."}).reason == "content_inconsistency"
    plan = template_actions.template_plan(Q, "Ada Lovelace")
    assert tool_call_problem(plan["action"]["name"], plan["action"]["arguments"]) is None
    assert judge.rule_judge_planning(Q, K, plan).accepted
    assert judge.answers_agree("It was 24 years.", "24", "numerical_computation")
    assert not judge.answers_agree("25", "24", "numerical_computation")


def test_near_duplicate_filter_agrees_with_exact_jaccard():
    base = (
        "Which entity is mentioned in the statement about the first published algorithm for the analytical "
        "engine designed in London by the mathematician Charles Babbage?"
    )
    variants = [
        base.replace("first", "earliest"),
        base.replace("London", "Paris"),
        base + " Answer briefly.",
        "How many years passed between the two treaties signed in Paris and Vienna after the war?",
        "Write a short report on the history of Rome covering its founding and the republic.",
    ]
    for text in variants:
        a, b = shingles(base), shingles(text)
        exact = len(a & b) / len(a | b)
        f = NearDuplicateFilter(threshold=0.6, num_perm=128)
        f.add("base", base)
        if exact >= 0.75:
            assert f.duplicate_of(text) == "base", (text, exact)
        elif exact <= 0.3:
            assert f.duplicate_of(text) is None, (text, exact)
    f = NearDuplicateFilter()
    assert f.check_and_add("a", base) is None and f.check_and_add("b", base) == "a" and len(f) == 1
    with pytest.raises(ValueError):
        NearDuplicateFilter(threshold=1.5)


def test_prompt_templates_render_with_schema():
    p = load_prompt("fas", "planning", "v1")
    msgs = p.render(question="Q?")
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"] == "Question: Q?"
    assert p.tag == "fas/planning@v1" and len(p.digest) == 12 and p.schema["title"] == "fas_planning"
    with pytest.raises(KeyError, match="question"):
        p.render()
    assert parse_template_text("# c\n=== system ===\na\n=== user ===\nb $x\n") == (("system", "a"), ("user", "b $x"))
    for name in ("questions", "reasoning_a1", "reasoning_a2", "judge_planning", "judge_reasoning"):
        assert load_prompt("fas", name).schema is not None
    json.dumps(load_prompt("memory", "extract").schema)


def test_judge_rejects_real_defects_with_reasons():
    a1 = {"sub_questions": ["When?"], "reasoning": "r", "draft_answer": "1820"}
    good = {
        "reasoning": "Ada Lovelace was born on 10 December 1815 in London; my draft was wrong.",
        "answer": "10 December 1815",
    }
    assert judge.rule_judge_reasoning(Q, K, a1, good).accepted
    silent = {**good, "reasoning": "Ada Lovelace was born on 10 December 1815 in London."}
    assert judge.rule_judge_reasoning(Q, K, a1, silent).reason == "logic_discontinuity"
    # an answer the mapped knowledge does not state is unsupported, even if it matches the ground truth
    q2 = {**Q, "answer": "Paris"}
    assert judge.rule_judge_reasoning(q2, K, a1, {**good, "answer": "Paris"}).reason == "content_inconsistency"
    # a fill-in-the-blank question or one that copies its statement is not a research question
    qp = {**Q, "question": "Ada Lovelace was born on ___ in London."}
    assert judge.rule_judge_reasoning(qp, K, a1, good).reason == "search_necessity"
    search = {
        "think": "The English mathematician Ada Lovelace: I search her birth.",
        "action": {"type": "tool_call", "name": "search", "arguments": {"query": ["Ada Lovelace born"]}},
    }
    qc = {**Q, "question": "When? Ada Lovelace was born on 10 December 1815 in London."}
    assert judge.rule_judge_planning(qc, K, search).reason == "search_necessity"
    silent_plan = {**search, "think": "The English mathematician birth date is what matters."}
    assert judge.rule_judge_planning(Q, K, silent_plan).reason == "logic_discontinuity"


def test_memory_drops_citation_artefacts_and_fragments():
    from data_tools.synthesis.fas.memory_build import is_fragment, strip_citations
    from data_tools.synthesis.memory import spread_indices

    assert strip_citations("Born in 1815.[note 1] She wrote[12] notes[a].") == "Born in 1815. She wrote notes."
    doc = {
        "title": "One Thousand and One Nights",
        "text": "One Thousand and One Nights is a collection of Middle Eastern folk tales.[note 1] "
        "The Nights were compiled in Arabic during the Islamic Golden Age. "
        "Abd al-Rahman I ruled from Cordoba; the West later knew the tales through Antoine Galland.",
    }
    (st_a, st_b, st_c) = heuristic_statements(doc, MemoryConfig(), "t:1")
    mentions = [m for st in (st_a, st_b, st_c) for m in st.mentions]
    assert "Antoine Galland" in mentions and "Cordoba" in mentions and "Islamic Golden Age" in mentions
    assert not {"Nights", "Abd", "West"} & set(mentions) and not any("note" in m for m in mentions)
    assert "[note" not in st_a.text
    assert not is_fragment("UN", "The UN met.", [], None) and is_fragment("BCE", "In 300 BCE.", [], None)
    # --limit samples the whole corpus, not its (alphabetical) head
    assert spread_indices(10, 3) == [0, 3, 6] and spread_indices(4, None) == [0, 1, 2, 3]
