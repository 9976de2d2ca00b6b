"""``megatron-agentic sft-eval``: masked SFT loss of any checkpoint on any SFT datasets (an eval-only run).

Examples::

    megatron-agentic sft-eval --config examples/configs/tiny_moe.yaml --checkpoint runs/sft/ckpt \\
        --data react=data/react_heldout --data chat=data/chat_heldout --output runs/sft/eval.json
    torchrun --nproc-per-node 2 -m megatron_agentic sft-eval --config CFG --checkpoint DIR --data PREFIX \\
        --set parallel.expert=2

The run is ``megatron-agentic train`` with ``train.iters=0``, ``checkpoint.pretrained=DIR`` (any layout: the
checkpoint is resharded on load), ``data.sft=true`` and every ``--data`` set as an eval set, evaluated for
``ceil(conversations / global_batch_size)`` batches so that each conversation counts exactly once: the loss is the
mean over all target (assistant) tokens of the set, the quantity training minimises. ``--checkpoint none``
evaluates the freshly initialised model (``train.seed``). Writes ``--output`` (default
``LOG_DIR/sft_eval.json``) as ``{"checkpoint", "sets": {name: {"prefix", "conversations", "loss"}}}`` and prints
it. Exit codes as ``train``: 0 done, 1 error, 2 configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from data_tools.common.atomic import atomic_write_json
from megatron_agentic.config import ConfigError, load_config
from megatron_agentic.training.stop import EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron-agentic sft-eval",
        description="Masked SFT loss (assistant tokens only) of a checkpoint on SFT datasets from `data sft`.",
    )
    p.add_argument("--config", help="training YAML the checkpoint was made with (model and layout)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (or iter_* dir), or 'none'")
    p.add_argument("--data", action="append", required=True, metavar="[NAME=]PREFIX", help="SFT dataset (repeatable)")
    p.add_argument("--output", help="JSON result (default: LOG_DIR/sft_eval.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def parse_sets(items: list[str]) -> dict[str, str]:
    """``NAME=PREFIX`` or ``PREFIX`` (named after the file) -> ``{name: prefix}``; duplicate names are refused."""
    sets: dict[str, str] = {}
    for item in items:
        name, sep, prefix = item.partition("=")
        if not sep:
            name, prefix = Path(item).name, item
        if not name or not prefix:
            raise ConfigError(f"--data {item!r}: expected NAME=PREFIX or PREFIX")
        if name in sets:
            raise ConfigError(f"--data: set name {name!r} given twice")
        sets[name] = prefix
    return sets


def eval_config(args: argparse.Namespace):
    """The eval-only :class:`~megatron_agentic.config.TrainingConfig` of ``args`` and its ``{name: prefix}``."""
    from megatron_agentic.training.sft import check_sft_prefix, conversations_in

    sets = parse_sets(args.data)
    for name, prefix in sets.items():
        check_sft_prefix(prefix, f"--data {name}")
    cfg = load_config(args.config, args.overrides)
    counts = {name: conversations_in(prefix) for name, prefix in sets.items()}
    gbs = cfg.train.global_batch_size
    first = next(iter(sets.values()))
    pretrained = None if args.checkpoint == "none" else args.checkpoint
    overrides = [
        *args.overrides,
        "train.iters=0",
        "train.train_tokens=null",
        f"train.eval_iters={max(1, math.ceil(max(counts.values()) / gbs))}",
        "data.sft=true",
        f"data.blend=[{json.dumps(first)}]",
        "data.blend_file=null",
        "data.split=100,0,0",
        f"data.eval_sets={json.dumps(sets)}",
        "checkpoint.dir=null",
        f"checkpoint.pretrained={'null' if pretrained is None else json.dumps(pretrained)}",
        "checkpoint.pretrained_load_optimizer=false",
        "checkpoint.pretrained_load_scheduler=false",
        "log.tensorboard=false",
    ]
    return load_config(args.config, overrides), sets, counts


def main(argv: list[str] | None = None) -> int:
    """Entry point (see module doc)."""
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.INFO if rank == 0 else logging.WARNING),
        format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg, sets, counts = eval_config(args)
        cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
        from megatron_agentic.train import preflight

        problems = preflight(cfg)
        if problems:
            raise ConfigError("; ".join(problems))
        from megatron_agentic.training.loop import train

        summary = train(cfg)
    except ConfigError as exc:
        print(f"megatron-agentic sft-eval: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if rank != 0:
        return 0
    losses = summary.get("eval") or {}
    result = {
        "checkpoint": args.checkpoint,
        "sets": {
            name: {"prefix": prefix, "conversations": counts[name], "loss": losses.get(name)}
            for name, prefix in sets.items()
        },
    }
    out = Path(args.output) if args.output else Path(cfg.log.dir) / "sft_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, sort_keys=True, ensure_ascii=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
