"""Recipe files: where the built-in recipes live and how a ``base:`` chain resolves.

A leaf (imports only PyYAML's error type): both :mod:`megatron_agentic.recipes` (the registry and its CLI) and
:func:`megatron_agentic.config.load_config` (a ``train --config`` file may start with ``base: RECIPE``) resolve
chains here, each passing its YAML reader, so neither imports the other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
"""Directory of the built-in recipe YAML files."""


class RecipeError(ValueError):
    """A recipe problem, with a message naming the file and field."""


def list_recipes() -> list[str]:
    """Names of the built-in recipes (``base`` excluded)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if p.stem != "base")


def recipe_path(name: str) -> Path:
    """Path of a recipe given its name or a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.exists():
        raise RecipeError(f"unknown recipe {name!r}; choose from {list_recipes()} or pass a YAML path")
    return path


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``: mappings merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path, load: Callable[[str], Any]) -> dict[str, Any]:
    """The mapping in YAML file ``path`` parsed by ``load`` (RecipeError naming the file and line otherwise)."""
    try:
        data = load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: top level must be a mapping")
    return data


def resolve_mapping(
    data: dict[str, Any], path: Path, load: Callable[[str], Any], chain: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``data`` (read from ``path``) with its ``base:`` chain merged underneath, ``base`` removed."""
    data = dict(data)
    key = str(Path(path).resolve())
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: field 'base' must be a recipe name, got {base!r}")
    return deep_merge(resolve(base, load, (*chain, key)), data)


def resolve(name: str, load: Callable[[str], Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Recipe ``name`` (or YAML path) with its ``base:`` chain merged (refuses a circular chain)."""
    path = recipe_path(name)
    key = str(path.resolve())
    if key in chain:
        raise RecipeError(f"{path}: circular 'base' chain: {' -> '.join((*chain, key))}")
    return resolve_mapping(read_yaml(path, load), path, load, chain)
