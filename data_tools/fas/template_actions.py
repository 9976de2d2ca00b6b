"""Offline (template-backend) planning and reasoning actions composed from each question's own content.

Planning: an analysis built from the question's subject, the terms around its blank, what is missing and what
the question already states, in a seeded choice of sentence frames and orders, ending in a *real* choice of
first action: ``visit`` a named page, ``google_scholar`` for academic subjects, ``PythonInterpreter`` or a
direct answer when the question states the numbers to compute with, ``search`` otherwise.

Reasoning: A1 is a concrete first attempt from "internal knowledge", simulated by the memory item's *other*
statements (not the ones the question was built from), so the draft is sometimes right, often partial or wrong,
as a model's recall is; A2 states the answer the mapped knowledge supports and says what changed from the
draft and why. Nothing here reads the ground truth.
"""

from __future__ import annotations

import random
import re
from typing import Any

from data_tools.fas.actions import _PAGE, _query, _subject, quoted_clues
from data_tools.fas.knowledge import content_words, find_dates
from data_tools.fas.questions import REFERENCE_YEAR, stable_int

ACADEMIC = frozenset(
    "theory theorem species genus disease syndrome virus bacteria protein cell molecule chemical chemistry physics "
    "physicist chemist biology biologist mathematics mathematician philosophy philosopher economics economist "
    "psychology medicine medical scientific scientist research study studies evolution quantum algorithm "
    "astronomy astronomer galaxy planet climate linguistics language languages genetics gene neuron brain "
    "university journal experiment hypothesis".split()
)
_STATED = re.compile(r"How many years separate the two dates \((.+?) and (.+?)\)\?")
_PRONOUN_START = re.compile(r"^(?:it|he|she|they|this|these|that|those|its|his|her|their)\b", re.I)


def _rng(question: dict[str, Any], salt: str) -> random.Random:
    return random.Random(stable_int(salt, question.get("id") or question["question"]))


def _terms(question: dict[str, Any], subject: str, limit: int = 4) -> list[str]:
    seen: list[str] = []
    sub = set(content_words(subject))
    for clue in quoted_clues(question["question"]) or [question["question"]]:
        for w in content_words(clue.replace("___", " ")):
            if w not in sub and w not in seen and not w.isdigit():
                seen.append(w)
    return seen[:limit]


def _missing(question: dict[str, Any]) -> str:
    text, style = question["question"], question["style"]
    if style == "numerical_computation":
        return "a number of years between two dated events"
    if style == "multi_hop":
        return "one entity that both descriptions point to"
    if style == "report_synthesis":
        return "a short sourced report"
    if "date or year" in text:
        return "a date that has been blanked out"
    if "which name" in text:
        return "a name that has been blanked out"
    return "a detail that has been blanked out"


def stated_years(question: dict[str, Any]) -> tuple[int, int, str, str] | None:
    """``(year_a, year_b, surface_a, surface_b)`` when the question itself states both dates, else ``None``."""
    m = _STATED.search(question["question"])
    if not m:
        return None
    da, db = find_dates(m.group(1)), find_dates(m.group(2))
    if not da or not db or da[0].year is None or db[0].year is None:
        return None
    return da[0].year, db[0].year, m.group(1), m.group(2)


def is_academic(question: dict[str, Any], subject: str) -> bool:
    """Whether the question concerns a scholarly subject (science, medicine, philosophy, ...)."""
    words = set(content_words(question["question"])) | set(content_words(subject))
    return bool(words & ACADEMIC)


def _frame(rng: random.Random, options: list[str]) -> str:
    return rng.choice(options)


def template_plan(question: dict[str, Any], entity: str = "") -> dict[str, Any]:
    """Analysis + first action for a question, composed from its content (see the module docstring)."""
    text, style = question["question"], question["style"]
    rng = _rng(question, "plan")
    subject = _subject(text) or entity or "the topic"
    terms = _terms(question, subject)
    t = ", ".join(terms) if terms else "few other terms"
    missing = _missing(question)
    about = [
        f"The question is about {subject} and asks for {missing}.",
        f"What I need here is {missing}, in a statement about {subject}.",
        f"{subject} is the subject; the gap to fill is {missing}.",
        f"I am asked for {missing} concerning {subject}.",
    ]
    known = [
        f"The words around the gap ({t}) are my anchors.",
        f"Useful constraints from the wording: {t}.",
        f"Besides {subject}, the statement mentions {t}, which narrows the candidates.",
        f"I can lean on {t} to recognise the right passage.",
    ]
    recall = [
        f"I have only a vague memory of {subject}, not enough to be sure of this detail.",
        f"Recalling details of {subject} from memory is risky, so I want a source.",
        f"My memory of {subject} might be outdated or mixed up with similar cases.",
        "",
        "",
    ]
    parts = [_frame(rng, about), _frame(rng, known), _frame(rng, recall)]
    if rng.random() < 0.5:
        parts[0], parts[1] = parts[1], parts[0]
    parts = [p for p in parts if p]
    if style == "web_navigation" and (m := _PAGE.search(text)):
        page, site = m.group(1), m.group(2)
        url = f"https://{site}/wiki/{page.replace(' ', '_')}" if "wikipedia" in site else f"https://{site}/"
        parts = parts[:2] + [
            _frame(
                rng,
                [
                    f"The page {page} on {site} is named, so I will visit it and read the sentence there.",
                    f"Since the question names the page {page} ({site}), visiting it is more direct than searching.",
                    f"Opening {page} on {site} should show the sentence with the missing part, so I visit it.",
                ],
            )
        ]
        action = {"type": "tool_call", "name": "visit", "arguments": {"url": [url], "goal": text}}
        return {"think": " ".join(parts), "action": action}
    years = stated_years(question) if style == "numerical_computation" else None
    if years is not None:
        ya, yb, sa, sb = years
        head = f"Both dates are stated in the question ({sa} and {sb}), so nothing needs to be looked up."
        if rng.random() < 0.5:
            think = (
                head
                + " "
                + _frame(
                    rng,
                    [
                        f"I will compute the gap between {ya} and {yb} with Python to avoid an arithmetic slip.",
                        f"A one-line Python computation of |{ya} - {yb}| gives the number of years reliably.",
                    ],
                )
            )
            code = f"print(abs({ya} - {yb}))"
            return {
                "think": think,
                "action": {"type": "tool_call", "name": "PythonInterpreter", "arguments": {}, "code": code},
            }
        think = head + f" The difference is |{ya} - {yb}| = {abs(ya - yb)} years, so I can answer directly."
        return {"think": think, "action": {"type": "answer", "answer": str(abs(ya - yb))}}
    if style == "report_synthesis":
        aspects = [a.strip(' ."') for a in text.split("covering:", 1)[-1].split(";") if a.strip(" .")]
        queries = [_query(a, subject, 5) or subject for a in aspects][:3] or [subject]
        parts = [
            _frame(
                rng,
                [
                    f"The report on {subject} has to cover {len(aspects)} aspects, each needing sourced facts.",
                    f"For a report on {subject} I need facts for {len(aspects)} separate points.",
                    f"{len(aspects)} aspects of {subject} must be covered, and I should not write any from memory.",
                ],
            ),
            _frame(
                rng,
                [
                    f"One search query per aspect ({'; '.join(queries)}) keeps the results separable.",
                    f"I will search each point separately, starting with {queries[0]}.",
                    f"Searching {len(queries)} queries about {subject} at once covers every aspect in one step.",
                ],
            ),
        ]
        return {
            "think": " ".join(parts),
            "action": {"type": "tool_call", "name": "search", "arguments": {"query": queries}},
        }
    clues = quoted_clues(text)
    queries = [q for q in ([_query(c, subject) for c in clues] or [_query(text, subject)]) if q] or [text[:100]]
    if is_academic(question, subject):
        parts.append(
            _frame(
                rng,
                [
                    f"This concerns {subject}, a scholarly topic, so I will query Google Scholar for {queries[0]}.",
                    f"Academic publications cover {subject} best; Google Scholar with {queries[0]} comes first.",
                ],
            )
        )
        return {
            "think": " ".join(parts),
            "action": {"type": "tool_call", "name": "google_scholar", "arguments": {"query": queries}},
        }
    if style == "multi_hop":
        parts.append(
            _frame(
                rng,
                [
                    f"Each description narrows the candidates, so I will search both: {' / '.join(queries)}.",
                    f"I will search the two descriptions ({' / '.join(queries)}) and intersect the results.",
                ],
            )
        )
    else:
        parts.append(
            _frame(
                rng,
                [
                    f"So my first step is a web search for {queries[0]}.",
                    f"A search for {queries[0]} should surface the passage.",
                    f"I will start with a web search: {queries[0]}.",
                    f"Searching {queries[0]} is the quickest way to the statement.",
                ],
            )
        )
    return {
        "think": " ".join(parts),
        "action": {"type": "tool_call", "name": "search", "arguments": {"query": queries}},
    }


def _recall(item: dict[str, Any] | None, question: dict[str, Any]) -> list[dict[str, Any]]:
    """The item's statements the question was *not* built from: the simulated internal knowledge."""
    if not item:
        return []
    used = set(question["statement_ids"])
    return [s for s in item["statements"] if s["id"] not in used]


def template_a1(question: dict[str, Any], item: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draft A1: sub-questions and a concrete first answer recalled from the item's other statements."""
    text, style = question["question"], question["style"]
    rng = _rng(question, "a1")
    subject = _subject(text) or (item or {}).get("entity") or "the subject"
    recall = _recall(item, question)
    mentions = [m for s in recall for m in s["mentions"] if m.casefold() not in subject.casefold()]
    dates = [d for s in recall for d in s["times"] if d.get("year") is not None]
    clues = quoted_clues(text)
    if style == "report_synthesis":
        subs = [f"What are the main facts about {subject}?", f"What is {subject} best known for?"]
        facts = [s["text"] for s in recall[:2]]
        draft = " ".join(facts) if facts else f"{subject} is a notable topic; I recall few specifics."
        why = "I remember some general facts, which may not match the requested aspects."
    elif style == "numerical_computation":
        years = stated_years(question)
        if years is not None:
            ya, yb, _, _ = years
            subs = [f"What is {ya} - {yb} in absolute value?"]
            draft = str(abs(ya - yb))
            why = f"Both dates are in the question, so |{ya} - {yb}| = {draft}."
        else:
            subs = [f'When did this happen: "{c}"?' for c in clues] + ["What is the difference between the years?"]
            if dates:
                guess = rng.choice(dates)["year"]
                ref = re.search(r"years before (\d{4})", text)
                base = int(ref.group(1)) if ref else REFERENCE_YEAR
                draft = str(abs(base - guess))
                why = f"I associate {subject} with {guess}, which would make it about {draft} years."
            else:
                draft = "roughly a century"
                why = f"I do not remember dates for {subject}; a century is a rough guess."
    else:
        subs = [f'What completes "{c}"?' for c in clues] or [text]
        if style == "multi_hop":
            subs.append("Which candidate fits both descriptions?")
        wants_date = "date or year" in text
        pool = [d["surface"] for d in dates] if wants_date else mentions
        if pool:
            draft = rng.choice(pool)
            why = f"From what I remember about {subject}, {draft} comes to mind, but I am not certain."
        else:
            draft = subject if style == "multi_hop" else "not sure"
            why = f"Nothing specific about {subject} comes to mind beyond the question itself."
    reasoning = f"First attempt from memory: {why}"
    return {"sub_questions": subs, "reasoning": reasoning, "draft_answer": draft}


def revise_note(draft: str, answer: str, cite: str) -> str:
    """The sentence of A2 that says what changed from the draft and why."""
    d, a = " ".join(draft.split()).casefold(), " ".join(answer.split()).casefold()
    if d == a:
        return f"This confirms my draft ({draft}): {cite}."
    if d and (d in a or a in d):
        return f"My draft ({draft}) was only partly right; {cite}, which gives the complete answer."
    return f"My draft ({draft}) was wrong: {cite}, so I replace it with {answer}."


def template_a2(question: dict[str, Any], knowledge: list[dict[str, Any]], a1: dict[str, Any]) -> dict[str, Any]:
    """Refined A2: the answer the mapped knowledge supports, and what changed from the draft A1 and why."""
    from data_tools.fas.actions import template_a2 as derive

    years = stated_years(question) if question["style"] == "numerical_computation" else None
    if years is not None:
        ya, yb, sa, sb = years
        cites = " ".join(f"[{i}] {k['text']}" for i, k in enumerate(knowledge, 1))
        out = {
            "reasoning": f"{cites} The dates are {sa} and {sb}; |{ya} - {yb}| = {abs(ya - yb)}.",
            "answer": str(abs(ya - yb)),
        }
    else:
        out = derive(question, knowledge)
    if question["style"] == "report_synthesis":
        note = (
            f"My draft relied on {len(a1['draft_answer'].split())} words of general recall; the knowledge covers "
            f"the {len(knowledge)} requested aspects, so the report now rests on it."
        )
    elif out["answer"] == "unknown":
        note = f"My draft ({a1['draft_answer']}) cannot be checked against this knowledge."
    else:
        note = revise_note(a1["draft_answer"], out["answer"], f"the knowledge supports {out['answer']}")
    return {"reasoning": f"{out['reasoning']} {note}", "answer": out["answer"]}
