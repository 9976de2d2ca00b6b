"""Judging planning and reasoning actions for reject sampling: rule checks and an LLM-as-judge.

Reason categories follow the paper's rejection analysis: ``content_inconsistency``, ``search_necessity``,
``logic_discontinuity``, ``invalid_tool``, plus ``answer_mismatch`` (A2 disagrees with the ground truth) and
``other``. Structural rules (invalid tool, empty analysis or decomposition) always run and reject without a
model call; with the template backend the semantic rules (grounding of queries, answer agreement) decide the
rest; with an LLM backend the judge model does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from data_tools.synthesis.answers import judge_answer, normalize_answer, rubric
from data_tools.synthesis.fas.actions import knowledge_lines, tool_call_problem
from data_tools.synthesis.fas.knowledge import content_words
from data_tools.synthesis.llm.prompts import load_prompt

REASONS = (
    "content_inconsistency",
    "search_necessity",
    "logic_discontinuity",
    "invalid_tool",
    "answer_mismatch",
    "ambiguous_question",
    "other",
)
# words of an analysis that announce each first action
_ANNOUNCES = {
    "search": ("search",),
    "google_scholar": ("scholar", "academic"),
    "visit": ("visit", "open", "page"),
    "PythonInterpreter": ("python", "compute"),
    "parse_file": ("file", "parse"),
    "answer": ("answer",),
}


@dataclass
class SampleVerdict:
    """The FAS judge's accept/reject decision on one synthesized sample, stored with it."""

    accepted: bool
    """Whether the sample is kept."""
    reason: str | None
    """Rejection category (one of :data:`REASONS`) or ``None`` when accepted."""
    explanation: str
    """Why (rule message or the judge model's explanation)."""
    judge: str
    """``rules`` or ``llm:<model>``."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return asdict(self)


def _accept(judge: str = "rules", why: str = "all checks passed") -> SampleVerdict:
    return SampleVerdict(True, None, why, judge)


def _reject(reason: str, why: str, judge: str = "rules") -> SampleVerdict:
    return SampleVerdict(False, reason, why, judge)


def _vocab(*texts: str) -> set[str]:
    out: set[str] = set()
    for t in texts:
        out.update(content_words(t))
    return out


def answers_agree(answer: str, truth: str, style: str, required_facts: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether a final answer agrees with the ground truth: the project's one answer judge
    (:func:`data_tools.synthesis.answers.judge_answer`: exact / numeric tolerance / whole-word span, for reports the
    rubric over ``required_facts``)."""
    return bool(judge_answer(answer, truth, style=style, required_facts=required_facts).correct)


def unsupported_facts(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> list[str]:
    """A report's required facts that the mapped knowledge does not state (the same rubric rule as the answer
    judge: most of a fact's content words occur in the knowledge)."""
    text = " ".join(k["text"] for k in knowledge)
    return [f for f in question.get("required_facts") or () if rubric(text, [f]) == (0, 1)]


def comparison_truth(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The comparison's answer recomputed from the mapped knowledge alone: each compared entity's value is the
    typed attribute of the question's kind (founding year, population, ...) stated by *its own* statement;
    ``(None, why)`` when the knowledge does not give both values, or gives equal ones."""
    from data_tools.synthesis.fas.clues import attributes

    ents = question.get("entities") or []
    if len(ents) != 2:
        return None, f"a comparison needs two entities, got {len(ents)}"
    kind = question.get("kind")
    values = []
    for e in ents:
        found = [
            a.value
            for k in knowledge
            for a in attributes(k, k.get("subject") or (k.get("source") or {}).get("title") or "")
            if a.entity.casefold() == e.casefold() and (kind is None or a.kind == kind)
        ]
        if not found:
            return None, f"the mapped knowledge states no {kind or 'value'} for {e}"
        values.append(found[0])
    if values[0] == values[1]:
        return None, f"both entities have {values[0]:g}"
    low = ents[0] if values[0] < values[1] else ents[1]
    high = ents[1] if low == ents[0] else ents[0]
    first = low if question.get("attribute", "earlier") in ("earlier", "smaller") else high
    return first, f"{values[0]:g} vs {values[1]:g}"


def knowledge_problem(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> SampleVerdict | None:
    """The mapped knowledge cannot answer the question: a short answer (name, year) that none of its statements
    states or is about, or a compared entity it says nothing about."""
    support = " " + " ".join(normalize_answer(k["text"] + " " + (k.get("subject") or "")) for k in knowledge) + " "
    style = question["style"]
    if style in ("factual_retrieval", "multi_hop", "web_navigation"):
        if f" {normalize_answer(question['answer'])} " not in support:
            return _reject("content_inconsistency", "the mapped knowledge does not state the answer")
    for e in question.get("entities") or ():
        if f" {normalize_answer(e)} " not in support:
            return _reject("content_inconsistency", f"the mapped knowledge says nothing about {e!r}")
    return None


def structural_planning(plan: dict[str, Any]) -> SampleVerdict | None:
    """Rules that hold for any backend: a valid tool call, a non-empty analysis; ``None`` if they pass."""
    act = plan.get("action") or {}
    if act.get("type") == "tool_call":
        problem = tool_call_problem(act.get("name"), act.get("arguments"))
        if problem:
            return _reject("invalid_tool", problem)
    elif act.get("type") == "answer":
        if not str(act.get("answer", "")).strip():
            return _reject("logic_discontinuity", "direct answer is empty")
    else:
        return _reject("invalid_tool", f"unknown action type {act.get('type')!r}")
    if len(content_words(plan.get("think", ""))) < 3:
        return _reject("logic_discontinuity", "the analysis is empty")
    return None


def question_problem(question: dict[str, Any], knowledge: list[dict[str, Any]] = ()) -> SampleVerdict | None:
    """A question that is not a research question (:func:`data_tools.synthesis.fas.questions.question_text_problem`: a
    blank, a copied memory statement, its answer in the question), judged ``search_necessity``: nothing to
    plan or search for."""
    from data_tools.synthesis.fas.questions import question_text_problem

    problem = question_text_problem(
        question["question"], question["answer"], question["style"], [k["text"] for k in knowledge]
    )
    if problem is not None and problem != "empty_question":
        return _reject("search_necessity", f"the question is not a research question: {problem}")
    return None


def _safe_arith(code: str) -> float | None:
    """Value printed by ``print(<arithmetic on literals>)``, or ``None`` for anything else (never executed)."""
    import ast

    try:
        tree = ast.parse(code.strip(), mode="exec")
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print" and len(call.args) == 1):
        return None

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(n.left), ev(n.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b, ast.Div: a / b if b else float("nan")}[type(n.op)]
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "abs" and len(n.args) == 1:
            return abs(ev(n.args[0]))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError("not plain arithmetic")

    try:
        return ev(call.args[0])
    except (ValueError, ZeroDivisionError):
        return None


def action_matches_analysis(plan: dict[str, Any]) -> bool:
    """Whether the analysis announces the action taken (a search it talks about, a page it names, ...)."""
    act = plan["action"]
    name = act.get("name") if act["type"] == "tool_call" else "answer"
    think = plan.get("think", "").casefold()
    return any(w in think for w in _ANNOUNCES.get(name, (str(name).casefold(),)))


def rule_judge_planning(
    question: dict[str, Any], knowledge: list[dict[str, Any]], plan: dict[str, Any]
) -> SampleVerdict:
    """Full rule-based judgement of a planning action (template backend): the question is answerable as
    asked, the analysis refers to it and announces the action taken, a direct answer or computation gives the
    right result, queries are grounded and visits go to a source page."""
    v = structural_planning(plan) or question_problem(question, knowledge) or knowledge_problem(question, knowledge)
    if v is not None:
        return v
    act = plan["action"]
    qv = _vocab(question["question"])
    if not qv & _vocab(plan["think"]):
        return _reject("logic_discontinuity", "the analysis does not refer to the question")
    if not action_matches_analysis(plan):
        return _reject("logic_discontinuity", f"the analysis never announces the {act.get('name') or 'answer'} action")
    if act["type"] == "tool_call" and act["name"] == "PythonInterpreter":
        value = _safe_arith(str(act.get("code") or act["arguments"].get("code") or ""))
        if value is None:
            return _reject("invalid_tool", "the Python code is not a computation the judge can check")
        if not answers_agree(
            str(int(value)) if value == int(value) else str(value), question["answer"], question["style"]
        ):
            return _reject("content_inconsistency", f"the computation gives {value:g}, not what the knowledge implies")
        return _accept(why="the computation uses the stated numbers and gives the right result")
    if act["type"] == "answer":
        if answers_agree(act["answer"], question["answer"], question["style"]):
            return _accept(why="direct answer agrees with the knowledge")
        return _reject("search_necessity", "answered directly without the knowledge the question needs")
    args = act["arguments"]
    kv = _vocab(*(k["text"] for k in knowledge), *(k.get("entity", "") for k in knowledge))
    if act["name"] == "visit":
        urls = {k.get("source", {}).get("url") for k in knowledge} - {None, ""}
        if urls and not set(args["url"]) & urls:
            return _reject("content_inconsistency", f"visits {args['url']} instead of a source page")
        return _accept()
    if act["name"] in ("search", "google_scholar"):
        if question["style"] == "comparison":
            said = normalize_answer(" ".join(args["query"]))
            missed = [e for e in question.get("entities") or () if normalize_answer(e) not in said]
            if missed:
                return _reject("search_necessity", f"the first search leaves out compared entity {missed[0]!r}")
        if question["style"] == "report_synthesis" and len(question.get("required_facts") or ()) > 1:
            if len(args["query"]) < 2:
                return _reject("search_necessity", "a report over several facts starts with a single query")
        for q in args["query"]:
            words = set(content_words(q))
            if not words or len(words & (kv | qv)) < max(1, len(words) // 2):
                return _reject("content_inconsistency", f"query {q!r} is not grounded in the question/knowledge")
        return _accept()
    return _accept()


def structural_reasoning(a1: dict[str, Any], a2: dict[str, Any]) -> SampleVerdict | None:
    """Rules for any backend: A1 decomposes, A2 reasons and answers; ``None`` if they pass."""
    if not a1.get("sub_questions"):
        return _reject("logic_discontinuity", "A1 has no sub-questions")
    if not str(a2.get("answer", "")).strip() or not str(a2.get("reasoning", "")).strip():
        return _reject("logic_discontinuity", "A2 has no reasoning or no answer")
    return None


def rule_judge_reasoning(
    question: dict[str, Any], knowledge: list[dict[str, Any]], a1: dict[str, Any], a2: dict[str, Any]
) -> SampleVerdict:
    """Full rule-based judgement of a reasoning sample (template backend)."""
    v = structural_reasoning(a1, a2) or question_problem(question, knowledge) or knowledge_problem(question, knowledge)
    if v is not None:
        return v
    facts = question.get("required_facts") or ()
    missing = unsupported_facts(question, knowledge)
    if missing:
        return _reject(
            "content_inconsistency", f"required fact not supported by the mapped knowledge: {missing[0][:80]!r}"
        )
    if question["style"] == "comparison":
        truth, why = comparison_truth(question, knowledge)
        if truth is None:
            return _reject("content_inconsistency", f"the comparison cannot be decided from the knowledge: {why}")
        if normalize_answer(a2["answer"]) != normalize_answer(truth):
            return _reject("content_inconsistency", f"the knowledge ({why}) makes {truth!r} the answer")
    if question["style"] != "report_synthesis" and normalize_answer(a2["answer"]) in ("unknown", ""):
        return _reject("content_inconsistency", "A2 could not derive an answer from the knowledge")
    if not answers_agree(a2["answer"], question["answer"], question["style"], facts):
        return _reject(
            "answer_mismatch", f"A2 answer {a2['answer'][:80]!r} != ground truth {question['answer'][:80]!r}"
        )
    kv = _vocab(*(k["text"] for k in knowledge))
    if len(kv & _vocab(a2["reasoning"])) < min(2, len(kv)):
        return _reject("content_inconsistency", "A2 reasoning does not use the knowledge")
    if question["style"] in ("factual_retrieval", "multi_hop", "web_navigation"):
        support = " ".join(normalize_answer(k["text"] + " " + (k.get("subject") or "")) for k in knowledge)
        if f" {normalize_answer(a2['answer'])} " not in f" {support} ":
            return _reject("content_inconsistency", "the A2 answer is not stated in the mapped knowledge")
    draft = str(a1.get("draft_answer", "")).strip()
    if draft and "draft" not in a2["reasoning"].casefold():
        return _reject("logic_discontinuity", "A2 never says how it relates to the draft A1")
    return _accept()


def llm_judge_planning_request(question: dict[str, Any], knowledge: list[dict[str, Any]], plan: dict[str, Any]):
    """Chat request for the LLM judge of a planning action."""
    p = load_prompt("fas", "judge_planning", "v1")
    messages = p.render(
        question=question["question"],
        knowledge=knowledge_lines(knowledge),
        think=plan["think"],
        action=json.dumps(plan["action"], ensure_ascii=False),
    )
    return {"messages": messages, "schema": p.schema, "template": p}


def llm_judge_reasoning_request(question: dict[str, Any], knowledge: list[dict[str, Any]], a2: dict[str, Any]):
    """Chat request for the LLM judge of A2 against the ground truth."""
    p = load_prompt("fas", "judge_reasoning", "v1")
    messages = p.render(
        question=question["question"],
        ground_truth=question["answer"],
        knowledge=knowledge_lines(knowledge),
        reasoning=a2["reasoning"],
        answer=a2["answer"],
    )
    return {"messages": messages, "schema": p.schema, "template": p}


def verdict_from_llm(parsed: dict[str, Any], model: str) -> SampleVerdict:
    """Turn a validated judge reply into a :class:`SampleVerdict` (an accept never carries a reason)."""
    if parsed["verdict"] == "accept":
        return SampleVerdict(True, None, parsed.get("explanation", ""), f"llm:{model}")
    reason = parsed.get("reason") if parsed.get("reason") in REASONS else "other"
    return SampleVerdict(False, reason, parsed.get("explanation", ""), f"llm:{model}")
