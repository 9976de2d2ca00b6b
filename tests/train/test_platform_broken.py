"""Optional packages (Transformer Engine, Apex, DeepEP): "not installed" is absent, "installed but failing to import"
is reported as broken (a warning naming the package and the exception) and then treated as absent; an explicitly
requested TE attention backend fails instead of falling back. Fake packages on a temporary path stand in."""

from __future__ import annotations

import logging
import sys

import pytest

from megatron_agentic import platform as plat
from megatron_agentic.perf import resolve_attention_backend

PACKAGES = {
    # an ImportError raised inside the package (a missing symbol of a compiled extension)
    "transformer_engine/__init__.py": "",
    "transformer_engine/pytorch.py": "raise ImportError('undefined symbol: _ZN2at6TensorE (libtransformer_engine.so)')",
    # an OSError from a missing shared library
    "apex/__init__.py": "raise OSError('libcudart.so.12: cannot open shared object file')",
    # a dependency of the package is missing: broken, not absent
    "deep_ep/__init__.py": "import a_missing_dependency_of_deep_ep",
    # a healthy package without the asked-for submodule: absent
    "healthy/__init__.py": "",
}


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    for rel, text in PACKAGES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    tops = {p.split("/")[0] for p in PACKAGES}
    ours = [m for m in sys.modules if m.split(".")[0] in tops]
    saved = {m: sys.modules.pop(m) for m in ours}
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plat, "_BROKEN", {})
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in tops]:
        del sys.modules[name]  # the fakes must not leak into later imports (megatron-core probes transformer_engine)
    sys.modules.update(saved)


def test_not_installed_is_absent_without_a_word(fake_site, caplog):
    with caplog.at_level(logging.WARNING, logger=plat.__name__):
        assert not plat._module_available("no_such_package_xyz")
        assert not plat._module_available("no_such_package_xyz.pytorch")
        assert not plat._module_available("healthy.no_such_submodule")
        assert plat._module_available("healthy")
    assert caplog.records == [] and plat.broken_installs() == ()


@pytest.mark.parametrize(
    ("module", "error"),
    [
        ("transformer_engine.pytorch", "ImportError: undefined symbol"),
        ("apex", "OSError: libcudart.so.12"),
        ("deep_ep", "ModuleNotFoundError: No module named 'a_missing_dependency_of_deep_ep'"),
    ],
)
def test_broken_install_is_reported_once_by_name(fake_site, caplog, module, error):
    with caplog.at_level(logging.WARNING, logger=plat.__name__):
        assert not plat._module_available(module)
        assert not plat._module_available(module)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{module} is installed but does not import ({error}")
    assert [b.module for b in plat.broken_installs()] == [module]


def test_gpu_platform_with_broken_te_and_apex(fake_site, caplog, monkeypatch):
    """On a GPU machine a broken TE/Apex counts as absent, each named in a warning; an explicit ``te`` attention
    backend is refused while ``auto`` falls back."""
    monkeypatch.setattr(plat, "cuda_available", lambda: True)
    with caplog.at_level(logging.WARNING, logger=plat.__name__):
        detected = plat.detect_platform()
    assert detected.is_cuda and not detected.has_transformer_engine and not detected.has_apex
    assert not detected.has_deep_ep
    text = caplog.text
    assert "transformer_engine.pytorch is installed but does not import" in text
    assert "apex is installed but does not import (OSError" in text
    assert "deep_ep is installed but does not import" in text
    assert resolve_attention_backend("auto", 2, detected.has_transformer_engine) == "triton"
    with pytest.raises(ValueError, match="attention_backend=te needs Transformer Engine"):
        resolve_attention_backend("te", 1, detected.has_transformer_engine)
