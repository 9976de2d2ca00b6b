"""Image build check: the base image's Transformer Engine is inside the range megatron-core declares.

``python requirements/check_te.py`` (run by the Dockerfile after ``requirements/pins.txt`` is installed) reads the
installed ``transformer-engine`` version and megatron-core's own requirement on it (its package metadata, extra
``dev``: ``transformer-engine[...]>=2.9.0a0,<2.12.0`` for 0.16.1) and prints one line: the versions when inside,
or ``error: ...`` and exit 1 when TE is missing or outside (the image keeps its own TE instead of rebuilding
``transformer_engine_torch`` from source against the image's pre-release torch).
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

TE_DISTRIBUTIONS = ("transformer-engine", "transformer_engine")
"""Names the TE package is installed under (PyPI wheel, NGC source build)."""


def installed_te() -> str | None:
    """The installed Transformer Engine version, or None."""
    for name in TE_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def megatron_core_te_range() -> SpecifierSet:
    """The ``transformer-engine`` range in the installed megatron-core's metadata (every extra that names it)."""
    ranges = [
        Requirement(r).specifier
        for r in metadata.requires("megatron-core") or []
        if Requirement(r).name.lower().replace("_", "-") == "transformer-engine"
    ]
    if not ranges:
        raise LookupError(f"megatron-core {metadata.version('megatron-core')} declares no transformer-engine range")
    combined = SpecifierSet()
    for spec in ranges:
        combined &= spec
    return combined


def check(te_version: str | None, allowed: SpecifierSet, mcore_version: str) -> str | None:
    """``None`` when ``te_version`` is inside ``allowed`` (pre-releases and local versions such as NGC's count),
    else the one-line reason."""
    if te_version is None:
        return f"no Transformer Engine in the image; megatron-core {mcore_version} needs transformer-engine{allowed}"
    public = Version(te_version).public  # "2.9.0+abc123" (NGC source build) -> "2.9.0"
    if not allowed.contains(public, prereleases=True):
        return (
            f"the image's Transformer Engine {te_version} is outside megatron-core {mcore_version}'s range "
            f"transformer-engine{allowed}: use a base image whose TE is inside it (see Dockerfile)"
        )
    return None


def main() -> int:
    """Print the versions (exit 0) or the reason (exit 1)."""
    mcore = metadata.version("megatron-core")
    allowed = megatron_core_te_range()
    te = installed_te()
    problem = check(te, allowed, mcore)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"transformer-engine {te} inside megatron-core {mcore}'s range {allowed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
