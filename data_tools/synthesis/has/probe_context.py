"""Rule checks and the context-aware figure of ``data has-probe``: how much of the choice is readable from content.

The surface probe (:mod:`data_tools.synthesis.has.probe`) asks whether an option's *form* gives the original away. The
checks here read each decision with its context (the question and the tool responses before it, parsed from the sample
text) and measure:

* the **query-style rule** (pick a search whose query has a capital letter or a function word,
  :func:`~data_tools.synthesis.has.plausible.query_is_natural`) and the **answer-in-evidence rule** (pick an answer that
  appears in the tool responses seen so far): expected accuracy with random tie-breaking, next to chance on the
  same decisions. Both must stay near chance: otherwise alternatives are recognisable by a generator artefact.
* the **context-aware figure**: a conditional logit on four content features per option (content-word overlap
  with the question, with the previous tool response, rank of a visited URL in the results seen, answer in the
  evidence), fitted on one file and scored on another. It is *expected* above chance (good decisions follow from
  the context); it shows users how much signal comes from content.
* **fragment answers** and **pasted-question goals** among the alternatives (both must be zero).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.synthesis.answers import content_words, normalize_answer
from data_tools.synthesis.env.goals import is_pasted_question
from data_tools.synthesis.has.choice_model import choice_accuracy, fit_conditional_logit
from data_tools.synthesis.has.plausible import is_fragment, query_is_natural

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.S)
_RESP = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.S)
_CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_LINK_URL = re.compile(r"\]\((https?://[^\s)]+)\)")
CONTEXT_FEATURES = ("question_overlap", "response_overlap", "url_rank", "answer_in_evidence")


@dataclass
class ContextDecision:
    """A decision with what was known before it."""

    options: list[str]
    """Options as rendered (actions)."""
    original: int
    """Index of the original."""
    sources: list[str]
    """Where each option came from."""
    question: str
    """The question."""
    responses: list[str]
    """Tool responses before the decision (in this sample), in order."""


def parse_option(text: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """``(kind, arguments of the first call, answer)`` of a rendered option."""
    m = _ANSWER.search(text)
    if m and "<tool_call>" not in text:
        return "answer", None, m.group(1).strip()
    c = _CALL.search(text)
    if not c:
        return "other", None, None
    try:
        obj = json.loads(c.group(1).split("\n<code>")[0])
    except json.JSONDecodeError:
        return "other", None, None
    name = obj.get("name") if isinstance(obj, dict) else None
    kind = "search" if name in ("search", "google_scholar") else "visit" if name == "visit" else "other"
    args = obj.get("arguments") if isinstance(obj, dict) and isinstance(obj.get("arguments"), dict) else None
    return kind, args, None


def read_context_decisions(path: str | Path) -> Iterator[ContextDecision]:
    """Every decision of a ``data has`` output file with its question and the tool responses before it."""
    for _, rec in iter_jsonl(path):
        if isinstance(rec, BadLine) or not isinstance(rec.get("meta"), dict):
            continue
        steps = list(rec["meta"].get("steps") or [])
        turns = _TURN.findall(rec.get("text") or "")
        question, responses = "", []
        users = [c for r, c in turns if r == "user"]
        question = users[0] if users else ""
        for role, content in turns:
            if role == "user":
                responses.extend(_RESP.findall(content))
            elif role == "assistant" and re.match(r"There (?:is|are) \d+ candidate action", content) and steps:
                st = steps.pop(0)
                yield ContextDecision(list(st["options"]), int(st["original_index"]), list(st.get("sources") or []),
                                      question, list(responses))  # fmt: skip


def _evidence_has(answer: str, evidence: str) -> bool:
    a = normalize_answer(answer)
    return bool(a) and a in normalize_answer(evidence)


def _rule_accuracy(decisions: list[ContextDecision], score) -> dict[str, Any]:
    """Expected accuracy of "pick an option with the highest rule score, ties at random", next to chance."""
    acc, chance = [], []
    for d in decisions:
        s = [score(d, o) for o in d.options]
        best = max(s)
        top = [i for i, v in enumerate(s) if v == best]
        acc.append(1.0 / len(top) if d.original in top else 0.0)
        chance.append(1.0 / len(d.options))
    n = len(acc)
    return {"decisions": n, "accuracy": round(float(np.mean(acc)), 4) if n else None,
            "chance": round(float(np.mean(chance)), 4) if n else None}  # fmt: skip


def query_style_rule(decisions: list[ContextDecision]) -> dict[str, Any]:
    """The query-style rule on decisions with at least one search option."""
    ds = [d for d in decisions if any(parse_option(o)[0] == "search" for o in d.options)]

    def score(d: ContextDecision, o: str) -> int:
        kind, args, _ = parse_option(o)
        qs = (args or {}).get("query") if kind == "search" else None
        q = qs[0] if isinstance(qs, list) and qs else qs if isinstance(qs, str) else None
        return int(bool(q) and query_is_natural(str(q)))

    return _rule_accuracy(ds, score)


def answer_in_evidence_rule(decisions: list[ContextDecision]) -> dict[str, Any]:
    """The answer-in-evidence rule on decisions with at least one answer option."""
    ds = [d for d in decisions if any(parse_option(o)[0] == "answer" for o in d.options)]

    def score(d: ContextDecision, o: str) -> int:
        kind, _, ans = parse_option(o)
        return int(kind == "answer" and _evidence_has(ans or "", "\n".join(d.responses)))

    return _rule_accuracy(ds, score)


def alternative_defects(decisions: list[ContextDecision]) -> dict[str, int]:
    """Alternatives (not originals) that are fragment answers or pasted-question goals."""
    out = {"alternatives": 0, "fragment_answers": 0, "pasted_question_goals": 0}
    for d in decisions:
        for i, o in enumerate(d.options):
            if i == d.original:
                continue
            out["alternatives"] += 1
            kind, args, ans = parse_option(o)
            out["fragment_answers"] += kind == "answer" and is_fragment(ans or "")
            goal = (args or {}).get("goal") if kind == "visit" else None
            out["pasted_question_goals"] += isinstance(goal, str) and is_pasted_question(goal, d.question)
    return out


def context_features(d: ContextDecision) -> np.ndarray:
    """Per option: :data:`CONTEXT_FEATURES`."""
    q = set(content_words(d.question))
    prev = set(content_words(d.responses[-1])) if d.responses else set()
    evidence = "\n".join(d.responses)
    links = list(dict.fromkeys(_LINK_URL.findall(evidence)))
    rows = []
    for o in d.options:
        kind, args, ans = parse_option(o)
        words = set(content_words(ans if kind == "answer" else json.dumps(args or {}, ensure_ascii=False)))
        qo = len(words & q) / len(words | q) if words | q else 0.0
        ro = len(words & prev) / len(words | prev) if words | prev else 0.0
        rank = 0.0
        if kind == "visit":
            urls = (args or {}).get("url")
            url = urls[0] if isinstance(urls, list) and urls else urls
            rank = 1.0 / (1 + links.index(url)) if url in links else 0.0
        ev = float(kind == "answer" and _evidence_has(ans or "", evidence))
        rows.append([qo, ro, rank, ev])
    return np.array(rows, dtype=float)


def context_probe(train: list[ContextDecision], test: list[ContextDecision], l2: float = 1.0) -> dict[str, Any]:
    """The context-aware figure: conditional logit on :func:`context_features`, fitted on ``train``."""

    def design(ds: list[ContextDecision]):
        rows, offsets, targets = [], [0], []
        for d in ds:
            targets.append(offsets[-1] + d.original)
            f = context_features(d)
            rows.append(f)
            offsets.append(offsets[-1] + len(f))
        return sparse.csr_matrix(np.vstack(rows)), np.array(offsets), np.array(targets)

    if not train or not test:
        return {"skipped": "no decisions"}
    xtr, otr, ttr = design(train)
    xte, ote, tte = design(test)
    w = fit_conditional_logit(xtr, otr, ttr, l2)
    return {
        "test_decisions": len(test),
        "accuracy": round(choice_accuracy(xte @ w, ote, tte), 4),
        "chance": round(float(np.mean([1.0 / len(d.options) for d in test])), 4),
        "weights": {n: round(float(v), 3) for n, v in zip(CONTEXT_FEATURES, w)},
    }
