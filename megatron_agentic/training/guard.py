"""NaN / loss-spike guard: decides whether an optimizer step is applied or skipped.

A step is skipped (optimizer not stepped, LR scheduler not advanced, data consumed) when its loss or global
gradient norm is not finite, or when its loss exceeds ``spike_factor`` x the median loss of the last
``window`` applied steps. The decision uses values that are identical on every rank (loss all-reduced over
data-parallel ranks, global grad norm), so all ranks skip together. After ``max_in_a_row`` consecutive
skips the run stops with :class:`TooManySkippedSteps`.
"""

from __future__ import annotations

import collections
import math
import statistics
from dataclasses import dataclass


class TooManySkippedSteps(RuntimeError):
    """Raised when more than ``train.max_skipped_in_a_row`` consecutive steps were skipped."""


@dataclass
class StepDecision:
    """The guard's decision on one step."""

    apply: bool
    """Step the optimizer."""
    reason: str = ""
    """Why the step is skipped ("" when applied)."""


class StepGuard:
    """Tracks recent good losses and consecutive skips."""

    def __init__(self, spike_factor: float | None, window: int, max_in_a_row: int) -> None:
        self.spike_factor = spike_factor
        self.max_in_a_row = max_in_a_row
        self.recent: collections.deque[float] = collections.deque(maxlen=window)
        self.min_history = min(5, window)
        self.in_a_row = 0
        self.total_skipped = 0

    def check_loss(self, loss: float) -> StepDecision:
        """Decision from the step's loss alone (before the gradient norm is known)."""
        if not math.isfinite(loss):
            return StepDecision(False, f"non-finite loss {loss}")
        if self.spike_factor is not None and len(self.recent) >= self.min_history:
            median = statistics.median(self.recent)
            if median > 0 and loss > self.spike_factor * median:
                return StepDecision(
                    False, f"loss spike {loss:.4g} > train.spike_factor {self.spike_factor} x median {median:.4g}"
                )
        return StepDecision(True)

    def check_grad_norm(self, grad_norm: float | None) -> StepDecision:
        """Decision from the global gradient norm (None: not computed, accepted)."""
        if grad_norm is not None and not math.isfinite(grad_norm):
            return StepDecision(False, f"non-finite gradient norm {grad_norm}")
        return StepDecision(True)

    def record(self, step: int, loss: float, decision: StepDecision) -> None:
        """Account for the step; raises TooManySkippedSteps past the limit."""
        if decision.apply:
            self.in_a_row = 0
            self.recent.append(loss)
            return
        self.in_a_row += 1
        self.total_skipped += 1
        if self.in_a_row > self.max_in_a_row:
            raise TooManySkippedSteps(
                f"step {step}: {self.in_a_row} steps skipped in a row (last: {decision.reason}); "
                f"train.max_skipped_in_a_row={self.max_in_a_row}: stopping. The last checkpoint holds only applied "
                "steps; lower train.lr, check the data around this step, or raise train.spike_factor."
            )
