"""Rich progress bars for the synthesis tools: done/total, ETA, items/s, LLM tokens/s and failure counts.

Usage::

    with SynthesisProgress("fas", total=n, unit="item", stats=client.stats) as bar:
        ...
        bar.advance(1, failed=k)

Shown on stderr when it is a terminal (``enabled=None``), always with ``enabled=True``, never with ``False``.
Tokens/s and LLM failures are read from an :class:`~data_tools.synthesis.llm.client.LLMStats` when one is given.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def count_lines(path: str) -> int | None:
    """Number of lines of an uncompressed file (fast, binary); ``None`` for compressed or missing files."""
    if path.endswith((".gz", ".zst")):
        return None
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


class SynthesisProgress:
    """A one-task rich progress bar with throughput, token rate and failures (see the module docstring)."""

    def __init__(
        self,
        desc: str,
        total: int | None,
        *,
        unit: str = "item",
        enabled: bool | None = None,
        initial: int = 0,
        stats: Any | None = None,
        console: Console | None = None,
    ) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.stats = stats
        self.unit = unit
        self.failed = 0
        self._t0 = time.monotonic()
        self._initial = initial
        self._tokens0 = self._tokens()
        self._progress: Progress | None = None
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[rates]}"),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(desc, total=total, completed=initial, rates="")
            self._progress.start()

    def _tokens(self) -> int:
        if self.stats is None:
            return 0
        return int(self.stats.prompt_tokens + self.stats.completion_tokens)

    def rates(self, done: int) -> str:
        """The text after the bar: ``12.3 item/s, 4,567 tok/s, 2 failed requests, 1 failed items``."""
        dt = max(1e-9, time.monotonic() - self._t0)
        parts = [f"{(done - self._initial) / dt:.1f} {self.unit}/s"]
        if self.stats is not None:
            parts.append(f"{(self._tokens() - self._tokens0) / dt:,.0f} tok/s")
            parts.append(f"{sum(self.stats.failures.values())} failed requests")
        plural = self.unit[:-1] + "ies" if self.unit.endswith("y") else self.unit + "s"
        parts.append(f"{self.failed} failed {plural}")
        return ", ".join(parts)

    def advance(self, n: int = 1, failed: int = 0) -> None:
        """Count ``n`` more finished units, ``failed`` of which failed."""
        self.failed += failed
        if self._progress is not None:
            task = self._progress.tasks[0]
            self._progress.update(self._task, advance=n, rates=self.rates(int(task.completed) + n))

    def close(self) -> None:
        """Stop the bar (leaves its last state on screen)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> SynthesisProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
