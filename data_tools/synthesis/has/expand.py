"""Turn a judged trajectory plus alternatives into HAS decision samples, split to a token limit.

For each step k the options are the N alternatives and the original S_k, shuffled with a RNG seeded by
``(seed, trajectory id, k)`` (so the order is reproducible and independent of processing order or resume);
the chosen option is always the original (the trajectory took it). The sample text is rendered by
:func:`data_tools.synthesis.serialize.serialize_has`.

Long trajectories are split into parts of at most ``max_tokens`` tokens, only at step boundaries (a step's
options and its response always stay together). Every part starts with the question; a later part first
replays the most recent earlier steps without options (as many whole steps as fit in ``history_fraction`` of
the limit) so the decision keeps its context; only the last part ends with the trajectory's judgment. A single
step longer than the limit is emitted alone and flagged ``oversize``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from data_tools.synthesis.has.action import Action
from data_tools.synthesis.has.strategies import step_rng
from data_tools.synthesis.serialize import (
    FORMAT_VERSION,
    decision_text,
    has_closing,
    has_history_turns,
    has_step_turns,
    serialize_has,
    serialize_prefix,
)
from data_tools.synthesis.trajectory import Trajectory

HAS_FORMAT = "options-choice-expert-v3"
"""Layout of a HAS step: the options as actions, the choice, then the expert's step verbatim."""
MALFORMED_STEP_KINDS = ("unparseable_call", "call_without_response", "empty_step")
"""Steps never offered as the expert's choice (see :func:`first_bad_step`)."""
LENGTH_BINS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass
class HasConfig:
    """Settings of HAS expansion."""

    candidates: int = 3
    """N: alternatives per step (each decision has N+1 options)."""
    seed: int = 0
    """Base seed of alternative generation and option shuffling."""
    max_tokens: int = 131072
    """Token limit of one sample; longer trajectories are split at step boundaries."""
    history_fraction: float = 0.25
    """Share of ``max_tokens`` a later part may spend replaying earlier steps (without options)."""
    similarity: float = 0.8
    """Collapse guard: content-word Jaccard similarity at which two actions count as duplicates."""
    max_regenerate: int = 3
    """Extra generation rounds for steps that lost candidates to the collapse guard."""

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if self.max_tokens < 64:
            raise ValueError(f"max_tokens must be >= 64, got {self.max_tokens}")
        if not 0.0 <= self.history_fraction < 1.0:
            raise ValueError(f"history_fraction must be in [0, 1), got {self.history_fraction}")
        if not 0.0 < self.similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {self.similarity}")
        if self.max_regenerate < 0:
            raise ValueError(f"max_regenerate must be >= 0, got {self.max_regenerate}")


@dataclass
class Decision:
    """One decision point: shuffled options, where the original went, and the real response."""

    options: list[Action]
    """The N+1 options in presentation order."""
    original_index: int
    """0-based index of the original step among :attr:`options` (also the chosen index)."""
    responses: list[str]
    """The real tool responses R_k (empty for the answering step)."""
    note: str | None = None
    """A user turn that preceded the step in the trajectory (kept in the sample)."""
    expert: str = ""
    """The expert's step exactly as written (reasoning + call or answer), shown after the choice."""

    def as_step(self) -> dict[str, Any]:
        """The ``steps`` entry :func:`data_tools.synthesis.serialize.serialize_has` takes."""
        return {
            "options": [o.text() for o in self.options],
            "chosen": self.original_index,
            "response": self.responses or None,
            "note": self.note,
            "expert": self.expert or None,
        }


def first_bad_step(traj: Trajectory) -> tuple[int, str] | None:
    """``(index, kind)`` of the first step that must not be taught as the expert's choice, or None.

    Kinds (:data:`MALFORMED_STEP_KINDS`): ``unparseable_call`` (a ``<tool_call>`` that is not valid JSON/JSON5),
    ``call_without_response`` (a tool call followed by the next step with no tool response and no user turn in
    between; a last call whose response DeepResearch overwrote with its limit text is fine), ``empty_step`` (an
    empty answer, or a call with no arguments and no code).
    """
    for k, step in enumerate(traj.steps):
        if any(c.raw is not None for c in step.tool_calls):
            return k, "unparseable_call"
        if step.answer is not None and not step.answer.strip():
            return k, "empty_step"
        if any(not c.arguments and not c.code for c in step.tool_calls):
            return k, "empty_step"
        if step.tool_calls and not step.responses:
            last = k == len(traj.steps) - 1
            overwritten = traj.ending_note if last else traj.steps[k + 1].note
            if not overwritten:
                return k, "call_without_response"
    return None


def cut_before_bad_step(traj: Trajectory) -> tuple[Trajectory | None, str | None]:
    """The trajectory kept up to its first malformed step (:func:`first_bad_step`), or None when no step comes
    before it; with the kind found. A cut trajectory ends without its final answer: its outcome is ``unfinished``
    and ``extra["has_cut"]`` records where and why."""
    bad = first_bad_step(traj)
    if bad is None:
        return traj, None
    k, kind = bad
    if k == 0:
        return None, kind
    cut = Trajectory(
        id=traj.id,
        question=traj.question,
        steps=traj.steps[:k],
        answer=traj.answer,
        prediction=None,
        termination=traj.termination,
        system=traj.system,
        judgment=None,
        judge_reason=f"cut before step {k + 1} ({kind})",
        source=traj.source,
        ending_note=None,
        dropped_turns=traj.dropped_turns,
        extra={**traj.extra, "has_cut": {"step": k + 1, "kind": kind}},
    )
    return cut, kind


def make_decisions(
    traj: Trajectory,
    alternatives: Sequence[Sequence[Action]],
    seed: int,
    originals: Sequence[Action] | None = None,
) -> list[Decision]:
    """Merge each step's alternatives with the original action and shuffle them (seeded per step).

    ``originals``: the original steps as options (the action, rendered like the alternatives); default: the
    recorded actions without their reasoning. The expert's step verbatim goes to :attr:`Decision.expert`.
    """
    if len(alternatives) != len(traj.steps):
        raise ValueError(f"{traj.id}: {len(alternatives)} alternative lists for {len(traj.steps)} steps")
    if originals is not None and len(originals) != len(traj.steps):
        raise ValueError(f"{traj.id}: {len(originals)} originals for {len(traj.steps)} steps")
    out = []
    for k, (step, alts) in enumerate(zip(traj.steps, alternatives)):
        orig = originals[k] if originals is not None else Action.from_step(step).with_think("")
        options = [*alts, orig]
        order = list(range(len(options)))
        step_rng(seed, traj.id, k, "shuffle").shuffle(order)
        chosen = order.index(len(alts))
        out.append(Decision([options[i] for i in order], chosen, list(step.responses), step.note, step.verbatim()))
    return out


@dataclass
class Part:
    """A contiguous range of decision steps forming one sample."""

    start: int
    """First decision step (0-based)."""
    end: int
    """One past the last decision step."""
    history_start: int
    """First step replayed without options (``== start`` when there is no history)."""
    oversize: bool = False
    """True when a single step alone exceeds the token limit."""


def plan_parts(
    prefix: int, history: Sequence[int], blocks: Sequence[int], last_block: int, cfg: HasConfig
) -> list[Part]:
    """Greedy split of steps into parts under ``cfg.max_tokens`` given per-piece token counts.

    ``prefix``: question turn; ``history[k]``: step k replayed without options; ``blocks[k]``: step k with its
    options; ``last_block``: the last step with the decision appended. Token counts add up exactly because
    every piece starts and ends at a special token.
    """
    n = len(blocks)
    budget = int(cfg.max_tokens * cfg.history_fraction)
    parts: list[Part] = []
    s = 0
    cost = [blocks[i] if i < n - 1 else last_block for i in range(n)]
    while s < n:
        hs, h = s, 0
        while hs > 0 and h + history[hs - 1] <= budget:
            hs -= 1
            h += history[hs]
        if prefix + h + cost[s] > cfg.max_tokens:
            hs, h = s, 0  # drop the replay before giving a step a part of its own
        total, e = prefix + h, s
        while e < n and (e == s or total + cost[e] <= cfg.max_tokens):
            total += cost[e]
            e += 1
        parts.append(Part(s, e, hs, oversize=total > cfg.max_tokens))
        s = e
    return parts


def render_samples(
    traj: Trajectory,
    decisions: Sequence[Decision],
    count_tokens: Callable[[str], int],
    cfg: HasConfig,
    backend: str,
) -> list[dict[str, Any]]:
    """Render a judged trajectory's decisions as one or more ``{"id", "type", "text", "meta"}`` samples."""
    outcome = traj.outcome
    if outcome is None:
        raise ValueError(f"trajectory {traj.id} has no judgment")
    steps = [d.as_step() for d in decisions]
    chosen = [d.expert for d in decisions]  # replayed history shows the expert's step as written
    n = len(steps)
    # Token counts of the pieces add up exactly to the count of the rendered text (every piece starts and ends
    # at a special token), so each piece is encoded once; replayed history is only counted when splitting.
    prefix = count_tokens(serialize_prefix(traj.question, traj.system))
    blocks = [count_tokens(has_step_turns(st, k + 1)) for k, st in enumerate(steps[:-1])]
    decision = decision_text(outcome)
    last_block = count_tokens(has_step_turns(steps[-1], n) + has_closing(outcome, traj.ending_note))
    if prefix + sum(blocks) + last_block <= cfg.max_tokens:
        plain = [0] * n
        parts = [Part(0, n, 0)]
    else:
        blocks.append(count_tokens(has_step_turns(steps[-1], n)))
        plain = [
            count_tokens(has_history_turns(chosen[k], s.responses or None, s.note)) for k, s in enumerate(traj.steps)
        ]
        parts = plan_parts(prefix, plain, blocks, last_block, cfg)
    out = []
    for i, part in enumerate(parts):
        final = i == len(parts) - 1
        history = [{"action": chosen[k], "response": traj.steps[k].responses or None,
                    "note": traj.steps[k].note}
                   for k in range(part.history_start, part.start)]  # fmt: skip
        text = serialize_has(
            traj.question,
            steps[part.start : part.end],
            outcome if final else None,
            history,
            traj.system,
            first_step=part.start + 1,
            ending_note=traj.ending_note if final else None,
        )
        meta = {
            "trajectory_id": traj.id,
            "source": traj.source,
            "part": i,
            "num_parts": len(parts),
            "history_steps": [part.history_start, part.start],
            "steps": [
                {
                    "step": k + 1,
                    "options": steps[k]["options"],
                    "sources": [o.source for o in decisions[k].options],
                    "original_index": decisions[k].original_index,
                    "chosen_index": decisions[k].original_index,
                }
                for k in range(part.start, part.end)
            ],
            "judgment": traj.judgment,
            "outcome": outcome,
            "judge": traj.judge_reason,
            "decision": decision if final else None,
            "termination": traj.termination,
            "dropped_turns": traj.dropped_turns,
            "candidates": cfg.candidates,
            "seed": cfg.seed,
            "backend": backend,
            "synthetic_template": any(
                src.startswith("template") for d in decisions for src in (o.source for o in d.options)
            ),
            "template_fills": sum(o.source.startswith("template") for d in decisions for o in d.options),
            "cut": traj.extra.get("has_cut"),
            "has_format": HAS_FORMAT,
            "format_version": FORMAT_VERSION,
            "tokens": prefix
            + sum(plain[part.history_start : part.start])
            + sum(blocks[part.start : part.end - 1])
            + (last_block if final else blocks[part.end - 1]),
            "oversize": part.oversize,
        }
        out.append({"id": f"{traj.id}:p{i}/{len(parts)}", "type": "has", "text": text, "meta": meta})
    return out


def length_histogram(lengths: Sequence[int]) -> dict[str, int]:
    """Counts of sample lengths in power-of-two token bins (``<=512`` ... ``<=131072``, ``>131072``)."""
    hist = {f"<={b}": 0 for b in LENGTH_BINS}
    hist[f">{LENGTH_BINS[-1]}"] = 0
    for n in lengths:
        key = next((f"<={b}" for b in LENGTH_BINS if n <= b), f">{LENGTH_BINS[-1]}")
        hist[key] += 1
    return hist
