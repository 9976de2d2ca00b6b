"""Running a step list in a terminal, shared by ``megatron-agentic demo`` and ``megatron-agentic experiment``:
signals stop the running step like Ctrl-C, a failed step is reported with its log's tail and root-cause lines, the
summary line counts run and reused steps, and the last line names the report."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from megatron_agentic.demo.pipeline import Runner, Step, StepFailed

_ERROR = re.compile(r"\b\w*(Error|Exception)\b: |^error: ", re.IGNORECASE)


def error_lines(log: Path, limit: int = 5) -> list[str]:
    """The last distinct ``...Error: message`` lines of a log (a failing rank's root cause in a torchrun log)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in reversed(lines):
        text = line.strip()
        if _ERROR.search(text) and "ChildFailedError" not in text and text not in found:
            found.append(text if len(text) <= 400 else text[:400] + " ...")
        if len(found) >= limit:
            break
    return found[::-1]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_in_console(runner: Runner, steps: Sequence[Step], console: Console) -> int:
    """Run ``steps``; 0 when all succeeded, 1 when one failed (reported), 130 when interrupted (rerun continues).

    A SIGTERM/SIGHUP (CI timeout, closed terminal) stops the running step's process group like Ctrl-C does,
    instead of leaving its training ranks running."""
    start = time.monotonic()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        results = runner.run(list(steps))
    except StepFailed as exc:
        console.print(f"\n[bold red]FAILED[/bold red] at step [bold]{exc.step}[/bold]: {exc.reason}")
        if exc.tail:
            console.print("[dim]last lines of the log:[/dim]")
            console.print(exc.tail.rstrip(), markup=False, highlight=False)
        errors = error_lines(exc.log)
        if errors:
            console.print("[dim]errors reported in the log:[/dim]")
            console.print("\n".join(errors), markup=False, highlight=False)
        console.print(f"full log: {exc.log}")
        console.print(f"Fix the cause and rerun the same command: finished steps are reused ({runner.ctx.workdir}).")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/yellow]: rerun the same command to continue where it stopped")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ran = sum(1 for r in results if not r.cached)
    console.print(f"{len(results)} steps ({ran} run, {len(results) - ran} reused) in {time.monotonic() - start:.1f}s")
    print(f"Report: {runner.ctx.path('report.md')}")
    sys.stdout.flush()
    return 0
