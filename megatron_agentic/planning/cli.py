"""``megatron-agentic plan`` (also ``python -m megatron_agentic.planner``): flags, JSON and exit codes."""

from __future__ import annotations

import argparse
import json
import sys

from data_tools.common.atomic import atomic_write_text
from megatron_agentic.planning.plan import make_plan
from megatron_agentic.planning.report import render_search, render_table
from megatron_agentic.planning.search import search_layouts
from megatron_agentic.planning.time import ThroughputError, load_throughput
from megatron_agentic.recipes import RecipeError


def main(argv: list[str] | None = None) -> int:
    """``megatron-agentic plan --recipe NAME --nodes N [--gpus-per-node 8] [--json] [--set k=v]``."""
    from megatron_agentic.recipes import list_recipes

    parser = argparse.ArgumentParser(
        prog="megatron-agentic plan", description="Validate a recipe's parallel layout and estimate memory/time."
    )
    parser.add_argument("--recipe", required=True, help=f"recipe name ({', '.join(list_recipes())}) or YAML path")
    parser.add_argument("--nodes", type=int, default=None, help="number of nodes (default: the recipe's plan.nodes)")
    parser.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: plan.gpus_per_node)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--json-output", metavar="FILE", help="also write the JSON plan to FILE (atomically), whatever is printed"
    )
    parser.add_argument(
        "--throughput", metavar="FILE", help="measured throughput table (benchmarks/gpu_acceptance.py) for the MFU"
    )
    parser.add_argument(
        "--lengths",
        metavar="BLEND.json",
        help="`data mix` output whose document-length histograms price per-document attention "
        "(default: the recipe's data.blend_file)",
    )
    parser.add_argument("--search", action="store_true", help="list the layouts that fit on these nodes, best first")
    parser.add_argument("--top", type=int, default=10, help="with --search: how many layouts to list")
    args = parser.parse_args(argv)
    if (args.nodes is not None and args.nodes < 1) or (args.gpus_per_node is not None and args.gpus_per_node < 1):
        parser.error("--nodes and --gpus-per-node must be >= 1")
    try:
        table = load_throughput(args.throughput) if args.throughput else None
    except ThroughputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.search and args.json_output:
        parser.error("--json-output writes one plan; it does not combine with --search")
    if args.search:
        try:
            results = search_layouts(
                args.recipe, args.nodes, args.gpus_per_node, args.overrides, args.top, table, args.lengths
            )
        except RecipeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
        else:
            render_search(results)
        return 0 if results else 1
    try:
        result = make_plan(args.recipe, args.nodes, args.gpus_per_node, args.overrides, table, args.lengths)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result.to_dict(), indent=2)
    if args.json_output:
        atomic_write_text(args.json_output, text + "\n")
    if args.json:
        print(text)
    else:
        render_table(result)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
