"""Questions of six styles from one memory item: deterministic templates, or an LLM with validation.

Every question carries its ground-truth answer and the ids of the statements it needs. The K questions of one
memory item have *different* styles (a seeded permutation of :data:`STYLES`, cycled when K > 6). Comparison
questions also carry ``entities`` (the two compared) and ``attribute`` (``earlier`` / ``later``); report questions
carry ``required_facts``, the rubric the one answer judge (:func:`data_tools.synthesis.answers.judge_answer`) grades
with.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from data_tools.synthesis.fas.clues import copied_span
from data_tools.synthesis.fas.knowledge import normalize_answer
from data_tools.synthesis.llm.prompts import load_prompt

STYLES = (
    "factual_retrieval",
    "numerical_computation",
    "multi_hop",
    "web_navigation",
    "report_synthesis",
    "comparison",
)
NO_LEAK_CHECK = ("report_synthesis", "comparison")
"""Styles whose answer may appear in the question (a report restates facts; a comparison names both options)."""
REFERENCE_YEAR = 2025


def stable_int(*parts: Any) -> int:
    """A 31-bit integer hash of ``parts`` (for per-item seeds)."""
    return int.from_bytes(hashlib.sha1("\x1f".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


def choose_styles(memory_id: str, k: int, seed: int) -> list[str]:
    """K styles for one memory item: a seeded permutation of :data:`STYLES`, cycled when ``k`` exceeds them."""
    order = list(STYLES)
    random.Random(stable_int("styles", seed, memory_id)).shuffle(order)
    return [order[i % len(order)] for i in range(k)]


def question_id(memory_id: str, slot: int, style: str) -> str:
    """Stable id of the question in ``slot`` of a memory item."""
    return "q-" + hashlib.sha1(f"{memory_id}|{slot}|{style}".encode()).hexdigest()[:16]


def knowledge_index(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All statements usable for an item's questions: its own and its related entities', by id."""
    out = {st["id"]: {**st, "entity": item["entity"]} for st in item["statements"]}
    for rel in item.get("related", []):
        for st in rel["statements"]:
            out.setdefault(st["id"], {**st, "entity": rel["entity"]})
    return out


def _leaks(question: str, answer: str) -> bool:
    a = normalize_answer(answer)
    return bool(a) and f" {a} " in f" {normalize_answer(question)} "


def question_text_problem(question: str, answer: str, style: str, statements: list[str]) -> str | None:
    """Why a question is not a research question, or ``None``: ``blank`` (a fill-in-the-blank ``___``),
    ``copies_statement`` (8+ consecutive words of a memory statement), ``answer_in_question`` (its answer appears
    in it; reports and comparisons, which name their subject or both options, are exempt) or ``empty_question``."""
    if not re.search(r"\w", question) or not answer.strip():
        return "empty_question"
    if "___" in question or re.search(r"_{2,}|\[blank\]|\(blank\)", question, re.I):
        return "blank"
    if copied_span(question, statements) is not None:
        return "copies_statement"
    if style not in NO_LEAK_CHECK and _leaks(question, answer):
        return "answer_in_question"
    return None


def template_questions(
    item: dict[str, Any], styles: list[str], seed: int, index: Any = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Research questions (:mod:`data_tools.synthesis.fas.research`) for the requested styles; a style the item cannot
    support, or whose question fails :func:`question_text_problem`, is replaced by an unused one. ``index``: an
    :class:`data_tools.synthesis.fas.research.AttributeIndex` of the whole memory (comparison and arithmetic partners).

    Returns ``(questions, unavailable styles)``. Deterministic in ``(item, styles, seed)``.
    """
    from data_tools.synthesis.fas.research import GENERATORS

    rng = random.Random(stable_int("template-questions", seed, item["id"]))
    texts = [st["text"] for st in knowledge_index(item).values()]
    questions: list[dict[str, Any]] = []
    unavailable: list[str] = []
    tried: set[str] = set()
    pending = list(styles)
    while pending:
        style = pending.pop(0)
        tried.add(style)
        made = GENERATORS[style](item, rng, index)
        extra = [st["text"] for st in (made or {}).get("partner_statements") or []]
        if made is None or question_text_problem(made["question"], made["answer"], style, texts + extra):
            unavailable.append(style)
            spare = [s for s in STYLES if s not in tried and s not in pending]
            if spare:
                pending.append(spare[0])
            continue
        questions.append(made)
    return questions, unavailable


def _statement_lines(statements: list[dict[str, Any]]) -> str:
    lines = []
    for st in statements:
        meta = ", ".join(x for x in (st.get("time") or "", st["source"].get("title", "")) if x)
        lines.append(f"[{st['id']}] ({meta}) {st['text']}")
    return "\n".join(lines) or "(none)"


def llm_questions_request(item: dict[str, Any], styles: list[str]) -> dict[str, Any]:
    """The chat request (messages, schema) asking an LLM for one question per style."""
    prompt = load_prompt("fas", "questions", "v1")
    related = "\n".join(
        f"- {r['entity']} (shares statement {r['via']}):\n" + _statement_lines(r["statements"])
        for r in item.get("related", [])
    )
    messages = prompt.render(
        entity=item["entity"],
        description=item.get("description") or "(none)",
        statements=_statement_lines(item["statements"]),
        related=related or "(none)",
        styles=", ".join(styles),
    )
    return {"messages": messages, "schema": prompt.schema, "schema_name": "fas_questions", "template": prompt}


def validate_llm_questions(
    item: dict[str, Any], parsed: dict[str, Any], styles: list[str]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Check LLM questions: requested style (each once), known statement ids, and :func:`question_text_problem`
    (no blank, no statement copied, answer not in the question).

    Returns ``(valid questions, [(invalid question, reason)])``.
    """
    known = knowledge_index(item)
    texts = [st["text"] for st in known.values()]
    wanted = list(styles)
    valid, invalid = [], []
    for q in parsed["questions"]:
        q = {
            "style": q["style"],
            "question": q["question"].strip(),
            "answer": q["answer"].strip(),
            "statement_ids": list(dict.fromkeys(q["statement_ids"])),
        }
        if q["style"] not in wanted:
            invalid.append((q, "unrequested_style" if q["style"] not in styles else "duplicate_style"))
        elif any(i not in known for i in q["statement_ids"]):
            invalid.append((q, "unknown_statement"))
        elif problem := question_text_problem(q["question"], q["answer"], q["style"], texts):
            invalid.append((q, problem))
        else:
            wanted.remove(q["style"])
            q["target"] = known[q["statement_ids"][0]]["entity"]
            q["ask"] = {"report_synthesis": "report", "comparison": "compare"}.get(q["style"], "llm")
            if q["style"] == "report_synthesis":  # the rubric: the facts of the statements the report needs
                q["required_facts"] = [known[i]["text"] for i in q["statement_ids"]]
            elif q["style"] == "comparison":
                q["entities"] = list(dict.fromkeys(known[i]["entity"] for i in q["statement_ids"]))
            valid.append(q)
    return valid, invalid
