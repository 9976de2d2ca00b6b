"""The guard against decision collapse: :class:`CollapseGuard` rejects candidates that duplicate the original or
each other (same tool and normalized arguments, content-word Jaccard similarity >= a threshold, near-identical text)
and measures the diversity of the accepted option sets."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.synthesis.has.action import Action


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


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
