"""Output-directory locks: one writer per directory at a time.

``with OutputLock(path):`` creates ``path`` (a ``.lock`` file, e.g. ``OUT/.megatron-agentic.lock``) atomically
(``O_CREAT | O_EXCL``) holding ``{pid, host, job, started}``, and refreshes its modification time every
``heartbeat_s`` seconds from a daemon thread. A second writer fails at once with :class:`LockedError`, whose
message contains ``locked`` and names the holder's pid and host. A lock is stale, and taken over with a
warning, when its holder is gone:

- same host and the pid no longer exists;
- the same Slurm job id (a requeued or relaunched job replaces its earlier incarnation);
- another host and no heartbeat for ``stale_after_s`` seconds (a crashed node).

CLI helpers: :func:`lock_output_dir` / :func:`lock_output_file` (acquire or exit with a message naming the
holder); the lock is released at exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".megatron-agentic.lock"
"""File name of the lock inside a locked directory."""


class LockedError(RuntimeError):
    """Another live process holds the lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _identity() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job": os.environ.get("SLURM_JOB_ID"),
        "started": time.time(),
    }


_HELD: dict[str, OutputLock] = {}
"""Locks this process holds, by path (a CLI ``main()`` called twice in one process, as tests do, re-enters its lock)."""


def holder_is_stale(holder: dict[str, Any], age_s: float, stale_after_s: float, me: dict[str, Any]) -> str:
    """Why a lock held by ``holder`` (heartbeat ``age_s`` seconds old) may be taken over ("" when it may not)."""
    if holder.get("host") == me["host"]:
        if holder.get("pid") == me["pid"]:
            return "held by this process"
        if not isinstance(holder.get("pid"), int) or not _pid_alive(holder["pid"]):
            return f"pid {holder.get('pid')} is not running"
        return ""
    if me.get("job") and holder.get("job") == me["job"]:
        return f"left by an earlier run of Slurm job {me['job']}"
    if age_s > stale_after_s:
        return f"no heartbeat for {age_s:.0f} s"
    return ""


class OutputLock:
    """An exclusive, stale-tolerant lock file (a context manager; also :meth:`acquire` / :meth:`release`)."""

    def __init__(self, path: str | os.PathLike, heartbeat_s: float = 30.0, stale_after_s: float = 300.0) -> None:
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._me = _identity()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._me, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _read_holder(self) -> tuple[dict[str, Any], float]:
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return {}, 0.0
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = {}
        return (holder if isinstance(holder, dict) else {}), age

    def acquire(self) -> OutputLock:
        """Take the lock or raise LockedError naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                break
            holder, age = self._read_holder()
            if not holder and not self.path.exists():
                continue  # released meanwhile
            reason = holder_is_stale(holder, age, self.stale_after_s, self._me) if holder else ""
            if not holder and age > self.stale_after_s:
                reason = "unreadable and old"
            if not reason:
                raise LockedError(
                    f"{self.path.parent} is locked by pid {holder.get('pid')} on host {holder.get('host')}"
                    f"{' (Slurm job ' + str(holder['job']) + ')' if holder.get('job') else ''}, "
                    f"heartbeat {age:.0f} s ago: another writer is using this output; wait for it or choose another "
                    f"directory (remove {self.path} only if that process is gone)"
                )
            logger.warning("taking over the lock %s: %s", self.path, reason)
            self.path.unlink(missing_ok=True)
        else:
            raise LockedError(f"{self.path.parent} is locked: could not take over {self.path}")
        self.held = True
        _HELD[str(self.path.resolve())] = self
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, name="output-lock-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        self._stop.set()
        holder, _ = self._read_holder()
        if holder.get("pid") == self._me["pid"] and holder.get("host") == self._me["host"]:
            self.path.unlink(missing_ok=True)
        self.held = False
        _HELD.pop(str(self.path.resolve()), None)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _shard_suffix(shard_index: int, num_shards: int) -> str:
    return f".shard-{shard_index:05d}-of-{num_shards:05d}" if num_shards > 1 else ""


def hold_lock(lock_path: str | os.PathLike, prog: str = "megatron-agentic") -> OutputLock:
    """Take the lock at ``lock_path`` until this process exits; exit status 1 with a ``locked`` line if held.

    Re-entrant within one process (the same lock is returned)."""
    held = _HELD.get(str(Path(lock_path).resolve()))
    if held is not None and held.held:
        return held
    lock = OutputLock(lock_path)
    try:
        lock.acquire()
    except LockedError as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    atexit.register(lock.release)
    return lock


def lock_output_dir(
    directory: str | os.PathLike, prog: str = "megatron-agentic", shard_index: int = 0, num_shards: int = 1
) -> OutputLock:
    """Lock an output directory (one lock per shard when sharded: shards of one job may share the directory)."""
    return hold_lock(Path(directory) / f".megatron-agentic{_shard_suffix(shard_index, num_shards)}.lock", prog)


def lock_output_file(
    path: str | os.PathLike, prog: str = "megatron-agentic", shard_index: int = 0, num_shards: int = 1
) -> OutputLock:
    """Lock an output file or prefix through the hidden file ``.NAME[.shard-I-of-N].lock`` next to it (hidden, so
    globs over the outputs, e.g. ``PREFIX*``, do not see it)."""
    path = Path(path)
    return hold_lock(path.with_name(f".{path.name}{_shard_suffix(shard_index, num_shards)}.lock"), prog)
