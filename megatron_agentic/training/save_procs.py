"""Checkpoint helper processes that outlive neither the trainer nor a stop request.

megatron-core's ``dist_checkpointing`` (``torch_dist`` strategy, ``FileSystemWriterAsync``) writes every save
through helper processes:

- a ``multiprocessing`` manager (spawned at the first save) that holds the write-results queue and stays up for
  the rest of the process;
- writer processes forked for each save (and, with ``checkpoint.async_save``, the forked background process of
  megatron-core's ``AsyncCallsQueue`` that forks them in turn).

Left alone, they sit in the trainer's process group: a SIGTERM or SIGUSR1 sent to the job (``scontrol requeue``,
preemption, ``scancel``, torchrun closing its workers) kills the manager, and the save the trainer then makes for
that very signal dies with ``BrokenPipeError``; when a rank is killed with ``kill -9`` the helpers are orphaned and
keep running. This module, used by the training loop around every save:

- starts the results queue's manager itself (:func:`start_results_queue`, before the first save), in a session of
  its own with SIGTERM/SIGUSR1/SIGINT ignored, and hands that queue to megatron-core's writer
  (``filesystem_async._results_queue``, the module-level queue it creates lazily);
- makes every process forked inside :func:`guarded_forks` (the writers, the async caller) leave the trainer's
  process group and ignore those signals, so a signal to the job never interrupts a checkpoint being written;
- makes each of those helpers exit when its parent dies (``PR_SET_PDEATHSIG`` on Linux, and a watcher thread that
  polls the parent everywhere), so ``kill -9`` of a rank leaves nothing behind;
- shuts the manager down on every exit path (:func:`shutdown`, also registered with :mod:`atexit`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.managers import SyncManager
from typing import Any

logger = logging.getLogger(__name__)

SHIELDED_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
"""Signals a checkpoint helper ignores (the trainer handles them: it finishes the step and saves)."""

_PR_SET_PDEATHSIG = 1
_manager: SyncManager | None = None
_guard_depth = 0
_hook_installed = False


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


def _watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Exit at once when the parent is gone (re-parented): a portable backstop for ``PR_SET_PDEATHSIG``."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="ckpt-helper-parent-watch", daemon=True).start()


def shield_this_process(parent_pid: int, new_session: bool) -> None:
    """Detach the calling helper process from the job's signals and tie its life to ``parent_pid``.

    ``new_session``: start a session of its own (a spawned process); otherwise a process group of its own (a forked
    writer, which must keep its session's controlling terminal semantics). Exits at once when the parent is
    already gone.
    """
    shielded = [getattr(signal, name) for name in SHIELDED_SIGNALS]
    for sig in shielded:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, shielded)  # blocked by the parent around the fork/spawn
    with contextlib.suppress(OSError):
        if new_session:
            os.setsid()
        else:
            os.setpgid(0, 0)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    _watch_parent(parent_pid)


def _manager_initializer(parent_pid: int) -> None:
    shield_this_process(parent_pid, new_session=True)


def _after_fork_in_child() -> None:
    if _guard_depth > 0:
        shield_this_process(os.getppid(), new_session=False)


def _install_fork_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hook_installed = True


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the shielded signals in this thread: a child created meanwhile inherits the mask, so a signal sent to
    the job between its fork (or exec) and its :func:`shield_this_process` stays pending and is then ignored. The
    trainer still gets them: the kernel delivers a process-directed signal to another of its threads."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, [getattr(signal, name) for name in SHIELDED_SIGNALS])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def guarded_forks() -> Iterator[None]:
    """Within this block, every process this one forks is a shielded checkpoint helper (see the module doc)."""
    global _guard_depth
    _install_fork_hook()
    _guard_depth += 1
    try:
        with _signals_blocked():
            yield
    finally:
        _guard_depth -= 1


def start_results_queue() -> Any:
    """Start the shielded manager and make its queue megatron-core's checkpoint write-results queue (idempotent).

    Returns the queue. Call on every rank before the first save.
    """
    global _manager
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if _manager is not None and filesystem_async._results_queue is not None:
        return filesystem_async._results_queue
    manager = SyncManager(ctx=mp.get_context("spawn"))
    with _signals_blocked():
        manager.start(initializer=_manager_initializer, initargs=(os.getpid(),))
    _manager = manager
    queue = manager.Queue()
    filesystem_async._results_queue = queue  # megatron-core creates it lazily; this one is ours, shielded
    atexit.register(shutdown)
    logger.debug("checkpoint write-results queue served by pid %s", manager._process.pid)
    return queue


def helper_pids() -> list[int]:
    """Process ids of the live helpers this process started (the manager; for tests and diagnostics)."""
    if _manager is None or _manager._process is None or not _manager._process.is_alive():
        return []
    return [_manager._process.pid]


def shutdown() -> None:
    """Stop the manager (if started) and forget the queue; safe to call several times and on any exit path."""
    global _manager
    manager, _manager = _manager, None
    if manager is None:
        return
    with contextlib.suppress(Exception):
        from megatron.core.dist_checkpointing.strategies import filesystem_async

        filesystem_async._results_queue = None
    try:
        manager.shutdown()
    except Exception as exc:  # noqa: BLE001 - already gone (killed) or unreachable: make sure it is dead
        logger.debug("checkpoint helper shutdown: %s", exc)
    process = getattr(manager, "_process", None)
    if process is not None and process.is_alive():
        process.kill()
        process.join(5)
