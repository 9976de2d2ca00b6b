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
    if style == "comparison":
        return f"which of two entities comes with the {question.get('attribute', 'earlier')} date"
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
    if style == "comparison":
        return _plan_comparison(question, rng)
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


def compared_entities(question: dict[str, Any]) -> list[str]:
    """The two entities a comparison question names (its ``entities`` field, else parsed from the text)."""
    if question.get("entities"):
        return list(question["entities"])
    m = re.match(r"Comparing (.+?) and (.+?), which one", question["question"])
    return [m.group(1), m.group(2)] if m else []


def _plan_comparison(question: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Comparison: both entities' dates are needed, so the first step searches both (one query each)."""
    ents = compared_entities(question) or ["the first entity", "the second entity"]
    attr = question.get("attribute", "earlier")
    clues = quoted_clues(question["question"])
    queries = [_query(c, e, 4) or e for e, c in zip(ents, clues)] or ents
    e1, e2 = ents[0], ents[-1]
    parts = [
        _frame(
            rng,
            [
                f"I have to decide whether {e1} or {e2} comes with the {attr} date.",
                f"The comparison is between {e1} and {e2}, on which one's event is {attr}.",
                f"Two entities, {e1} and {e2}, and one attribute to compare: the {attr} date.",
            ],
        ),
        _frame(
            rng,
            [
                f"Both dates are blanked, so I need the year for {e1} and the one for {e2} before comparing.",
                f"Neither year is given; guessing the {attr} one between {e1} and {e2} would be luck.",
                f"The years for {e1} and {e2} are the missing pieces; the comparison itself is trivial once known.",
            ],
        ),
        _frame(
            rng,
            [
                f"I will search both at once, one query per entity: {' / '.join(queries)}.",
                f"A search with two queries ({' / '.join(queries)}) keeps each entity's results apart.",
                f"First step: search for {queries[0]} and for {queries[-1]} together.",
            ],
        ),
    ]
    if rng.random() < 0.4:
        parts[0], parts[1] = parts[1], parts[0]
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
    if style == "comparison":
        return _a1_comparison(question, item, rng)
    if style == "report_synthesis":
        aspects = [a.strip(' ."') for a in text.split("covering:", 1)[-1].split(";") if a.strip(" .")]
        subs = [f"What do I know about {subject} regarding {a}?" for a in aspects] or [f"What is {subject} known for?"]
        qwords = set(content_words(text)) - set(content_words(subject))
        ranked = sorted(recall, key=lambda s: -len(qwords & set(content_words(s["text"]))))
        facts = [s["text"] for s in ranked[: rng.choice((1, 2))]]
        draft = " ".join(facts) if facts else f"{subject} is a notable topic; I recall few specifics."
        why = (
            f"a partial report: I recall {len(facts)} fact(s) about {subject}, which may not cover all "
            f"{len(aspects)} requested aspects."
        )
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


def _a1_comparison(question: dict[str, Any], item: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
    """A comparison draft: years recalled from each entity's *other* statements (own and related), compared."""
    ents = compared_entities(question)
    attr = question.get("attribute", "earlier")
    used = set(question["statement_ids"])
    pool: dict[str, list[dict[str, Any]]] = {e: [] for e in ents}
    if item:
        groups = [(item["entity"], item["statements"])] + [
            (r["entity"], r["statements"]) for r in item.get("related", [])
        ]
        for ent, sts in groups:
            if ent in pool:
                pool[ent] += [s for s in sts if s["id"] not in used]
    recalled = {}
    for e in ents:
        years = [t["year"] for s in pool.get(e, []) for t in s["times"] if t.get("year") is not None]
        if years:
            recalled[e] = rng.choice(years)
    subs = [f"When did the event about {e} happen?" for e in ents] + [f"Which of the two dates is {attr}?"]
    if len(recalled) == 2:
        (e1, y1), (e2, y2) = recalled.items()
        pick = e1 if (y1 < y2) == (attr == "earlier") else e2
        why = f"I associate {e1} with {y1} and {e2} with {y2}, so {pick} would be {attr}."
    elif recalled:
        (e1, y1), other = next(iter(recalled.items())), [e for e in ents if e not in recalled]
        pick = e1 if rng.random() < 0.5 else (other[0] if other else e1)
        why = f"I only recall {y1} for {e1} and nothing dated for the other, so {pick} is a guess."
    else:
        pick = rng.choice(ents) if ents else "not sure"
        why = f"I recall no dates for {' or '.join(ents) or 'either'}; {pick} is a guess."
    return {"sub_questions": subs, "reasoning": f"First attempt from memory: {why}", "draft_answer": pick}


def compare_from_knowledge(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> tuple[str, str] | None:
    """``(answer, why)`` of a comparison from the mapped knowledge: each blank filled from its statement, the two
    years compared; ``None`` when the knowledge does not date both entities."""
    from data_tools.fas.actions import _fill_blank

    ents, clues = compared_entities(question), quoted_clues(question["question"])
    if len(ents) != 2 or len(clues) != 2:
        return None
    sts = [k["text"] for k in knowledge]
    years = []
    for clue in clues:
        fill = _fill_blank(clue, sts)
        found = find_dates(fill or "")
        if not found or found[0].year is None:
            return None
        years.append((fill, found[0].year))
    (f1, y1), (f2, y2) = years
    if y1 == y2:
        return None
    attr = question.get("attribute", "earlier")
    answer = ents[0] if (y1 < y2) == (attr == "earlier") else ents[1]
    return answer, f"{ents[0]}'s statement gives {f1} and {ents[1]}'s gives {f2}, so {answer} is {attr}."


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
    cmp = compare_from_knowledge(question, knowledge) if question["style"] == "comparison" else None
    if question["style"] == "comparison":
        cites = " ".join(f"[{i}] {k['text']}" for i, k in enumerate(knowledge, 1))
        out = (
            {"reasoning": f"{cites} {cmp[1]}", "answer": cmp[0]}
            if cmp
            else {"reasoning": f"The knowledge does not date both events. {cites}", "answer": "unknown"}
        )
    elif years is not None:
        ya, yb, sa, sb = years
        cites = " ".join(f"[{i}] {k['text']}" for i, k in enumerate(knowledge, 1))
        out = {
            "reasoning": f"{cites} The dates are {sa} and {sb}; |{ya} - {yb}| = {abs(ya - yb)}.",
            "answer": str(abs(ya - yb)),
        }
    else:
        out = derive(question, knowledge)
    if question["style"] == "report_synthesis":
        from data_tools.answers import rubric

        facts = question.get("required_facts") or [k["text"] for k in knowledge]
        had = [f for f in facts if rubric(a1["draft_answer"], [f])[0]]
        note = f"My draft covered {len(had)} of the {len(facts)} required facts; the knowledge supplies " + (
            "the rest, so the report now states each of them from a source."
            if len(had) < len(facts)
            else "all of them, so the report keeps them and cites the sources."
        )
    elif out["answer"] == "unknown":
        note = f"My draft ({a1['draft_answer']}) cannot be checked against this knowledge."
    else:
        note = revise_note(a1["draft_answer"], out["answer"], f"the knowledge supports {out['answer']}")
    return {"reasoning": f"{out['reasoning']} {note}", "answer": out["answer"]}
