"""A ``train --config`` file may derive from a recipe (``base: NAME``) and list only what it changes; the example
config is the ``tiny-moe`` recipe by reference, not a copy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from megatron_agentic import recipe_files, recipes
from megatron_agentic.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_the_recipe():
    example = load_config(ROOT / "examples/configs/tiny_moe.yaml")
    recipe = config_from_dict(recipes.train_dict(recipes.load_recipe("tiny-moe")), str(example.source))
    assert example == recipe
    assert example.model.preset == "tiny-moe" and example.data.mock and example.train.iters == 30


def test_derived_config_merges_and_drops_plan(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: tiny-moe-stage1\ntrain:\n  seq_length: 512\nlog:\n  dir: runs/mine\n")
    cfg = load_config(mine, ["train.lr=0.01"])
    stage1 = recipes.load_recipe("tiny-moe-stage1")
    assert (cfg.train.seq_length, cfg.log.dir, cfg.train.lr) == (512, "runs/mine", 0.01)
    assert cfg.parallel.expert == stage1["parallel"]["expert"] and cfg.model.recompute == "selective"  # inherited
    chained = tmp_path / "chained.yaml"
    chained.write_text(f"base: {mine}\ntrain:\n  global_batch_size: 16\n")
    assert (load_config(chained).train.seq_length, load_config(chained).train.global_batch_size) == (512, 16)


def test_bad_base_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: no-such-recipe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown recipe 'no-such-recipe'"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="circular 'base' chain"):
        load_config(loop)


def test_recipe_file_layer_is_a_leaf():
    """config imports the file layer and the registry imports config: the layer must import neither."""
    tree = ast.parse(Path(recipe_files.__file__).read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m and m.startswith("megatron_agentic")}, modules
