"""One candidate step of a HAS decision point (:class:`Action`: tool call(s) or a final answer), as options are
shown and compared."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from data_tools.synthesis.answers import INSTRUCTION_WORDS, content_words
from data_tools.synthesis.serialize import TOOL_CALL_END, TOOL_CALL_START, render_answer, render_think, render_tool_call
from data_tools.synthesis.trajectory import Step

LINK_RE = re.compile(r"\[([^\]\n]{1,200})\]\((https?://[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)\)")
CAPS_RE = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|and|[A-Z][\w'’-]*))*(?<!\bof)(?<!\bthe)(?<!\band)")


@dataclass(frozen=True)
class Action:
    """One candidate step: thinking plus tool calls, or thinking plus a final answer."""

    think: str
    """Reasoning text (``<think>`` content)."""
    tool_calls: tuple[tuple[str, str], ...] = ()
    """``(name, canonical JSON arguments)`` per tool call (JSON text keeps the action hashable)."""
    answer: str | None = None
    """Final answer, for an answering action."""
    source: str = field(default="original", compare=False)
    """Where it came from: ``original``, ``template:<strategy>``, ``llm``."""
    codes: tuple[str | None, ...] = field(default=(), compare=False)
    """``PythonInterpreter`` code per tool call (original steps only)."""
    raws: tuple[str | None, ...] = field(default=(), compare=False)
    """Verbatim text per tool call that was not valid JSON (original steps only; rendered as written)."""

    @staticmethod
    def make(think: str, calls: Sequence[dict] = (), answer: str | None = None, source: str = "template") -> Action:
        """Build from ``[{"name", "arguments"}]`` or an answer."""
        canon = tuple((c["name"], json.dumps(c.get("arguments") or {}, ensure_ascii=False)) for c in calls)
        return Action(think.strip(), canon, None if canon else (answer or "").strip(), source)

    @staticmethod
    def from_step(step: Step) -> Action:
        """The original action of a recorded step (keeps its exact rendering, code included)."""
        if step.answer is not None:
            return Action(step.think, (), step.answer, "original")
        calls = tuple((c.name, json.dumps(c.arguments, ensure_ascii=False)) for c in step.tool_calls)
        codes = tuple(c.code for c in step.tool_calls)
        return Action(step.think, calls, None, "original", codes, tuple(c.raw for c in step.tool_calls))

    def with_think(self, think: str) -> Action:
        """The same action (calls, code, raw text, source) with other thinking."""
        return Action(think.strip(), self.tool_calls, self.answer, self.source, self.codes, self.raws)

    @property
    def kind(self) -> str:
        """``answer``, ``search`` (also ``google_scholar``), ``visit``, or ``tool`` (anything else)."""
        if self.answer is not None:
            return "answer"
        name = self.tool_calls[0][0] if self.tool_calls else ""
        return "search" if name in ("search", "google_scholar") else "visit" if name == "visit" else "tool"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Tool calls as ``{"name", "arguments"}`` dicts."""
        return [{"name": n, "arguments": json.loads(a)} for n, a in self.tool_calls]

    def first_query(self) -> str | None:
        """The first search query of the action, if it searches."""
        return first_search_query(self)

    def text(self) -> str:
        """The action rendered as assistant text (see :mod:`data_tools.synthesis.serialize`)."""
        return self._text

    @cached_property
    def _text(self) -> str:
        head = render_think(self.think) + "\n\n" if self.think else ""  # Qwen3: "</think>\n\n"
        parts = []
        if self.answer is not None:
            parts.append(render_answer(self.answer))
        codes = self.codes or (None,) * len(self.tool_calls)
        raws = self.raws or (None,) * len(self.tool_calls)
        for (name, args), code, raw in zip(self.tool_calls, codes, raws):
            if raw is not None:
                parts.append(f"{TOOL_CALL_START}\n{raw}\n{TOOL_CALL_END}")
            else:
                parts.append(render_tool_call(name, json.loads(args), code))
        return head + "\n".join(parts)

    def target_words(self) -> frozenset[str]:
        """Content words of what the action does (tool names + argument values, or the answer)."""
        return self._targets

    @cached_property
    def shingles(self) -> frozenset[str]:
        """Word 3-shingles of the rendered text (near-identical text detection)."""
        return word_shingles(self.text())

    @cached_property
    def _targets(self) -> frozenset[str]:
        if self.answer is not None:
            return frozenset(["<answer>", *content_words(self.answer)])
        words: list[str] = []
        for name, args in self.tool_calls:
            words.append(f"<{name}>")
            a = json.loads(args)
            if name == "visit" and isinstance(a, dict) and a.get("url"):
                a = {"url": a["url"]}  # which page is the decision; the goal is the same whichever page is opened
            words.extend(content_words(" ".join(_strings(a))))
        return frozenset(words)

    def signature(self) -> str:
        """Canonical form of what the action does: equal signatures are the same decision."""
        return "|".join(sorted(self.target_words()))


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [str(obj)]


def first_search_query(orig: Action) -> str | None:
    for call in orig.calls:
        q = call["arguments"].get("query")
        if isinstance(q, list) and q:
            return str(q[0])
        if isinstance(q, str):
            return q
    return None


def keywords(text: str, n: int | None = None) -> list[str]:
    """Distinct content words of ``text`` that are not instruction words, in order (the first ``n`` when given)."""
    words = [w for w in content_words(text) if w not in INSTRUCTION_WORDS and w.strip("_")]
    return words if n is None else words[:n]


def word_shingles(text: str, n: int = 3) -> frozenset[str]:
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))
