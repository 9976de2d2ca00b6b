"""Recipe registry: YAML files that derive from a base and change a few fields.

A recipe is a ``megatron-agentic train`` config (``model``, ``parallel``, ``train``, ``data``,
``checkpoint``, ``log``, ``perf``; schema in :mod:`megatron_agentic.config`) plus a ``plan`` section holding the
planner's assumptions (nodes, GPUs per node, GPU memory, peak TFLOP/s, MFU). ``base: NAME`` inherits
from another recipe: mappings merge recursively, scalars and lists replace. Recipes ship as
``megatron_agentic/recipes/*.yaml``; a path to any YAML file works wherever a name does.

``python -m megatron_agentic.recipes list`` lists the recipes; ``... show NAME [--set k=v]`` prints the
resolved recipe; ``... export NAME --output FILE`` writes the train config the launch scripts pass to
``megatron-agentic train --config``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from typing import Any

import yaml

from data_tools.common.atomic import atomic_write_text
from megatron_agentic.config import yaml_load
from megatron_agentic.recipe_files import RECIPE_DIR as RECIPE_DIR  # the file layer, shared with load_config
from megatron_agentic.recipe_files import RecipeError as RecipeError
from megatron_agentic.recipe_files import deep_merge as deep_merge
from megatron_agentic.recipe_files import list_recipes, recipe_path, resolve

TRAIN_SECTIONS = ("model", "parallel", "train", "data", "checkpoint", "log", "perf")
"""Sections passed to ``megatron-agentic train``."""


@dataclasses.dataclass
class PlanAssumptions:
    """The ``plan`` section of a recipe: hardware and efficiency assumptions of the planner."""

    nodes: int = 1
    """Default number of nodes (``--nodes`` overrides)."""
    gpus_per_node: int = 8
    """GPUs per node (``--gpus-per-node`` overrides)."""
    gpu_memory_gib: float = 80.0
    """Memory of one GPU; layouts estimated above it are rejected."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of one GPU in TFLOP/s (H100 SXM: 989)."""
    mfu: float = 0.25
    """Assumed model-FLOPs utilisation for step-time and GPU-hour estimates (``plan --throughput FILE`` replaces
    it with a measured one)."""
    mfu_low: float = 0.15
    """Low end of the assumed MFU range (pessimistic estimate)."""
    mfu_high: float = 0.30
    """High end of the assumed MFU range (optimistic estimate)."""
    mfu_source: str = "recipe plan.mfu (not measured)"
    """Where the assumed MFU comes from (reported by ``plan`` as ``mfu_source``)."""
    overhead_gib: float = 4.0
    """Fixed per-GPU overhead: CUDA context, NCCL buffers, allocator fragmentation."""

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"plan.{name} must be an integer >= 1, got {value!r}")
        for name in ("gpu_memory_gib", "peak_tflops"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise RecipeError(f"plan.{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("mfu", "mfu_low", "mfu_high"):
            if not isinstance(getattr(self, name), (int, float)) or not 0.0 < float(getattr(self, name)) <= 1.0:
                raise RecipeError(f"plan.{name} must be in (0, 1], got {getattr(self, name)!r}")
        if not self.mfu_low <= self.mfu <= self.mfu_high:
            raise RecipeError(
                f"plan.mfu_low <= plan.mfu <= plan.mfu_high must hold, got {self.mfu_low}, {self.mfu}, {self.mfu_high}"
            )
        if self.overhead_gib < 0:
            raise RecipeError(f"plan.overhead_gib must be >= 0, got {self.overhead_gib!r}")


def _resolve(name: str) -> dict[str, Any]:
    return resolve(name, yaml_load)


def apply_overrides(recipe: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``SECTION.FIELD=VALUE`` overrides (values parsed as YAML) in order; later ones win."""
    out = copy.deepcopy(recipe)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) != 2 or not all(path):
            raise RecipeError(f"--set {item!r}: expected SECTION.FIELD=VALUE (e.g. parallel.tensor=2)")
        if path[0] not in (*TRAIN_SECTIONS, "plan"):
            raise RecipeError(f"--set {item!r}: unknown section {path[0]!r}; valid: {[*TRAIN_SECTIONS, 'plan']}")
        try:
            value = yaml_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        section = out.get(path[0])
        if not isinstance(section, dict):
            section = out[path[0]] = {}
        section[path[1]] = value
    return out


def load_recipe(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved recipe ``name`` (base chain merged, overrides applied) as a nested dict.

    Validates the ``plan`` section and the train sections against :mod:`megatron_agentic.config`.
    """
    recipe = apply_overrides(_resolve(name), overrides)
    unknown = sorted(set(recipe) - {*TRAIN_SECTIONS, "plan"})
    if unknown:
        raise RecipeError(f"{recipe_path(name)}: unknown section(s) {unknown}; valid: {[*TRAIN_SECTIONS, 'plan']}")
    plan_assumptions(recipe)
    training_config(recipe, source=str(recipe_path(name)))
    return recipe


def plan_assumptions(recipe: dict[str, Any]) -> PlanAssumptions:
    """The recipe's ``plan`` section as a validated dataclass."""
    values = dict(recipe.get("plan") or {})
    names = {f.name for f in dataclasses.fields(PlanAssumptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"unknown field(s) plan.{', plan.'.join(unknown)}; valid: {sorted(names)}")
    return PlanAssumptions(**values)


def train_dict(recipe: dict[str, Any]) -> dict[str, Any]:
    """The sections of ``recipe`` that ``megatron-agentic train --config`` reads (``plan`` removed)."""
    return {k: copy.deepcopy(recipe[k]) for k in TRAIN_SECTIONS if k in recipe}


def training_config(recipe: dict[str, Any], source: str = "<recipe>") -> Any:
    """The recipe's train sections as a validated ``megatron_agentic.config.TrainingConfig``."""
    from megatron_agentic.config import ConfigError, config_from_dict

    try:
        return config_from_dict(train_dict(recipe), source=source)
    except ConfigError as exc:
        raise RecipeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m megatron_agentic.recipes {list,show,export}``."""
    parser = argparse.ArgumentParser(prog="python -m megatron_agentic.recipes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list built-in recipes")
    for cmd in ("show", "export"):
        p = sub.add_parser(cmd, help=f"{cmd} a resolved recipe")
        p.add_argument("recipe", help="recipe name or YAML path")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
        if cmd == "export":
            p.add_argument("--output", "-o", required=True, help="train config YAML to write")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for name in list_recipes():
            print(name)
        return 0
    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "show":
        print(yaml.safe_dump(recipe, sort_keys=False), end="")
        return 0
    path = atomic_write_text(args.output, yaml.safe_dump(train_dict(recipe), sort_keys=False))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
