"""Alternative actions for HAS decision points, and the guard against decision collapse.

An :class:`Action` is one candidate step: tool call(s) or a final answer (options are shown as actions; the
expert's own reasoning and call, verbatim, follow the choice in the sample). Two backends propose N alternatives
to a trajectory's step S_k given its context C_k = (Q, S_1, R_1, ..., S_{k-1}, R_{k-1}):

* :class:`TemplateBackend` (offline, deterministic): plausible perturbations written like the original. Queries
  follow the register of the trajectory's own queries: natural phrasing (another entity seen in the results or
  in memory, another facet of the question, a clause of the question) when the original is natural, keyword
  queries (broaden / narrow / recombine ...) when it is a keyword bag. Visits open only URLs seen in earlier
  results, with the goal re-targeted to the page (never the question pasted in). Answers are whole candidate
  answers of the original's type found in the evidence so far or in memory
  (:func:`data_tools.synthesis.has.plausible.answer_candidates`). Every candidate passes
  :func:`data_tools.synthesis.has.plausible.check_alternative`. The kinds of the alternatives are planned over the
  trajectory so that an option's kind says nothing about whether it is the original. Every option records its
  strategy in ``source``.
* ``LLMBackend`` (:mod:`data_tools.synthesis.has.llm_backend`): asks an OpenAI-compatible model.

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
from functools import cached_property
from typing import Any

from data_tools.synthesis.answers import INSTRUCTION_WORDS, content_words, numbers, split_sentences
from data_tools.synthesis.env.goals import goal_for, is_pasted_question
from data_tools.synthesis.has.plausible import (
    answer_candidates,
    answer_type,
    check_alternative,
    natural_queries,
    query_is_natural,
    question_windows,
)
from data_tools.synthesis.serialize import TOOL_CALL_END, TOOL_CALL_START, render_answer, render_think, render_tool_call
from data_tools.synthesis.trajectory import Step, Trajectory

_LINK = re.compile(r"\[([^\]\n]{1,200})\]\((https?://[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)\)")
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
        return _first_query(self)

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
        return _shingles(self.text())

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


# Tool-output labels and boilerplate that capitalised-span extraction must not take for entities.
_BOILERPLATE = re.compile(
    r"A Google search for '[^'\n]*' found \d+ results:|## Web Results|The useful information in \S+ for user goal"
    r"[^\n]* as follows:|Evidence in page:|Summary:|No results found for '[^'\n]*'\.|Try with a more general query\."
)
_LABELS = frozenset("summary evidence web results result google search visit page error tool sorry the no".split())
_INSTRUCTION = INSTRUCTION_WORDS


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
    goal: str = ""
    """The ``goal`` of the most recent ``visit`` call so far (empty if none): what a visit alternative reuses."""
    goal_url: str = ""
    """The URL that :attr:`goal` was written for."""
    seen_numbers: list[str] = field(default_factory=list)
    """Numbers that appeared in earlier tool responses (distractors for numeric answers)."""
    sentences: list[str] = field(default_factory=list)
    """Sentences of earlier tool responses (labels and links removed): where phrase-like wrong answers come from."""
    answer_lengths: list[int] = field(default_factory=list)
    """Word counts of the trajectory's own final answers (wrong answers follow the policy's habit)."""
    query_lengths: list[int] = field(default_factory=list)
    """Keyword counts of the trajectory's own search queries (alternatives' queries follow the policy's habit)."""
    terms: list[str] = field(default_factory=list)
    """Topic words that are not in the question, most frequent first: words of page titles and snippets in the
    trajectory's tool responses (all of them: what a searcher of this topic could think of; an option is chosen
    before its response is shown, so no later text is revealed) and of related corpus pages. Equally long
    recombined queries draw on them when the question's own keywords are used up."""
    evidence: str = ""
    """The tool responses seen before this step (where candidate answers come from)."""
    natural: bool = True
    """Whether the trajectory's queries are natural phrasing (the original's own query decides for a search step;
    else the majority of the trajectory's queries): alternatives' queries are written in the same register."""
    final_answer: str | None = None
    """The trajectory's final answer (its *type* decides the type of premature-answer alternatives)."""
    visited: list[str] = field(default_factory=list)
    """URLs visited before this step."""
    memo: dict[str, Any] = field(default_factory=dict, repr=False)
    """Per-step cache (candidate answers by type: computed once per step, not per strategy call)."""
    last_query: str = ""
    """The latest search query before this step (else the trajectory's first): the style model of search
    alternatives at steps that are not searches."""

    def query_length(self, rng: random.Random, default: int = 6) -> int:
        """A query length (in keywords) drawn from the trajectory's own queries."""
        return rng.choice(self.query_lengths) if self.query_lengths else default

    def answer_pool(self) -> list[str]:
        """Plausible wrong answers: titles of pages seen so far, else related corpus titles or other entities."""
        return [t for t, _ in self.links] or [t for t, _ in self.related] or self.entities

    def title_of(self, url: str) -> str:
        """Title of a URL seen so far (else the URL itself)."""
        return next((t for t, u in [*self.links, *self.related] if u == url), url)

    @staticmethod
    def of(
        traj: Trajectory, k: int, related: Sequence[tuple[str, str]] = (), terms: Sequence[str] | None = None
    ) -> StepContext:
        """Context of step ``k`` (0-based): links, entities, numbers and sentences of responses R_1..R_k-1 only;
        ``terms`` (default :func:`topic_terms`) is the one trajectory-wide field."""
        seen_text = " ".join(r for s in traj.steps[:k] for r in s.responses)
        links = list(dict.fromkeys((t.strip(), u) for t, u in _LINK.findall(seen_text)))
        qwords = set(content_words(traj.question))
        ents = [t for t, _ in links]
        plain = _BOILERPLATE.sub(" ", _LINK.sub(" ", seen_text[:4000]))
        for m in _CAPS.finditer(traj.question + " " + plain):
            ents.append(m.group(0).strip())
        uniq = []
        for e in dict.fromkeys(ents):
            words = set(content_words(e))
            if len(e) > 2 and words and not words <= qwords and not words <= _LABELS:
                uniq.append(e)
        for title, _ in related:
            if title not in uniq and not set(content_words(title)) <= qwords:
                uniq.append(title)
        goal, goal_url, visited = "", "", []
        for s in traj.steps[:k]:
            for c in s.tool_calls:
                urls = c.arguments.get("url") if c.name == "visit" else None
                urls = [urls] if isinstance(urls, str) else [u for u in urls or [] if isinstance(u, str)]
                visited.extend(urls)
                if c.name == "visit" and isinstance(c.arguments.get("goal"), str) and c.arguments["goal"].strip():
                    goal, goal_url = c.arguments["goal"], urls[0] if urls else ""
        nums = list(dict.fromkeys(f"{x:g}" for x in numbers(plain) if abs(x) < 1e7))
        qlens = [len(_keywords(q)) for q in (_first_query(Action.from_step(s)) for s in traj.steps) if q]
        sents = [x for x in split_sentences(plain) if len(x.split()) >= 4]
        alens = [len(st.answer.split()) for st in traj.steps if st.answer]
        qlens = [n for n in qlens if n >= 2]
        own = _first_query(Action.from_step(traj.steps[k]))
        queries = [q for q in (_first_query(Action.from_step(s)) for s in traj.steps) if q]
        natural = query_is_natural(own) if own else (2 * sum(map(query_is_natural, queries)) >= len(queries))
        return StepContext(
            traj.question,
            links,
            uniq,
            list(related),
            goal,
            goal_url,
            nums,
            sents,
            alens,
            qlens,
            list(topic_terms(traj, related) if terms is None else terms),
            seen_text,
            natural,
            traj.prediction,
            visited,
            last_query=next(
                (q for q in (_first_query(Action.from_step(s)) for s in reversed(traj.steps[:k])) if q), None
            )
            or (queries[0] if queries else ""),
        )


def topic_terms(traj: Trajectory, related: Sequence[tuple[str, str]] = (), limit: int = 40) -> list[str]:
    """Up to ``limit`` words related to the trajectory's topic but absent from its question, most frequent first
    (title words count three times, words of sentences sharing a question word twice): from the titles and text of all its tool responses and from ``related``
    page titles. Numbers, instruction words, tool-output labels and the words of the ground truth and of the
    final prediction are left out (an alternative never names the answer before it was found)."""
    qwords = set(content_words(" ".join([traj.question, traj.answer or "", traj.prediction or ""])))
    text = " ".join(r for s in traj.steps for r in s.responses)
    titles = [t for t, _ in _LINK.findall(text)] + [t for t, _ in related]
    body = _BOILERPLATE.sub(" ", _LINK.sub(" ", text))
    qset = qwords - _INSTRUCTION
    freq: Counter = Counter()
    for title in titles:
        for w in _keywords(title):
            freq[w] += 3
    for sent in split_sentences(body):
        words = _keywords(sent)
        on_topic = bool(qset.intersection(words))  # sentences that share a question word count twice as much
        for w in words:
            freq[w] += 2 if on_topic else 1
    ok = [
        w
        for w, _ in freq.most_common()
        if w not in qwords and w not in _LABELS and len(w) > 2 and not any(ch.isdigit() for ch in w) and "/" not in w
    ]
    return ok[:limit]


Strategy = Callable[[Action, StepContext, random.Random], "Action | None"]


def _first_query(orig: Action) -> str | None:
    for call in orig.calls:
        q = call["arguments"].get("query")
        if isinstance(q, list) and q:
            return str(q[0])
        if isinstance(q, str):
            return q
    return None


def _keywords(text: str, n: int | None = None) -> list[str]:
    """Distinct content words of ``text`` that are not instruction words, in order (the first ``n`` when given)."""
    words = [w for w in content_words(text) if w not in _INSTRUCTION and w.strip("_")]
    return words if n is None else words[:n]


def _search(query: str) -> Action | None:
    """A search action, or None for a trivial query (fewer than two content words)."""
    if len(_keywords(query)) < 2:
        return None
    return Action.make("", [{"name": "search", "arguments": {"query": [query]}}])


def s_broaden(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with the original query's keywords less the last one to half of them (broader)."""
    words = _keywords(_first_query(orig) or "")
    if len(words) < 4:
        return None
    return _search(" ".join(words[: len(words) - rng.randint(1, max(1, len(words) // 2))]))


def s_tail(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the last keywords of the question (a different facet of it)."""
    words = _keywords(ctx.question)
    if len(words) < 4:
        return None
    return _search(" ".join(words[-max(2, ctx.query_length(rng) - rng.randint(0, 2)) :]))


def s_drop(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question's keywords with one of them left out (a slightly different focus)."""
    words = _keywords(ctx.question)[: ctx.query_length(rng) + 1]
    if len(words) < 3:
        return None
    words.pop(rng.randrange(len(words)))
    return _search(" ".join(words))


def s_narrow(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with the original query's keywords plus question keywords it lacks (over-specific)."""
    have = _keywords(_first_query(orig) or "")
    extra = [w for w in _keywords(ctx.question) if w not in set(have)]
    if not extra or not have:
        return None
    rng.shuffle(extra)
    return _search(" ".join(have + extra[: rng.choice((1, 2, 3))]))


def s_question(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question's first keywords (a plain first move)."""
    return _search(" ".join(_keywords(ctx.question, n=ctx.query_length(rng))))


def s_sample(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search a random subset of the question's keywords and of words seen so far (another angle)."""
    pool = list(dict.fromkeys(_keywords(ctx.question) + [w for e in ctx.entities[:10] for w in _keywords(e)]))
    if len(pool) < 3:
        return None
    picked = sorted(rng.sample(range(len(pool)), min(len(pool), max(2, ctx.query_length(rng)))))
    return _search(" ".join(pool[i] for i in picked))


def s_drift(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search for another entity seen so far (drifting away from the target)."""
    if not ctx.entities:
        return None
    ent = _keywords(rng.choice(ctx.entities), n=3)
    kw = [w for w in _keywords(ctx.question) if w not in ent]
    return _search(" ".join(ent + kw[: max(1, ctx.query_length(rng) - len(ent))]))


def by_length(
    cands: Sequence[Action], length: int, slack: int = 1, natural: bool = False, digits: int = 0
) -> list[Action]:
    """Search candidates whose query is within ``slack`` keywords (``natural``: words) of ``length`` first (stable
    otherwise): the alternatives of a search step are about as long as the original query, so that the original
    is not "the longest" (or shortest) query of its decision; then those with as many numbers as ``digits``."""

    def size(a: Action) -> int:
        q = _first_query(a) or ""
        return len(q.split()) if natural else len(_keywords(q))

    return sorted(cands, key=lambda a: (abs(size(a) - length) > slack, abs(_digits(a) - digits)))


def _digits(a: Action) -> int:
    return len(re.findall(r"\b\d+\b", _first_query(a) or ""))


def s_recombine(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search as many keywords as the original query (or a query of the policy's usual length): some of its
    keywords, in order, with one to half of them swapped for question keywords it lacks or topic terms seen in
    the trajectory (:attr:`StepContext.terms`). Same length, another focus: the probe cannot tell it by size."""
    q = _first_query(orig)
    qwords = _keywords(ctx.question)
    base = _keywords(q) if q else qwords[: ctx.query_length(rng)]
    if len(base) < 2:
        return None
    pool = [w for w in dict.fromkeys(qwords + ctx.terms) if w not in set(base)]
    if not pool:
        return None
    swap = min(len(pool), rng.randint(1, max(1, len(base) // 2)))
    keep = sorted(rng.sample(range(len(base)), len(base) - swap))
    words = [base[i] for i in keep]
    fresh = [w for w in pool if w not in qwords]
    extra = [w for w in pool if w in qwords]
    rng.shuffle(extra)
    # topic terms are ranked by frequency: sample from the head so they stay on topic
    picks = extra[: rng.randint(0, swap)] + rng.sample(fresh[: 4 * swap + 4], min(len(fresh[: 4 * swap + 4]), swap))
    for w in picks[:swap]:
        words.insert(rng.randint(0, len(words)), w)
    return _search(" ".join(words))


def s_visit_seen(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Visit another page that appeared in earlier results (pages not opened yet first); only URLs actually seen.
    The goal is the original's (or the latest visit's): the missing fact, as the agent wrote it; else one written
    for the page and the missing fact (:func:`data_tools.synthesis.env.goals.goal_for`); never the question pasted
    in."""
    urls = {u for c in orig.calls for u in (c["arguments"].get("url") or [])} if orig.kind == "visit" else set()
    links = [(t, u) for t, u in ctx.links if u not in urls]
    fresh = [(t, u) for t, u in links if u not in ctx.visited]
    if not links:
        return None
    title, url = rng.choice(fresh if fresh and rng.random() < 0.8 else links)
    # the fact still missing is the same whichever page is opened: the goal is kept as the agent wrote it
    # (re-targeting it by swapping page names gave nonsense such as "the director of <a person>")
    goal = ""
    if orig.kind == "visit" and isinstance(orig.calls[0]["arguments"].get("goal"), str):
        goal = orig.calls[0]["arguments"]["goal"]
    elif ctx.goal:
        goal = ctx.goal
    if not goal.strip() or is_pasted_question(goal, ctx.question) or re.search(r" on the .+ page$", goal):
        goal = goal_for(ctx.question, title)  # (goals in goal_for's form name their page: written for this one)
    return Action.make("", [{"name": "visit", "arguments": {"url": [url], "goal": goal}}])


def _answers(orig: Action, ctx: StepContext) -> list[str]:
    """Whole candidate answers of the original's type (or of the trajectory's final answer's type) from the
    evidence so far, then from memory (:func:`data_tools.synthesis.has.plausible.answer_candidates`)."""
    kind = answer_type(orig.answer if orig.answer is not None else ctx.final_answer, ctx.question)
    key = f"answers:{kind}:{orig.answer}"
    if key not in ctx.memo:  # the most recent evidence (long trajectories quote whole pages)
        evidence = ctx.evidence[-EVIDENCE_CHARS:]
        titles, memory = [t for t, _ in ctx.links], [t for t, _ in ctx.related]
        ctx.memo[key] = answer_candidates(kind, evidence, titles, memory, orig.answer)
    return ctx.memo[key]


EVIDENCE_CHARS = 40000
"""Characters of the most recent evidence that candidate answers are drawn from."""


def s_premature(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Answer now with a candidate found so far (evidence or memory), without further checking."""
    pool = _answers(orig, ctx)
    return Action.make("", answer=rng.choice(pool[:8])) if pool else None


def s_alt_answer(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """For an answering step: another candidate answer of the same type found in the evidence (or memory)."""
    if orig.answer is None:
        return None
    pool = _answers(orig, ctx)
    return Action.make("", answer=rng.choice(pool[:6])) if pool else None


def s_natural(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """A query written like a natural original (:func:`data_tools.synthesis.has.plausible.natural_queries`): another
    entity seen, another facet of the question, or a clause of the question; the step's own query (or the trajectory's
    latest one) is the style model."""
    model = _first_query(orig) or ctx.last_query or ""
    facets = [w for w in _keywords(ctx.question) if w.lower() not in model.lower()] + ctx.terms[:4]
    ents = [*(t for t, _ in ctx.links), *ctx.entities, *(t for t, _ in ctx.related)]
    if not model:
        cands = [("clause", c) for n in (4, 5, 6) for c in question_windows(ctx.question, n)]
    else:
        years = re.findall(r"\b\d{4}\b", ctx.question + " " + ctx.evidence)
        cands = natural_queries(model, ctx.question, ents, facets, rng, list(dict.fromkeys(years)))
    if not cands:
        return None
    name, q = rng.choice(cands)
    act = _search(q)
    return Action(act.think, act.tool_calls, None, f"template:{name}") if act else None


def s_verify(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """For an answering step: keep searching to verify instead of answering."""
    return _search(" ".join(_keywords((orig.answer or "") + " " + ctx.question, n=ctx.query_length(rng))))


STRATEGIES: dict[str, Strategy] = {
    "broaden": s_broaden,
    "narrow": s_narrow,
    "tail": s_tail,
    "drop": s_drop,
    "question": s_question,
    "drift": s_drift,
    "sample": s_sample,
    "recombine": s_recombine,
    "verify": s_verify,
    "visit_seen": s_visit_seen,
    "premature": s_premature,
    "alt_answer": s_alt_answer,
}


def s_reshape(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """A keyword query of the original's exact shape: one to half of its words swapped for question keywords it
    lacks or topic terms, its numbers and length kept (another focus, the same form)."""
    q = _first_query(orig)
    if not q:
        return None
    facets = [w for w in _keywords(ctx.question) if w not in q.lower().split()] + ctx.terms[:8]
    cands = [(n, x) for n, x in natural_queries(q, ctx.question, [], facets, rng) if n == "swap_facet"]
    return _search(rng.choice(cands)[1]) if cands else None


STRATEGIES["natural"] = s_natural
STRATEGIES["reshape"] = s_reshape
NATURAL_SEARCH = ("natural",)
"""Search strategies for trajectories whose queries are natural phrasing (the keyword ones lower-case)."""
STRATEGY_KINDS: dict[str, tuple[str, ...]] = {
    "search": ("broaden", "narrow", "tail", "drop", "question", "drift", "sample", "recombine", "verify", "reshape"),
    "visit": ("visit_seen",),
    "answer": ("alt_answer", "premature"),
}
"""Strategies by the kind of action they produce."""


def step_rng(seed: int, traj_id: str, k: int, purpose: str) -> random.Random:
    """Deterministic RNG for step ``k`` of a trajectory (string seeding is stable across runs and platforms)."""
    return random.Random(f"{seed}:{traj_id}:{k}:{purpose}")


AltMap = dict[str, list[list[Action]]]
"""Alternatives per trajectory id, one list per step."""


def kind_weights(traj: Trajectory) -> dict[str, float]:
    """Share of each action kind among the trajectory's own steps (what alternatives' kinds are drawn from)."""
    kinds = Counter(Action.from_step(s).kind for s in traj.steps)
    kinds.pop("tool", None)  # no template strategy writes other tools' arguments
    total = sum(kinds.values())
    return {k: v / total for k, v in kinds.items()} if total else {"search": 1.0}


class TemplateBackend:
    """Offline, deterministic alternatives by rule-based perturbation of the original action."""

    name = "template"

    def __init__(self, guard: CollapseGuard, max_regenerate: int = 3, env: Any = None, related_k: int = 5) -> None:
        self.guard = guard
        self.max_regenerate = max_regenerate
        self.env = env
        """Optional :class:`~data_tools.synthesis.env.search.SearchEnvironment`: corpus pages related to the question
        feed the drift / premature-answer strategies (the paper's perturbation "from the corpus and memory")."""
        self.related_k = related_k
        self._related: dict[str, list[tuple[str, str]]] = {}
        self._terms: tuple[str | None, list[str]] = (None, [])  # topic terms of the last trajectory seen
        self.shortfall = 0
        """Steps that got fewer than the requested number of alternatives."""
        self.rejected: Counter = Counter()
        """Template candidates dropped by :func:`~data_tools.synthesis.has.plausible.check_alternative`, by reason."""

    def context(self, traj: Trajectory, k: int) -> StepContext:
        """The :class:`StepContext` of step ``k``."""
        if self._terms[0] != traj.id:
            self._terms = (traj.id, topic_terms(traj, self.related(traj)))
        return StepContext.of(traj, k, self.related(traj), self._terms[1])

    def original(self, traj: Trajectory, k: int, seed: int) -> Action:
        """The original step as an option: its action exactly (canonical call layout, like the alternatives'), no
        reasoning; the expert's reasoning and call as written follow the choice in the sample."""
        return Action.from_step(traj.steps[k]).with_think("")

    def pools(self, traj: Trajectory, k: int, n: int, rng: random.Random) -> dict[str, list[Action]]:
        """Up to ``n`` distinct plausible candidates of each kind for step ``k`` (none duplicating the original, all
        passing :func:`data_tools.synthesis.has.plausible.check_alternative`); the pool sizes are what the step can
        offer."""
        orig = Action.from_step(traj.steps[k])
        ctx = self.context(traj, k)
        oq = _first_query(orig)
        out: dict[str, list[Action]] = {}
        for kind, names in STRATEGY_KINDS.items():
            if kind == "search" and ctx.natural:
                names = NATURAL_SEARCH
            tries = list(names) * (2 + self.max_regenerate) * (4 if len(names) == 1 else 1)
            rng.shuffle(tries)
            acc: list[Action] = []
            want = 3 * n if kind == "search" and oq else n  # room to pick queries as long as the original's
            for name in tries:
                if len(acc) >= want:
                    break
                cand = STRATEGIES[name](orig, ctx, rng)
                if cand is None:
                    continue
                src = cand.source if cand.source.startswith("template:") else f"template:{name}"
                cand = Action("", cand.tool_calls, cand.answer, src)
                args = cand.calls[0]["arguments"] if cand.tool_calls else None
                if check_alternative(cand.kind, args, cand.answer, orig, ctx) is not None:
                    self.rejected[check_alternative(cand.kind, args, cand.answer, orig, ctx) or ""] += 1
                    continue
                if not self.guard.same(cand, orig) and not any(self.guard.same(cand, a) for a in acc):
                    acc.append(cand)
            if kind == "search" and oq:
                size = len(oq.split()) if ctx.natural else len(_keywords(oq))
                acc = by_length(acc, size, 2 if ctx.natural else 1, ctx.natural, _digits(orig))[:n]
            out[kind] = acc
        return out

    def plan(self, traj: Trajectory, caps: Sequence[dict[str, int]], n: int, seed: int) -> list[list[str]]:
        """Kinds of the alternatives of every step, so that over the trajectory each kind appears ``n`` times as
        often among alternatives as among the original steps, as far as the steps' ``caps`` (candidates per kind)
        allow: then an option's kind tells nothing about whether it is the original. Greedy by remaining deficit
        (most constrained steps first); a slot is only left empty when the step has no candidate left.
        """
        rng = step_rng(seed, traj.id, -1, "plan")
        kinds = Counter(Action.from_step(s).kind for s in traj.steps)
        target = {kd: n * kinds.get(kd, 0) for kd in STRATEGY_KINDS}
        if not any(target.values()):
            target["search"] = n * len(traj.steps)
        used: Counter = Counter()
        plan: list[list[str]] = [[] for _ in traj.steps]
        for k in sorted(range(len(traj.steps)), key=lambda i: (sum(v > 0 for v in caps[i].values()), i)):
            cap = dict(caps[k])
            for _ in range(n):
                open_kinds = [kd for kd, c in cap.items() if c > 0]
                if not open_kinds:
                    break
                best = max(open_kinds, key=lambda kd: (target[kd] - used[kd], rng.random()))
                plan[k].append(best)
                used[best] += 1
                cap[best] -= 1
        return plan

    def alternatives(
        self,
        traj: Trajectory,
        k: int,
        n: int,
        rng: random.Random,
        have: Sequence[Action] = (),
        kinds: Sequence[str] | None = None,
        pools: dict[str, list[Action]] | None = None,
    ) -> list[Action]:
        """Up to ``n`` alternatives to step ``k`` of ``traj`` distinct from the original and from ``have``.

        ``kinds``: the kind of each wanted alternative (see :meth:`plan`); default: any kind, drawn from the
        trajectory's own kinds first. ``pools``: the step's candidates (see :meth:`pools`).
        """
        orig = Action.from_step(traj.steps[k])
        pools = pools if pools is not None else self.pools(traj, k, 2 * n, rng)
        if kinds is None:
            weights = kind_weights(traj)
            kinds = rng.choices(list(weights), list(weights.values()), k=n) + list(STRATEGY_KINDS) * n
        accepted: list[Action] = list(have)
        for kind in kinds:
            if len(accepted) >= n:
                break
            while pools.get(kind):
                if self.guard.offer(pools[kind].pop(0), orig, accepted):
                    break
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
        out: AltMap = {}
        for t in trajs:
            pools = [self.pools(t, k, n, step_rng(seed, t.id, k, "alt")) for k in range(len(t.steps))]
            plan = self.plan(t, [{kd: len(v) for kd, v in p.items()} for p in pools], n, seed)
            out[t.id] = [
                self.alternatives(t, k, n, step_rng(seed, t.id, k, "pick"), kinds=plan[k], pools=pools[k])
                for k in range(len(t.steps))
            ]
        return out

    def originals(self, trajs: Sequence[Trajectory], seed: int) -> dict[str, list[Action]]:
        """The original of every step as an option (see :meth:`original`)."""
        return {t.id: [self.original(t, k, seed) for k in range(len(t.steps))] for t in trajs}
