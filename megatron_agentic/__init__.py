"""megatron-agentic: Megatron-Core based continual pre-training for agentic LLMs.

The Triton kernels live in the repository's top-level ``kernels/`` folder but are imported as
``megatron_agentic.kernels``: a top-level import name ``kernels`` would shadow Hugging Face's ``kernels``
distribution (which ``transformers`` imports) whenever the repository root is on ``sys.path``. Installed wheels map
the folder with ``package_dir`` (``setup.py``); in a source checkout (editable install, ``python -m`` from the
repository root, torchrun workers) :func:`_bind_source_kernels` binds the folder as this package's subpackage.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _bind_source_kernels() -> None:
    """Register ``megatron_agentic.kernels`` as a package whose path is the checkout's top-level ``kernels/``.

    Nothing is imported (no Triton, no torch): the package module is created empty with ``kernels/`` as its
    search location, so ``megatron_agentic.kernels.flash_attention`` loads from ``kernels/flash_attention.py``.
    A no-op in an installed wheel, where ``megatron_agentic/kernels/`` exists next to this file.
    """
    name = f"{__name__}.kernels"
    here = Path(__file__).resolve().parent
    source = here.parent / "kernels"
    if name in sys.modules or (here / "kernels").is_dir() or not (source / "flash_attention.py").is_file():
        return
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(source)]
    module = importlib.util.module_from_spec(spec)
    module.__doc__ = "Triton kernels (the checkout's top-level kernels/ folder)."
    sys.modules[name] = module


_bind_source_kernels()


def _install_platform_import_hook() -> None:
    """megatron-core's JIT fuser off on CPU, before megatron-core defines its fused functions (platform_import)."""
    from megatron_agentic import platform_import

    platform_import.install()


_install_platform_import_hook()
