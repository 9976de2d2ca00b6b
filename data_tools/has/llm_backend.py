"""HAS alternatives from an OpenAI-compatible model (vLLM, SGLang, OpenAI) through the shared LLM client.

For every step S_k the ``has/alternatives`` prompt template (``data_tools/templates/has/v1/``) shows the question,
the steps so far (tool results abbreviated) and the original step, and asks for N alternatives as structured
output. Replies pass the :class:`~data_tools.has.candidates.CollapseGuard`; steps left short are asked again
with another seed (up to ``max_regenerate`` rounds), then filled by the offline template backend, and every
option records where it came from (``llm`` or ``template:<strategy>``). The original step goes through the same
rewrite: the model also returns ``original_think``, the original's reasoning in the voice of its alternatives,
which replaces the recorded wording (its action is kept exactly), so the original is not recognisable by style.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from data_tools.has.candidates import Action, AltMap, CollapseGuard, TemplateBackend, step_rng
from data_tools.trajectory import Trajectory

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
    """One reply item -> :class:`Action`, or None if it is not a usable action."""
    if not isinstance(item, dict) or not isinstance(item.get("think"), str):
        return None
    tool = str(item.get("tool", "")).strip()
    if tool == "answer":
        answer = item.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            return None
        return Action.make(item["think"], answer=answer, source="llm")
    args = item.get("arguments")
    if tool not in tools or not isinstance(args, dict) or not args:
        return None
    return Action.make(item["think"], [{"name": tool, "arguments": args}], source="llm")


class LLMBackend:
    """Alternatives from a model, guarded against collapse, with a template fallback."""

    name = "openai"

    def __init__(self, client: Any, guard: CollapseGuard, max_regenerate: int = 3) -> None:
        from data_tools.llm.prompts import load_prompt

        self.client = client
        self.guard = guard
        self.max_regenerate = max_regenerate
        self.template = load_prompt("has", "alternatives")
        self.fallback = TemplateBackend(guard, max_regenerate)
        self.counts: Counter = Counter()
        """``requests``, ``failed_requests``, ``invalid_items``, ``filled_by_template``, ``original_rewrites``."""
        self._rewrites: dict[tuple[str, int], str] = {}

    @property
    def shortfall(self) -> int:
        """Steps left with fewer than N alternatives even after the template fill."""
        return self.fallback.shortfall

    def _request(self, traj: Trajectory, k: int, n: int, seed: int, rnd: int) -> dict[str, Any]:
        tools = sorted({c.name for s in traj.steps for c in s.tool_calls} | set(DEFAULT_TOOLS))
        msgs = self.template.render(
            question=traj.question,
            history=history_text(traj, k),
            original=traj.steps[k].action_text(),
            n=str(n),
            tools=", ".join(tools),
        )
        req_seed = step_rng(seed, traj.id, k, f"llm{rnd}").randrange(2**31)
        return {"messages": msgs, "schema": self.template.schema, "seed": req_seed}

    def generate(self, trajs: Sequence[Trajectory], n: int, seed: int) -> AltMap:
        """Alternatives for every step; asks again for short steps, then fills from the template backend."""
        accepted: dict[tuple[str, int], list[Action]] = {(t.id, k): [] for t in trajs for k in range(len(t.steps))}
        by_id = {t.id: t for t in trajs}
        for rnd in range(1 + self.max_regenerate):
            todo = [key for key, acc in accepted.items() if len(acc) < n]
            if not todo:
                break
            reqs = [self._request(by_id[tid], k, n - len(accepted[(tid, k)]), seed, rnd) for tid, k in todo]
            self.counts["requests"] += len(reqs)
            for (tid, k), res in zip(todo, self.client.run_batch(reqs)):
                if res.error or not isinstance(res.parsed, dict):
                    self.counts["failed_requests"] += 1
                    continue
                traj = by_id[tid]
                rewrite = res.parsed.get("original_think")
                if isinstance(rewrite, str) and rewrite.strip() and (tid, k) not in self._rewrites:
                    self._rewrites[(tid, k)] = rewrite.strip()
                    self.counts["original_rewrites"] += 1
                tools = {c.name for s in traj.steps for c in s.tool_calls} | set(DEFAULT_TOOLS)
                orig = Action.from_step(traj.steps[k])
                for item in res.parsed.get("alternatives", []):
                    if len(accepted[(tid, k)]) >= n:
                        break
                    cand = parse_alternative(item, tools)
                    if cand is None:
                        self.counts["invalid_items"] += 1
                        self.guard.counts["invalid"] += 1
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
        """The original steps with the model's rewrite of their thinking (the same voice as the alternatives);
        steps the model did not rewrite get the template pool's phrasing, never their recorded wording."""
        out: dict[str, list[Action]] = {}
        for t in trajs:
            out[t.id] = []
            for k, step in enumerate(t.steps):
                rewrite = self._rewrites.pop((t.id, k), None)
                out[t.id].append(
                    Action.from_step(step).with_think(rewrite) if rewrite else self.fallback.original(t, k, seed)
                )
        return out
