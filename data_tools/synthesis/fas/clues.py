"""Clues for research questions: short descriptions of an entity taken from memory statements, never the statements.

A research question hides its answer entity behind descriptions (obfuscation: "the ancient Indian scholar who was
credited with the Yoga Sutras") and combines several of them (multi-constraint). This module turns one memory
statement into such a description without copying it: the statement's predicate about its subject, cut at the
first clause boundary and to at most :data:`MAX_PHRASE_WORDS` words, so no question built from clues contains
8 consecutive words of a statement (:func:`copied_span` checks that). It also finds *typed attributes*
(founding year, birth year, population with its unit, ...) so comparisons and arithmetic only combine values of
the same kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from data_tools.synthesis.fas.knowledge import find_dates

MAX_PHRASE_WORDS = 7
"""A clue phrase keeps at most this many consecutive words of its statement."""
COPY_WORDS = 8
"""A question that shares this many consecutive words with a memory statement copies it (rejected)."""

_PRONOUN = re.compile(r"^(?:it|he|she|they|this|these)\s+", re.I)
_PAREN = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_TRAIL = frozenset(
    "the a an of in on and or to by for with as at from its his her their is was are were be been that which "
    "who one more most such than into".split()
)


def _words(text: str) -> list[str]:
    return text.split()


def subject_of(st: dict[str, Any], default: str) -> str:
    """The entity a statement is about: its ``subject`` (memory v2), else its source document's title, else
    ``default`` (the memory item's entity)."""
    return str(st.get("subject") or (st.get("source") or {}).get("title") or default)


_VERB = re.compile(
    r"\b(?:is|was|are|were|has|had|have|became|remains|remained|served|lies|covers|contains|includes|consists|"
    r"refers|won|led|founded|wrote|ruled|played|began|developed|established|created|produced|introduced|"
    r"received|forms|describes|means|comprises|occupies|borders)\b"
)


def clause(text: str, subject: str) -> str | None:
    """The statement's main clause after its subject, from the verb to the first clause boundary (uncut), or
    ``None`` when the statement does not open with its subject: the words before the first verb (at most 12)
    are a pronoun or share a word with the subject's name ("Eugène Henri Paul Gauguin was ..." for "Paul
    Gauguin")."""
    t = _PAREN.sub("", text).strip()
    m = _VERB.search(t)
    if not m or len(t[: m.start()].split()) > 12:
        return None
    head = t[: m.start()].strip(" ,")
    sub_words = {w for w in re.findall(r"\w+", subject.casefold()) if len(w) > 2}
    head_words = set(re.findall(r"\w+", head.casefold()))
    if not (head_words & sub_words or _PRONOUN.match(head + " ")):
        return None
    if re.search(r"['’]s\b", head):  # "Kyrgyzstan's capital is ...": about the capital, not the subject
        return None
    rest = t[m.start() :]
    rest = re.split(
        r", | ; |;|:| which | who | whom | whose | where | while | although | because | but | – | — ", rest
    )[0]
    return rest.rstrip(". ")


def predicate(text: str, subject: str) -> str | None:
    """What a statement says about its subject, as a short verb phrase ("was a Bengali polymath"): its
    :func:`clause` cut to :data:`MAX_PHRASE_WORDS` words without trailing function words; ``None`` when the
    statement does not open with its subject or the phrase would be shorter than 3 words."""
    rest = clause(text, subject)
    if rest is None:
        return None
    words: list[str] = []
    for w in _words(rest):  # at most MAX_PHRASE_WORDS \w+ runs ("life-sustaining" counts two)
        if len(_tokens(" ".join([*words, w]))) > MAX_PHRASE_WORDS:
            break
        words.append(w)
    while words and words[-1].casefold().strip(".,") in _TRAIL:
        words.pop()
    if len(words) < 3:
        return None
    phrase = " ".join(words).rstrip(".,;:")
    if subject.casefold() in phrase.casefold():
        return None
    return phrase


def describe(description: str | None) -> str | None:
    """A wiki description as a noun phrase ("Ancient Indian scholar(s)" -> "ancient Indian scholar(s)")."""
    d = " ".join(_PAREN.sub("", str(description or "")).split()).strip(" .")
    if not d or len(d.split()) > MAX_PHRASE_WORDS:
        return None
    if len(d) > 1 and d[0].isupper() and d[1].islower():
        d = d[0].lower() + d[1:]
    return d


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def copied_span(question: str, statements: list[str], n: int = COPY_WORDS) -> str | None:
    """The first run of ``n`` consecutive words (``\\w+`` runs, case-folded: "life-sustaining" is two) the question
    shares with one of the statements."""
    q = _tokens(question)
    grams = {tuple(q[i : i + n]) for i in range(len(q) - n + 1)}
    if not grams:
        return None
    for st in statements:
        w = _tokens(st)
        for i in range(len(w) - n + 1):
            if tuple(w[i : i + n]) in grams:
                return " ".join(w[i : i + n])
    return None


# -- typed attributes ------------------------------------------------------------------------------------------
_KINDS = (
    ("founding", r"\b(?:founded|established|formed|incorporated|set up|created)\b"),
    ("birth", r"\bborn\b"),
    ("death", r"\b(?:died|death)\b"),
    ("independence", r"\bindependence\b"),
    ("construction", r"\b(?:built|constructed|completed|opened)\b"),
    ("publication", r"\b(?:published|released|premiered|first performed)\b"),
    ("discovery", r"\b(?:discovered|invented|first described|identified)\b"),
)
KIND_PHRASE = {
    "founding": "founding",
    "birth": "birth",
    "death": "death",
    "independence": "independence",
    "construction": "construction",
    "publication": "publication",
    "discovery": "discovery",
    "population": "population",
    "area": "area",
    "length": "length",
    "height": "height",
}
"""How a question names an attribute kind."""
_QUANTITY = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(?P<mult>million|billion|thousand)?\s*"
    r"(?P<unit>square kilometres|square kilometers|km2|km²|square miles|sq mi|kilometres|kilometers|km|miles|"
    r"metres|meters|m|feet|ft|inhabitants|people|residents)\b",
    re.I,
)
_UNIT = {
    "square kilometres": ("area", "km²"),
    "square kilometers": ("area", "km²"),
    "km2": ("area", "km²"),
    "km²": ("area", "km²"),
    "square miles": ("area", "sq mi"),
    "sq mi": ("area", "sq mi"),
    "kilometres": ("length", "km"),
    "kilometers": ("length", "km"),
    "km": ("length", "km"),
    "miles": ("length", "mi"),
    "metres": ("height", "m"),
    "meters": ("height", "m"),
    "m": ("height", "m"),
    "feet": ("height", "ft"),
    "ft": ("height", "ft"),
    "inhabitants": ("population", "people"),
    "people": ("population", "people"),
    "residents": ("population", "people"),
}
_MULT = {"thousand": 1e3, "million": 1e6, "billion": 1e9}


@dataclass(frozen=True)
class Attribute:
    """A typed value stated about an entity."""

    entity: str
    """Whose attribute it is (the statement's subject)."""
    kind: str
    """``founding``, ``birth``, ``death``, ... (years) or ``population``, ``area``, ``length``, ``height``."""
    value: float
    """The year, or the quantity in ``unit``."""
    unit: str
    """``year`` for dates, else the unit of the quantity (``km``, ``people``, ...)."""
    surface: str
    """The value as written in the statement."""
    statement_id: str
    """The statement that states it."""


def attributes(st: dict[str, Any], subject: str) -> list[Attribute]:
    """Typed attributes a statement gives its subject: a year next to a kind cue ("founded in 1850"), or a
    quantity with a unit ("2,500 km", "1.2 million inhabitants"). Only statements that open with their subject
    (or a pronoun) count, and only values in its main :func:`clause`, so the value belongs to the subject and
    not to another entity the sentence names."""
    life = _life_dates(st, subject)
    main = clause(st["text"], subject)
    if main is None:
        return life
    text = main
    out: list[Attribute] = life
    lead = _LEAD_DATE.match(st["text"])
    if lead and re.match(r"^\W*(?:\w+\W+){0,3}?" + _KIND_CUES, main, re.I):
        d = find_dates(lead.group(1))  # "In 1976, he co-founded Apple": the year leads the sentence
        kind = next((k for k, cue in _KINDS if re.search(cue, main[:40], re.I)), None)
        if d and d[0].year is not None and kind:
            out.append(Attribute(subject, kind, float(d[0].year), "year", d[0].surface, st["id"]))
    for d in find_dates(text):
        if d.year is None:
            continue
        window = text[max(0, d.start - 40) : d.start]
        for kind, cue in _KINDS:
            if re.search(cue, window, re.I):
                out.append(Attribute(subject, kind, float(d.year), "year", d.surface, st["id"]))
                break
    for m in _QUANTITY.finditer(text):
        unit = m.group("unit").casefold()
        if unit not in _UNIT:
            continue
        kind, norm = _UNIT[unit]
        if kind == "height" and unit == "m" and not re.search(r"\b(?:high|tall|height|elevation|deep)\b", text, re.I):
            continue
        value = float(m.group("num").replace(",", "")) * _MULT.get((m.group("mult") or "").casefold(), 1.0)
        if value <= 0:
            continue
        out.append(Attribute(subject, kind, value, norm, m.group(0), st["id"]))
    seen: set[str] = set()
    return [a for a in out if not (a.kind in seen or seen.add(a.kind))]


_KIND_CUES = "(?:" + "|".join(cue for _, cue in _KINDS) + ")"
_LEAD_DATE = re.compile(r"^(?:In|By|On|During)\s+([^,]{3,30}),\s")
_PERSON = re.compile(
    r"\b(?:\w+(?:er|or|ist|ian|ess)|king|queen|emperor|empress|pope|saint|general|priest|poet|leader|monk|"
    r"scholar|prince|princess|sultan|pharaoh|chief|tsar|czar|shah|khan|saint|nun|admiral|philosopher|"
    r"politician|statesman|physicist|chemist|mathematician|scientist|astronomer|architect|artist|activist|"
    r"composer|singer|musician|actor|actress|explorer|revolutionary|inventor|engineer|entrepreneur|"
    r"businessman|businesswoman|economist|poet|novelist|playwright|dramatist|theologian|jurist|lawyer|"
    r"general|officer|soldier|athlete|footballer|aviator|astronaut|man|woman)\b",
    re.I,
)
_LIFE = re.compile(r"^[^(]{2,80}?\(([^)]*)\)")


def _life_dates(st: dict[str, Any], subject: str) -> list[Attribute]:
    """Birth and death years from the parenthesis after a person's name ("Johann Sebastian Bach (31 March 1685 –
    28 July 1750) was ..."; "(born 1946)")."""
    m = _LIFE.match(st["text"])
    if not m or _VERB.search(st["text"][: m.start(1)]):
        return []
    head = set(re.findall(r"\w+", st["text"][: m.start(1)].casefold()))
    if not head & {w for w in re.findall(r"\w+", subject.casefold()) if len(w) > 2}:
        return []
    inner = m.group(1)
    if not _PERSON.search(st["text"][m.end() :] + " " + st["text"][: m.start(1)]):
        return []  # "Kingdom of Hungary (1000–1946)" is a period, not a life
    dates = [d for d in find_dates(inner) if d.year is not None]
    if re.search(r"\bborn\b", inner) and dates:
        return [Attribute(subject, "birth", float(dates[0].year), "year", dates[0].surface, st["id"])]
    if (
        len(dates) >= 2
        and re.search(r"[–—-]", inner[dates[0].start : dates[1].start])
        and dates[1].year > dates[0].year
    ):
        return [
            Attribute(subject, "birth", float(dates[0].year), "year", dates[0].surface, st["id"]),
            Attribute(subject, "death", float(dates[1].year), "year", dates[1].surface, st["id"]),
        ]
    return []


def fmt_number(value: float) -> str:
    """A number as an answer: integers without decimals, others with at most 2."""
    return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:.2f}".rstrip("0").rstrip(".")
