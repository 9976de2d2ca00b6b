"""``megatron-agentic train --config FILE.yaml [--set key=value ...]`` (launch with ``torchrun`` for several ranks).

Examples::

    megatron-agentic train --config examples/configs/tiny_moe.yaml
    torchrun --nproc-per-node 2 -m megatron_agentic train --config examples/configs/tiny_moe.yaml \\
        --set parallel.tensor=2 --set train.iters=30 --set log.dir=runs/tp2

Exit codes: 0 finished, 1 error (incl. too many skipped steps), 2 configuration or input error found before any
rank starts (retrying cannot help), 3 stopped for SIGTERM/SIGUSR1, the Slurm walltime or a stop file after saving a
checkpoint at the step reached (rerun the same command to continue), 5 checkpoint.dir locked by another live run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from data_tools.common.atomic import atomic_write_json
from megatron_agentic.config import (
    ConfigError,
    TrainingConfig,
    load_blend_file,
    load_config,
    parse_blend,
)
from megatron_agentic.logsetup import configure_logging, open_log_file
from megatron_agentic.training.stop import EXIT_CONFIG, EXIT_LOCKED, EXIT_STATUS_ENV, EXIT_STOPPED


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
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="validate the config for WORLD_SIZE, check that blend prefixes and the pretrained checkpoint exist, exit",
    )
    p.add_argument(
        "--no-file-checks",
        action="store_true",
        help="with --validate-only: check the layout only, not that data and checkpoint files exist",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def preflight(cfg: TrainingConfig) -> list[str]:
    """Problems with the files a run needs (blend prefixes, eval sets, pretrained checkpoint); empty when fine."""
    problems = []
    prefixes: list[tuple[str, str]] = []
    try:
        if cfg.data.blend_file is not None:
            prefixes += [("data.blend_file", p) for p in parse_blend(load_blend_file(cfg.data.blend_file))[0]]
        if cfg.data.blend is not None:
            prefixes += [("data.blend", p) for p in parse_blend(cfg.data.blend)[0]]
    except ConfigError as exc:
        problems.append(str(exc))
    prefixes += [(f"data.eval_sets.{name}", p) for name, p in cfg.data.eval_sets.items()]
    if cfg.data.sft:  # SFT datasets also need their loss mask (data_tools.synthesis.sft)
        prefixes += [(where, prefix + "_loss_mask") for where, prefix in prefixes]
    for where, prefix in prefixes:
        missing = [ext for ext in (".bin", ".idx") if not Path(prefix + ext).is_file()]
        if missing:
            problems.append(f"{where}: {prefix}{'/'.join(missing)} not found")
    if cfg.checkpoint.pretrained is not None and ckpt_latest(cfg.checkpoint.dir) is None:
        from megatron_agentic.training.checkpoint import resolve_checkpoint_dir

        try:
            resolve_checkpoint_dir(cfg.checkpoint.pretrained)
        except (FileNotFoundError, RuntimeError) as exc:
            problems.append(f"checkpoint.pretrained: {exc}")
    return problems


def ckpt_latest(root: str | None) -> int | None:
    """The latest complete iteration under ``root`` (None when none or unreadable)."""
    from megatron_agentic.training.checkpoint import latest_iteration

    try:
        return latest_iteration(root)
    except RuntimeError:
        return None


def write_exit_status(
    cfg: TrainingConfig | None, code: int, reason: str, iteration: int | None = None, own_dirs: bool = True
) -> None:
    """Rank 0 records how the run ended in ``LOG_DIR/exit_status.json`` (read by the Slurm scripts, since
    torchrun reports 1 for any failed rank) and in ``$MEGATRON_AGENTIC_EXIT_STATUS`` when set (the launcher's
    per-job copy). ``own_dirs=False`` (this run lost the checkpoint lock): only the per-job copy is written."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    status = {"code": code, "reason": reason, "iteration": iteration}
    targets = [Path(p) for p in [os.environ.get(EXIT_STATUS_ENV, "")] if p]
    if cfg is not None and own_dirs:
        targets.append(Path(cfg.log.dir) / "exit_status.json")
    for target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(target, status, sort_keys=True, ensure_ascii=True)
        except OSError as exc:
            logging.getLogger("megatron_agentic.train").warning("cannot write %s: %s", target, exc)


def start_checks(cfg: TrainingConfig, files: bool = True) -> None:
    """Everything that can be checked before a process group exists: directories, the checkpoint lock, the latest
    checkpoint against the config and layout, and (``files``) the data and pretrained files. Raises ConfigError
    (all problems on one line) or LockedError."""
    from data_tools.common.lock import LockedError
    from megatron_agentic.training import preflight as checks

    holder = checks.lock_holder(cfg.checkpoint.dir)
    if holder:
        raise LockedError(holder)
    problems = checks.start_problems(cfg) + (preflight(cfg) if files else [])
    if problems:
        raise ConfigError("; ".join(problems))


def _owns_dirs(cfg: TrainingConfig | None) -> bool:
    """False when another live run holds ``checkpoint.dir`` (its ``log.dir`` files are not this run's to write)."""
    from megatron_agentic.training.preflight import lock_holder

    return cfg is not None and not lock_holder(cfg.checkpoint.dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code: 0 done, 1 error, 2 configuration error (do not retry),
    3 stopped for a signal / the walltime after saving a checkpoint (rerun to continue)."""
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    configure_logging(rank, verbose=args.verbose)  # project lines on the console, the rest in LOG_DIR's log file
    cfg = None
    from data_tools.common.lock import LockedError

    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:  # the config plus what megatron-core is given on this machine (issue 13)
            print(json.dumps({**cfg.to_dict(), "effective": cfg.effective_settings().as_dict()}, indent=2))
            return 0
        world = int(os.environ.get("WORLD_SIZE", "1"))
        dp = cfg.validate(world)
        if args.validate_only:
            if not args.no_file_checks:
                start_checks(cfg)
            print(f"config OK for world size {world} (data parallel {dp}, {cfg.train.total_iters()} iterations)")
            return 0
        # Before any process group: a bad directory, lock or checkpoint costs seconds, not minutes. Every rank checks
        # the lock before rank 0 takes it: rank 0 takes it only after the process group's rendezvous, which waits
        # for every rank to get past this line.
        start_checks(cfg)
    except ConfigError as exc:
        print(f"megatron-agentic train: config error: {exc}", file=sys.stderr)
        write_exit_status(cfg, EXIT_CONFIG, f"config error: {exc}", own_dirs=_owns_dirs(cfg))
        return EXIT_CONFIG
    except LockedError as exc:
        print(f"megatron-agentic train: {exc}", file=sys.stderr)
        write_exit_status(cfg, EXIT_LOCKED, str(exc), own_dirs=False)
        return EXIT_LOCKED
    from megatron_agentic.training.guard import TooManySkippedSteps
    from megatron_agentic.training.loop import train

    open_log_file(cfg.log.dir, rank)
    try:
        summary = train(cfg)
    except ConfigError as exc:
        print(f"megatron-agentic train: config error: {exc}", file=sys.stderr)
        write_exit_status(cfg, EXIT_CONFIG, f"config error: {exc}")
        return EXIT_CONFIG
    except LockedError as exc:  # lost a race for the lock after the start checks: the winner's dirs stay untouched
        print(f"megatron-agentic train: {exc}", file=sys.stderr)
        write_exit_status(cfg, EXIT_LOCKED, str(exc), own_dirs=False)
        return EXIT_LOCKED
    except TooManySkippedSteps as exc:
        print(f"megatron-agentic train: {exc}", file=sys.stderr)
        write_exit_status(cfg, 1, str(exc))
        return 1
    except BaseException as exc:  # every exit path leaves an exit status (1: the launcher may retry)
        write_exit_status(cfg, 1, f"{type(exc).__name__}: {exc}"[:500])
        raise
    if summary.get("exit_code") == EXIT_STOPPED:
        write_exit_status(cfg, EXIT_STOPPED, f"saved for {summary.get('reason')}", summary.get("final_step"))
        return EXIT_STOPPED
    if rank == 0 and not summary.get("exited"):
        logging.getLogger("megatron_agentic.train").info("summary: %s", json.dumps(summary))
        write_exit_status(cfg, 0, "completed", summary.get("final_step"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
