"""A scripted responder that answers FAS and memory prompts, for the loopback fake server.

It lets tests and benchmarks drive the real ``openai`` backend end to end without a model: replies are valid
for each prompt's schema and deterministic functions of the prompt, and the judges reject a fixed share of
samples with rotating reasons so the bookkeeping can be checked.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from data_tools.synthesis.fas.knowledge import entity_spans, find_dates, split_sentences

JUDGE_REASONS = ("content_inconsistency", "search_necessity", "logic_discontinuity", "answer_mismatch")


def _h(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def _user(body: dict[str, Any]) -> str:
    return next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")


class FasResponder:
    """Callable responder: ``FakeLLMServer(FasResponder(reject_every=16))``.

    ``reject_every``: a judge rejects a sample when a hash of its prompt is divisible by this (0: never; the
    default keeps a run under the default ``--max-failure-rate``).
    """

    def __init__(self, reject_every: int = 16) -> None:
        self.reject_every = reject_every

    def __call__(self, body: dict[str, Any]) -> Any:
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")
        user = _user(body)
        if name == "memory_extract":
            return self.memory(user)
        if name == "fas_questions":
            return self.questions(user)
        question = re.search(r"Question: (.*)", user)
        q = question.group(1) if question else user[:80]
        if name == "fas_planning":
            return {
                "think": f"To answer '{q}' I need sourced facts, so I search first.",
                "action": {"type": "tool_call", "name": "search", "arguments": {"query": [q[:60]]}},
            }
        if name == "fas_reasoning_a1":
            return {
                "sub_questions": [f"What is asked by: {q}?"],
                "reasoning": "Decomposed from memory.",
                "draft_answer": "unknown",
            }
        if name == "fas_reasoning_a2":
            return {"reasoning": "Knowledge item 1 states the fact directly.", "answer": "answer from knowledge 1"}
        if name.startswith("fas_judge"):
            h = _h(user)
            if self.reject_every and h % self.reject_every == 0:
                return {
                    "verdict": "reject",
                    "reason": JUDGE_REASONS[(h // self.reject_every) % len(JUDGE_REASONS)],
                    "explanation": "scripted rejection",
                }
            return {"verdict": "accept", "reason": "none", "explanation": "scripted acceptance"}
        return {"error": f"unknown prompt {name!r}"}

    @staticmethod
    def questions(user: str) -> dict[str, Any]:
        """One question per requested style, citing the listed statements."""
        ids = re.findall(r"^\[(st-[0-9a-f]+)\]", user, re.M)
        styles = [s.strip() for s in re.search(r"in this order: (.*)$", user, re.M).group(1).split(",")]
        entity = re.search(r"^Entity: (.*)$", user, re.M).group(1)
        out = []
        for i, style in enumerate(styles):
            sid = ids[i % len(ids)]
            out.append(
                {
                    "style": style,
                    "question": f"Regarding {entity}, what does source item {i + 1} establish?",
                    "answer": f"fact {sid[3:9]}",
                    "statement_ids": [sid],
                }
            )
        return {"questions": out}

    @staticmethod
    def memory(user: str) -> dict[str, Any]:
        """The title entity with the document's first sentences, plus one mentioned entity."""
        title = re.search(r"^Document title: (.*)$", user, re.M).group(1)
        text = user.split("Document:\n", 1)[1].rsplit("\n\nExtract at most", 1)[0]
        sents = split_sentences(text)[:4]

        def st(s: str) -> dict[str, Any]:
            d = find_dates(s)
            return {"text": s, "time": d[0].surface if d else None, "stance": "neutral"}

        ents = [{"name": title, "statements": [st(s) for s in sents]}]
        spans = [sp for s in sents for sp in entity_spans(s) if sp.casefold() != title.casefold()]
        if spans:
            ents.append({"name": spans[0], "statements": [st(s) for s in sents if spans[0] in s][:2]})
        return {"entities": ents}
