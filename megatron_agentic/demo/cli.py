"""Command line of the demo: ``megatron-agentic demo [--workdir DIR] [--preset full|small] [--fresh] ...``."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from megatron_agentic.demo.config import PRESETS, get_preset
from megatron_agentic.demo.pipeline import WORKDIR_MARKER, DemoContext, Runner, Step, StepFailed, prepare_workdir
from megatron_agentic.demo.steps import build_steps


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-agentic demo",
        description=(
            "Run the whole Agentic CPT pipeline end to end on CPU: Wikipedia corpus, knowledge memory, FAS and "
            "HAS synthesis, Qwen3 tokenization, stage blends, two-stage tiny-moe training (expert parallel, then "
            "ring context parallel at 4x the context) and held-out evaluation, with a report. Reruns reuse "
            "finished steps."
        ),
    )
    parser.add_argument("--workdir", default="runs/demo", help="where everything is written (default: runs/demo)")
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="sizes: full (make demo, a few minutes on 2 cores) or small (the CI version); default: the preset the "
        "workdir was made with, else full",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the workdir's previous results and start over")
    parser.add_argument(
        "--llm-url",
        action="append",
        default=[],
        metavar="URL",
        help="OpenAI-compatible server (vLLM, SGLang) for synthesis; repeatable. Default: offline backends",
    )
    parser.add_argument("--model", default=None, help="model name on the --llm-url server(s)")
    parser.add_argument("--list", action="store_true", help="list the steps and whether they are done, then exit")
    return parser


def _list_steps(runner: Runner, steps: list[Step], console: Console) -> None:
    table = Table(title="demo steps")
    for col in ("#", "step", "what", "status"):
        table.add_column(col)
    for i, step in enumerate(steps, 1):
        marker = runner.marker(step)
        status = "not run"
        if marker.exists():
            status = f"done ({json.loads(marker.read_text(encoding='utf-8'))['seconds']:.1f}s)"
        table.add_row(str(i), step.name, step.title, status)
    console.print(table)


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``megatron-agentic demo``; returns 0 when every step succeeded."""
    args = _parser().parse_args(argv)
    console = Console()
    if args.preset is None:
        marker = Path(args.workdir) / WORKDIR_MARKER
        args.preset = json.loads(marker.read_text(encoding="utf-8"))["preset"] if marker.exists() else "full"
    try:
        ctx = DemoContext(
            workdir=Path(args.workdir), config=get_preset(args.preset), llm_urls=args.llm_url, model=args.model
        )
    except ValueError as exc:
        console.print(f"[red]megatron-agentic demo: {exc}[/red]")
        return 2
    from megatron_agentic.demo.report import report_step

    steps = build_steps(ctx.config) + [report_step()]
    runner = Runner(ctx, console=console)
    if args.list:
        _list_steps(runner, steps, console)
        return 0
    try:
        prepare_workdir(ctx, fresh=args.fresh)
    except ValueError as exc:
        console.print(f"[red]megatron-agentic demo: {exc}[/red]")
        return 2
    mode = f"LLM server {', '.join(ctx.llm_urls)} ({ctx.model})" if ctx.online else "offline template backends"
    console.print(f"[bold]megatron-agentic demo[/bold]: preset {ctx.config.name}, {mode}, workdir {ctx.workdir}")
    start = time.monotonic()
    # A SIGTERM/SIGHUP (CI timeout, closed terminal) stops the running step's process group like Ctrl-C does,
    # instead of leaving its training ranks running.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        results = runner.run(steps)
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
        console.print(f"Fix the cause and rerun the same command: finished steps are reused ({ctx.workdir}).")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/yellow]: rerun the same command to continue where it stopped")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ran = sum(1 for r in results if not r.cached)
    console.print(f"{len(results)} steps ({ran} run, {len(results) - ran} reused) in {time.monotonic() - start:.1f}s")
    print(f"Report: {ctx.path('report.md')}")
    sys.stdout.flush()
    return 0
