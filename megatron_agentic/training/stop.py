"""Stopping a run cleanly: signals (SIGTERM, SIGUSR1), the Slurm walltime and a stop file.

Every rank installs :class:`StopRequest`; after each optimizer step the loop calls :meth:`StopRequest.agreed`,
which all-reduces the local requests (MAX) so every rank stops after the *same* step, saves a checkpoint there
and exits with :data:`EXIT_STOPPED` (3). A Slurm job script requeues itself on that code.

Sources of a stop request (any rank):

- SIGTERM or SIGUSR1 (what ``scancel --signal``, ``#SBATCH --signal=B:USR1@300`` forwarded by the launch script,
  a preemption and ``scontrol requeue`` send);
- ``checkpoint.save_before_walltime_s`` or fewer seconds left before the job's end time, read from
  ``SLURM_JOB_END_TIME`` or ``MEGATRON_AGENTIC_JOB_END_TIME`` (epoch seconds; ``launch_train.sh`` sets the
  latter from ``squeue``);
- the file named by ``MEGATRON_AGENTIC_STOP_FILE`` exists (the launch script creates it when the batch shell is
  signalled, so ranks on every node see it through the shared file system).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2
"""Exit code of a configuration error (not worth retrying)."""
EXIT_STOPPED = 3
"""Exit code after a checkpoint saved for a signal, the walltime or a stop file (requeue and resume)."""
EXIT_LOCKED = 5
"""Exit code when another live run holds ``checkpoint.dir`` (not worth retrying at once)."""
EXIT_STATUS_ENV = "MEGATRON_AGENTIC_EXIT_STATUS"
"""Environment variable naming a per-job ``exit_status.json`` (the launcher's job directory): also written, and the
only one written when this run lost the checkpoint lock (it must not touch the winner's ``log.dir``)."""

END_TIME_ENV = ("SLURM_JOB_END_TIME", "MEGATRON_AGENTIC_JOB_END_TIME")
"""Environment variables holding the job's end time in epoch seconds, first found wins."""
STOP_FILE_ENV = "MEGATRON_AGENTIC_STOP_FILE"
"""Environment variable naming a file whose existence requests a stop."""
HANDLED_SIGNALS = ("SIGTERM", "SIGUSR1")
"""Signals that request a stop (the handler only records them: the step in progress finishes)."""

_REASON_CODES = {"": 0, "walltime": 1, "stop file": 2}


def job_end_time(environ: dict[str, str] | os._Environ | None = None) -> float | None:
    """The job's end time (epoch seconds) from the environment, or None when unknown or unlimited."""
    environ = os.environ if environ is None else environ
    for name in END_TIME_ENV:
        text = str(environ.get(name, "")).strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            logger.warning("%s=%r is not a number of epoch seconds; ignored", name, text)
            continue
        if value > 0:
            return value
    return None


def walltime_reached(now: float, end_time: float | None, margin_s: float) -> bool:
    """True when ``margin_s`` or fewer seconds remain before ``end_time`` (never when either is unset/0)."""
    return end_time is not None and margin_s > 0 and end_time - now <= margin_s


MARGIN_FRACTION = 0.1
"""A save margin not shorter than the time left is cut to this fraction of the time left."""


def effective_margin(margin_s: float, end_time: float | None, now: float) -> float:
    """``checkpoint.save_before_walltime_s``, reduced with a warning when it is not shorter than the time left.

    Otherwise the run would save and stop after its first step, and again after every requeue, forever.
    """
    if end_time is None or margin_s <= 0:
        return margin_s
    left = end_time - now
    if margin_s < left:
        return margin_s
    reduced = max(left * MARGIN_FRACTION, 0.0)
    logger.warning(
        "checkpoint.save_before_walltime_s=%.0f is not shorter than the %.0f s the job has left: saving %.0f s before "
        "the end instead (raise the job's time limit or lower the margin)",
        margin_s,
        left,
        reduced,
    )
    return reduced


class StopRequest:
    """Records stop requests on one rank and agrees on them across ranks."""

    def __init__(self, save_before_walltime_s: float = 0.0, install_handlers: bool = True) -> None:
        self.margin_s = float(save_before_walltime_s)
        self.end_time = job_end_time()
        self.stop_file = os.environ.get(STOP_FILE_ENV) or None
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        if install_handlers:
            for name in HANDLED_SIGNALS:
                sig = getattr(signal, name)
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not the main thread
                    logger.debug("cannot install a %s handler outside the main thread", name)
        self.margin_s = effective_margin(self.margin_s, self.end_time, time.time())
        if self.end_time is not None and self.margin_s > 0:
            logger.info(
                "job ends in %.0f s; will save and exit %.0f s before", self.end_time - time.time(), self.margin_s
            )

    def _handler(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def restore_handlers(self) -> None:
        """Put back the signal handlers that were installed before."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def local_reason(self, now: float | None = None) -> str:
        """Why this rank wants to stop ("" when it does not)."""
        if self.signal_name is not None:
            return self.signal_name
        if walltime_reached(time.time() if now is None else now, self.end_time, self.margin_s):
            return "walltime"
        if self.stop_file is not None and os.path.exists(self.stop_file):
            return "stop file"
        return ""

    def agreed(self, device: torch.device) -> str:
        """The stop reason all ranks agree on after this step ("" to continue); a collective call."""
        reason = self.local_reason()
        code = 10 + HANDLED_SIGNALS.index(reason) if reason in HANDLED_SIGNALS else _REASON_CODES[reason]
        flag = torch.tensor([code], dtype=torch.int32, device=device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        value = int(flag.item())
        if value >= 10:
            return HANDLED_SIGNALS[value - 10]
        return {v: k for k, v in _REASON_CODES.items()}[value]
