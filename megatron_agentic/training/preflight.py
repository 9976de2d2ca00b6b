"""Checks made before any process group or GPU starts (``train --validate-only`` and the start of ``train``).

A problem found here costs a second instead of the minutes a cluster job needs to start every rank, build the model
and only then fail (and be retried ``MAX_RESTARTS`` times). :func:`start_problems` returns one line per problem:

- ``log.dir`` / ``checkpoint.dir``: a path that is a file, or a directory that cannot be created or written;
- the checkpoint directory's lock: held by another live run (:func:`lock_holder`; reported separately, since the
  run that loses the lock must write nothing into the winner's directories);
- the latest checkpoint against this config: incompatible config changes (:mod:`~megatron_agentic.training.resume`)
  and an optimizer format that cannot be loaded into the planned tensor/pipeline/expert/context layout.

Only read-only probes are made: no directory is created and nothing is written.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from data_tools.common.lock import LOCK_NAME, holder_is_stale
from megatron_agentic.config import TrainingConfig


def directory_problem(field: str, path: str | os.PathLike | None) -> str:
    """Why ``path`` cannot be used (created if missing, written) as the directory ``field`` ("" when it can)."""
    if path is None:
        return ""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe == path:
            return f"{field} {path}: is a file, not a directory"
        return f"{field} {path}: cannot be created: {probe} is a file"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{field} {path}: {probe} is not writable (permission denied)"
    return ""


def lock_holder(checkpoint_dir: str | os.PathLike | None, stale_after_s: float = 300.0) -> str:
    """A one-line description of the live run holding ``checkpoint_dir``'s lock ("" when free or stale)."""
    if checkpoint_dir is None:
        return ""
    path = Path(checkpoint_dir) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as exc:
        return f"checkpoint.dir {checkpoint_dir}: cannot read its lock {path}: {exc.strerror}"
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = None
    if not isinstance(holder, dict):
        return "" if age > stale_after_s else f"checkpoint.dir {checkpoint_dir}: locked ({path} is being written)"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "job": os.environ.get("SLURM_JOB_ID")}
    if holder_is_stale(holder, age, stale_after_s, me):
        return ""
    job = f" (Slurm job {holder['job']})" if holder.get("job") else ""
    return (
        f"checkpoint.dir {checkpoint_dir} is locked by pid {holder.get('pid')} on host {holder.get('host')}{job}, "
        f"heartbeat {age:.0f} s ago: another run is using it; wait for it or choose another checkpoint.dir"
    )


def checkpoint_problems(cfg: TrainingConfig) -> list[str]:
    """Whether the latest checkpoint in ``checkpoint.dir`` can be resumed with this config and layout."""
    from megatron_agentic.config import ConfigError
    from megatron_agentic.training import checkpoint as ckpt
    from megatron_agentic.training import data_order, resume

    root = cfg.checkpoint.dir
    try:
        latest = ckpt.latest_iteration(root)
    except RuntimeError as exc:
        return [f"checkpoint.dir: {exc}"]
    if latest is None:
        return []
    path = ckpt.checkpoint_path(root, latest)
    try:
        saved = ckpt.read_common(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is reported, whatever the reader raised
        return [f"checkpoint.dir: cannot read {path}: {type(exc).__name__}: {exc}"]
    problems = []
    try:
        resume.check_config_compatible(saved.get("config"), cfg.to_dict(), str(path))
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        data_order.resolve_build(saved.get("data_build"), cfg, 1, str(path))
    except ConfigError as exc:
        problems.append(str(exc))
    if cfg.checkpoint.load_optimizer:
        p = cfg.parallel
        planned = {"tp": p.tensor, "pp": p.pipeline, "ep": p.expert, "cp": p.context}
        try:
            ckpt.optimizer_format_for_load(saved.get("optimizer_format"), saved.get("layout"), planned)
        except RuntimeError as exc:
            problems.append(f"{path}: {exc}")
    return problems


def start_problems(cfg: TrainingConfig) -> list[str]:
    """Directory and checkpoint problems of ``cfg`` (one line each; empty when the run can start)."""
    problems = [directory_problem("log.dir", cfg.log.dir), directory_problem("checkpoint.dir", cfg.checkpoint.dir)]
    problems = [p for p in problems if p]
    if not problems and cfg.checkpoint.dir is not None:
        problems += checkpoint_problems(cfg)
    return problems
