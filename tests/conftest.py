"""Shared pytest configuration: GPU tests skip cleanly on CPU-only machines, and the in-process tier stays in-process.

Two tiers (``make test`` runs both, ``make test-fast`` the first):

- in-process tests (no marker): must not start a process. A guard refuses ``subprocess`` and ``multiprocessing``
  process creation inside them with a message naming the test, so the tier cannot silently grow slow.
- ``@pytest.mark.slow``: tests that start processes (training under torchrun, CLI pipelines, spawned gloo ranks).
  Module- and session-scoped fixtures run before the guard, but only tests that use them pay for them.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is a broken install, reported elsewhere
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is present."""
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class ProcessInInProcessTest(BaseException):
    """An unmarked (in-process tier) test started a process (a BaseException: library code catching Exception
    must not turn it into a silently different result)."""


@pytest.fixture(autouse=True)
def _in_process_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse process creation in tests without ``@pytest.mark.slow`` (or ``gpu``)."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("gpu"):
        return
    node = request.node.nodeid

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ProcessInInProcessTest(
            f"{node} starts a process: mark it @pytest.mark.slow (`make test-fast` runs only in-process tests)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
