"""Alternative actions for HAS decision points, and the guard against decision collapse.

An :class:`Action` is one candidate step (thinking + tool call(s), or thinking + final answer). Two backends
propose N alternatives to a trajectory's step S_k given its context C_k = (Q, S_1, R_1, ..., S_{k-1}, R_{k-1}):

* :class:`TemplateBackend` (offline, deterministic): perturbs the original action with rules: broaden or
  narrow a search query, drift to another entity seen in earlier results, search the question verbatim, visit
  another page seen earlier, switch tool, answer prematurely or with another entity. Thinking text comes from
  the phrasing bank ``data_tools/templates/has/v1/offline_thoughts.json``. Every option records its strategy.
* ``LLMBackend`` (:mod:`data_tools.has.llm_backend`): asks an OpenAI-compatible model.

:class:`CollapseGuard` rejects candidates that duplicate the original or each other (same tool and the same
normalized arguments, or content-word Jaccard similarity of the actions >= a threshold, or near-identical
text) and measures the diversity of the accepted option sets.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from data_tools.env.search import content_words
from data_tools.serialize import render_answer, render_think, render_tool_call
from data_tools.trajectory import Step, Trajectory

THOUGHTS_PATH = Path(__file__).resolve().parent.parent / "templates" / "has" / "v1" / "offline_thoughts.json"
_LINK = re.compile(r"\[([^\]\n]{1,200})\]\((https?://[^)\s]+)\)")
_CAPS = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|and|[A-Z][\w'’-]*))*(?<!\bof)(?<!\bthe)(?<!\band)")


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
        return Action(step.think, calls, None, "original", tuple(c.code for c in step.tool_calls))

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Tool calls as ``{"name", "arguments"}`` dicts."""
        return [{"name": n, "arguments": json.loads(a)} for n, a in self.tool_calls]

    def text(self) -> str:
        """The action rendered as assistant text (see :mod:`data_tools.serialize`)."""
        return self._text

    @cached_property
    def _text(self) -> str:
        head = render_think(self.think) + "\n\n" if self.think else ""  # Qwen3: "</think>\n\n"
        parts = []
        if self.answer is not None:
            parts.append(render_answer(self.answer))
        codes = self.codes or (None,) * len(self.tool_calls)
        for (name, args), code in zip(self.tool_calls, codes):
            parts.append(render_tool_call(name, json.loads(args), code))
        return head + "\n".join(parts)

    def target_words(self) -> frozenset[str]:
        """Content words of what the action does (tool names + argument values, or the answer)."""
        return self._targets

    @cached_property
    def shingles(self) -> frozenset[str]:
        """Word 3-shingles of the rendered text (near-identical text detection)."""
        return _shingles(self.text())

    @cached_property
    def _targets(self) -> frozenset[str]:
        if self.answer is not None:
            return frozenset(["<answer>", *content_words(self.answer)])
        words: list[str] = []
        for name, args in self.tool_calls:
            words.append(f"<{name}>")
            words.extend(content_words(" ".join(_strings(json.loads(args)))))
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


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _shingles(text: str, n: int = 3) -> frozenset[str]:
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))


@dataclass
class CollapseGuard:
    """Rejects (near-)duplicate candidates and keeps diversity statistics."""

    threshold: float = 0.8
    """Content-word Jaccard similarity of two actions' targets at or above which they count as duplicates."""
    counts: Counter = field(default_factory=Counter)
    """``accepted``, ``dup_original``, ``dup_other``, ``invalid`` candidate counts."""
    distances: list[float] = field(default_factory=list)
    """Mean pairwise target distance (1 - Jaccard) of each accepted option set."""
    tool_mix: Counter = field(default_factory=Counter)
    """Option sets by number of distinct action kinds (tool names / answer) they contain."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"CollapseGuard.threshold must be in (0, 1], got {self.threshold}")

    def same(self, a: Action, b: Action) -> bool:
        """Whether two actions are the same decision (see the module docstring)."""
        if a.signature() == b.signature():
            return True
        kinds_a = {n for n, _ in a.tool_calls} or {"<answer>"}
        kinds_b = {n for n, _ in b.tool_calls} or {"<answer>"}
        wa, wb = a.target_words(), b.target_words()
        if kinds_a == kinds_b and jaccard(wa, wb) >= self.threshold:
            return True
        if kinds_a == kinds_b == {"<answer>"} and (wa <= wb or wb <= wa):
            return True  # one answer restates the other ("Oscar Wilde" / "Oscar Fingal O'Flahertie Wills Wilde")
        return jaccard(a.shingles, b.shingles) >= 0.9

    def offer(self, cand: Action, original: Action, accepted: list[Action]) -> bool:
        """Accept ``cand`` into ``accepted`` unless it duplicates the original or an accepted one."""
        if not cand.think and not cand.tool_calls and not cand.answer:
            self.counts["invalid"] += 1
            return False
        if self.same(cand, original):
            self.counts["dup_original"] += 1
            return False
        if any(self.same(cand, a) for a in accepted):
            self.counts["dup_other"] += 1
            return False
        accepted.append(cand)
        self.counts["accepted"] += 1
        return True

    def record_set(self, options: Sequence[Action]) -> float:
        """Record the diversity of a final option set; returns its mean pairwise target distance."""
        pairs = list(itertools.combinations(options, 2))
        d = sum(1.0 - jaccard(a.target_words(), b.target_words()) for a, b in pairs) / len(pairs) if pairs else 0.0
        self.distances.append(d)
        kinds = {tuple(sorted({n for n, _ in o.tool_calls})) or ("<answer>",) for o in options}
        self.tool_mix[len(kinds)] += 1
        return d

    def report(self) -> dict[str, Any]:
        """Diversity report: candidate counts, mean/min option-set distance, distinct-action-kind histogram."""
        n = len(self.distances)
        return {
            "candidates": dict(sorted(self.counts.items())),
            "option_sets": n,
            "mean_pairwise_distance": round(sum(self.distances) / n, 4) if n else None,
            "min_pairwise_distance": round(min(self.distances), 4) if n else None,
            "sets_by_distinct_action_kinds": {str(k): v for k, v in sorted(self.tool_mix.items())},
        }


@lru_cache(maxsize=4)
def load_thoughts(path: str = str(THOUGHTS_PATH)) -> dict[str, list[str]]:
    """The offline backend's phrasing bank: strategy -> thinking templates (``str.format`` placeholders)."""
    with open(path, encoding="utf-8") as f:
        bank = json.load(f)
    bank.pop("_comment", None)
    return bank


@dataclass
class StepContext:
    """What an agent knew before step k: the question and the links/entities seen so far."""

    question: str
    """The question Q."""
    links: list[tuple[str, str]]
    """``(title, url)`` pairs from earlier tool responses, in order of appearance."""
    entities: list[str]
    """Candidate entity names: link titles, then capitalized spans of the question and responses."""
    related: list[tuple[str, str]] = field(default_factory=list)
    """``(title, url)`` of corpus pages related to the question ("memory" guesses; needs a corpus)."""

    def answer_pool(self) -> list[str]:
        """Plausible wrong answers: titles of pages seen so far, else related corpus titles or other entities."""
        return [t for t, _ in self.links] or [t for t, _ in self.related] or self.entities

    @staticmethod
    def of(traj: Trajectory, k: int, related: Sequence[tuple[str, str]] = ()) -> StepContext:
        """Context of step ``k`` (0-based): responses R_1..R_k-1 only, never later ones."""
        seen_text = " ".join(r for s in traj.steps[:k] for r in s.responses)
        links = list(dict.fromkeys((t.strip(), u) for t, u in _LINK.findall(seen_text)))
        qwords = set(content_words(traj.question))
        ents = [t for t, _ in links]
        for m in _CAPS.finditer(traj.question + " " + seen_text[:4000]):
            ents.append(m.group(0).strip())
        uniq = []
        for e in dict.fromkeys(ents):
            if len(e) > 2 and not set(content_words(e)) <= qwords:
                uniq.append(e)
        for title, _ in related:
            if title not in uniq and not set(content_words(title)) <= qwords:
                uniq.append(title)
        return StepContext(traj.question, links, uniq, list(related))


Strategy = Callable[[Action, StepContext, random.Random], "Action | None"]


def _think(rng: random.Random, key: str, **values: str) -> str:
    return rng.choice(load_thoughts()[key]).format(**values)


def _first_query(orig: Action) -> str | None:
    for call in orig.calls:
        q = call["arguments"].get("query")
        if isinstance(q, list) and q:
            return str(q[0])
        if isinstance(q, str):
            return q
    return None


def _keywords(text: str, n: int | None = None) -> list[str]:
    """Distinct content words of ``text`` in order of appearance (the first ``n`` when given)."""
    words = list(dict.fromkeys(content_words(text)))
    return words if n is None else words[:n]


def s_broaden(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with only the first one or two content words of the original query (too broad)."""
    q = _first_query(orig)
    if not q or len(_keywords(q)) < 3:
        return None
    broad = " ".join(_keywords(q, n=rng.choice((1, 2))))
    return Action.make(_think(rng, "broaden", query=broad), [{"name": "search", "arguments": {"query": [broad]}}])


def s_tail(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search only the last two or three content words of the question (a different facet of it)."""
    words = _keywords(ctx.question)
    if len(words) < 4:
        return None
    tail = " ".join(words[-rng.choice((2, 3)) :])
    return Action.make(_think(rng, "broaden", query=tail), [{"name": "search", "arguments": {"query": [tail]}}])


def s_drop(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question's keywords with one of them left out (a slightly different focus)."""
    words = _keywords(ctx.question)[:8]
    if len(words) < 2:
        return None
    words.pop(rng.randrange(len(words)))
    query = " ".join(words)
    return Action.make(_think(rng, "narrow", query=query), [{"name": "search", "arguments": {"query": [query]}}])


def s_visit_related(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Open a corpus page guessed from the question without searching first (needs a corpus)."""
    if not ctx.related:
        return None
    title, url = rng.choice(ctx.related)
    goal = " ".join(ctx.question.split()[:20])
    return Action.make(
        _think(rng, "visit", title=title), [{"name": "visit", "arguments": {"url": [url], "goal": goal}}]
    )


def s_narrow(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with the original query plus question words it lacks (over-specific)."""
    q = _first_query(orig) or ""
    extra = [w for w in _keywords(ctx.question) if w not in set(content_words(q))]
    if not extra:
        return None
    rng.shuffle(extra)
    narrow = (q + " " + " ".join(extra[:3])).strip()
    return Action.make(_think(rng, "narrow", query=narrow), [{"name": "search", "arguments": {"query": [narrow]}}])


def s_question(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question itself, verbatim (a common naive move)."""
    q = " ".join(ctx.question.split()[:16])
    return Action.make(_think(rng, "question", query=q), [{"name": "search", "arguments": {"query": [q]}}])


def s_drift(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search for another entity seen so far (drifting away from the target)."""
    if not ctx.entities:
        return None
    ent = rng.choice(ctx.entities)
    kw = _keywords(ctx.question, n=2)
    query = f"{ent} {rng.choice(kw)}" if kw else ent
    return Action.make(
        _think(rng, "drift", entity=ent, query=query), [{"name": "search", "arguments": {"query": [query]}}]
    )


def s_visit_seen(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Visit a page that appeared in earlier results (possibly the wrong one)."""
    if not ctx.links:
        return s_visit_related(orig, ctx, rng)
    title, url = rng.choice(ctx.links)
    goal = " ".join(ctx.question.split()[:20])
    return Action.make(
        _think(rng, "visit", title=title), [{"name": "visit", "arguments": {"url": [url], "goal": goal}}]
    )


def s_premature(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Answer now with an entity seen so far (or give up), without further checking."""
    pool = ctx.answer_pool()
    if pool:
        ans = rng.choice(pool)
        return Action.make(_think(rng, "premature", answer=ans), answer=ans)
    return Action.make(_think(rng, "give_up"), answer="I could not find enough information to answer.")


def s_alt_answer(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """For an answering step: answer with another entity seen so far."""
    pool = [e for e in ctx.answer_pool() if orig.answer is None or e.lower() not in orig.answer.lower()]
    if not pool:
        return None
    ans = rng.choice(pool)
    return Action.make(_think(rng, "alt_answer", answer=ans), answer=ans)


def s_verify(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """For an answering step: keep searching to verify instead of answering."""
    kw = _keywords((orig.answer or "") + " " + ctx.question, n=5)
    if not kw:
        return None
    query = " ".join(kw)
    return Action.make(_think(rng, "verify", query=query), [{"name": "search", "arguments": {"query": [query]}}])


STRATEGIES: dict[str, Strategy] = {
    "broaden": s_broaden,
    "narrow": s_narrow,
    "tail": s_tail,
    "drop": s_drop,
    "question": s_question,
    "drift": s_drift,
    "visit_seen": s_visit_seen,
    "premature": s_premature,
    "alt_answer": s_alt_answer,
    "verify": s_verify,
}
TOOL_STEP_STRATEGIES = ("broaden", "narrow", "tail", "drop", "question", "drift", "visit_seen", "premature")
ANSWER_STEP_STRATEGIES = ("alt_answer", "verify", "visit_seen", "drift", "premature", "question", "tail")


def step_rng(seed: int, traj_id: str, k: int, purpose: str) -> random.Random:
    """Deterministic RNG for step ``k`` of a trajectory (string seeding is stable across runs and platforms)."""
    return random.Random(f"{seed}:{traj_id}:{k}:{purpose}")


AltMap = dict[str, list[list[Action]]]
"""Alternatives per trajectory id, one list per step."""


class TemplateBackend:
    """Offline, deterministic alternatives by rule-based perturbation of the original action."""

    name = "template"

    def __init__(self, guard: CollapseGuard, max_regenerate: int = 3, env: Any = None, related_k: int = 5) -> None:
        self.guard = guard
        self.max_regenerate = max_regenerate
        self.env = env
        """Optional :class:`~data_tools.env.search.SearchEnvironment`: corpus pages related to the question feed
        the drift / premature-answer / visit strategies (the paper's perturbation "from the corpus and memory")."""
        self.related_k = related_k
        self._related: dict[str, list[tuple[str, str]]] = {}
        self.shortfall = 0
        """Steps that got fewer than the requested number of alternatives."""

    def alternatives(
        self, traj: Trajectory, k: int, n: int, rng: random.Random, have: Sequence[Action] = ()
    ) -> list[Action]:
        """Up to ``n`` alternatives to step ``k`` of ``traj`` distinct from the original and from ``have``."""
        orig = Action.from_step(traj.steps[k])
        ctx = StepContext.of(traj, k, self.related(traj))
        names = list(ANSWER_STEP_STRATEGIES if orig.answer is not None else TOOL_STEP_STRATEGIES)
        rng.shuffle(names)
        accepted: list[Action] = list(have)
        for name in names * (1 + self.max_regenerate):
            if len(accepted) >= n:
                break
            cand = STRATEGIES[name](orig, ctx, rng)
            if cand is not None:
                self.guard.offer(Action(cand.think, cand.tool_calls, cand.answer, f"template:{name}"), orig, accepted)
        if len(accepted) < n:
            self.shortfall += 1
        return accepted[len(have) : n]

    def related(self, traj: Trajectory) -> list[tuple[str, str]]:
        """Corpus pages related to the question (cached per trajectory; empty without a corpus)."""
        if self.env is None:
            return []
        if traj.id not in self._related:
            hits = self.env.hits(traj.question, self.related_k)
            self._related[traj.id] = [(h.doc.title, h.doc.url) for h in hits]
        return self._related[traj.id]

    def generate(self, trajs: Sequence[Trajectory], n: int, seed: int) -> AltMap:
        """Alternatives for every step of every trajectory (RNG seeded per step, so order does not matter)."""
        return {
            t.id: [self.alternatives(t, k, n, step_rng(seed, t.id, k, "alt")) for k in range(len(t.steps))]
            for t in trajs
        }
