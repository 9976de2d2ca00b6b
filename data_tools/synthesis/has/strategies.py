"""The template backend's strategies: each writes one plausible alternative to an original action in the
original's style (keyword queries broaden / narrow / recombine ..., natural queries, visits of URLs seen in
earlier results, whole candidate answers of the original's type), plus the per-step RNG and kind weights."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence

from data_tools.synthesis.env.goals import goal_for, is_pasted_question
from data_tools.synthesis.has.action import Action, first_search_query, keywords
from data_tools.synthesis.has.plausible import (
    answer_candidates,
    answer_type,
    natural_queries,
    question_windows,
)
from data_tools.synthesis.has.step_context import StepContext
from data_tools.synthesis.trajectory import Trajectory

Strategy = Callable[[Action, StepContext, random.Random], "Action | None"]


def _search(query: str) -> Action | None:
    """A search action, or None for a trivial query (fewer than two content words)."""
    if len(keywords(query)) < 2:
        return None
    return Action.make("", [{"name": "search", "arguments": {"query": [query]}}])


def s_broaden(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with the original query's keywords less the last one to half of them (broader)."""
    words = keywords(first_search_query(orig) or "")
    if len(words) < 4:
        return None
    return _search(" ".join(words[: len(words) - rng.randint(1, max(1, len(words) // 2))]))


def s_tail(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the last keywords of the question (a different facet of it)."""
    words = keywords(ctx.question)
    if len(words) < 4:
        return None
    return _search(" ".join(words[-max(2, ctx.query_length(rng) - rng.randint(0, 2)) :]))


def s_drop(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question's keywords with one of them left out (a slightly different focus)."""
    words = keywords(ctx.question)[: ctx.query_length(rng) + 1]
    if len(words) < 3:
        return None
    words.pop(rng.randrange(len(words)))
    return _search(" ".join(words))


def s_narrow(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search with the original query's keywords plus question keywords it lacks (over-specific)."""
    have = keywords(first_search_query(orig) or "")
    extra = [w for w in keywords(ctx.question) if w not in set(have)]
    if not extra or not have:
        return None
    rng.shuffle(extra)
    return _search(" ".join(have + extra[: rng.choice((1, 2, 3))]))


def s_question(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search the question's first keywords (a plain first move)."""
    return _search(" ".join(keywords(ctx.question, n=ctx.query_length(rng))))


def s_sample(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search a random subset of the question's keywords and of words seen so far (another angle)."""
    pool = list(dict.fromkeys(keywords(ctx.question) + [w for e in ctx.entities[:10] for w in keywords(e)]))
    if len(pool) < 3:
        return None
    picked = sorted(rng.sample(range(len(pool)), min(len(pool), max(2, ctx.query_length(rng)))))
    return _search(" ".join(pool[i] for i in picked))


def s_drift(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search for another entity seen so far (drifting away from the target)."""
    if not ctx.entities:
        return None
    ent = keywords(rng.choice(ctx.entities), n=3)
    kw = [w for w in keywords(ctx.question) if w not in ent]
    return _search(" ".join(ent + kw[: max(1, ctx.query_length(rng) - len(ent))]))


def by_length(
    cands: Sequence[Action], length: int, slack: int = 1, natural: bool = False, digits: int = 0
) -> list[Action]:
    """Search candidates whose query is within ``slack`` keywords (``natural``: words) of ``length`` first (stable
    otherwise): the alternatives of a search step are about as long as the original query, so that the original
    is not "the longest" (or shortest) query of its decision; then those with as many numbers as ``digits``."""

    def size(a: Action) -> int:
        q = first_search_query(a) or ""
        return len(q.split()) if natural else len(keywords(q))

    return sorted(cands, key=lambda a: (abs(size(a) - length) > slack, abs(digit_count(a) - digits)))


def digit_count(a: Action) -> int:
    return len(re.findall(r"\b\d+\b", first_search_query(a) or ""))


def s_recombine(orig: Action, ctx: StepContext, rng: random.Random) -> Action | None:
    """Search as many keywords as the original query (or a query of the policy's usual length): some of its
    keywords, in order, with one to half of them swapped for question keywords it lacks or topic terms seen in
    the trajectory (:attr:`StepContext.terms`). Same length, another focus: the probe cannot tell it by size."""
    q = first_search_query(orig)
    qwords = keywords(ctx.question)
    base = keywords(q) if q else qwords[: ctx.query_length(rng)]
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
    model = first_search_query(orig) or ctx.last_query or ""
    facets = [w for w in keywords(ctx.question) if w.lower() not in model.lower()] + ctx.terms[:4]
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
    return _search(" ".join(keywords((orig.answer or "") + " " + ctx.question, n=ctx.query_length(rng))))


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
    q = first_search_query(orig)
    if not q:
        return None
    facets = [w for w in keywords(ctx.question) if w not in q.lower().split()] + ctx.terms[:8]
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
