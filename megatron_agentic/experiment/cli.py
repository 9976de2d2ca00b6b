"""Command line: ``megatron-agentic experiment --preset small|full --workdir DIR [--config FILE] [--fresh]``.

Writes ``DIR/report.md``, ``DIR/report.json`` and ``DIR/plots/*.png``; a rerun skips finished steps (one
done-marker per step under ``DIR/state``, logs under ``DIR/logs``). Exit codes: 0 done, 1 a step failed,
2 bad arguments or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from megatron_agentic.demo.pipeline import WORKDIR_MARKER, DemoContext, Runner, StepFailed, prepare_workdir
from megatron_agentic.experiment.config import PRESETS, load_experiment_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron-agentic experiment",
        description=(
            "Does Agentic CPT help an agent? Base model on general text; CPT arms with the same token budget "
            "(non-CPT, FAS, FAS+HAS) and a CPT-token scaling arm (0.5x/2x); identical SFT of every arm on disjoint "
            "ReAct trajectories over several seeds; held-out masked SFT loss and agent metrics in the offline "
            "environment; report with plots. Reruns reuse finished steps."
        ),
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="sizes: small (the test's, minutes) or full (< 45 min on 2 cores); default small, or the "
                   "workdir's / the --config file's preset")  # fmt: skip
    p.add_argument("--workdir", required=True, help="where everything is written")
    p.add_argument("--config", default=None, help="YAML/JSON overriding preset fields (see docs/experiment.md)")
    p.add_argument("--fresh", action="store_true", help="delete the workdir's previous results and start over")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``megatron-agentic experiment``."""
    args = _parser().parse_args(argv)
    console = Console()
    preset = args.preset
    marker = Path(args.workdir) / WORKDIR_MARKER
    if preset is None and args.config is None and marker.exists():
        preset = json.loads(marker.read_text(encoding="utf-8")).get("preset")
    try:
        cfg = load_experiment_config(preset, args.config)
        ctx = DemoContext(workdir=Path(args.workdir), config=cfg)
        prepare_workdir(ctx, fresh=args.fresh)
    except (ValueError, TypeError) as exc:
        console.print(f"[red]megatron-agentic experiment: {exc}[/red]")
        return 2
    from megatron_agentic.experiment.data import data_steps
    from megatron_agentic.experiment.report import report_step
    from megatron_agentic.experiment.runs import run_steps

    steps = data_steps(cfg) + run_steps(cfg) + [report_step()]
    console.print(
        f"[bold]megatron-agentic experiment[/bold]: preset {cfg.name}, {len(steps)} steps, workdir {ctx.workdir}"
    )
    start = time.monotonic()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        results = Runner(ctx, console=console).run(steps)
    except StepFailed as exc:
        console.print(f"\n[bold red]FAILED[/bold red] at step [bold]{exc.step}[/bold]: {exc.reason}")
        if exc.tail:
            console.print(exc.tail.rstrip(), markup=False, highlight=False)
        console.print(f"full log: {exc.log}; fix the cause and rerun the same command (finished steps are reused)")
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
