"""Fail loudly: the one failure-rate check of the synthesis commands (``data memory``, ``fas``, ``has``, ``rollout``).

A synthesis command counts its *attempted* units (documents, questions, trajectories, ...) and its *failed* ones
(failed requests, rejected or template-filled items: whatever the command did not turn into the output it was
asked for) and ends with::

    from data_tools.synthesis.common.failure_rate import add_failure_rate_arg, check_failure_rate

    add_failure_rate_arg(parser)                       # --max-failure-rate (default 0.1)
    ...
    problem = check_failure_rate("data memory", failed=3, total=10, max_rate=args.max_failure_rate,
                                 listed_in="runs/memory.jsonl.summary.json (failed_documents)")
    if problem:
        print(problem, file=sys.stderr)
        return 1

The message names the figure, the limit and where the failures are listed. This module is a stable interface:
two functions and one constant, nothing else.
"""

from __future__ import annotations

import argparse

from data_tools.common.argtypes import probability

DEFAULT_MAX_FAILURE_RATE = 0.1
"""Default of ``--max-failure-rate``: a run in which more than 10% of the units failed exits non-zero."""


def add_failure_rate_arg(parser: argparse.ArgumentParser, default: float = DEFAULT_MAX_FAILURE_RATE) -> None:
    """Add ``--max-failure-rate RATE`` (a fraction in [0, 1]) to a command's parser."""

    parser.add_argument(
        "--max-failure-rate",
        type=probability,
        default=default,
        metavar="RATE",
        help=f"exit with status 1 when more than this fraction of the units failed (failed requests, rejected or "
        f"template-filled items; default {default})",
    )


def check_failure_rate(command: str, *, failed: int, total: int, max_rate: float, listed_in: str) -> str | None:
    """``None`` when ``failed / total`` is at most ``max_rate``, else a one-line error message naming the figure,
    the limit and where the failures are listed (``listed_in``). ``total == 0`` with nothing failed passes; an empty
    run that attempted nothing is the caller's to report."""
    if failed < 0 or total < 0 or failed > total:
        raise ValueError(f"failed ({failed}) must be between 0 and total ({total})")
    if total == 0 or failed / total <= max_rate:
        return None
    return (
        f"{command}: failure rate {failed}/{total} = {failed / total:.1%} exceeds --max-failure-rate "
        f"{max_rate:.1%}; the failures are listed in {listed_in}"
    )
