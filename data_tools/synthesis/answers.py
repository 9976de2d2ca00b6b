"""The one answer judge of the project: text normalisation, sentences, content words and answer matching.

Used by FAS (reject sampling of planning / reasoning actions) and HAS (trajectory outcome labels), so both halves
of the pipeline agree on what a correct answer is.

* :func:`normalize_answer`: NFKC, lower case, punctuation (any Unicode ``P*`` category) and English articles
  dropped, whitespace collapsed (SQuAD-style).
* :func:`split_sentences`: sentences at ``.!?`` followed by an upper-case letter / digit / quote, with
  abbreviations (``Dr.``, ``U.S.``) and initials (``J. R. R.``) kept intact.
* :func:`content_words`: distinct lower-cased Unicode words (two or more characters) without English stop words.
* :func:`judge_answer`: short answers by normalised exact match, alias match, numeric match with a relative
  tolerance, or the gold answer as a whole-word span of the prediction; report-style questions (style
  ``report_synthesis`` or a long gold answer) by a rubric over the required facts (each fact counts as covered
  when most of its content words occur in the prediction). Every verdict carries its method and reason.
* :func:`llm_judge`: the same decision by a model (openai backend), its reason kept.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bm25s.stopwords import STOPWORDS_EN_PLUS

STOPWORDS = frozenset(STOPWORDS_EN_PLUS) | {
    "also", "described", "does", "did", "which", "what", "who", "whom", "whose", "whether", "among", "within",
}  # fmt: skip
"""English stop words (bm25s' extended list plus question words)."""

INSTRUCTION_WORDS = frozenset(
    "write describe explain summarize summarise report list give find name identify tell provide compare discuss "
    "short brief detailed question answer sentence subject blank called named page open described describes "
    "following information".split()
)
"""Words of instructions rather than of a question's subject ("Write a short report on ..."): never search terms."""

_ABBREV = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e no mt ft gen col lt sgt inc ltd co c ca approx fig vol u.s u.k d.c "
    "jan feb mar apr jun jul aug sep sept oct nov dec ed rev op cf al".split()
)
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"\w(?:[\w'’-]*\w)?", re.U)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")

REPORT_STYLES = ("report_synthesis",)
"""Question styles judged by the rubric rather than by short-answer matching."""
REPORT_MIN_WORDS = 8
"""A gold answer with at least this many content words is judged by the rubric whatever its style."""


def normalize_answer(text: str | None) -> str:
    """Lowercase, NFKC, drop punctuation and English articles, collapse whitespace (SQuAD-style).

    Thousands separators inside numbers are removed first (``1,234`` -> ``1234``).
    """
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    t = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) and ch not in ".-" else ch for ch in t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # keep decimal points only
    t = re.sub(r"-(?!\d)|(?<=\w)-", " ", t)  # keep minus signs only
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def split_sentences(text: str | None) -> list[str]:
    """Split text into sentences, keeping abbreviations (``Dr.``, ``U.S.``) and initials (``J. R. R.``) intact."""
    text = re.sub(r"\s+", " ", text or "").strip()
    if not text:
        return []
    out: list[str] = []
    for part in _SPLIT.split(text):
        if out:
            prev_last = out[-1].rsplit(" ", 1)[-1]
            if prev_last.rstrip(".").lower().strip("(\"'") in _ABBREV or re.fullmatch(r"[A-Z]", prev_last.rstrip(".")):
                out[-1] = out[-1] + " " + part
                continue
        out.append(part)
    return [s.strip() for s in out if len(s.strip()) > 1]


def content_words(text: str | None) -> list[str]:
    """Distinct lower-cased words of ``text`` (two or more characters, any script), stop words removed, in order."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(unicodedata.normalize("NFKC", text or "").lower()):
        w = w.strip("'’-")
        if len(w) > 1 and w not in STOPWORDS and w not in seen:
            seen[w] = None
    return list(seen)


def numbers(text: str | None) -> list[float]:
    """Numbers in ``text`` (thousands separators ignored), in order."""
    return [float(x) for x in _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text or ""))]


@dataclass(frozen=True)
class AnswerJudgement:
    """Whether one predicted answer matches the gold answer, and by which method."""

    correct: bool | None
    """True / False, or None when there is no gold answer to judge against."""
    method: str
    """``exact``, ``alias``, ``numeric``, ``contains``, ``rubric``, ``llm``, ``empty`` or ``no_gold``."""
    reason: str = ""
    """Human-readable explanation (kept in sample metadata)."""


def _is_numeric(norm: str) -> bool:
    """A normalised answer that is a number, optionally with a short unit (``330 metres``, ``24``, ``3.5 percent``)."""
    toks = norm.split()
    return bool(toks) and bool(_NUMBER.fullmatch(toks[0])) and len(toks) <= 3


def rubric(prediction: str, facts: Sequence[str], need: float = 0.6) -> tuple[int, int]:
    """``(covered, total)`` facts: a fact is covered when ``need`` of its content words occur in the prediction."""
    have = set(content_words(prediction))
    total = covered = 0
    for fact in facts:
        words = set(content_words(fact))
        if not words:
            continue
        total += 1
        covered += len(words & have) >= need * len(words)
    return covered, total


def judge_answer(
    prediction: str | None,
    gold: str | None,
    *,
    style: str | None = None,
    aliases: Sequence[str] = (),
    required_facts: Sequence[str] = (),
    rel_tol: float = 1e-3,
    rubric_share: float = 0.6,
) -> AnswerJudgement:
    """Judge a prediction against the gold answer (see the module docstring for the rules).

    ``aliases``: other accepted surface forms of the gold answer. ``required_facts``: the rubric for report-style
    questions (default: the gold answer's sentences). ``rel_tol``: relative tolerance of numeric answers.
    ``rubric_share``: share of the required facts a report must cover.
    """
    g = normalize_answer(gold)
    if not g:
        return AnswerJudgement(None, "no_gold", "no gold answer")
    p = normalize_answer(prediction)
    if not p:
        return AnswerJudgement(False, "empty", "empty prediction")
    report = style in REPORT_STYLES or bool(required_facts) or len(content_words(gold)) >= REPORT_MIN_WORDS
    if report:
        facts = list(required_facts) or split_sentences(gold) or [str(gold)]
        covered, total = rubric(prediction or "", facts)
        ok = total > 0 and covered >= math.ceil(rubric_share * total)
        return AnswerJudgement(ok, "rubric", f"covers {covered}/{total} required facts (need {rubric_share:.0%})")
    if p == g:
        return AnswerJudgement(True, "exact", "normalised answers are equal")
    for alias in aliases:
        a = normalize_answer(alias)
        if a and (p == a or f" {a} " in f" {p} "):
            return AnswerJudgement(True, "alias", f"matches alias {alias!r}")
    if _is_numeric(g):
        gn, pn = numbers(g)[0], numbers(p)
        if pn:
            ok = math.isclose(pn[0], gn, rel_tol=rel_tol, abs_tol=1e-9)
            return AnswerJudgement(ok, "numeric", f"{pn[0]:g} {'~=' if ok else '!='} {gn:g} (rel_tol {rel_tol:g})")
        return AnswerJudgement(False, "numeric", "no number in the prediction")
    if f" {g} " in f" {p} ":
        return AnswerJudgement(True, "contains", "gold answer is a whole-word span of the prediction")
    return AnswerJudgement(False, "exact", "no match")


def llm_judge(items: Sequence[tuple[str, str, str]], client: Any) -> list[AnswerJudgement | None]:
    """Judge ``(question, gold, prediction)`` triples with a model (``data_tools.synthesis.llm.client.LLMClient``).

    Uses the ``has/judge`` prompt (structured ``{"verdict": "correct"|"incorrect", "reason"}``); an empty
    prediction is incorrect without asking; a failed request gives None. The model's reason is kept in
    :attr:`AnswerJudgement.reason`.
    """
    from data_tools.synthesis.llm.prompts import load_prompt

    tpl = load_prompt("has", "judge")
    out: list[AnswerJudgement | None] = [None] * len(items)
    asks = []
    for i, (question, gold, prediction) in enumerate(items):
        if not normalize_answer(prediction):
            out[i] = AnswerJudgement(False, "empty", "empty prediction")
            continue
        msgs = tpl.render(question=question, answer=gold, prediction=prediction)
        asks.append((i, {"messages": msgs, "schema": tpl.schema, "seed": 0, "temperature": 0.0}))
    results = client.run_batch([req for _, req in asks]) if asks else []
    for (i, _), res in zip(asks, results):
        if res.error or not isinstance(res.parsed, dict):
            continue
        ok = res.parsed.get("verdict") == "correct"
        out[i] = AnswerJudgement(ok, "llm", f"llm ({tpl.tag}): " + str(res.parsed.get("reason", ""))[:500])
    return out
