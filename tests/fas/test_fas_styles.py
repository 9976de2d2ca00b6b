"""Comparison and report questions through the whole offline path (question -> plan -> A1/A2 -> judge), and the
count-is-not-a-year fix of the numerical questions."""

from __future__ import annotations

import copy
import json

from data_tools.answers import judge_answer
from data_tools.fas import judge, template_actions
from data_tools.fas import main as fas_main
from data_tools.fas.knowledge import find_dates
from data_tools.fas.questions import first_year, knowledge_index, template_questions
from tests.fas.test_fas_units import _memory


def _question(item, style, seed=0):
    for s in range(seed, seed + 50):
        qs, _ = template_questions(item, [style], s)
        if qs and qs[0]["style"] == style:
            return qs[0]
    raise AssertionError(f"no {style} question for {item['entity']}")


def _years(item):
    """Independent reference: the first year each statement text states."""
    return {k: find_dates(st["text"])[0].year for k, st in knowledge_index(item).items() if find_dates(st["text"])}


def test_counts_are_not_years():
    assert find_dates("The genus contains about 1500 species.") == []
    assert find_dates("It covers 2000 km of coast and 1200 square miles.") == []
    assert [d.year for d in find_dates("The 1856 elections were held in 1856 after 1200 people voted.")] == [1856, 1856]
    assert [d.year for d in find_dates("In 1990 was founded; in 1999 its name changed.")] == [1990, 1999]
    # a memory built before the fix stored the count as a date: questions no longer use it as a year
    st = {"text": "The genus has about 1500 species.", "times": [{"surface": "1500", "value": "1500", "year": 1500}]}
    assert first_year(st) is None
    item = {"id": "m", "entity": "Typha", "statements": [{**st, "id": "s1", "mentions": [], "source": {}}]}
    qs, unavailable = template_questions(item, ["numerical_computation"], 0)
    assert "numerical_computation" in unavailable and all(q["style"] != "numerical_computation" for q in qs)


def test_comparison_question_plan_reasoning_and_judge():
    mem, _ = _memory()
    item = mem["Ada Lovelace"]
    q = {**_question(item, "comparison"), "id": "q-cmp"}
    kidx = knowledge_index(item)
    knowledge = [kidx[i] for i in q["statement_ids"]]
    # the answer is computed from the two statements' years (independent reference: find_dates on their text)
    assert len(q["entities"]) == 2 and q["attribute"] in ("earlier", "later") and q["answer"] in q["entities"]
    years = _years(item)
    by_entity = {k["entity"]: years[k["id"]] for k in knowledge}
    assert set(by_entity) == set(q["entities"]) and len(set(by_entity.values())) == 2
    pick = min if q["attribute"] == "earlier" else max
    assert q["answer"] == pick(by_entity, key=by_entity.get)
    assert all(str(y) not in q["question"] for y in by_entity.values())  # both dates are blanked
    assert all(f"({i}) {e}: " in q["question"] for i, e in enumerate(q["entities"], 1))  # statements labelled
    # planning: one search covering both entities; the judge accepts it and rejects one that leaves one out
    plan = template_actions.template_plan(q, item["entity"])
    assert plan["action"]["name"] == "search" and len(plan["action"]["arguments"]["query"]) == 2
    queries = " ".join(plan["action"]["arguments"]["query"])
    assert all(e in queries for e in q["entities"]) and all(e in plan["think"] for e in q["entities"])
    assert judge.rule_judge_planning(q, knowledge, plan).accepted
    one = copy.deepcopy(plan)
    one["action"]["arguments"]["query"] = one["action"]["arguments"]["query"][:1]
    v = judge.rule_judge_planning(q, knowledge, one)
    assert not v.accepted and v.reason == "search_necessity" and q["entities"][1] in v.explanation
    # reasoning: A1 is an entity from recall; A2 fills both blanks, compares and says how it relates to the draft
    a1 = template_actions.template_a1(q, item)
    assert a1["draft_answer"] in q["entities"] and len(a1["sub_questions"]) == 3
    a2 = template_actions.template_a2(q, knowledge, a1)
    assert a2["answer"] == q["answer"] and all(str(y) in a2["reasoning"] for y in by_entity.values())
    assert "draft" in a2["reasoning"] and judge.rule_judge_reasoning(q, knowledge, a1, a2).accepted
    # the judge recomputes the comparison from the knowledge: a wrong A2 and a knowledge that cannot decide fail
    wrong = {**a2, "answer": next(e for e in q["entities"] if e != q["answer"])}
    assert judge.rule_judge_reasoning(q, knowledge, a1, wrong).reason == "content_inconsistency"
    undated = [{**k, "text": "No date is stated here at all."} if i == 0 else k for i, k in enumerate(knowledge)]
    v = judge.rule_judge_reasoning(q, undated, a1, a2)
    assert not v.accepted and v.reason == "content_inconsistency" and "states no date" in v.explanation


def test_report_required_facts_flow_to_the_judge_and_records(tmp_path):
    mem, _ = _memory()
    item = mem["Ada Lovelace"]
    q = {**_question(item, "report_synthesis"), "id": "q-rep"}
    kidx = knowledge_index(item)
    knowledge = [kidx[i] for i in q["statement_ids"]]
    assert q["required_facts"] == [k["text"] for k in knowledge] and len(q["required_facts"]) == 3
    plan = template_actions.template_plan(q, item["entity"])
    assert plan["action"]["name"] == "search" and len(plan["action"]["arguments"]["query"]) >= 2
    assert judge.rule_judge_planning(q, knowledge, plan).accepted
    single = copy.deepcopy(plan)
    single["action"]["arguments"]["query"] = single["action"]["arguments"]["query"][:1]
    assert judge.rule_judge_planning(q, knowledge, single).reason == "search_necessity"
    a1 = template_actions.template_a1(q, item)
    assert a1["draft_answer"] and a1["draft_answer"] not in q["required_facts"][0]  # from other statements
    a2 = template_actions.template_a2(q, knowledge, a1)
    # graded by the one answer judge's rubric over the required facts
    assert judge_answer(a2["answer"], q["answer"], style=q["style"], required_facts=q["required_facts"]).correct
    assert "required facts" in a2["reasoning"] and judge.rule_judge_reasoning(q, knowledge, a1, a2).accepted
    # knowledge that does not support a required fact is rejected, whatever the answer says
    v = judge.rule_judge_reasoning(q, knowledge[:2], a1, a2)
    assert not v.accepted and v.reason == "content_inconsistency" and "required fact" in v.explanation
    # a report missing two of three facts fails the rubric
    short = {**a2, "answer": q["required_facts"][0]}
    assert judge.rule_judge_reasoning(q, knowledge, a1, short).reason == "answer_mismatch"
    # records carry the rubric and the comparison fields
    mem_path = tmp_path / "memory.jsonl"
    mem_path.write_text("".join(json.dumps(it) + "\n" for it in mem.values()), encoding="utf-8")
    assert fas_main(["--memory", str(mem_path), "--output-dir", str(tmp_path / "fas"), "-k", "6", "--no-progress"]) == 0
    recs = [json.loads(line) for f in ("planning", "reasoning") for line in open(tmp_path / "fas" / f"{f}.jsonl")]
    reports = [r for r in recs if r["style"] == "report_synthesis"]
    comparisons = [r for r in recs if r["style"] == "comparison"]
    assert reports and all(len(r["required_facts"]) == 3 for r in reports)
    assert comparisons and all(r["ground_truth"] in r["entities"] and r["attribute"] for r in comparisons)
