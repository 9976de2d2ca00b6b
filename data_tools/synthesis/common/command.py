"""The frame every synthesis command runs in (``data memory``, ``fas``, ``has``, ``rollout``).

Each command's ``main(argv)`` is ``run_command("data NAME", build_parser(), _run, argv)``: the arguments are parsed,
logging is set up (``-v``/``--verbose`` where the command has it: INFO, else WARNING), and ``_run(args)`` returns the
exit status. A bad argument or input is raised as :class:`CommandError` and printed as one line,
``data NAME: message``, on stderr with exit status 2; :func:`failure_exit_status` turns the fail-loudly check
(:mod:`data_tools.synthesis.common.failure_rate`) into status 1 with its message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from data_tools.synthesis.common.failure_rate import check_failure_rate

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""Console log format of the synthesis commands."""

T = TypeVar("T")


class CommandError(Exception):
    """A bad argument or input: reported as ``data NAME: message`` on stderr, exit status 2."""


def run_command(
    name: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv: list[str] | None
) -> int:
    """Parse ``argv`` with ``parser``, set up logging and return ``run(args)``; a :class:`CommandError` becomes one
    line ``{name}: message`` on stderr and status 2."""
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    try:
        return run(args)
    except CommandError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``Path(path)``, or a :class:`CommandError` ``{what} {path} does not exist`` when it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{what} {path} does not exist")
    return p


def build_config(factory: Callable[..., T], **fields: Any) -> T:
    """``factory(**fields)`` with its ``ValueError`` (a config's own validation) raised as :class:`CommandError`."""
    try:
        return factory(**fields)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def failure_exit_status(command: str, *, failed: int, total: int, max_rate: float, listed_in: str) -> int:
    """1 (with the message on stderr) when more than ``max_rate`` of ``total`` units failed, else 0."""
    problem = check_failure_rate(command, failed=failed, total=total, max_rate=max_rate, listed_in=listed_in)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0
