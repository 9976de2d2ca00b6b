"""Entity-anchored open-world knowledge memory from a document corpus (heuristic or LLM extraction).

A memory item is one entity with the statements the corpus makes about it::

    {"id": "mem-<hash>", "entity": "France", "kind": "title" | "mention" | "extracted", "description": "...",
     "statements": [{"id", "text", "subject" (the entity it is about), "time", "times": [{"surface", "value", "year"}], "stance",
                     "source": {"doc_id", "title", "url"}, "mentions": [entity, ...]}],
     "related": [{"memory_id", "entity", "via": statement_id, "statements": [...]}],
     "backend": "heuristic" | "openai", "version": "memory-v1"}

``related`` links entities that share a statement (a statement about A that mentions B) and carries a few of
B's own statements, so each item is self-contained for multi-hop questions and FAS can stream and shard it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from data_tools.synthesis.fas.grounding import ground_statements
from data_tools.synthesis.fas.knowledge import entity_spans, find_dates, split_sentences, tone_of
from data_tools.synthesis.llm.client import LLMClient
from data_tools.synthesis.llm.prompts import load_prompt

log = logging.getLogger(__name__)

MEMORY_VERSION = "memory-v1"


@dataclass
class MemoryConfig:
    """How documents become memory items."""

    text_key: str = "text"
    """Document field holding the text."""
    title_key: str = "title"
    """Document field holding the title (the anchor entity of the heuristic backend); may be absent."""
    id_key: str = "id"
    """Document id field; documents without one get ``<file>:<line>``."""
    url_key: str = "url"
    """Document URL field (provenance); may be absent."""
    time_key: str = "date"
    """Field with a date attached to the document, used for statements whose text has no date."""
    min_mention_docs: int = 2
    """A capitalized span that is not a title becomes an entity when this many documents mention it."""
    min_statements: int = 2
    """Entities with fewer statements are dropped (counted)."""
    max_statements: int = 12
    """At most this many statements per entity (own document first)."""
    max_related: int = 4
    """At most this many related entities per item."""
    related_statements: int = 2
    """Statements copied from each related entity."""
    max_sentences_per_doc: int = 16
    """Only the first sentences of a long document are used."""
    min_sentence_chars: int = 25
    """Shorter sentences are not statements."""
    max_sentence_chars: int = 400
    """Longer sentences are not statements (usually lists or broken markup)."""

    def __post_init__(self) -> None:
        for name in ("min_mention_docs", "min_statements", "max_statements", "max_sentences_per_doc"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_related < 0 or self.related_statements < 0:
            raise ValueError("max_related and related_statements must be >= 0")
        if self.min_sentence_chars >= self.max_sentence_chars:
            raise ValueError("min_sentence_chars must be < max_sentence_chars")


@dataclass
class RawStatement:
    """A statement before it is grouped by entity."""

    id: str
    """Stable statement id (hash of document id and position)."""
    text: str
    """The statement text."""
    source: dict[str, str]
    """Provenance ``{doc_id, title, url}``."""
    times: list[dict[str, Any]]
    """Dates in (or attached to) the statement: ``{surface, value, year}``."""
    stance: str
    """Tone: ``neutral``, ``positive``, ``negative`` or ``uncertain``."""
    primary: str | None
    """The entity the statement is anchored to (document title or LLM-extracted entity)."""
    mentions: list[str] = field(default_factory=list)
    """Other entity candidates mentioned in the statement."""


def memory_id(entity: str) -> str:
    """Stable memory id of an entity name (case-insensitive)."""
    return "mem-" + hashlib.sha1(" ".join(entity.casefold().split()).encode()).hexdigest()[:16]


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def doc_source(doc: dict[str, Any], cfg: MemoryConfig, where: str) -> dict[str, str]:
    """Provenance of a document: ``{doc_id, title, url}``."""
    doc_id = doc.get(cfg.id_key)
    return {
        "doc_id": str(doc_id) if doc_id not in (None, "") else where,
        "title": str(doc.get(cfg.title_key) or ""),
        "url": str(doc.get(cfg.url_key) or ""),
    }


def _times(text: str, attached: Any) -> list[dict[str, Any]]:
    found = [{"surface": d.surface, "value": d.value, "year": d.year} for d in find_dates(text)]
    if not found and isinstance(attached, str) and attached.strip():
        found = [{"surface": d.surface, "value": d.value, "year": d.year} for d in find_dates(attached)]
        if not found:
            found = [{"surface": attached.strip(), "value": attached.strip(), "year": None}]
    return found


_CITATION = re.compile(r"\s*\[(?:note|nb|citation needed|[a-z]|\d{1,3})(?:\s*\d{1,3})?\]", re.I)
_FRAGMENT_WORDS = frozenset(
    "north south east west northern southern eastern western central upper lower new old great saint st "
    "nights days abd al el bin ibn ben bce bc ce ad".split()
)


def strip_citations(text: str) -> str:
    """Text without Wikipedia citation artefacts (``[note 1]``, ``[12]``, ``[a]``, ``[citation needed]``)."""
    return _CITATION.sub("", text)


def is_fragment(mention: str, sentence: str, longer: list[str], title: str | None) -> bool:
    """Whether a capitalised span is a fragment, not an entity: a lone direction or name particle ("West",
    "Abd"), a single word that only occurs inside a longer name of the same document or title ("Nights" of
    "One Thousand and One Nights"), a span glued to a hyphen or an apostrophe, or bracket debris."""
    if any(c in mention for c in "[]()") or mention.lower().startswith("note"):
        return True
    if " " in mention:
        return False
    w = mention.casefold()
    if w in _FRAGMENT_WORDS or (len(mention) <= 3 and not mention.isupper()):
        return True
    if re.search(rf"(?:[-\u2013]|\b(?:al|el)-){re.escape(mention)}\b|\b{re.escape(mention)}-", sentence):
        return True
    names = [*longer, *([title] if title else [])]
    return any(w in n.casefold().split() and n.casefold() != w for n in names) and not re.search(
        rf"\b{re.escape(mention)}\b", _without(sentence, names)
    )


def _without(sentence: str, names: list[str]) -> str:
    for n in sorted(names, key=len, reverse=True):
        sentence = sentence.replace(n, " ")
    return sentence


def heuristic_statements(doc: dict[str, Any], cfg: MemoryConfig, where: str) -> list[RawStatement]:
    """Sentences of a document as statements anchored to its title, with entity candidates, dates and tone; a
    dated ``description`` field ("German composer (1685–1750)") becomes a statement ``"Title: description."``."""
    src = doc_source(doc, cfg, where)
    title = src["title"].strip() or None
    out = []
    text = strip_citations(str(doc[cfg.text_key]))
    sentences = split_sentences(text)[: cfg.max_sentences_per_doc]
    spans = {i: entity_spans(s) for i, s in enumerate(sentences)}
    multi = [m for ms in spans.values() for m in ms if " " in m or "-" in m]
    desc = " ".join(str(doc.get("description") or "").split())
    if title and desc and re.search(r"\d", desc):  # "German composer (1685–1750)": dated, so a statement
        text_d = f"{title}: {desc}."
        out.append(
            RawStatement(
                id="st-" + _short_hash(src["doc_id"], "description"),
                text=text_d,
                source=src,
                times=_times(text_d, doc.get(cfg.time_key)),
                stance="neutral",
                primary=title,
                mentions=[],
            )
        )
    for i, sent in enumerate(sentences):
        if not cfg.min_sentence_chars <= len(sent) <= cfg.max_sentence_chars:
            continue
        mentions = [
            m
            for m in spans[i]
            if (title is None or m.casefold() != title.casefold()) and not is_fragment(m, sent, multi, title)
        ]
        out.append(
            RawStatement(
                id="st-" + _short_hash(src["doc_id"], str(i)),
                text=sent,
                source=src,
                times=_times(sent, doc.get(cfg.time_key)),
                stance=tone_of(sent),
                primary=title,
                mentions=mentions,
            )
        )
    return out


def llm_request(doc: dict[str, Any], cfg: MemoryConfig, max_entities: int = 8) -> dict[str, Any]:
    """The chat request (messages + schema) that extracts statements from one document."""
    prompt = load_prompt("memory", "extract", "v1")
    messages = prompt.render(
        title=str(doc.get(cfg.title_key) or "(untitled)"),
        text=str(doc[cfg.text_key])[:12000],
        max_entities=str(max_entities),
        max_statements=str(cfg.max_statements),
    )
    return {"messages": messages, "schema": prompt.schema, "schema_name": "memory_extract"}


def statements_from_llm(
    doc: dict[str, Any], parsed: dict[str, Any], cfg: MemoryConfig, where: str
) -> list[RawStatement]:
    """Turn a validated extraction reply into raw statements (entity names cross-linked as mentions)."""
    src = doc_source(doc, cfg, where)
    names = [" ".join(e["name"].split()) for e in parsed["entities"] if e["name"].strip()]
    out = []
    for e in parsed["entities"]:
        name = " ".join(e["name"].split())
        if not name:
            continue
        for j, st in enumerate(e["statements"][: cfg.max_statements]):
            text = " ".join(st["text"].split())
            if not text:
                continue
            mentions = [n for n in names if n.casefold() != name.casefold() and n.casefold() in text.casefold()]
            out.append(
                RawStatement(
                    id="st-" + _short_hash(src["doc_id"], name, str(j)),
                    text=text,
                    source=src,
                    times=_times(text, st.get("time") or doc.get(cfg.time_key)),
                    stance=st.get("stance") or "neutral",
                    primary=name,
                    mentions=mentions,
                )
            )
    return out


async def llm_statements_for_docs(
    client: LLMClient,
    docs: list[tuple[str, dict[str, Any]]],
    cfg: MemoryConfig,
    seed: int,
    on_done=None,
    rejected: Counter | None = None,
) -> tuple[list[RawStatement], Counter]:
    """Extract statements from ``(where, doc)`` pairs with the LLM; returns the grounded statements and the failed
    documents by reason: ``llm_<error>`` (the request failed) or ``no_grounded_statement`` (the reply had
    statements but its source document supports none of them). Statement rejections by reason
    (:mod:`data_tools.synthesis.fas.grounding`) are added to ``rejected`` when given."""
    failures: Counter = Counter()
    rejected = Counter() if rejected is None else rejected

    async def one(where: str, doc: dict[str, Any]) -> list[RawStatement]:
        req = llm_request(doc, cfg)
        res = await client.chat(
            req["messages"], schema=req["schema"], schema_name=req["schema_name"], seed=seed, temperature=0.0
        )
        if on_done is not None:
            on_done()
        if not res.ok:
            failures[f"llm_{res.error}"] += 1
            log.warning("%s: extraction failed (%s)", where, res.error)
            return []
        raw = statements_from_llm(doc, res.parsed, cfg, where)
        # the document is its title and its text (an article's entity is often named only in the title)
        kept = ground_statements(raw, f"{doc.get(cfg.title_key) or ''}\n{doc[cfg.text_key]}", rejected)
        if raw and not kept:
            failures["no_grounded_statement"] += 1
            log.warning("%s: none of the %d extracted statements is supported by the document", where, len(raw))
        return kept

    out: list[RawStatement] = []
    window = max(1, client.cfg.concurrency * 2)
    for start in range(0, len(docs), window):
        chunk = docs[start : start + window]
        for sts in await asyncio.gather(*(one(w, d) for w, d in chunk)):
            out.extend(sts)
    return out, failures


def _public(st: RawStatement) -> dict[str, Any]:
    return {
        "id": st.id,
        "text": st.text,
        "subject": st.primary,
        "time": st.times[0]["value"] if st.times else None,
        "times": st.times,
        "stance": st.stance,
        "source": st.source,
        "mentions": st.mentions,
    }


def aggregate(
    statements: Iterable[RawStatement],
    cfg: MemoryConfig,
    *,
    backend: str,
    descriptions: dict[str, str] | None = None,
    anchored_kind: str = "title",
) -> tuple[list[dict[str, Any]], Counter]:
    """Group statements by entity into memory items (sorted by id) and count what was dropped.

    Anchors (statement primaries) are always entities; other mentions become entities when at least
    ``cfg.min_mention_docs`` documents mention them.
    """
    statements = list(statements)
    descriptions = descriptions or {}
    canon: dict[str, str] = {}
    for st in statements:
        if st.primary:
            canon.setdefault(st.primary.casefold(), st.primary)
    mention_docs: dict[str, set[str]] = defaultdict(set)
    for st in statements:
        st.mentions = list(dict.fromkeys(canon.get(m.casefold(), m) for m in st.mentions))
        st.mentions = [m for m in st.mentions if not st.primary or m.casefold() != st.primary.casefold()]
        for m in st.mentions:
            if m.casefold() not in canon:
                mention_docs[m].add(st.source["doc_id"])
    open_world = {m for m, docs in mention_docs.items() if len(docs) >= cfg.min_mention_docs}
    entities = set(canon.values()) | open_world
    for st in statements:
        st.mentions = [m for m in st.mentions if m in entities]

    own: dict[str, list[RawStatement]] = defaultdict(list)
    mentioned: dict[str, list[RawStatement]] = defaultdict(list)
    for st in statements:
        if st.primary:
            own[canon[st.primary.casefold()]].append(st)
        for m in st.mentions:
            mentioned[m].append(st)
    dropped: Counter = Counter()
    chosen: dict[str, list[RawStatement]] = {}
    for ent in sorted(entities):
        sts = own.get(ent, []) + sorted(mentioned.get(ent, []), key=lambda s: s.id)
        seen: set[str] = set()
        uniq = [s for s in sts if not (s.id in seen or seen.add(s.id))]
        if len(uniq) < cfg.min_statements:
            dropped["too_few_statements"] += 1
            continue
        chosen[ent] = uniq[: cfg.max_statements]

    items = []
    for ent, sts in chosen.items():
        related = []
        linked: set[str] = set()
        for st in sts:
            for other in st.mentions:
                if other == ent or other in linked or other not in chosen or len(related) >= cfg.max_related:
                    continue
                others = [s for s in chosen[other] if s.id != st.id and ent.casefold() not in s.text.casefold()]
                if not others:
                    continue
                linked.add(other)
                related.append(
                    {
                        "memory_id": memory_id(other),
                        "entity": other,
                        "via": st.id,
                        "statements": [_public(s) for s in others[: cfg.related_statements]],
                    }
                )
        kind = anchored_kind if ent in own else "mention"
        items.append(
            {
                "id": memory_id(ent),
                "entity": ent,
                "kind": kind,
                "description": descriptions.get(ent, ""),
                "statements": [_public(s) for s in sts],
                "related": related,
                "backend": backend,
                "version": MEMORY_VERSION,
            }
        )
    items.sort(key=lambda it: it["id"])
    return items, dropped
