"""The model families megatron-agentic trains: family name -> :class:`~megatron_agentic.models.family.ModelFamily`.

Adding a model is one folder under ``megatron_agentic/models/`` that exports ``FAMILY`` plus one line in
:data:`FAMILIES`. ``model.preset`` names a preset of any family; config, perf, planning and the training builders ask
:func:`family_of_preset` / :func:`family_of` for the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from megatron_agentic.models import qwen3_dense, qwen3_moe
from megatron_agentic.models.family import Architecture, ModelFamily

FAMILIES: dict[str, ModelFamily] = {
    qwen3_moe.FAMILY.name: qwen3_moe.FAMILY,
    qwen3_dense.FAMILY.name: qwen3_dense.FAMILY,
}
"""Every model family, by name."""


def _preset_index() -> dict[str, ModelFamily]:
    index: dict[str, ModelFamily] = {}
    for family in FAMILIES.values():
        for name in family.presets:
            if name in index:
                raise RuntimeError(f"preset {name!r} is defined by both {index[name].name} and {family.name}")
            index[name] = family
    return index


_PRESET_FAMILY = _preset_index()


def preset_names() -> list[str]:
    """Every preset name, sorted."""
    return sorted(_PRESET_FAMILY)


def family_of_preset(name: str) -> ModelFamily:
    """The family defining preset ``name``; raises ``KeyError`` listing the valid names."""
    if name not in _PRESET_FAMILY:
        raise KeyError(f"unknown model preset {name!r}; choose from {preset_names()}")
    return _PRESET_FAMILY[name]


def get_preset(name: str) -> Any:
    """A copy of preset ``name`` (of whichever family); raises ``KeyError`` listing the valid names."""
    return dataclasses.replace(family_of_preset(name).presets[name])


def family_of(arch: Architecture) -> ModelFamily:
    """The family an architecture (a preset, possibly with overrides) belongs to, by its preset type."""
    for family in FAMILIES.values():
        if any(type(arch) is type(p) for p in family.presets.values()):
            return family
    raise KeyError(f"{type(arch).__name__} is not the preset type of any model family ({sorted(FAMILIES)})")


def transformer_config_from(cfg: Any, settings: Any = None, **extra: Any) -> Any:
    """megatron-core ``TransformerConfig`` of ``cfg`` from the family of ``cfg.model.preset``."""
    return family_of_preset(cfg.model.preset).transformer_config_from(cfg, settings, **extra)


def build_model(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """This rank's ``GPTModel`` chunk of ``cfg`` from the family of ``cfg.model.preset`` (arguments: the family's
    ``build_model``, e.g. :func:`megatron_agentic.models.qwen3_moe.model.build_model`)."""
    return family_of_preset(cfg.model.preset).build_model(cfg, *args, **kwargs)
