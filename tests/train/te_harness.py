"""Transformer Engine 2.10's real Python modules on a CPU machine, for checkpoint *structure* checks.

This harness checks structure only: which modules megatron-core's TE layer spec builds, their parameter names,
the tensor keys and global shapes and the ``ShardedObject`` (``_extra_state``) keys of their sharded state dict,
and the ``dist_checkpointing`` load plans between that state dict and a checkpoint (what is requested, what is
found, what ``load_state_dict`` then accepts). It never checks numerics: no TE kernel runs (the C++ extension
is a stand-in whose functions return nothing), so a forward pass, an FP8 recipe or a fused kernel is proven only
by a GPU run (``benchmarks/gpu_acceptance.py``).

How (measured with TE 2.10.0, megatron-core 0.16.1, torch 2.13 CPU):

- :func:`ensure_installed` installs TE's Python packages, once, into a cache directory outside the project venv
  (``.cache/te-2.10`` under the repository root, git-ignored; ``MEGATRON_AGENTIC_TE_CACHE`` overrides it) with
  ``pip install --target DIR --no-deps transformer_engine==2.10.0 transformer_engine_cu13==2.10.0 onnx
  onnxscript onnx-ir einops ml_dtypes`` (~485 MB). A file lock serialises concurrent test processes; a finished
  install is marked by ``DIR/.complete``, so a killed install is redone. ``transformer_engine_torch`` (the C++
  extension) is a source-only package that cannot build without CUDA, so it is not installed.
- :func:`activate` (in a fresh process, before megatron-core's TE extension is imported) puts DIR on
  ``sys.path``, sets ``NVTE_PROJECT_BUILDING=1`` (TE's ``__init__`` then skips loading cuDNN, NVRTC and
  ``libtransformer_engine.so``) and replaces ``transformer_engine.common.load_framework_extension`` with a
  function that installs :class:`_ExtensionStandIn` as ``sys.modules["transformer_engine_torch"]``: every
  attribute is created on first access (enum-like classes whose members are again stand-ins); version queries
  return plain integers. Nothing outside this process sees TE: the project venv and the CPU training path
  never import it.
- :func:`te_construction` makes ``torch.cuda.is_available()`` true while modules are built (TE's
  ``TransformerEngineBaseModule`` asserts it) and, with ``device="meta"``, sends every tensor factory to the
  meta device (full-width Qwen3-30B-A3B layers without memory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TE_VERSION = "2.10.0"
PACKAGES = (
    f"transformer_engine=={TE_VERSION}",
    f"transformer_engine_cu13=={TE_VERSION}",
    # TE's pure-Python dependencies at the versions the harness was verified with (a locked environment)
    "onnx==1.23.2",
    "onnxscript==0.7.2",
    "onnx-ir==1.1.0",
    "einops==0.8.2",
    "ml_dtypes==0.7.0",
)
"""``pip install --target DIR --no-deps`` arguments (TE's Python code and its pure-Python imports)."""

CACHE_ENV = "MEGATRON_AGENTIC_TE_CACHE"
"""Environment variable overriding the install directory."""


def cache_dir() -> Path:
    """Where TE's Python packages are installed (``.cache/te-2.10`` under the repository root by default)."""
    return Path(os.environ.get(CACHE_ENV) or REPO / ".cache" / f"te-{TE_VERSION.rsplit('.', 1)[0]}")


def ensure_installed(timeout: int = 1800) -> tuple[Path | None, str]:
    """Install TE's Python packages into :func:`cache_dir` unless already there; ``(dir, "")`` or ``(None, why)``.

    Concurrent callers (several pytest processes) wait on one file lock; the first installs, the others reuse.
    The reason is one line (pip's last error line), for a test skip, when the install is impossible (no network).
    """
    target = cache_dir()
    if (target / ".complete").is_file():
        return target, ""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target, ""
        tmp = target.parent / f"{target.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)  # a killed install's leftovers
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
        try:
            out = subprocess.run(
                [*cmd, "--target", str(tmp), *PACKAGES], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None, f"pip install of Transformer Engine {TE_VERSION} took over {timeout} s"
        if out.returncode != 0:
            lines = [x for x in out.stderr.splitlines() if x.strip() and not x.startswith("WARNING")]
            return None, f"cannot pip install Transformer Engine {TE_VERSION}: {(lines or ['?'])[-1].strip()}"
        (tmp / ".complete").write_text(" ".join(PACKAGES) + "\n")
        os.replace(tmp, target)
    return target, ""


class _StandInMeta(type):
    """Classes whose missing attributes are further stand-in classes (``tex.DType.kByte``, ``tex.FP8FwdTensors``)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StandInMeta(f"{cls.__name__}.{name}", (), {})
        setattr(cls, name, value)
        return value

    def __call__(cls, *args: Any, **kwargs: Any) -> None:
        return None


class _ExtensionStandIn(types.ModuleType):
    """``transformer_engine_torch`` stand-in: attributes are created on access; no function computes anything."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StandInMeta(name, (), {})
        setattr(self, name, value)
        return value


def _load_stand_in(framework: str) -> None:
    module = _ExtensionStandIn(f"transformer_engine_{framework}")
    module.get_cudnn_version = lambda: 91000  # type: ignore[attr-defined]
    module.get_cublasLt_version = lambda: 130000  # type: ignore[attr-defined]
    module.get_num_cublas_streams = lambda: 4  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


def activate(directory: Path) -> Any:
    """Make ``import transformer_engine.pytorch`` work in this process with the stand-in extension; returns it.

    Must run before ``megatron.core.extensions.transformer_engine`` is imported (megatron-core decides
    ``HAVE_TE`` at import).
    """
    if "megatron.core.extensions.transformer_engine" in sys.modules:
        raise RuntimeError("te_harness.activate must run before megatron-core's TE extension is imported")
    sys.path.insert(0, str(directory))
    os.environ["NVTE_PROJECT_BUILDING"] = "1"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not find the shared object file": intended
        import transformer_engine.common as te_common

        te_common.load_framework_extension = _load_stand_in
        import transformer_engine.pytorch as te_pytorch
    return te_pytorch


class _ToDevice(__import__("torch").overrides.TorchFunctionMode):
    """Sends every tensor factory's ``device`` (and ``.to``/``.cuda``) to one device."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D401 - torch protocol
        import torch

        kwargs = dict(kwargs or {})
        if kwargs.get("device") is not None:
            kwargs["device"] = self.device
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) >= 2 and isinstance(args[1], (str, torch.device, int)):
            args = (args[0], *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def te_construction(device: str = "cpu") -> Iterator[None]:
    """Build TE modules here: ``torch.cuda.is_available()`` reads True (TE's constructor assert), tensors on ``device``.

    TE's ``canonicalize_device`` (which would name a CUDA device) returns ``device`` meanwhile.
    """
    import torch

    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: True  # type: ignore[assignment]
    # TE resolves a module's device with transformer_engine.pytorch.utils.canonicalize_device (imported by name
    # into its modules): "cuda:<current device>" by default, which would need a GPU to construct.
    patched = []
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("transformer_engine.") and hasattr(module, "canonicalize_device"):
            patched.append((module, module.canonicalize_device))
            module.canonicalize_device = lambda _device=None: torch.device(device)
    try:
        with torch.device(device), _ToDevice(device):
            yield
    finally:
        torch.cuda.is_available = original  # type: ignore[assignment]
        for module, function in patched:
            module.canonicalize_device = function


def subprocess_env() -> dict[str, str]:
    """Environment for a harness worker process (repository on ``PYTHONPATH``, one thread, no torchrun vars)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    env["MEGATRON_AGENTIC_FORCE_CPU"] = "1"
    return env
