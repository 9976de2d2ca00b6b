"""HAS alternatives from an OpenAI-compatible model (vLLM, SGLang, OpenAI) through the shared LLM client.

For every step S_k the ``has/alternatives`` prompt (``data_tools/synthesis/templates/has/v2/``) shows the question,
the steps so far (tool results abbreviated), the URLs seen in results, and the expert's step as the *style reference*,
and asks for N alternative actions as structured output. The model writes only alternatives: the expert's step is
never rewritten (``data has`` keeps it verbatim). Every reply item must pass
:func:`~data_tools.synthesis.has.plausible.check_alternative` (query register like the expert's, no instruction words,
URLs only from results seen, goals not the pasted question, whole answers) and the
:class:`~data_tools.synthesis.has.collapse.CollapseGuard`; steps left short are asked again with another seed (up to
``max_regenerate`` rounds) *before* any template fill. What is still missing is filled by the offline template
backend, counted (``counts["filled_by_template"]``) and marked in each option's ``source``
(``template:<strategy>``); ``data has`` reports the fill rate and fails above ``--max-fill-rate``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from data_tools.synthesis.has.action import Action
from data_tools.synthesis.has.collapse import CollapseGuard
from data_tools.synthesis.has.plausible import check_alternative
from data_tools.synthesis.has.strategies import AltMap, step_rng
from data_tools.synthesis.has.template_backend import TemplateBackend
from data_tools.synthesis.trajectory import Trajectory

log = logging.getLogger(__name__)

HISTORY_STEPS = 8
"""Most recent steps shown to the model."""
RESPONSE_CHARS = 600
"""Characters of each earlier tool response shown to the model."""
DEFAULT_TOOLS = ("search", "visit")


def history_text(traj: Trajectory, k: int) -> str:
    """The steps before ``k`` as compact text for the prompt (earliest ones elided beyond :data:`HISTORY_STEPS`)."""
    lines = []
    first = max(0, k - HISTORY_STEPS)
    if first:
        lines.append(f"(steps 1-{first} omitted)")
    for i in range(first, k):
        step = traj.steps[i]
        lines.append(f"Step {i + 1}:\n{step.action_text()}")
        for r in step.responses:
            short = r if len(r) <= RESPONSE_CHARS else r[:RESPONSE_CHARS] + " ..."
            lines.append(f"Result {i + 1}:\n{short}")
    return "\n\n".join(lines) if lines else "(none: this is the first step)"


def parse_alternative(item: Any, tools: set[str]) -> Action | None:
    """One reply item -> :class:`Action` (no reasoning: options are actions), or None if it is not an action."""
    if not isinstance(item, dict):
        return None
    tool = str(item.get("tool", "")).strip()
    if tool == "answer":
        answer = item.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            return None
        return Action.make("", answer=answer, source="llm")
    args = item.get("arguments")
    if tool not in tools or not isinstance(args, dict) or not args:
        return None
    return Action.make("", [{"name": tool, "arguments": args}], source="llm")


class LLMBackend:
    """Alternatives from a model, checked for plausibility and collapse, regenerated, then template-filled."""

    name = "openai"

    def __init__(self, client: Any, guard: CollapseGuard, max_regenerate: int = 3) -> None:
        from data_tools.synthesis.llm.prompts import load_prompt

        self.client = client
        self.guard = guard
        self.max_regenerate = max_regenerate
        self.template = load_prompt("has", "alternatives", version="v2")
        self.fallback = TemplateBackend(guard, max_regenerate)
        self.counts: Counter = Counter()
        """``requests``, ``failed_requests``, ``invalid_items``, ``rejected:<reason>``, ``regenerated_steps``,
        ``filled_by_template``."""

    @property
    def shortfall(self) -> int:
        """Steps left with fewer than N alternatives even after the template fill."""
        return self.fallback.shortfall

    @property
    def rejected(self) -> Counter:
        """Template candidates the fill rejected as implausible (see :class:`TemplateBackend`)."""
        return self.fallback.rejected

    def _request(self, traj: Trajectory, k: int, n: int, seed: int, rnd: int) -> dict[str, Any]:
        tools = sorted({c.name for s in traj.steps for c in s.tool_calls} | set(DEFAULT_TOOLS))
        ctx = self.fallback.context(traj, k)
        urls = "\n".join(f"- {u} ({t})" for t, u in ctx.links) or "(none yet: a visit is not possible)"
        style = (
            "natural phrasing, as a person types it, keeping capital letters"
            if ctx.natural
            else "lower-case keywords without function words"
        )
        msgs = self.template.render(
            question=traj.question,
            history=history_text(traj, k),
            original=traj.steps[k].verbatim(),
            n=str(n),
            tools=", ".join(tools),
            urls=urls,
            style=style,
        )
        req_seed = step_rng(seed, traj.id, k, f"llm{rnd}").randrange(2**31)
        return {"messages": msgs, "schema": self.template.schema, "seed": req_seed}

    def generate(self, trajs: Sequence[Trajectory], n: int, seed: int) -> AltMap:
        """Alternatives for every step: model replies that pass the checks, asked again for short steps, and only
        then filled from the template backend (each fill counted and marked ``template:<strategy>``)."""
        accepted: dict[tuple[str, int], list[Action]] = {(t.id, k): [] for t in trajs for k in range(len(t.steps))}
        by_id = {t.id: t for t in trajs}
        for rnd in range(1 + self.max_regenerate):
            todo = [key for key, acc in accepted.items() if len(acc) < n]
            if not todo:
                break
            if rnd:
                self.counts["regenerated_steps"] += len(todo)
            reqs = [self._request(by_id[tid], k, n - len(accepted[(tid, k)]), seed, rnd) for tid, k in todo]
            self.counts["requests"] += len(reqs)
            for (tid, k), res in zip(todo, self.client.run_batch(reqs)):
                if res.error or not isinstance(res.parsed, dict):
                    self.counts["failed_requests"] += 1
                    continue
                traj = by_id[tid]
                tools = {c.name for s in traj.steps for c in s.tool_calls} | set(DEFAULT_TOOLS)
                orig = Action.from_step(traj.steps[k])
                ctx = self.fallback.context(traj, k)
                for item in res.parsed.get("alternatives", []):
                    if len(accepted[(tid, k)]) >= n:
                        break
                    cand = parse_alternative(item, tools)
                    if cand is None:
                        self.counts["invalid_items"] += 1
                        self.guard.counts["invalid"] += 1
                        continue
                    args = cand.calls[0]["arguments"] if cand.tool_calls else None
                    why = check_alternative(cand.kind, args, cand.answer, orig, ctx)
                    if why is not None:
                        self.counts[f"rejected:{why}"] += 1
                        continue
                    self.guard.offer(cand, orig, accepted[(tid, k)])
        out: AltMap = {t.id: [] for t in trajs}
        for (tid, k), acc in accepted.items():
            if len(acc) < n:
                extra = self.fallback.alternatives(by_id[tid], k, n, step_rng(seed, tid, k, "alt"), have=acc)
                self.counts["filled_by_template"] += len(extra)
                acc = acc + extra
            out[tid].append(acc[:n])
        return out

    def originals(self, trajs: Sequence[Trajectory], seed: int) -> dict[str, list[Action]]:
        """The original steps as options (their actions, like the alternatives); the expert's reasoning is never
        rewritten: ``data has`` shows the step verbatim after the choice."""
        return self.fallback.originals(trajs, seed)
