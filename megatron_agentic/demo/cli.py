"""Command line of the demo: ``megatron-agentic demo [--workdir DIR] [--preset full|small] [--fresh] ...``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from megatron_agentic.demo.config import PRESETS, get_preset
from megatron_agentic.demo.console import run_in_console
from megatron_agentic.demo.pipeline import WORKDIR_MARKER, DemoContext, Runner, Step, prepare_workdir
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
    return run_in_console(runner, steps, console)
