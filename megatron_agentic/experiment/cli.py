"""Command line: ``megatron-agentic experiment --preset small|full --workdir DIR [--config FILE] [--fresh]``.

Writes ``DIR/report.md``, ``DIR/report.json`` and ``DIR/plots/*.png``; a rerun skips finished steps (one
done-marker per step under ``DIR/state``, logs under ``DIR/logs``). Exit codes: 0 done, 1 a step failed,
2 bad arguments or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from megatron_agentic.demo.console import run_in_console
from megatron_agentic.demo.pipeline import WORKDIR_MARKER, DemoContext, Runner, prepare_workdir
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
    return run_in_console(Runner(ctx, console=console), steps, console)
