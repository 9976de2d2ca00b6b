"""``requirements/lock.txt`` is the environment ``make venv`` installs: exact versions, consistent with setup.py's pins
and extras (hence with the Dockerfile, which installs requirements/pins.txt), and what the tests run in."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.ops.test_container import _pins, _setup_kwargs

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"


def _lock() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker and not req.extras, f"lock.txt:{number}: not exact: {line}"
        name = canonicalize_name(req.name)
        assert name not in out, f"lock.txt:{number}: {req.name} twice"
        out[name] = Version(spec.version)
    return out


def test_lock_covers_setup_py_with_the_same_versions():
    """Every pin is locked at its version; every direct requirement of the install and the test extra is locked
    inside its range (torch excepted: the Makefile installs it, see the lock's header)."""
    lock = _lock()
    for name, req in _pins("pins.txt").items():
        assert lock[canonicalize_name(name)] in req.specifier, f"{name}: lock {lock.get(canonicalize_name(name))}"
    kwargs = _setup_kwargs()
    for line in [*kwargs["install_requires"], *kwargs["extras_require"]["test"]]:
        req = Requirement(line)
        if canonicalize_name(req.name) == "torch":
            continue
        assert canonicalize_name(req.name) in lock, f"{req.name} is not in requirements/lock.txt: run `make lock`"
        assert lock[canonicalize_name(req.name)] in req.specifier, f"{req.name}: lock outside {req.specifier}"
    assert {"pip", "setuptools", "wheel", "kernels", "transformers"} <= set(lock)


def test_the_test_environment_is_the_locked_one():
    """What is installed equals the lock (a stale venv after `make lock` is rebuilt by `make venv`)."""
    wrong = {}
    for name, version in _lock().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, f"installed versions differ from requirements/lock.txt (locked, installed): {wrong}"


def test_make_venv_installs_the_lock_without_resolving():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install -q --no-deps -r \$\(LOCK\)", makefile.replace("$(PIP)", "pip"))
    assert "--no-deps --no-build-isolation -e ." in makefile and "pip check" in makefile.replace("$(PIP)", "pip")
    assert re.search(r"^lock:", makefile, re.M) and re.search(r"^test-fast:", makefile, re.M)
