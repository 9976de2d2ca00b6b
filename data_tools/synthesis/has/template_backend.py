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

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from data_tools.synthesis.has.action import Action, first_search_query, keywords
from data_tools.synthesis.has.collapse import CollapseGuard
from data_tools.synthesis.has.plausible import (
    check_alternative,
)
from data_tools.synthesis.has.step_context import StepContext, topic_terms
from data_tools.synthesis.has.strategies import (
    NATURAL_SEARCH,
    STRATEGIES,
    STRATEGY_KINDS,
    AltMap,
    by_length,
    digit_count,
    kind_weights,
    step_rng,
)
from data_tools.synthesis.trajectory import Trajectory


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
        oq = first_search_query(orig)
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
                size = len(oq.split()) if ctx.natural else len(keywords(oq))
                acc = by_length(acc, size, 2 if ctx.natural else 1, ctx.natural, digit_count(orig))[:n]
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
