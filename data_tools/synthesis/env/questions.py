"""Questions for rollouts: read from JSONL (FAS question/planning files or any ``{question, answer}`` lines), or
made from the corpus itself (``builtin:N``) so the offline pipeline needs no other input.

Built-in questions are entity-identification questions with the page title as the ground truth, in two styles:
``description`` ("Which subject is described as ...?") and ``masked`` (a sentence of the page with the title
masked out). They are chosen by a stable hash of the document id, so the same N questions come out every time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.synthesis.env.search import Document, split_sentences

ANSWER_KEYS = ("ground_truth", "gold", "gold_answer", "answer")
"""Fields holding the ground truth, in order of preference (FAS planning records use ``ground_truth``; their
``answer`` is the planned direct answer)."""


@dataclass(frozen=True)
class Question:
    """A question to roll out."""

    id: str
    """Stable id (the record's ``id``, else a hash of the question)."""
    question: str
    """Question text."""
    answer: str | None = None
    """Ground-truth answer, when known."""
    style: str = ""
    """Question style, when known (FAS styles or the built-in ``description``/``masked``)."""


def question_id(text: str) -> str:
    """Stable id of a question text."""
    return "q-" + hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:16]


def read_questions(path: str | os.PathLike, bad: list[BadLine] | None = None) -> Iterator[Question]:
    """Questions from JSONL lines with a ``question`` field (``answer``/``ground_truth``/``gold`` optional).

    Bad lines are skipped and appended to ``bad`` (file, line, reason). Duplicate ids are skipped.
    """
    seen: set[str] = set()
    for _, rec in iter_jsonl(path, required=["question"], types={"question": str}):
        if isinstance(rec, BadLine):
            if bad is not None:
                bad.append(rec)
            continue
        text = rec["question"].strip()
        if not text:
            continue
        qid = str(rec.get("question_id") or rec.get("id") or question_id(text))
        if qid in seen:
            continue
        seen.add(qid)
        gold = next((rec[k] for k in ANSWER_KEYS if isinstance(rec.get(k), str | int | float)), None)
        yield Question(qid, text, None if gold is None else str(gold), str(rec.get("style") or ""))


def _mask(sentence: str, title: str) -> str | None:
    pattern = re.compile(re.escape(title), re.I)
    if not pattern.search(sentence):
        return None
    return pattern.sub("___", sentence)


def builtin_questions(docs: Sequence[Document], n: int) -> list[Question]:
    """``n`` entity questions generated from ``docs`` (stable choice; see the module docstring)."""
    ranked = sorted(docs, key=lambda d: hashlib.sha1(d.id.encode()).hexdigest())
    out: list[Question] = []
    for doc in ranked:
        if len(out) >= n:
            break
        h = int(hashlib.sha1(doc.id.encode()).hexdigest()[:8], 16)
        sents = split_sentences(doc.text)
        masked = next((m for m in (_mask(s, doc.title) for s in sents[1:4]) if m and len(m) > 40), None)
        if h % 2 and masked:
            q, style = f'Which subject does this sentence describe: "{masked}"', "masked"
        elif doc.description and doc.title.lower() not in doc.description.lower():
            q, style = f'Which subject is described as "{doc.description}"?', "description"
        elif masked:
            q, style = f'Which subject does this sentence describe: "{masked}"', "masked"
        else:
            continue
        out.append(Question("builtin-" + doc.id, q, doc.title, style))
    return out
