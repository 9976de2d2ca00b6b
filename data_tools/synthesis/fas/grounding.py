"""Grounded memory: an extracted statement is kept only when its source document supports it.

An LLM extraction can invent entities, numbers or whole sentences (a server that returns garbage makes every
reply such an invention). :func:`grounding_problem` checks one statement against the text of the document it is
attributed to and names the first failed check; :func:`ground_statements` filters a document's statements and
counts the rejections by reason. The checks, in order:

``entity_not_in_document``
    the statement's entity name does not occur in the document (case-insensitive, whitespace-normalised; a
    multi-word name also passes when all its content words occur, for "Bay of Bengal" vs "Bengal Bay");
``mention_not_in_document``
    another entity the statement mentions does not occur in the document;
``number_not_in_document``
    a number of the statement (``1,200``, ``4.5``, ``1887``) is not written in the document (digits compared
    without thousands separators);
``words_not_in_document``
    fewer than :data:`MIN_WORD_SUPPORT` of the statement's content words occur in the document (a paraphrase
    keeps most of its words; an invented sentence does not).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from data_tools.synthesis.answers import content_words

MIN_WORD_SUPPORT = 0.6
"""Share of a statement's content words that must occur in its document."""
REASONS = ("entity_not_in_document", "mention_not_in_document", "number_not_in_document", "words_not_in_document")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}


def name_in_text(name: str, doc_norm: str, doc_words: set[str]) -> bool:
    """Whether an entity name occurs in a (normalised) document: verbatim, or all of its content words."""
    n = _norm(re.sub(r"\s*\([^)]*\)", "", name))  # "Queen (band)": the disambiguation is not in the text
    if not n:
        return False
    if n in doc_norm:
        return True
    words = content_words(name)
    return bool(words) and all(w in doc_words for w in words)


class DocumentIndex:
    """A document's text prepared for repeated grounding checks."""

    def __init__(self, text: str) -> None:
        self.norm = _norm(text)
        self.words = set(content_words(text))
        self.numbers = _numbers(text)


def grounding_problem(entity: str, text: str, mentions: Iterable[str], doc: DocumentIndex | str) -> str | None:
    """The first failed grounding check (one of :data:`REASONS`) of a statement about ``entity``, or ``None``."""
    if isinstance(doc, str):
        doc = DocumentIndex(doc)
    if not name_in_text(entity, doc.norm, doc.words):
        return "entity_not_in_document"
    if any(not name_in_text(m, doc.norm, doc.words) for m in mentions):
        return "mention_not_in_document"
    if _numbers(text) - doc.numbers:
        return "number_not_in_document"
    words = content_words(text)
    if words and sum(w in doc.words for w in words) / len(words) < MIN_WORD_SUPPORT:
        return "words_not_in_document"
    return None


def ground_statements(statements: list, doc_text: str, rejected: Counter) -> list:
    """The statements (objects with ``primary``, ``text``, ``mentions``) that ``doc_text`` supports; every rejection
    is counted in ``rejected`` by reason."""
    doc = DocumentIndex(doc_text)
    kept = []
    for st in statements:
        why = grounding_problem(st.primary or "", st.text, st.mentions, doc)
        if why is None:
            kept.append(st)
        else:
            rejected[why] += 1
    return kept
