"""``megatron-agentic train --config FILE.yaml [--set key=value ...]`` (launch with ``torchrun`` for several ranks).

Examples::

    megatron-agentic train --config examples/configs/tiny_moe.yaml
    torchrun --nproc-per-node 2 -m megatron_agentic train --config examples/configs/tiny_moe.yaml \\
        --set parallel.tensor=2 --set train.iters=30 --set log.dir=runs/tp2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from megatron_agentic.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron-agentic train",
        description="Train a Qwen3-MoE model with megatron-core (same command on CPU/gloo and GPU/NCCL).",
    )
    p.add_argument("--config", help="YAML config (schema: docs/training.md); defaults when omitted")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field (repeatable; later wins), e.g. --set parallel.tensor=2",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--validate-only", action="store_true", help="validate the config for WORLD_SIZE and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.INFO if rank == 0 else logging.WARNING),
        format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:  # the config plus what megatron-core is given on this machine (issue 13)
            print(json.dumps({**cfg.to_dict(), "effective": cfg.effective_settings().as_dict()}, indent=2))
            return 0
        world = int(os.environ.get("WORLD_SIZE", "1"))
        dp = cfg.validate(world)
        if args.validate_only:
            print(f"config OK for world size {world} (data parallel {dp}, {cfg.train.total_iters()} iterations)")
            return 0
    except ConfigError as exc:
        print(f"megatron-agentic train: config error: {exc}", file=sys.stderr)
        return 2
    from megatron_agentic.training.loop import train

    try:
        summary = train(cfg)
    except ConfigError as exc:
        print(f"megatron-agentic train: config error: {exc}", file=sys.stderr)
        return 2
    if rank == 0 and not summary.get("exited"):
        logging.getLogger("megatron_agentic.train").info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
