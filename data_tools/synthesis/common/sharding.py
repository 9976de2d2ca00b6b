"""Stable sharding of work items for Slurm array jobs and multi-node runs."""

from __future__ import annotations

import argparse
import hashlib
import os


def shard_of(key: str, num_shards: int) -> int:
    """Return the shard (``0 <= shard < num_shards``) of ``key``; stable across processes, machines and versions."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard-index`` and ``--num-shards`` (defaulting to the Slurm array task id/count when set)."""
    group = parser.add_argument_group("sharding")
    group.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="this worker's shard (default: $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN, else 0)",
    )
    group.add_argument(
        "--num-shards", type=int, default=None, help="total shards (default: $SLURM_ARRAY_TASK_COUNT, else 1)"
    )


def shard_from_args(args: argparse.Namespace) -> tuple[int, int]:
    """Resolve ``(shard_index, num_shards)`` from parsed args and the Slurm environment; validates the range."""
    index = args.shard_index
    num = args.num_shards
    if index is None:
        task = _env_int("SLURM_ARRAY_TASK_ID")
        index = 0 if task is None else task - (_env_int("SLURM_ARRAY_TASK_MIN") or 0)
    if num is None:
        num = _env_int("SLURM_ARRAY_TASK_COUNT") or 1
    if num < 1 or not 0 <= index < num:
        raise SystemExit(f"invalid shard: --shard-index {index} must be in [0, --num-shards {num})")
    return index, num


def shard_suffix(index: int, num: int) -> str:
    """File-name suffix for a shard's outputs, e.g. ``shard-00003-of-00008`` (empty string for one shard)."""
    return "" if num == 1 else f"shard-{index:05d}-of-{num:05d}"
