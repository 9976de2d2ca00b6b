"""Template research questions: the answer hidden behind descriptions drawn from other memory statements.

Every question of the template backend is built from 2-3 statements of one memory item (and, for multi-hop, of a
linked entity) without quoting any of them: each statement contributes a *clue*, a short description of its
subject (:mod:`data_tools.synthesis.fas.clues`), and the question combines the clues (multi-constraint) so the answer
has to be found by searching for the described entity first (obfuscation). Comparisons and arithmetic only combine
attributes of one kind (two founding years, two populations in people). Besides ``style``, ``question``,
``answer`` and ``statement_ids`` a question carries what its planning and reasoning are built from:

``target``  the entity the clues describe (hidden in the question unless it is a report or a comparison);
``ask``     ``entity`` | ``year`` | ``number`` | ``report`` | ``compare``;
``clues``   ``[{"statement_id", "entity", "phrase"}]``, the descriptions used (phrases of <= 7 words);
``entities``/``attribute``/``unit`` for comparisons and arithmetic; ``required_facts`` for reports.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from data_tools.synthesis.fas.clues import (
    KIND_PHRASE,
    Attribute,
    attributes,
    describe,
    fmt_number,
    predicate,
    subject_of,
)
from data_tools.synthesis.fas.knowledge import content_words, find_dates

REFERENCE_YEAR = 2025
YEAR_KINDS = ("founding", "birth", "death", "independence", "construction", "publication", "discovery")


def _statements(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(subject, statement)`` for every statement of the item and of its related entities."""
    out = [(subject_of(st, item["entity"]), st) for st in item["statements"]]
    seen = {st["id"] for st in item["statements"]}
    for rel in item.get("related") or []:
        for st in rel["statements"]:
            if st["id"] not in seen:
                seen.add(st["id"])
                out.append((subject_of(st, rel["entity"]), st))
    return out


def _clues(item: dict[str, Any], entity: str, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """Descriptions of ``entity`` from the statements about it (one per statement, distinct phrases)."""
    out: list[dict[str, str]] = []
    taken = [set(content_words(_desc(item, entity) or ""))]
    for subj, st in _statements(item):
        if subj.casefold() != entity.casefold() or st["id"] in exclude:
            continue
        p = predicate(st["text"], subj)
        if not p:
            continue
        words = set(content_words(p))
        if not words or any(len(words & t) * 2 >= len(words) for t in taken):
            continue  # says again what the description or an earlier clue says
        taken.append(words)
        out.append({"statement_id": st["id"], "entity": subj, "phrase": p})
    return out


def _desc(item: dict[str, Any], entity: str) -> str | None:
    if entity.casefold() == item["entity"].casefold():
        return describe(item.get("description"))
    return None


_HEADS = ("the entity", "the subject", "the one", "the topic")
_THAT = ("that", "which")


def reference(entity_desc: str | None, phrases: list[str], rng: random.Random) -> str:
    """A noun phrase that identifies an entity without naming it: its description and 1-2 clue phrases."""
    head = f"the {entity_desc}" if entity_desc else rng.choice(_HEADS)
    if not phrases:
        return head
    rel = rng.choice(_THAT)
    if len(phrases) == 1:
        return f"{head} {rel} {phrases[0]}"
    joiner = rng.choice((" and ", " and also ", ", and which ", " and that ")) if rel == "that" else " and "
    return f"{head} {rel} {phrases[0]}{joiner}{phrases[1]}"


def _one_clue_reference(
    item: dict[str, Any], e: str, exclude: set, desc: str | None, rng: random.Random
) -> tuple[list[dict[str, Any]], str] | None:
    """One clue about ``e`` (other than the ``exclude`` statements) and the reference built from it and ``desc``;
    ``None`` when there is neither a clue nor a description to identify the entity by."""
    others = _clues(item, e, exclude)[:1]
    if not others and not desc:
        return None
    return others, reference(desc, [c["phrase"] for c in others], rng)


def _without_date(phrase: str, surface: str) -> str | None:
    out = re.sub(r"\s*\b(?:in|on|during|by|from|since|around|circa|c\.)?\s*" + re.escape(surface), "", phrase)
    out = " ".join(out.split()).strip(" ,")
    return out if len(out.split()) >= 2 and out != phrase else None


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _q(style, question, answer, ids, target, ask, clues, **extra) -> dict[str, Any]:
    return {
        "style": style,
        "question": " ".join(question.split()),
        "answer": answer,
        "statement_ids": list(dict.fromkeys(ids)),
        "target": target,
        "ask": ask,
        "clues": clues,
        **extra,
    }


def _dated_clue(item, entity) -> list[tuple[dict[str, Any], str, str]]:
    """``(statement, predicate without its date, date surface)`` for the entity's dated statements."""
    out = []
    for subj, st in _statements(item):
        if subj.casefold() != entity.casefold():
            continue
        p = predicate(st["text"], subj)
        dates = find_dates(p or "")
        if p and dates and dates[0].year is not None:
            rest = _without_date(p, dates[0].surface)
            if rest:
                out.append((st, rest, dates[0].surface))
    return out


def factual(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """A year (or, without dated statements, the entity) found by first identifying the described entity."""
    e = item["entity"]
    desc = _desc(item, e)
    dated = _dated_clue(item, e)
    if dated:
        st, rest, surface = rng.choice(dated)
        others = [c for c in _clues(item, e, {st["id"]})][:1]
        ref = reference(desc, [c["phrase"] for c in others], rng)
        if not others and not desc:
            return None
        frames = (
            f"In what year did it happen that {ref} {rest}?",
            f"{_cap(ref)} {rest}. In which year?",
            f"Find the year: {ref} {rest}.",
            f"When, by year, {ref} {rest}?",
            f"What year is recorded for this: {ref} {rest}?",
        )
        clues = others + [{"statement_id": st["id"], "entity": e, "phrase": rest}]
        ids = [c["statement_id"] for c in clues]
        return _q("factual_retrieval", rng.choice(frames), surface, ids, e, "year", clues, description=desc)
    clues = _clues(item, e)
    if len(clues) < 2 and not (desc and clues):
        return None
    picked = rng.sample(clues, min(len(clues), 2))
    ref = reference(desc, [c["phrase"] for c in picked], rng)
    frames = (
        f"What is the name of {ref}?",
        f"Identify {ref}.",
        f"Which entity is {ref}?",
        f"Name {ref}.",
        f"Who or what is {ref}?",
    )
    ids = [c["statement_id"] for c in picked]
    return _q("factual_retrieval", rng.choice(frames), e, ids, e, "entity", picked, description=desc)


def multi_hop(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """A linked entity found in two hops: identify the described item entity, then the entity its sources link to
    that also fits a description of its own."""
    e = item["entity"]
    desc = _desc(item, e)
    options = []
    for rel in item.get("related") or []:
        b = rel["entity"]
        bclues = [c for c in _clues(item, b) if e.casefold() not in c["phrase"].casefold()]
        eclues = [c for c in _clues(item, e, {rel["via"]}) if b.casefold() not in c["phrase"].casefold()]
        if bclues and (eclues or desc):
            options.append((rel, bclues, eclues))
    if not options:
        return None
    if index is not None:  # no hubs (a big country, a language) as answers: they would answer half of them
        hub = max(10, index.items // 100)
        options = [o for o in options if index.links[o[0]["entity"].casefold()] <= hub]
        if not options:
            return None
        least = min(index.links[r["entity"].casefold()] for r, _, _ in options)
        options = [o for o in options if index.links[o[0]["entity"].casefold()] == least]
    rel, bclues, eclues = rng.choice(options)
    ce = eclues[:1] if desc else rng.sample(eclues, min(2, len(eclues)))
    cb = rng.choice(bclues)
    ref_e = reference(desc, [c["phrase"] for c in ce], rng)
    frames = (
        f"Sources about {ref_e} name another entity, one that {cb['phrase']}. What is it?",
        f"Start from {ref_e}. Which entity linked to it {cb['phrase']}?",
        f"Which entity {cb['phrase']}, and is tied to {ref_e}?",
        f"{_cap(ref_e)} is linked to something that {cb['phrase']}. Name it.",
        f"Find {ref_e}; then name the related entity that {cb['phrase']}.",
        f"What {cb['phrase']} and appears in connection with {ref_e}?",
        f"Connected to {ref_e} is an entity that {cb['phrase']}. Which?",
        f"Name the neighbour of {ref_e} that {cb['phrase']}.",
    )
    ids = [c["statement_id"] for c in ce] + [rel["via"], cb["statement_id"]]
    return _q("multi_hop", rng.choice(frames), rel["entity"], ids, rel["entity"], "entity", [*ce, cb], description=desc)


class AttributeIndex:
    """Typed attributes of every memory item's own statements, by ``(kind, unit)``: comparison and arithmetic
    partners for an entity whose linked entities state no value of the same kind. Built from the whole memory
    file (all shards), so a question does not depend on the sharding."""

    def __init__(self, max_per_kind: int = 20000) -> None:
        self.by_kind: dict[tuple[str, str], list[tuple[Attribute, dict[str, Any]]]] = {}
        self.max_per_kind = max_per_kind
        self.links: Counter = Counter()
        """How many memory items link to each entity (case-folded name)."""
        self.items = 0
        """Memory items indexed."""

    def add_item(self, item: dict[str, Any]) -> None:
        """Index the attributes of one memory item's own statements (and count its links)."""
        self.items += 1
        for rel in item.get("related") or []:
            if isinstance(rel, dict) and isinstance(rel.get("entity"), str):
                self.links[rel["entity"].casefold()] += 1
        for st in item.get("statements") or []:
            if not isinstance(st, dict) or not isinstance(st.get("text"), str) or not isinstance(st.get("id"), str):
                continue
            subj = subject_of(st, item["entity"])
            for a in attributes(st, subj):
                rows = self.by_kind.setdefault((a.kind, a.unit), [])
                if len(rows) < self.max_per_kind:
                    rows.append((a, {**st, "entity": subj}))

    def partners(self, a: Attribute) -> list[tuple[Attribute, dict[str, Any]]]:
        """Attributes of the same kind and unit stated about other entities, with a different value."""
        return [
            (b, st)
            for b, st in self.by_kind.get((a.kind, a.unit), [])
            if b.entity.casefold() != a.entity.casefold() and b.value != a.value
        ]


def _pairs(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None):
    """Pairs of same-kind attributes of two entities: within the item (and its linked entities), else the item's
    own attribute with a partner from ``index``; ``(a, b, partner statements)``."""
    attrs = _attrs(item)
    pairs = [
        (a, b, [])
        for i, a in enumerate(attrs)
        for b in attrs[i + 1 :]
        if a.kind == b.kind and a.unit == b.unit and a.entity.casefold() != b.entity.casefold() and a.value != b.value
    ]
    if pairs or index is None:
        return pairs
    mine = [a for a in attrs if a.entity.casefold() == item["entity"].casefold()]
    for a in rng.sample(mine, len(mine)):
        cands = index.partners(a)
        if cands:
            b, st = rng.choice(cands)
            return [(a, b, [st])]
    return []


def _attrs(item: dict[str, Any]) -> list[Attribute]:
    out = []
    for subj, st in _statements(item):
        out.extend(attributes(st, subj))
    return out


def numerical(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """Arithmetic over two values of one kind: years between two entities' founding (or birth, ...), the
    difference of two populations (same unit), a lifespan, or years since an event."""
    attrs = _attrs(item)
    pairs = _pairs(item, rng, index) if rng.random() < 0.5 else []
    e = item["entity"]
    if pairs:
        a, b, partner = rng.choice(pairs)
        if rng.random() < 0.5:
            a, b = b, a
        diff = fmt_number(abs(a.value - b.value))
        ids = [a.statement_id, b.statement_id]
        clues = [
            {"statement_id": a.statement_id, "entity": a.entity, "phrase": KIND_PHRASE[a.kind]},
            {"statement_id": b.statement_id, "entity": b.entity, "phrase": KIND_PHRASE[b.kind]},
        ]
        extra = {"entities": [a.entity, b.entity], "attribute": a.kind, "kind": a.kind, "unit": a.unit}
        if partner:
            extra["partner_statements"] = partner
        if a.unit == "year":
            w = KIND_PHRASE[a.kind]
            frames = (
                f"How many years lie between the {w} of {a.entity} and the {w} of {b.entity}?",
                f"{a.entity} and {b.entity}: years between their {w} dates?",
                f"By how many years do the {w} dates of {a.entity} and {b.entity} differ?",
                f"Compute the gap in years between the {w} of {a.entity} and that of {b.entity}.",
                f"Years from the {w} of {a.entity} to that of {b.entity}?",
                f"How far apart in time: {a.entity}'s {w} and {b.entity}'s?",
                f"Take the {w} years of {a.entity} and {b.entity}; what is the gap?",
            )
        else:
            w = KIND_PHRASE[a.kind]
            frames = (
                f"What is the difference between the {w} of {a.entity} and that of {b.entity}, in {a.unit}?",
                f"By how much ({a.unit}) does the {w} of {a.entity} differ from the {w} of {b.entity}?",
                f"How far apart, in {a.unit}, are the {w} of {a.entity} and the {w} of {b.entity}?",
            )
        return _q("numerical_computation", rng.choice(frames), diff, ids, a.entity, "number", clues, **extra)
    mine = [a for a in attrs if a.entity.casefold() == e.casefold()]
    born = next((a for a in mine if a.kind == "birth"), None)
    died = next((a for a in mine if a.kind == "death"), None)
    desc = _desc(item, e)
    if born and died and died.value > born.value:
        found = _one_clue_reference(item, e, {born.statement_id, died.statement_id}, desc, rng)
        if found is None:
            return None
        others, ref = found
        frames = (
            f"How many years passed between the birth and the death of {ref}?",
            f"Between the birth year and the death year of {ref}, how many years?",
            f"Compute the span in years from the birth to the death of {ref}.",
            f"How long, in years, did {ref} live (death year minus birth year)?",
            f"Lifespan in years of {ref}?",
            f"{_cap(ref)}: years from birth to death?",
            f"Take {ref}; how many years between birth and death?",
        )
        clues = [*others, {"statement_id": born.statement_id, "entity": e, "phrase": "was born"}]
        clues.append({"statement_id": died.statement_id, "entity": e, "phrase": "died"})
        ans = fmt_number(died.value - born.value)
        ids = [c["statement_id"] for c in clues]
        extra = {"attribute": "lifespan", "description": desc}
        return _q("numerical_computation", rng.choice(frames), ans, ids, e, "number", clues, **extra)
    years = [a for a in mine if a.unit == "year" and 0 < a.value <= REFERENCE_YEAR]
    if not years:
        return None
    a = rng.choice(years)
    found = _one_clue_reference(item, e, {a.statement_id}, desc, rng)
    if found is None:
        return None
    others, ref = found
    w = KIND_PHRASE[a.kind]
    frames = (
        f"How many years before {REFERENCE_YEAR} was the {w} of {ref}?",
        f"As of {REFERENCE_YEAR}, how many years have passed since the {w} of {ref}?",
        f"Count the years from the {w} of {ref} up to {REFERENCE_YEAR}.",
    )
    clues = [*others, {"statement_id": a.statement_id, "entity": e, "phrase": f"has a {w} date"}]
    ans = fmt_number(REFERENCE_YEAR - a.value)
    ids = [c["statement_id"] for c in clues]
    extra = {"attribute": a.kind, "unit": "year", "description": desc}
    return _q("numerical_computation", rng.choice(frames), ans, ids, e, "number", clues, **extra)


def web(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """Find the source page of the described entity, then read a dated detail (or its title) there."""
    e = item["entity"]
    desc = _desc(item, e)
    pages = {st["source"].get("title") for st in item["statements"] if (st.get("source") or {}).get("title")}
    if e not in pages:
        return None
    site = "Wikipedia"
    dated = [d for d in _dated_clue(item, e)]
    if dated:
        st, rest, surface = rng.choice(dated)
        found = _one_clue_reference(item, e, {st["id"]}, desc, rng)
        if found is None:
            return None
        others, ref = found
        frames = (
            f"Open the {site} article on {ref}. What year does it give for when it {rest}?",
            f"On {site}, find the page about {ref}; by that page, in what year it {rest}?",
            f"Navigate to the {site} entry for {ref} and read off the year in which it {rest}.",
            f"Which year does the {site} page of {ref} state for: {rest}?",
        )
        clues = [*others, {"statement_id": st["id"], "entity": e, "phrase": rest}]
        ids = [c["statement_id"] for c in clues]
        return _q("web_navigation", rng.choice(frames), surface, ids, e, "year", clues, site=site, description=desc)
    clues = _clues(item, e)
    if len(clues) < 2 and not (desc and clues):
        return None
    picked = rng.sample(clues, min(2, len(clues)))
    ref = reference(desc, [c["phrase"] for c in picked], rng)
    frames = (
        f"Find the {site} article on {ref}. Its title?",
        f"Which {site} page is about {ref}? Give its title.",
        f"Locate the {site} entry describing {ref} and report its title.",
        f"Title of the {site} article about {ref}?",
        f"On {site}, {ref} has an article. What is it called?",
        f"Search {site} for {ref}; which article is it?",
    )
    ids = [c["statement_id"] for c in picked]
    return _q("web_navigation", rng.choice(frames), e, ids, e, "entity", picked, site=site, description=desc)


def _topic(st: dict[str, Any], subject: str) -> str:
    p = predicate(st["text"], subject)
    if p:
        return re.sub(r"^(?:is|was|are|were)\s+", "", p)
    dates = find_dates(st["text"])
    if dates and dates[0].year is not None:
        return f"what happened in {dates[0].surface}"
    if st.get("mentions"):
        return f"its link to {st['mentions'][0]}"
    words = [w for w in content_words(st["text"]) if w not in content_words(subject)][:3]
    return " ".join(words) if words else "its background"


def report(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """A short report on the entity that needs 3 of its statements (the rubric); aspects are named by topic
    words, never by quoting."""
    sts = item["statements"]
    if len(sts) < 3:
        return None
    picked = [sts[i] for i in sorted(rng.sample(range(len(sts)), 3))]
    e = item["entity"]
    aspects = list(dict.fromkeys(_topic(s, subject_of(s, e)) for s in picked))
    listed = "; ".join(aspects)
    frames = (
        f"Write a short report on {e} covering: {listed}.",
        f"Prepare a brief, sourced overview of {e} that addresses {listed}.",
        f"Summarise what is known about {e}, in particular {listed}.",
        f"Give a compact research note on {e}: {listed}.",
        f"I need a few sourced paragraphs about {e} touching on {listed}.",
    )
    facts = [s["text"] for s in picked]
    clues = [{"statement_id": s["id"], "entity": e, "phrase": a} for s, a in zip(picked, aspects)]
    return _q(
        "report_synthesis",
        rng.choice(frames),
        " ".join(facts),
        [s["id"] for s in picked],
        e,
        "report",
        clues,
        required_facts=facts,
    )


def comparison(item: dict[str, Any], rng: random.Random, index: AttributeIndex | None = None) -> dict[str, Any] | None:
    """Two entities compared on one attribute of the same kind (and unit): earlier/later year, larger/smaller."""
    pairs = _pairs(item, rng, index)
    if not pairs:
        return None
    a, b, partner = rng.choice(pairs)
    if rng.random() < 0.5:
        a, b = b, a
    w = KIND_PHRASE[a.kind]
    if a.unit == "year":
        attribute = rng.choice(("earlier", "later"))
        frames = (
            f"Whose {w} came {attribute}: {a.entity} or {b.entity}?",
            f"{a.entity} or {b.entity}: whose {w} is {attribute}?",
            f"Of {a.entity} and {b.entity}, name the one whose {w} is dated {attribute}.",
            f"Between {a.entity} and {b.entity}, whose {w} was {attribute}?",
            f"{w.capitalize()}: {a.entity} vs {b.entity}. Which is {attribute}?",
        )
        first = a if (a.value < b.value) == (attribute == "earlier") else b
    else:
        attribute = rng.choice(("larger", "smaller"))
        frames = (
            f"Which has the {attribute} {w}: {a.entity} or {b.entity}?",
            f"{a.entity} or {b.entity}, whose {w} is {attribute}?",
            f"Of {a.entity} and {b.entity}, name the one with the {attribute} {w}.",
        )
        first = a if (a.value > b.value) == (attribute == "larger") else b
    clues = [
        {"statement_id": a.statement_id, "entity": a.entity, "phrase": w},
        {"statement_id": b.statement_id, "entity": b.entity, "phrase": w},
    ]
    return _q(
        "comparison",
        rng.choice(frames),
        first.entity,
        [a.statement_id, b.statement_id],
        first.entity,
        "compare",
        clues,
        entities=[a.entity, b.entity],
        attribute=attribute,
        kind=a.kind,
        unit=a.unit,
        **({"partner_statements": partner} if partner else {}),
    )


GENERATORS = {
    "factual_retrieval": factual,
    "numerical_computation": numerical,
    "multi_hop": multi_hop,
    "web_navigation": web,
    "report_synthesis": report,
    "comparison": comparison,
}
"""Style -> generator ``(item, rng, index) -> question | None``."""
