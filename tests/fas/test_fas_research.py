"""Research questions (no blanks, no copied statements, obfuscated multi-constraint), synthesising reasoning, same-kind
comparisons and arithmetic, and the repetition figures, on real memory built from the Wikipedia summaries."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from data_tools.common.jsonl import read_jsonl
from data_tools.synthesis.fas import judge, template_actions
from data_tools.synthesis.fas.cli import main as fas_main
from data_tools.synthesis.fas.clues import Attribute, attributes, copied_span, predicate
from data_tools.synthesis.fas.knowledge import find_dates
from data_tools.synthesis.fas.pipeline import normalize_item
from data_tools.synthesis.fas.quality import body_text, top_block_share, top_ngram_share
from data_tools.synthesis.fas.questions import (
    STYLES,
    choose_styles,
    knowledge_index,
    question_text_problem,
    template_questions,
)
from data_tools.synthesis.fas.research import AttributeIndex, comparison
from data_tools.synthesis.fas.system_prompts import SYSTEM_PROMPTS, choose_system


def _items(path: str) -> list[dict]:
    return [normalize_item(json.loads(line)) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def questions(wiki_memory):
    items = _items(wiki_memory)
    index = AttributeIndex()
    for it in items:
        index.add_item(it)
    out = []
    for it in items:
        qs, _ = template_questions(it, choose_styles(it["id"], 6, 0), 0, index)
        out += [(it, q) for q in qs]
    return out, index


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def test_questions_need_research(questions):
    qs, _ = questions
    assert len(qs) >= 100 and {q["style"] for _, q in qs} >= set(STYLES) - {"multi_hop"}
    for item, q in qs:
        kidx = knowledge_index(item)
        texts = [st["text"] for st in kidx.values()] + [st["text"] for st in q.get("partner_statements") or []]
        assert "___" not in q["question"]
        # independent check of "no 8 consecutive words of any statement" (plain word lists, no normaliser)
        qw = _words(q["question"])
        grams = {tuple(qw[i : i + 8]) for i in range(len(qw) - 7)}
        for t in texts:
            tw = _words(t)
            assert not grams & {tuple(tw[i : i + 8]) for i in range(len(tw) - 7)}, (q["question"], t)
        if q["style"] not in ("report_synthesis", "comparison"):
            assert not re.search(rf"\b{re.escape(q['answer'].casefold())}\b", q["question"].casefold())
        if q.get("ask") in ("entity", "year") and q["style"] != "multi_hop":
            assert item["entity"].casefold() not in q["question"].casefold()  # the subject is hidden
    multi = [q for _, q in qs if q.get("ask") in ("entity", "year")]
    # multi-constraint: most obfuscated questions combine two or more clues (or a description and a clue)
    assert sum(len(q["clues"]) + bool(q.get("description")) >= 2 for q in multi) >= 0.9 * len(multi)


def test_comparisons_and_arithmetic_use_one_kind_of_attribute(questions):
    qs, _ = questions
    two = [(it, q) for it, q in qs if q.get("entities")]
    assert two, "no comparison or two-entity arithmetic question"
    for item, q in two:
        kidx = {**knowledge_index(item), **{s["id"]: s for s in q.get("partner_statements") or []}}
        vals = {}
        for sid in q["statement_ids"]:
            st = kidx[sid]
            subject = st.get("subject") or st["source"].get("title")
            for a in attributes(st, subject):
                if a.kind == q["kind"]:
                    vals[a.entity] = a
        assert set(vals) == set(q["entities"]) and len({a.unit for a in vals.values()}) == 1
        a, b = (vals[e] for e in q["entities"])
        if q["style"] == "numerical_computation":
            assert float(q["answer"]) == pytest.approx(abs(a.value - b.value))
        else:
            low, high = (a, b) if a.value < b.value else (b, a)
            want = low if q["attribute"] in ("earlier", "smaller") else high
            assert q["answer"] == want.entity


def test_attributes_and_clues_from_statements():
    bach = {"id": "s", "text": "Johann Sebastian Bach: German composer (1685–1750)."}
    kinds = {a.kind: a.value for a in attributes(bach, "Johann Sebastian Bach")}
    assert kinds == {"birth": 1685.0, "death": 1750.0}
    hungary = {"id": "s", "text": "Kingdom of Hungary: monarchy in Central Europe (1000–1946)."}
    assert attributes(hungary, "Kingdom of Hungary") == []  # a period, not a life
    st = {"id": "s", "text": "Oxford was founded in 1096, and it grew quickly."}
    assert attributes(st, "Oxford") == [Attribute("Oxford", "founding", 1096.0, "year", "1096", "s")]
    other = {"id": "s", "text": "Kyrgyzstan's capital is Bishkek, founded in 1825."}
    assert attributes(other, "Kyrgyzstan") == []  # the year belongs to another entity
    pop = {"id": "p", "text": "Lyon has a population of 522,250 inhabitants."}
    assert [(a.kind, a.value, a.unit) for a in attributes(pop, "Lyon")] == [("population", 522250.0, "people")]
    assert predicate("Eugène Henri Paul Gauguin was a French painter, sculptor and printmaker.", "Paul Gauguin") == (
        "was a French painter"
    )
    assert predicate("In the game, players roll two dice.", "Monopoly (game)") is None
    assert copied_span("B c d-e f g h i", ["x b c d e f g h i y"]) == "b c d e f g h i"
    assert copied_span("b c d e f g h", ["b c d e f g h"]) is None


def test_comparison_partner_from_the_index_is_of_the_same_kind():
    def person(name, born, died):
        return {
            "id": f"m-{name}",
            "entity": name,
            "description": "",
            "related": [],
            "statements": [
                {"id": f"s-{name}", "text": f"{name}: painter ({born}–{died}).", "source": {"title": name}},
                {"id": f"t-{name}", "text": f"{name} founded a school in 1900.", "source": {"title": name}},
            ],
        }

    items = [person("Ann Lee", 1800, 1850), person("Bo Kim", 1810, 1890)]
    index = AttributeIndex()
    for it in items:
        index.add_item(it)
    import random

    qs = [comparison(items[0], random.Random(s), index) for s in range(12)]
    qs = [q for q in qs if q]
    assert qs and all(q["entities"][0] != q["entities"][1] for q in qs)
    for q in qs:
        assert q["kind"] in ("birth", "death") and q["partner_statements"][0]["entity"] == "Bo Kim"
        years = {"Ann Lee": {"birth": 1800, "death": 1850}, "Bo Kim": {"birth": 1810, "death": 1890}}
        pick = min if q["attribute"] == "earlier" else max
        assert q["answer"] == pick(q["entities"], key=lambda e: years[e][q["kind"]])


def test_validator_rejects_blanks_copies_and_leaks():
    st = "The Jamuna joins the Padma before the river flows into the Bay of Bengal."
    assert question_text_problem("Which river does ___ join?", "Padma", "factual_retrieval", [st]) == "blank"
    copy = "What river: the Jamuna joins the Padma before the river flows into the sea?"
    assert question_text_problem(copy, "Padma", "factual_retrieval", [st]) == "copies_statement"
    assert question_text_problem("Is it the Padma?", "Padma", "factual_retrieval", [st]) == "answer_in_question"
    ok = "Which river does the Jamuna join before reaching the Bay of Bengal?"
    assert question_text_problem(ok, "Padma", "factual_retrieval", [st]) is None


def test_reasoning_maps_the_statements_the_question_was_built_from(wiki_memory, tmp_path):
    assert fas_main(["--memory", wiki_memory, "--output-dir", str(tmp_path), "-k", "3", "--no-progress"]) == 0
    reasoning = read_jsonl(tmp_path / "reasoning.jsonl")
    assert len(reasoning) >= 60
    multi = 0
    for r in reasoning:
        kn = [k["text"] for k in r["knowledge"]]
        assert [k["id"] for k in r["knowledge"]] == r["statement_ids"]
        assert copied_span(r["question"], kn) is None  # the knowledge is never the question's own clue
        multi += len(kn) >= 2
        # the knowledge turn lists sources like the search tool's results: "1. [Title](url)\nstatement"
        assert "Relevant knowledge:\n1. [" in r["text"]
        # A1 drafts from the item's other statements: none of the mapped statements appears in it
        assert not any(t in r["a1"] for t in kn)
        # A2 writes out its steps, citing the knowledge by number
        assert re.search(r"\(1\) ", r["a2"]) and "[1]" in r["a2"]
        assert judge.answers_agree(r["final_answer"], r["ground_truth"], r["style"], r.get("required_facts") or ())
    assert multi >= 0.6 * len(reasoning)
    s = json.loads((tmp_path / "summary.json").read_text())
    rep = s["repetition"]
    assert rep["blank_question_share"] == 0 and rep["knowledge_equals_clue_share"] == 0
    assert rep["top_256_token_block_share"] <= 0.2
    big = {k: v for k, v in rep["top_8gram_by_style"].items() if v["samples"] >= 40}
    assert big and all(v["top_8gram_share"] <= 0.25 for v in big.values()), big
    # the judge's accuracy on the labelled set is in the summary
    t = s["judge_accuracy"]["template"]
    assert t["samples"] >= 200 and t["accuracy_before"] == 0.5 and t["accuracy_after"] > 0.5


def test_repetition_figures_match_a_brute_force_count():
    texts = [
        "<|im_start|>system\nSAME SYSTEM<|im_end|>\n<|im_start|>user\na b c d e f g h i<|im_end|>\n",
        "<|im_start|>user\nz a b c d e f g h<|im_end|>\n",
        "<|im_start|>user\nq r s t u v w x<|im_end|>\n",
    ]
    assert "SAME" not in body_text(texts[0]) and "im_start" not in body_text(texts[0])
    share, gram = top_ngram_share(texts)
    assert (share, gram) == (round(2 / 3, 4), "a b c d e f g h")
    # blocks: two samples share their first 4-token block
    enc = {"x": [1, 2, 3, 4, 5, 6], "y": [1, 2, 3, 4, 9], "z": [7, 7]}
    share, total = top_block_share(list(enc), enc.__getitem__, block=4)
    assert total == 13 and share == round(8 / 13, 4)


def test_system_turns_vary_and_declare_the_used_tool():
    picks = [choose_system(f"s{i}", "google_scholar", 0, 0.2) for i in range(400)]
    prompts = Counter(p.split("\n\nCurrent date")[0] for p, _ in picks)
    assert set(prompts) == set(SYSTEM_PROMPTS) and max(prompts.values()) < 0.25 * len(picks)
    assert all("google_scholar" in [t["function"]["name"] for t in tools] for _, tools in picks)
    full = sum(len(tools) == 5 for _, tools in picks) / len(picks)
    assert 0.1 < full < 0.35
    assert all(len(choose_system(f"s{i}", "search", 0, 1.0)[1]) == 5 for i in range(20))
    assert choose_system("a", "search", 0) == choose_system("a", "search", 0)
    with pytest.raises(ValueError):
        choose_system("a", "search", 0, 1.5)


def test_template_plan_searches_the_clues_not_the_answer(questions):
    qs, _ = questions
    for item, q in qs[:80]:
        plan = template_actions.template_plan({**q, "id": "q-" + str(hash(q["question"]))})
        queries = " ".join(plan["action"]["arguments"]["query"]).casefold()
        if q.get("ask") in ("entity", "year") and q["style"] != "report_synthesis":
            assert item["entity"].casefold() not in queries
        kidx = knowledge_index(item)
        knowledge = [
            kidx.get(i) or next(s for s in q["partner_statements"] if s["id"] == i) for i in q["statement_ids"]
        ]
        assert judge.rule_judge_planning(q, knowledge, plan).accepted, (q["question"], plan)
    assert find_dates("in 1999")[0].year == 1999
