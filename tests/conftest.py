"""Shared pytest configuration: GPU tests skip cleanly on CPU-only machines, and the in-process tier stays in-process.

Two tiers (``make test`` runs both, ``make test-fast`` the first):

- in-process tests (no marker): must not start a process. A guard refuses ``subprocess`` and ``multiprocessing``
  process creation inside them with a message naming the test, so the tier cannot silently grow slow.
- ``@pytest.mark.slow``: tests that start processes (training under torchrun, CLI pipelines, spawned gloo ranks).
  The guard covers fixture set-up too, so an unmarked test cannot use a fixture that starts processes.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is a broken install, reported elsewhere
        return False


LONG_FIRST = (
    "tests/docs/test_docs_commands.py",
    "tests/demo/test_demo_e2e.py",
    "tests/ops/test_slurm.py",
    "tests/experiment/test_experiment_e2e.py",
    "tests/train/test_signals_after_save.py",
    "tests/train/test_signals_resume.py",
    "tests/train/test_te_harness.py",
    "tests/train/test_multirank.py",
    "tests/sft/test_sft_train.py",
    "tests/train/test_gpu_paths.py",
    "tests/ops/test_launcher_resilience.py",
    "tests/train/test_first_day.py",
    "tests/train/test_data_order.py",
    "tests/has/test_probe.py",
    "tests/ops/test_import_clash.py",
    "tests/ops/test_zygote.py",
    "tests/train/test_document_attention.py",
)
"""The longest test files (measured), collected first: with ``--no-loadscope-reorder`` (the Makefile) pytest-xdist
hands files to its workers in collection order, so the long ones start early and the short ones fill the gaps
instead of one long file finishing alone (xdist's default order is by number of tests per file)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect the longest files first (:data:`LONG_FIRST`); skip tests marked ``gpu`` when no CUDA device is
    present."""
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    root = config.rootpath
    items.sort(key=lambda item: rank.get(item.path.relative_to(root).as_posix(), len(rank)))
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class ProcessInInProcessTest(BaseException):
    """An unmarked (in-process tier) test started a process (a BaseException: library code catching Exception
    must not turn it into a silently different result)."""


def _refuse_processes(item: pytest.Item) -> Callable[[], None]:
    """Patch process creation to raise for ``item``; returns the undo function."""
    node = item.nodeid

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ProcessInInProcessTest(
            f"{node} starts a process (in the test or a fixture it uses): mark it @pytest.mark.slow "
            "(`make test-fast` runs only in-process tests)"
        )

    saved = [(subprocess.Popen, "_execute_child"), (multiprocessing.process.BaseProcess, "start")]
    originals = [(owner, name, owner.__dict__[name]) for owner, name in saved]
    for owner, name in saved:
        setattr(owner, name, refuse)

    def undo() -> None:
        for owner, name, original in originals:
            setattr(owner, name, original)

    return undo


def _guarded(item: pytest.Item) -> bool:
    return not (item.get_closest_marker("slow") or item.get_closest_marker("gpu"))


def _guard_phase(item: pytest.Item) -> Iterator[None]:
    undo = _refuse_processes(item) if _guarded(item) else None
    try:
        yield
    finally:
        if undo:
            undo()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """The guard covers fixture set-up too (a module fixture that trains is set up by its first test)."""
    yield from _guard_phase(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Refuse process creation in tests without ``@pytest.mark.slow`` (or ``gpu``)."""
    yield from _guard_phase(item)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts and ends with the logging setup it found: a CLI ``main`` run in-process configures handlers
    on its loggers (on pytest's capture streams, which close with the test), and a later test in the same worker
    must not log into them ("--- Logging error ---")."""
    import logging

    def state() -> dict[str, tuple[list[logging.Handler], int, bool]]:
        loggers = [
            logging.getLogger(),
            *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger)),
        ]
        return {lg.name: (list(lg.handlers), lg.level, lg.propagate) for lg in loggers}

    before = state()
    yield
    for name, (handlers, _, _) in state().items():
        logger = logging.getLogger(name) if name != "root" else logging.getLogger()
        old = before.get(name)
        for handler in handlers:
            if old is None or handler not in old[0]:
                logger.removeHandler(handler)
        if old is not None:
            logger.handlers[:] = old[0]
            logger.setLevel(old[1])
            logger.propagate = old[2]
