"""The Qwen3-30B-A3B SFT recipe: resolves, validates, is planned like the CPT recipes, and its pre-flight needs the
loss-mask datasets."""

from __future__ import annotations

from megatron_agentic import recipes
from megatron_agentic.config import config_from_dict
from megatron_agentic.planning import plan as planning
from megatron_agentic.train import preflight


def test_sft_recipe_fits_on_h100_and_derives_from_stage1():
    r = recipes.load_recipe("qwen3-30b-a3b-sft")
    assert r["data"]["sft"] is True and r["checkpoint"]["pretrained"] == recipes.load_recipe("qwen3-30b-a3b-stage2")[
        "checkpoint"]["dir"]  # fmt: skip
    assert r["model"]["preset"] == "qwen3-30b-a3b" and r["parallel"]["context"] == 4
    result = planning.make_plan("qwen3-30b-a3b-sft")
    assert result.fits and not result.errors, result.errors
    assert result.memory_gib_per_gpu < 80
    assert result.iterations == r["train"]["iters"] == 2000


def test_sft_preflight_asks_for_the_loss_masks(tmp_path):
    prefix = tmp_path / "react"
    for ext in (".bin", ".idx"):
        (tmp_path / f"react{ext}").write_bytes(b"")
    raw = {"data": {"sft": True, "blend": [str(prefix)], "mock": False}}
    problems = preflight(config_from_dict(raw))
    assert problems == [f"data.blend: {prefix}_loss_mask.bin/.idx not found"]
