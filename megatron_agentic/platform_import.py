"""The import-time part of the CPU platform: megatron-core's JIT fuser is off on CPU before megatron-core defines
its fused functions (the ``jit_fuser`` redirection of :mod:`megatron_agentic.platform`).

When ``megatron.core.jit`` is imported, megatron-core 0.16.1 sets ``jit_fuser = torch.compile``, and its package
init then wraps ~40 small functions with it (bias + activation fusions, router and dispatcher helpers). The first
wrap imports TorchDynamo and Inductor: 2.4 s of every training process start on a CPU (6.7 s -> 4.3 s for
``import megatron_agentic.training.loop``), for kernels a CPU run never compiles (checked: after a tiny-MoE training
run with megatron-core's default, TorchDynamo's counters show one frame and no compiled graph). megatron-core's own
``megatron.core.jit.disable_jit_fuser()`` makes ``jit_fuser`` a no-op decorator, but only for the functions
defined after the call, and ``import megatron.core`` defines all of them. So :func:`install` (run by
``megatron_agentic/__init__.py``: nothing is imported, torch included) puts a finder on ``sys.meta_path`` whose
loader runs ``disable_jit_fuser()`` right after ``megatron.core.jit`` has executed, when this process trains on
the CPU (:func:`megatron_agentic.platform.cuda_available`, imported only then: torch is loaded by that time). On CUDA it does nothing: the fused
functions stay compiled. A process that imports megatron-core before this package keeps megatron-core's default.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

TARGET = "megatron.core.jit"
"""The module whose import is followed by ``disable_jit_fuser()`` on CPU."""


def after_jit_import(module: ModuleType) -> None:
    """Turn the JIT fuser off in the just-executed ``megatron.core.jit`` ``module`` when training on the CPU."""
    from megatron_agentic.platform import cuda_available, megatron_core_version  # torch: loaded by megatron.core.jit

    if cuda_available():
        return
    disable = getattr(module, "disable_jit_fuser", None)
    if not callable(disable) or not hasattr(module, "jit_fuser"):
        raise RuntimeError(
            f"megatron-core {megatron_core_version()}: {TARGET} has no disable_jit_fuser()/jit_fuser; the CPU "
            "platform's jit_fuser redirection (megatron_agentic/platform_import.py) needs updating"
        )
    disable()


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then :func:`after_jit_import`; everything else is the real loader's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        after_jit_import(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... (inspect, linecache)
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``megatron.core.jit`` like the path finder does and wraps its loader in :class:`_Loader`."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Add the finder to ``sys.meta_path`` (idempotent; nothing when megatron-core's JIT module is loaded already)."""
    if TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
