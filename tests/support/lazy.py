"""Lazy module imports for test modules: collecting the suite must not import megatron-core (~5 s per process)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module that is imported on the first public attribute access.

    Dunder names and pytest's probe names raise ``AttributeError`` without importing: pytest's collector probes every
    module-level object for them (``__test__``, ``_fixture_function_marker``, ``_mock_name``), which would import the module at
    collection time.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith(("__", "_pytest", "_fixture", "_mock")):
            raise AttributeError(attr)
        return getattr(self.module(), attr)

    def module(self) -> ModuleType:
        """The imported module."""
        return importlib.import_module(self._name)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_import(name: str) -> Any:
    """``name`` as a :class:`LazyModule` (typed ``Any``: attribute access is the module's)."""
    return LazyModule(name)
