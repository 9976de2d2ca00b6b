"""The demo's training stages come from recipes: the ``full`` preset trains the recipe values as they are, the
``small`` preset changes only sizes, and the config a stage hands to ``megatron-agentic train`` is the recipe
resolved (base chain merged) plus the stage's overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_agentic import recipes
from megatron_agentic.config import load_config
from megatron_agentic.demo.config import StageConfig, get_preset
from megatron_agentic.demo.pipeline import DemoContext
from megatron_agentic.demo.steps import stage_sets, train_command

SIZES = ("iters", "seq_length", "global_batch_size", "micro_batch_size", "lr", "eval_interval", "eval_iters")


@pytest.mark.parametrize("label", ["stage1", "stage2"])
def test_full_preset_is_the_recipe(label):
    stage = getattr(get_preset("full"), label)
    recipe = recipes.load_recipe(stage.recipe)
    assert {n: getattr(stage, n) for n in SIZES} == {n: recipe["train"][n] for n in SIZES}
    assert stage.parallel == {k: v for k, v in recipe["parallel"].items() if k in ("expert", "context") and v != 1}


def test_stage2_recipe_derives_from_stage1():
    s1, s2 = recipes.load_recipe("demo-stage1"), recipes.load_recipe("demo-stage2")
    assert (s1["parallel"]["context"], s2["parallel"]["context"]) == (1, 2)
    assert s2["train"]["seq_length"] == 4 * s1["train"]["seq_length"]
    assert s2["data"] == s1["data"] and s2["train"]["lr_schedule"] == s1["train"]["lr_schedule"]  # inherited
    assert "base" not in Path(recipes.recipe_path("demo-stage1")).read_text()


def test_explicit_sizes_override_the_recipe():
    stage = StageConfig("demo-stage2", iters=3, seq_length=64)
    assert (stage.iters, stage.seq_length, stage.global_batch_size) == (3, 64, 4)
    with pytest.raises(ValueError, match="divisible by 2 \\* context"):
        StageConfig("demo-stage2", seq_length=250)


@pytest.mark.parametrize("label", ["stage1", "stage2"])
def test_train_command_loads_as_the_stage(tmp_path, label):
    cfg = get_preset("small")
    ctx = DemoContext(workdir=tmp_path, config=cfg)
    stage = getattr(cfg, label)
    argv = train_command(ctx, stage, stage_sets(ctx, stage, label))
    config = Path(argv[argv.index("--config") + 1])
    assert config == tmp_path / "configs" / f"demo-{label}.yaml"
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    overrides = [o for o in overrides if not o.startswith(("data.blend_file", "data.eval_sets"))]  # files not made
    train = load_config(config, overrides)
    assert (train.train.seq_length, train.train.global_batch_size, train.train.lr) == (
        stage.seq_length,
        stage.global_batch_size,
        stage.lr,
    )
    assert train.parallel.context == stage.parallel.get("context", 1)
    assert train.parallel.expert == stage.parallel.get("expert", 1)
    assert train.train.weight_decay == 0.01 and train.log.tensorboard is False  # the recipe's other values
