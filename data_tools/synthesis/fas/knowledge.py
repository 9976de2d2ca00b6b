"""Heuristic knowledge extraction: sentences, entity candidates, dates and tone, without any model.

Used by the offline memory backend and by the template generators. Rules are deliberately simple and
deterministic: sentences split at ``.!?`` (abbreviations and initials protected), entity candidates are
capitalized spans (open-world: no fixed schema), dates are matched by pattern and normalised (``1776-07-04``,
``2025-06``, ``1492``, ``1990s``, ``-0044``, ``c19``), and tone comes from small cue-word lexicons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One implementation of these for FAS and HAS (re-exported here for the FAS modules that import them from here).
from data_tools.synthesis.answers import content_words, normalize_answer, split_sentences  # noqa: F401

MONTHS = {
    m: i
    for i, m in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
}
_MONTH_RE = "(?:January|February|March|April|May|June|July|August|September|October|November|December)"
STOPWORDS = frozenset(
    """a an the and or but if of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there when where why how all any both
    each few more most other some such no nor not only own same so than too very s t can will just don should now
    is are was were be been being have has had having do does did doing i me my we our you your he him his she her
    it its they them their what which who whom this that these those am also as until while known including
    one two three many first second new later since became become may would could often used""".split()
)
_SENTENCE_INITIAL = frozenset(
    """The A An In It He She They This These Those Its His Her Their During After Before However Although As At On
    By For From With Since While When Where Following Many Some Most Other There Today We I You One Two Three Several
    Both Each Like Unlike Despite Because If Although Also Between Under Over Through Within Without Among Around
    Throughout Upon Such Until Once Later Early Further Another""".split()
)
_CONNECT = r"(?:of|the|de|da|del|der|van|von|la|le|du|di)"
_SPAN = re.compile(rf"\b[A-Z][\w'\u2019\-]*(?:\.[A-Z]\.?)*(?:\s+(?:{_CONNECT}\s+)*[A-Z][\w'\u2019\-]*)*")
_DEMONYM = re.compile(r"[A-Z][a-z]+(?:ian|ean|can|ese|ish|ic|ist|ists|ans)")
_TONE = {
    "negative": (
        "criticized",
        "criticised",
        "controversial",
        "condemned",
        "notorious",
        "scandal",
        "failed",
        "failure",
        "decline",
        "declined",
        "disaster",
        "war crimes",
        "banned",
        "accused",
        "collapse",
    ),
    "positive": (
        "acclaimed",
        "celebrated",
        "renowned",
        "praised",
        "greatest",
        "successful",
        "influential",
        "award",
        "prize",
        "landmark",
        "masterpiece",
        "honoured",
        "honored",
        "popular",
    ),
    "uncertain": (
        "reportedly",
        "allegedly",
        "disputed",
        "uncertain",
        "unclear",
        "may have",
        "might",
        "possibly",
        "believed to",
        "thought to",
        "estimated",
        "approximately",
        "about ",
        "around ",
    ),
}


@dataclass(frozen=True)
class DateMention:
    """A date found in text."""

    surface: str
    """The matched text (e.g. ``June 2025``)."""
    value: str
    """Normalised value (``2025-06``, ``1776-07-04``, ``1492``, ``1990s``, ``-0044``, ``c19``)."""
    year: int | None
    """Year (negative for BC), ``None`` for centuries."""
    start: int
    """Character offset in the text."""


_DATE_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), "iso"),
    (re.compile(rf"\b(\d{{1,2}}) ({_MONTH_RE}) (\d{{3,4}})\b"), "dmy"),
    (re.compile(rf"\b({_MONTH_RE}) (\d{{1,2}}), (\d{{3,4}})\b"), "mdy"),
    (re.compile(rf"\b({_MONTH_RE}) (\d{{3,4}})\b"), "my"),
    (re.compile(r"\b(\d{1,4}) ?(BC|BCE|AD|CE)\b"), "era"),
    (re.compile(r"\b(\d{1,2})(?:st|nd|rd|th) century( BC| BCE)?\b"), "century"),
    (re.compile(r"(?<![\d,.])(1\d|20)(\d)0s\b"), "decade"),
    (re.compile(r"(?<![\d,.$£€])(1\d{3}|20\d{2})(?!\d|,\d|%|\.\d)"), "year"),
]
_NOT_PLURAL = frozenset(
    "was has is as this its his thus whereas always perhaps across towards us yes less unless".split()
)
_UNITS = frozenset(
    "km kilometres kilometers metres meters m ft feet miles mi kg tonnes tons hectares ha acres square sq cubic "
    "people persons inhabitants residents members species".split()
)
_FOLLOWER = re.compile(r"\s*([A-Za-z]+)")


def is_quantity(text: str, start: int, end: int) -> bool:
    """Whether the bare number at ``text[start:end]`` counts something (``about 1500 species``, ``2000 km``): it
    is followed by a unit, or by a plural noun without a preceding ``the`` (``the 1856 elections`` is a year)."""
    m = _FOLLOWER.match(text, end)
    if not m:
        return False
    word = m.group(1)
    low = word.casefold()
    if low in _UNITS:
        return True
    if re.search(r"\b(?:the|their|its|his|her)\s+$", text[:start], re.I):
        return False
    return word.islower() and len(low) > 3 and low.endswith("s") and not low.endswith("ss") and low not in _NOT_PLURAL


def find_dates(text: str) -> list[DateMention]:
    """All non-overlapping dates in ``text``, in order of position."""
    taken: list[tuple[int, int]] = []
    found: list[DateMention] = []
    for pattern, kind in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            if kind == "year" and is_quantity(text, s, e):
                continue  # "about 1500 species" is a count, not a year
            g = m.groups()
            if kind == "iso":
                value, year = m.group(0), int(g[0])
            elif kind == "dmy":
                value, year = f"{int(g[2]):04d}-{MONTHS[g[1].lower()]:02d}-{int(g[0]):02d}", int(g[2])
            elif kind == "mdy":
                value, year = f"{int(g[2]):04d}-{MONTHS[g[0].lower()]:02d}-{int(g[1]):02d}", int(g[2])
            elif kind == "my":
                value, year = f"{int(g[1]):04d}-{MONTHS[g[0].lower()]:02d}", int(g[1])
            elif kind == "era":
                y = int(g[0])
                year = -y if g[1].startswith("B") else y
                value = f"{year:05d}" if year < 0 else f"{year:04d}"
            elif kind == "century":
                value, year = ("-" if g[1] else "") + f"c{int(g[0])}", None
            elif kind == "decade":
                value, year = f"{g[0]}{g[1]}0s", int(f"{g[0]}{g[1]}0")
            else:
                value, year = g[0], int(g[0])
            taken.append((s, e))
            found.append(DateMention(m.group(0), value, year, s))
    return sorted(found, key=lambda d: d.start)


def entity_spans(sentence: str) -> list[str]:
    """Capitalized-span entity candidates of one sentence (sentence-initial function words and dates removed)."""
    out: list[str] = []
    lead = len(sentence) - len(sentence.lstrip("\"'(["))
    for m in _SPAN.finditer(sentence):
        span = m.group(0).strip()
        span = re.sub(r"['\u2019]s$", "", span)
        words = span.split()
        stripped = False
        while words and (words[0] in _SENTENCE_INITIAL or words[0].lower() in MONTHS):
            words = words[1:]
            stripped = True
        if len(words) == 1 and (m.start() <= lead and not stripped or _DEMONYM.fullmatch(words[0])):
            continue  # a capitalised first word is not evidence of a name; demonyms are not entities
        while words and re.fullmatch(_CONNECT, words[-1]):
            words = words[:-1]
        span = " ".join(words)
        if len(span) < 3 or span.lower() in STOPWORDS or span.lower() in MONTHS or span.isdigit():
            continue
        if re.fullmatch(r"[\d\W]+", span):
            continue
        if span not in out:
            out.append(span)
    return out


def tone_of(sentence: str) -> str:
    """``negative``, ``positive``, ``uncertain`` or ``neutral`` from cue words (first match in that order)."""
    low = sentence.lower()
    for tone, cues in _TONE.items():
        if any(c in low for c in cues):
            return tone
    return "neutral"
