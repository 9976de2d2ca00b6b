"""Platform layer: CUDA + NCCL when a GPU is present, CPU + gloo otherwise.

megatron-core 0.16.1 trains on CPU over gloo once a handful of CUDA-only call sites are redirected
(see ``docs/training.md``). :func:`setup_platform` picks the platform and, on CPU only, activates
these redirections, each of which first checks that its target exists and fails loudly, naming the
megatron-core version, when it does not:

``current_device``
    ``torch.cuda.current_device()`` returns ``"cpu"``, so the many ``device=torch.cuda.current_device()``
    factories and ``.to(torch.cuda.current_device())`` calls land on the CPU.
``device_mode``
    A ``TorchFunctionMode`` that maps hard-coded ``device="cuda"`` factory arguments, ``pin_memory=True``
    and ``Tensor.cuda()`` to the CPU, and reports CPU float tensors under their CUDA type names so the optimizer, distributed
    optimizer and ``clip_grads`` type checks (``param.type() == "torch.cuda.FloatTensor"``) accept them.
``causal_mask``
    megatron-core's ``get_default_causal_mask`` (``device="cuda"``, used by its softmax when no mask is passed, e.g.
    in the KV-cached inference forward) builds the mask on the CPU, so that forward also runs without
    ``device_mode`` (:func:`device_mode_suspended`).
``cuda_synchronize``
    ``torch.cuda.synchronize()`` (called by dist_checkpointing's writer after non-blocking copies) is a
    no-op: there is no CUDA work to wait for.
``rng_tracker``
    The tensor-parallel CUDA RNG tracker keeps CPU generator states instead of CUDA ones.
``te_general_gemm``
    ``moe_utils.te_general_gemm`` is referenced but undefined when Transformer Engine is missing.
``alltoall_dispatcher``
    The ``alltoall`` token dispatcher (``MoEAlltoAllTokenDispatcher``) creates a ``torch.cuda.Stream`` for its
    device-to-host copies of the split sizes and records/synchronizes an event on it. ``torch.cuda.Stream``,
    ``torch.cuda.current_stream`` and ``torch.cuda.stream`` become a CPU stand-in stream whose wait, record
    and synchronize are no-ops (CPU work is synchronous). Its ``maybe_move_tensor_to_cpu`` only converts CUDA
    tensors to the NumPy split sizes ``all_to_all_single`` takes, so the dispatcher's binding of it also
    converts CPU tensors when asked for NumPy. Together they let the GPU-default dispatcher run under gloo.

``jit_fuser`` (at import time, :mod:`megatron_agentic.platform_import`)
    megatron-core's ``megatron.core.jit.disable_jit_fuser()`` runs right after ``megatron.core.jit`` is imported, so
    its fused functions are defined without ``torch.compile`` (which imports TorchDynamo and Inductor: 2.4 s of every
    process start, for kernels never compiled on a CPU).

On CUDA nothing is redirected. Transformer Engine and Apex are used when importable, never required; one that is
installed but fails to import is reported as broken (a warning naming it and the exception, :func:`broken_installs`)
and treated as absent, so ``model.attention_backend=te`` then fails while ``auto`` falls back with that warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

from megatron_agentic.platform_info import Platform

logger = logging.getLogger(__name__)

_ACTIVE: dict[str, Callable[[], None]] = {}  # redirection name -> undo function
_DEVICE_MODE: _CpuDeviceMode | None = None


def megatron_core_version() -> str:
    """Installed megatron-core version string (``"unknown"`` when it cannot be read)."""
    try:
        from megatron.core import package_info

        return str(package_info.__version__)
    except Exception:  # pragma: no cover - broken install
        return "unknown"


class BrokenInstall(NamedTuple):
    """An optional package that is installed but does not import."""

    module: str
    """The module that was imported (``transformer_engine.pytorch``)."""
    error: str
    """The exception, as ``Type: message``."""

    def describe(self) -> str:
        """One line naming the package and the exception."""
        return (
            f"{self.module} is installed but does not import ({self.error}); it is treated as absent, so the paths "
            f"that need it fall back or fail. Repair or uninstall it (python -c 'import {self.module}' shows the "
            "full traceback)"
        )


_BROKEN: dict[str, BrokenInstall] = {}


def broken_installs() -> tuple[BrokenInstall, ...]:
    """Optional packages found installed but failing to import, in this process so far."""
    return tuple(_BROKEN.values())


def _not_installed(name: str, exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` says ``name`` itself (or a package above it) does not exist, as opposed to a module that
    ``name`` imports being missing (a broken install)."""
    return exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))


def _import_optional(name: str) -> Any | None:
    """Module ``name``, or None when it is not installed (``find_spec`` finds no top-level package, or the
    submodule does not exist). A package that is installed but raises on import (an ``ImportError`` from inside
    it, an ``OSError`` from a missing shared library, ...) is *broken*: a warning names the package and the
    exception (once per process), :func:`broken_installs` lists it, and it counts as absent."""
    try:
        if importlib.util.find_spec(name.partition(".")[0]) is None:
            return None
    except ValueError:  # already imported without a spec: installed
        pass
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if _not_installed(name, exc):
            return None
        error: BaseException = exc
    except Exception as exc:  # noqa: BLE001 - any failure of an installed package is reported, never swallowed
        error = exc
    if name not in _BROKEN:
        _BROKEN[name] = BrokenInstall(name, f"{type(error).__name__}: {error}")
        logger.warning("%s", _BROKEN[name].describe())
    return None


def _module_available(name: str) -> bool:
    """Whether optional module ``name`` imports (see :func:`_import_optional` for a broken install)."""
    return _import_optional(name) is not None


APEX_GRADIENT_FUSION_MODULE = "fused_weight_gradient_mlp_cuda"
"""Apex's CUDA extension that ``gradient_accumulation_fusion`` needs (megatron-core ``tensor_parallel/layers.py``)."""


def has_transformer_engine() -> bool:
    """True when Transformer Engine's PyTorch extension imports."""
    return _module_available("transformer_engine.pytorch")


def _require(module_name: str, attr: str, redirection: str) -> Any:
    """Return ``module.attr`` or raise a RuntimeError naming the megatron-core version."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(
            f"platform redirection {redirection!r}: cannot import {module_name} "
            f"(megatron-core {megatron_core_version()}; written for 0.16.1)"
        ) from exc
    if not hasattr(module, attr):
        raise RuntimeError(
            f"platform redirection {redirection!r}: {module_name}.{attr} not found in megatron-core "
            f"{megatron_core_version()} (written for 0.16.1); update megatron_agentic/platform.py"
        )
    return getattr(module, attr)


# --------------------------------------------------------------------------------------------------
# Redirection: hard-coded CUDA devices and CUDA tensor type names.

_CPU_TO_CUDA_TYPE = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)


class _CpuDeviceMode(TorchFunctionMode):
    """Maps ``device="cuda"``, ``pin_memory=True`` and ``Tensor.cuda()`` to the CPU; CUDA type names for ``.type()``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D401 - torch protocol
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and _is_cuda_device(device):
            kwargs = dict(kwargs, device="cpu")
        if kwargs.get("pin_memory"):
            kwargs = dict(kwargs, pin_memory=False)
        if func is torch.Tensor.cuda or func is torch.Tensor.pin_memory:
            return args[0]
        elif func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CPU_TO_CUDA_TYPE.get(name, name)
        elif func is torch.Tensor.to and len(args) >= 2 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _activate_device_mode() -> Callable[[], None]:
    global _DEVICE_MODE
    # The targets are torch APIs; check that megatron-core still relies on them where we expect.
    _require("megatron.core.transformer.utils", "get_default_causal_mask", "device_mode")
    _require("megatron.core.optimizer.clip_grads", "clip_grad_by_total_norm_fp32", "device_mode")
    _require("megatron.core.optimizer.optimizer", "FP32Optimizer", "device_mode")
    _require("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer", "device_mode")
    mode = _CpuDeviceMode()
    mode.__enter__()
    _DEVICE_MODE = mode

    def undo() -> None:
        global _DEVICE_MODE
        mode.__exit__(None, None, None)
        _DEVICE_MODE = None

    return undo


@contextlib.contextmanager
def device_mode_suspended() -> Iterator[None]:
    """Run the block without the ``device_mode`` redirection (a no-op where it is not active, e.g. on CUDA).

    A ``TorchFunctionMode`` doubles the cost of a small op (its Python dispatch; 5 tiny ops: 40 -> 88 us), which a
    hot loop of them pays in full: greedy decoding with a KV cache runs 1.4x faster without it (22.0 vs 31.3 ms per
    token for the tiny MoE of ``megatron-agentic experiment``). For code that needs none of its mappings; megatron-core's inference forward does not
    once ``causal_mask`` is active.
    """
    mode = _DEVICE_MODE
    if mode is None:
        yield
        return
    mode.__exit__(None, None, None)
    try:
        yield
    finally:
        mode.__enter__()


_CAUSAL_MASK_USERS = ("megatron.core.transformer.utils", "megatron.core.fusions.fused_softmax")


def _activate_causal_mask() -> Callable[[], None]:
    originals = {name: _require(name, "get_default_causal_mask", "causal_mask") for name in _CAUSAL_MASK_USERS}

    def cpu_default_causal_mask(sq: int) -> torch.Tensor:
        """CPU stand-in for megatron-core's ``get_default_causal_mask`` (installed by megatron_agentic.platform)."""
        return torch.triu(torch.ones(sq, sq, device="cpu"), diagonal=1).bool()

    for name in _CAUSAL_MASK_USERS:
        importlib.import_module(name).get_default_causal_mask = cpu_default_causal_mask

    def undo() -> None:
        for name, original in originals.items():
            importlib.import_module(name).get_default_causal_mask = original

    return undo


def _activate_current_device() -> Callable[[], None]:
    original = _require("torch.cuda", "current_device", "current_device")

    def cpu_current_device() -> str:
        """CPU stand-in for ``torch.cuda.current_device`` (installed by megatron_agentic.platform)."""
        return "cpu"

    torch.cuda.current_device = cpu_current_device

    def undo() -> None:
        torch.cuda.current_device = original

    return undo


def _activate_cuda_synchronize() -> Callable[[], None]:
    original = _require("torch.cuda", "synchronize", "cuda_synchronize")
    # dist_checkpointing's writer and the pipeline p2p code call it after non-blocking copies.
    _require(
        "megatron.core.dist_checkpointing.strategies.filesystem_async", "FileSystemWriterAsync", "cuda_synchronize"
    )

    def cpu_synchronize(device: Any = None) -> None:
        """CPU stand-in for ``torch.cuda.synchronize``: there is no CUDA work to wait for."""

    torch.cuda.synchronize = cpu_synchronize

    def undo() -> None:
        torch.cuda.synchronize = original

    return undo


# --------------------------------------------------------------------------------------------------
# Redirection: the tensor-parallel RNG tracker keeps CPU generator states.


def _make_cpu_tracker_class(base: type) -> type:
    class CpuRNGStatesTracker(base):  # type: ignore[misc, valid-type]
        """megatron-core's RNG tracker with CPU generator states (installed by megatron_agentic.platform)."""

        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise Exception(f"cuda rng state {name} already exists")
            generator = torch.Generator()
            generator.manual_seed(seed)
            self.states_[name] = generator.get_state()

        @contextlib.contextmanager
        def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
            if name not in self.states_:
                raise Exception(f"cuda rng state {name} is not added")
            orig_state = torch.get_rng_state()
            orig_name = self._current_state_name
            torch.set_rng_state(self.states_[name])
            self._current_state_name = name
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(orig_state)
                self._current_state_name = orig_name

    return CpuRNGStatesTracker


def _activate_rng_tracker() -> Callable[[], None]:
    module_name = "megatron.core.tensor_parallel.random"
    random_mod = importlib.import_module("megatron.core.tensor_parallel.random")
    base = _require(module_name, "CudaRNGStatesTracker", "rng_tracker")
    orig_get = _require(module_name, "_get_cuda_rng_state", "rng_tracker")
    orig_set = _require(module_name, "_set_cuda_rng_state", "rng_tracker")
    _require(module_name, "initialize_rng_tracker", "rng_tracker")
    orig_manual_seed = torch.cuda.manual_seed

    def get_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        return torch.get_rng_state()

    def set_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    random_mod.CudaRNGStatesTracker = _make_cpu_tracker_class(base)
    random_mod._get_cuda_rng_state = get_state
    random_mod._set_cuda_rng_state = set_state
    torch.cuda.manual_seed = torch.manual_seed
    random_mod.initialize_rng_tracker(force_reset=True)

    def undo() -> None:
        random_mod.CudaRNGStatesTracker = base
        random_mod._get_cuda_rng_state = orig_get
        random_mod._set_cuda_rng_state = orig_set
        torch.cuda.manual_seed = orig_manual_seed
        random_mod.initialize_rng_tracker(force_reset=True)

    return undo


# --------------------------------------------------------------------------------------------------
# Redirection: ``te_general_gemm`` is referenced in moe_utils but only defined when TE imports.


def _activate_te_general_gemm() -> Callable[[], None]:
    moe_utils = importlib.import_module("megatron.core.transformer.moe.moe_utils")
    _require("megatron.core.transformer.moe.moe_utils", "RouterGatingLinearFunction", "te_general_gemm")
    if hasattr(moe_utils, "te_general_gemm"):
        return lambda: None
    moe_utils.te_general_gemm = None

    def undo() -> None:
        if getattr(moe_utils, "te_general_gemm", 0) is None:
            del moe_utils.te_general_gemm

    return undo


# --------------------------------------------------------------------------------------------------
# Redirection: the alltoall token dispatcher's CUDA side stream.


class CpuStream:
    """CPU stand-in for ``torch.cuda.Stream`` (installed by megatron_agentic.platform): CPU work is synchronous."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, stream: Any) -> None:
        """Nothing to wait for."""

    def wait_event(self, event: Any) -> None:
        """Nothing to wait for."""

    def record_event(self, event: Any = None) -> _CpuEvent:
        """An event that is always complete."""
        return _CpuEvent()

    def synchronize(self) -> None:
        """Nothing to wait for."""

    def query(self) -> bool:
        """Always idle."""
        return True


class _CpuEvent:
    """CPU stand-in for ``torch.cuda.Event``: always complete."""

    def synchronize(self) -> None:
        """Nothing to wait for."""

    def wait(self, stream: Any = None) -> None:
        """Nothing to wait for."""

    def query(self) -> bool:
        """Always complete."""
        return True


_DEFAULT_CPU_STREAM = CpuStream()


def _activate_alltoall_dispatcher() -> Callable[[], None]:
    module_name = "megatron.core.transformer.moe.token_dispatcher"
    _require(module_name, "MoEAlltoAllTokenDispatcher", "alltoall_dispatcher")
    td = importlib.import_module(module_name)
    dispatcher = td.MoEAlltoAllTokenDispatcher
    if not hasattr(dispatcher, "cuda_dtoh_stream"):
        raise RuntimeError(
            "platform redirection 'alltoall_dispatcher': MoEAlltoAllTokenDispatcher.cuda_dtoh_stream not found in "
            f"megatron-core {megatron_core_version()} (written for 0.16.1); update megatron_agentic/platform.py"
        )
    orig_move = _require(module_name, "maybe_move_tensor_to_cpu", "alltoall_dispatcher")
    names = ("Stream", "current_stream", "stream")
    originals = {name: _require("torch.cuda", name, "alltoall_dispatcher") for name in names}

    def move_to_cpu(tensor: Any, as_numpy: bool = False, record_stream: bool = False) -> Any:
        """``maybe_move_tensor_to_cpu`` that also gives NumPy split sizes for CPU tensors."""
        if torch.is_tensor(tensor) and as_numpy:
            return tensor.detach().cpu().numpy()
        return orig_move(tensor, as_numpy=as_numpy, record_stream=record_stream)

    def current_stream(device: Any = None) -> CpuStream:
        """CPU stand-in for ``torch.cuda.current_stream``."""
        return _DEFAULT_CPU_STREAM

    def stream(s: Any) -> contextlib.AbstractContextManager[None]:
        """CPU stand-in for ``torch.cuda.stream``: runs the block on the (only) CPU stream."""
        return contextlib.nullcontext()

    torch.cuda.Stream = CpuStream  # type: ignore[misc, assignment]
    torch.cuda.current_stream = current_stream  # type: ignore[assignment]
    torch.cuda.stream = stream  # type: ignore[assignment]
    td.maybe_move_tensor_to_cpu = move_to_cpu

    def undo() -> None:
        for name, original in originals.items():
            setattr(torch.cuda, name, original)
        td.maybe_move_tensor_to_cpu = orig_move
        if isinstance(dispatcher.cuda_dtoh_stream, CpuStream):
            dispatcher.cuda_dtoh_stream = None  # a later CUDA run creates a real stream again

    return undo


REDIRECTIONS: dict[str, Callable[[], Callable[[], None]]] = {
    "current_device": _activate_current_device,
    "device_mode": _activate_device_mode,
    "causal_mask": _activate_causal_mask,
    "cuda_synchronize": _activate_cuda_synchronize,
    "rng_tracker": _activate_rng_tracker,
    "te_general_gemm": _activate_te_general_gemm,
    "alltoall_dispatcher": _activate_alltoall_dispatcher,
}
"""CPU redirections in activation order: name -> activate function returning its undo function."""


def cuda_available() -> bool:
    """Whether training should use CUDA (``MEGATRON_AGENTIC_FORCE_CPU=1`` forces the CPU path)."""
    if os.environ.get("MEGATRON_AGENTIC_FORCE_CPU", "0") == "1":
        return False
    return torch.cuda.is_available()


def activate_cpu_redirections() -> tuple[str, ...]:
    """Activate every CPU redirection (idempotent); returns the active names."""
    for name, activate in REDIRECTIONS.items():
        if name not in _ACTIVE:
            _ACTIVE[name] = activate()
            logger.debug("platform: CPU redirection %s active", name)
    return tuple(_ACTIVE)


def deactivate_cpu_redirections() -> None:
    """Undo every active redirection (tests use this)."""
    for name in reversed(list(_ACTIVE)):
        _ACTIVE.pop(name)()


def active_redirections() -> tuple[str, ...]:
    """Names of the currently active redirections."""
    return tuple(_ACTIVE)


def _has_attr(module: str, attr: str) -> bool:
    return hasattr(_import_optional(module), attr)


def detect_platform() -> Platform:
    """The platform this process would train on, without side effects (no device set, nothing redirected).

    The single place that decides CUDA vs CPU (``MEGATRON_AGENTIC_FORCE_CPU=1`` forces the CPU path even on a
    GPU machine) and which optional libraries count: on CPU, Transformer Engine / DeepEP are reported absent
    because their kernels cannot run there.
    """
    cuda = cuda_available()
    te = cuda and has_transformer_engine()
    return Platform(
        "cuda" if cuda else "cpu",
        "nccl" if cuda else "gloo",
        te,
        _module_available("apex"),
        (),
        has_deep_ep=cuda and _has_attr("deep_ep", "Buffer"),
        has_hybrid_ep=cuda and _has_attr("deep_ep", "HybridEPBuffer"),
        has_apex_gradient_fusion=cuda and _module_available(APEX_GRADIENT_FUSION_MODULE),
    )


def setup_platform(local_rank: int | None = None) -> Platform:
    """Pick CUDA+NCCL or CPU+gloo for this process and prepare it.

    On CUDA sets the current device to ``local_rank`` (``LOCAL_RANK`` by default) and activates
    nothing; on CPU activates the redirections megatron-core needs.
    """
    plat = detect_platform()
    if plat.is_cuda:
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
        return plat
    return dataclasses.replace(plat, redirections=activate_cpu_redirections())
