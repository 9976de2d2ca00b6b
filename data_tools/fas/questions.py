"""Questions of six styles from one memory item: deterministic templates, or an LLM with validation.

Every question carries its ground-truth answer and the ids of the statements it needs. The K questions of one
memory item have *different* styles (a seeded permutation of :data:`STYLES`, cycled when K > 6). Comparison
questions also carry ``entities`` (the two compared) and ``attribute`` (``earlier`` / ``later``); report questions
carry ``required_facts``, the rubric the one answer judge (:func:`data_tools.answers.judge_answer`) grades with.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any
from urllib.parse import urlsplit

from data_tools.fas.knowledge import find_dates, normalize_answer
from data_tools.llm.prompts import load_prompt

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
_PRONOUN_START = re.compile(r"^(?:it|he|she|they|this|these|that|those|its|his|her|their|there)\b", re.I)


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


def _mask(text: str, span: str) -> str | None:
    i = text.casefold().find(span.casefold())
    if i < 0 or not span.strip():
        return None
    return text[:i] + "___" + text[i + len(span) :]


def _leaks(question: str, answer: str) -> bool:
    a = normalize_answer(answer)
    return bool(a) and f" {a} " in f" {normalize_answer(question)} "


def _site(url: str) -> str:
    return urlsplit(url).netloc or "the web"


def _named(sts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements that name their subject (not starting with a pronoun), or all when none does."""
    return [s for s in sts if not _PRONOUN_START.match(s["text"].strip())] or sts


def _factual(item, rng, used):
    sts = _named([s for s in item["statements"] if s["times"] and s["id"] not in used]) or [
        s for s in item["statements"] if s["times"]
    ]
    if sts:
        st = rng.choice(sts)
        span = st["times"][0]["surface"]
        masked = _mask(st["text"], span)
        q = f'According to sources on {item["entity"]}, what date or year belongs in the blank: "{masked}"?'
        return q, span, [st["id"]]
    sts = _named([s for s in item["statements"] if s["mentions"]])
    if not sts:
        return None
    st = rng.choice(sts)
    span = st["mentions"][0]
    masked = _mask(st["text"], span)
    if masked is None:
        return None
    return f'According to sources on {item["entity"]}, which name belongs in the blank: "{masked}"?', span, [st["id"]]


def first_year(st: dict[str, Any]) -> int | None:
    """Year of a statement's first stored date, if the text really states it as a date (memories built before the
    count fix stored counts such as ``about 1500 species`` as years)."""
    if not st.get("times") or st["times"][0].get("year") is None:
        return None
    found = find_dates(st["text"])
    if not found or found[0].surface != st["times"][0]["surface"]:
        return None
    return st["times"][0]["year"]


def _numerical(item, rng, used):
    dated = _named([s for s in knowledge_index(item).values() if first_year(s) is not None])
    pairs = [
        (a, b) for i, a in enumerate(dated) for b in dated[i + 1 :] if a["times"][0]["year"] != b["times"][0]["year"]
    ]
    if pairs:
        a, b = rng.choice(pairs)
        ya, yb = a["times"][0]["year"], b["times"][0]["year"]
        if rng.random() < 0.4:
            # numbers stated in the question: a computation, no lookup needed
            q = (
                f'Sources on {item["entity"]} say "{a["text"]}" and also "{b["text"]}". '
                f"How many years separate the two dates ({a['times'][0]['surface']} and {b['times'][0]['surface']})?"
            )
            return q, str(abs(ya - yb)), [a["id"], b["id"]]
        ma, mb = _mask(a["text"], a["times"][0]["surface"]), _mask(b["text"], b["times"][0]["surface"])
        q = f'How many years passed between these two events: (1) "{ma}" and (2) "{mb}"?'
        return q, str(abs(ya - yb)), [a["id"], b["id"]]
    own = [s for s in dated if s["entity"] == item["entity"] and 0 < s["times"][0]["year"] <= REFERENCE_YEAR]
    if not own:
        return None
    st = rng.choice(own)
    masked = _mask(st["text"], st["times"][0]["surface"])
    q = f'How many years before {REFERENCE_YEAR} did this happen: "{masked}"?'
    return q, str(REFERENCE_YEAR - st["times"][0]["year"]), [st["id"]]


def _multi_hop(item, rng, used):
    own = {s["id"]: s for s in item["statements"]}
    options = [r for r in item.get("related", []) if r["via"] in own and r["statements"]]
    named = [
        r
        for r in options
        if not _PRONOUN_START.match(own[r["via"]]["text"].strip())
        and any(not _PRONOUN_START.match(st["text"].strip()) for st in r["statements"])
    ]
    options = named or options
    if not options:
        return None
    rel = rng.choice(options)
    via, other = own[rel["via"]], _named(rel["statements"])[0]
    ma = _mask(via["text"], rel["entity"])
    mb = _mask(other["text"], rel["entity"]) or other["text"]
    if ma is None:
        return None
    chain = _chain(rel, ma, rng)
    if chain is not None:
        return chain[0], chain[1], [via["id"], chain[2]]
    q = f'Which entity is mentioned in "{ma}" and is also described by "{mb}"?'
    return q, rel["entity"], [via["id"], other["id"]]


CHAIN_MARK = "and then, from that entity's own sources, what completes"


def _chain(rel: dict[str, Any], masked_via: str, rng: random.Random) -> tuple[str, str, str] | None:
    """A two-hop chain: find the entity blanked in one statement, then a detail (a date or a name) stated about
    that entity elsewhere in memory; the answer is the detail, not the bridging entity."""
    if rng.random() < 0.5:
        return None
    for st in _named(rel["statements"]):
        spans = [t["surface"] for t in st.get("times") or []] + [
            m for m in st.get("mentions") or [] if m.casefold() != rel["entity"].casefold()
        ]
        for span in spans:
            text = re.sub(r"(?:\bthe\s+)?" + re.escape(rel["entity"]), "the entity", st["text"], flags=re.I)
            masked = _mask(text, span)
            if masked is None or "the entity" not in masked or _leaks(masked_via, span):
                continue
            q = f'Find the entity missing in "{masked_via}" {CHAIN_MARK} "{masked}"?'
            return q, span, st["id"]
    return None


def _web(item, rng, used):
    cands = [s for s in item["statements"] if s["source"].get("title") and s["id"] not in used]
    cands = _named([s for s in cands if s["mentions"] or s["times"]])
    if not cands:
        return None
    st = rng.choice(cands)
    span = st["mentions"][-1] if st["mentions"] else st["times"][-1]["surface"]
    masked = _mask(st["text"], span)
    if masked is None:
        return None
    page, site = st["source"]["title"], _site(st["source"].get("url", ""))
    return f'Open the page "{page}" on {site} and find the missing detail in: "{masked}"', span, [st["id"]]


_SUBJECT = frozenset("he she it they its his her their this these the a an in on at as by".split())


def _aspect(st: dict[str, Any], entity: str) -> str:
    if st["times"]:
        return f"what happened in {st['times'][0]['surface']}"
    ent = {w.casefold() for w in entity.split()}
    words = st["text"].split()
    while words and (words[0].casefold().strip(",") in ent or words[0].casefold() in _SUBJECT):
        words = words[1:]
    phrase = []
    for w in words[:6]:
        phrase.append(w.rstrip(",;:."))
        if w[-1:] in ",;:.":
            break
    if len(phrase) >= 2:
        return '"' + " ".join(phrase) + ' ..."'
    if st["mentions"]:
        return f"its connection to {st['mentions'][0]}"
    return "its background"


def _report(item, rng, used):
    sts = item["statements"]
    if len(sts) < 3:
        return None
    chosen = sorted(rng.sample(range(len(sts)), 3))
    picked = [sts[i] for i in chosen]
    aspects = "; ".join(_aspect(s, item["entity"]) for s in picked)
    q = f"Write a short report on {item['entity']} covering: {aspects}."
    facts = [s["text"] for s in picked]
    return q, " ".join(facts), [s["id"] for s in picked], {"required_facts": facts}


COMPARE_MARK = "which one comes with the"


def _comparison(item, rng, used):
    """Two entities linked in memory (the item and a related entity, or two related entities) compared on a stated
    date: which one's event is earlier (or later); the answer is computed from their two statements' years."""

    def usable(st: dict[str, Any]) -> bool:  # each quoted statement is labelled with its entity: pronouns are fine
        return first_year(st) is not None

    own_ids = {s["id"] for s in item["statements"]}
    cands = [(item["entity"], s) for s in item["statements"] if usable(s)] + [
        (rel["entity"], s)
        for rel in item.get("related", [])
        if rel["entity"].casefold() != item["entity"].casefold()
        for s in rel["statements"]
        if usable(s) and s["id"] not in own_ids
    ]
    pairs = [
        (x, y)
        for i, x in enumerate(cands)
        for y in cands[i + 1 :]
        if x[0].casefold() != y[0].casefold() and first_year(x[1]) != first_year(y[1])
    ]
    if not pairs:
        return None
    # prefer pairs that include the memory item's own entity
    mine = [p for p in pairs if item["entity"] in (p[0][0], p[1][0])]
    sides = list(rng.choice(mine or pairs))
    rng.shuffle(sides)
    attribute = rng.choice(("earlier", "later"))
    (e1, s1), (e2, s2) = sides
    m1, m2 = _mask(s1["text"], s1["times"][0]["surface"]), _mask(s2["text"], s2["times"][0]["surface"])
    if m1 is None or m2 is None:
        return None
    y1, y2 = first_year(s1), first_year(s2)
    answer = e1 if (y1 < y2) == (attribute == "earlier") else e2
    q = f'Comparing {e1} and {e2}, {COMPARE_MARK} {attribute} date? (1) {e1}: "{m1}" and (2) {e2}: "{m2}"?'
    return q, answer, [s1["id"], s2["id"]], {"entities": [e1, e2], "attribute": attribute}


_GENERATORS = {
    "factual_retrieval": _factual,
    "numerical_computation": _numerical,
    "multi_hop": _multi_hop,
    "web_navigation": _web,
    "report_synthesis": _report,
    "comparison": _comparison,
}


def template_questions(item: dict[str, Any], styles: list[str], seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Rule-based questions for the requested styles; a style the item cannot support is replaced by an unused one.

    Returns ``(questions, unavailable styles)``. Deterministic in ``(item, styles, seed)``.
    """
    rng = random.Random(stable_int("template-questions", seed, item["id"]))
    questions: list[dict[str, Any]] = []
    unavailable: list[str] = []
    used: set[str] = set()
    tried: set[str] = set()
    pending = list(styles)
    while pending:
        style = pending.pop(0)
        tried.add(style)
        made = _GENERATORS[style](item, rng, used)
        if made is None or _leaks(made[0], made[1]) and style not in NO_LEAK_CHECK:
            unavailable.append(style)
            spare = [s for s in STYLES if s not in tried and s not in pending]
            if spare:
                pending.append(spare[0])
            continue
        text, answer, ids = made[:3]
        used.update(ids)
        questions.append(
            {"style": style, "question": text, "answer": answer, "statement_ids": ids, **(made[3] if made[3:] else {})}
        )
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
    """Check LLM questions: requested style (each once), known statement ids, answer not in the question.

    Returns ``(valid questions, [(invalid question, reason)])``.
    """
    known = knowledge_index(item)
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
        elif q["style"] not in NO_LEAK_CHECK and _leaks(q["question"], q["answer"]):
            invalid.append((q, "answer_in_question"))
        elif not re.search(r"\w", q["question"]) or not q["answer"]:
            invalid.append((q, "empty_question"))
        else:
            wanted.remove(q["style"])
            if q["style"] == "report_synthesis":  # the rubric: the facts of the statements the report needs
                q["required_facts"] = [known[i]["text"] for i in q["statement_ids"]]
            elif q["style"] == "comparison":
                q["entities"] = list(dict.fromkeys(known[i]["entity"] for i in q["statement_ids"]))
            valid.append(q)
    return valid, invalid
