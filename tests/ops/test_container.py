"""The Dockerfile, setup.py and the pins file agree (no image can be built here: no GPU, no registry access)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from unittest import mock

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _pins(name: str) -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


def _setup_kwargs() -> dict:
    import setuptools

    captured = {}
    with mock.patch.object(setuptools, "setup", lambda **kw: captured.update(kw)):
        code = compile((ROOT / "setup.py").read_text(), str(ROOT / "setup.py"), "exec")
        exec(code, {"__file__": str(ROOT / "setup.py"), "__name__": "__main__"})
    return captured


def test_pins_are_exact_and_shared_with_setup_py():
    pins = _pins("pins.txt")
    assert pins and all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins.values())
    kwargs = _setup_kwargs()
    declared = {Requirement(r).name.lower(): Requirement(r) for r in kwargs["install_requires"]}
    for name, req in pins.items():
        assert str(declared[name].specifier) == str(req.specifier), name
    assert [str(Requirement(r)) for r in kwargs["extras_require"]["gpu"]] == [str(r) for r in _pins("gpu.txt").values()]
    assert "megatron-core" in pins and str(pins["megatron-core"].specifier) == "==0.16.1"


def test_installed_versions_match_pins():
    """The environment the tests run in is the pinned one (what `make venv` installs)."""
    for name, req in _pins("pins.txt").items():
        assert metadata.version(name) in req.specifier, f"{name} {metadata.version(name)} not {req.specifier}"


def test_transformer_engine_pin_inside_megatron_core_tested_range():
    te = _pins("gpu.txt")["transformer-engine"]
    pinned = Version(next(iter(te.specifier)).version)
    ranges = [
        Requirement(r)
        for r in metadata.requires("megatron-core") or []
        if Requirement(r).name.lower().replace("_", "-") == "transformer-engine"
    ]
    assert ranges, "megatron-core's metadata names no transformer-engine range"
    for r in ranges:
        assert r.specifier.contains(pinned, prereleases=True), f"TE {pinned} outside {r.specifier}"
        assert set(r.extras) <= set(te.extras) | {"core_cu12"}


def test_dockerfile_installs_from_the_pins_and_handles_ngc_constraints():
    assert re.search(r"^COPY requirements ", DOCKERFILE, re.M)
    install = DOCKERFILE.index("pip install -r requirements/pins.txt")
    # the pins are resolved against the image's constraints before anything is installed ...
    assert -1 < DOCKERFILE.find("pip install --dry-run --quiet -r requirements/pins.txt") < install
    # ... and the image's own Transformer Engine is kept and checked against megatron-core's range afterwards
    assert install < DOCKERFILE.find("python requirements/check_te.py")
    assert "uninstall" not in DOCKERFILE and "requirements/gpu.txt" not in DOCKERFILE.split("FROM ")[1]
    assert "/etc/pip/constraint.txt" in DOCKERFILE and "sed -i" in DOCKERFILE
    assert not re.search(r"pip install[^\n]*==", DOCKERFILE), "versions belong in requirements/*.txt"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE, re.M).group(1)
    assert base.startswith("nvcr.io/nvidia/pytorch:")


def test_dockerfile_runs_as_non_root_and_context_is_small():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "runs", "checkpoints", "tests"):
        assert entry in ignored
    for copied in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
            assert path not in ignored, f"Dockerfile copies {path}, which .dockerignore excludes"


def _check_te():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_te", ROOT / "requirements" / "check_te.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_te_accepts_the_range_megatron_core_declares_and_nothing_else():
    check_te = _check_te()
    allowed = check_te.megatron_core_te_range()  # from the installed megatron-core 0.16.1's own metadata
    assert allowed.contains("2.10.0") and not allowed.contains("2.12.0")
    mcore = metadata.version("megatron-core")
    for inside in ("2.9.0", "2.9.0+40c69e75", "2.10.0", "2.11.0rc1"):  # NGC builds carry a local version
        assert check_te.check(inside, allowed, mcore) is None, inside
    for outside in ("2.8.0", "2.12.0", "3.0.0"):
        line = check_te.check(outside, allowed, mcore)
        assert line and outside in line and "outside megatron-core" in line and "\n" not in line
    assert "no Transformer Engine" in check_te.check(None, allowed, mcore)
