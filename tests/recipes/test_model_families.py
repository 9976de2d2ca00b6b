"""Model families: the registry, and the second family (dense Qwen3, ``tiny-dense``) end to end.

The dense family is one folder (``megatron_agentic/models/qwen3_dense/``) plus one registry line; here its parameter
formula is checked against transformers' ``Qwen3ForCausalLM`` and megatron-core's built modules, its FLOP formula
against a count from the HF model's weights, and it plans and trains on CPU like the MoE presets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_agentic.config import ConfigError, load_config
from megatron_agentic.models import registry
from megatron_agentic.planning import layout as planning_layout
from megatron_agentic.planning import memory
from megatron_agentic.planning import plan as planning
from megatron_agentic.planning import time as planning_time

REPO = Path(__file__).resolve().parents[2]


def _hf_dense(arch):
    """transformers' dense Qwen3 with ``arch``'s shape, on the meta device (no memory)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.kv_channels,
        tie_word_embeddings=not arch.untie_embeddings_and_output_weights,
    )
    with torch.device("meta"):
        return Qwen3ForCausalLM(config)


def test_registry_maps_every_preset_to_its_family():
    assert set(registry.FAMILIES) == {"qwen3_moe", "qwen3_dense"}
    assert registry.family_of_preset("tiny-moe").name == "qwen3_moe"
    assert registry.family_of_preset("qwen3-30b-a3b").moe
    dense = registry.family_of_preset("tiny-dense")
    assert dense.name == "qwen3_dense" and not dense.moe
    arch = registry.get_preset("tiny-dense")
    assert registry.family_of(arch) is dense and arch.num_experts == 0
    assert registry.get_preset("tiny-dense") is not registry.get_preset("tiny-dense")  # copies
    with pytest.raises(KeyError, match="tiny-dense"):
        registry.get_preset("nope")  # the message lists every family's presets


def test_tiny_dense_counts_match_transformers():
    """Total parameters of tiny-dense (and a tied variant) equal transformers' Qwen3ForCausalLM."""
    for arch in (registry.get_preset("tiny-dense"), registry.get_preset("tiny-dense").replace(num_layers=3)):
        hf = _hf_dense(arch)
        b = memory.param_breakdown(arch)
        assert b.total == sum(p.numel() for p in hf.parameters())
        assert b.active == b.total  # dense: every weight is used by every token
        assert b.num_experts == b.expert == 0


def test_tiny_dense_flops_per_token_from_hf_weights():
    """6 x (weights a token multiplies with, norms included as in the MoE formula) + causal attention."""
    arch = registry.get_preset("tiny-dense")
    hf = _hf_dense(arch)
    named = dict(hf.named_parameters())
    per_token = sum(p.numel() for n, p in named.items() if n not in ("model.embed_tokens.weight", "model.norm.weight"))
    seq = 128
    attention = 6 * arch.num_layers * seq * arch.num_attention_heads * arch.kv_channels
    assert planning_time.flops_per_token(arch, seq) == 6 * per_token + attention
    # full recompute adds one forward of every layer's GEMMs and attention (a third of their training FLOPs)
    layers = sum(p.numel() for n, p in named.items() if ".layers." in n and p.dim() == 2)
    full = planning_time.recompute_flops_per_token(arch, seq, "full")
    assert full == pytest.approx((6 * layers + attention) / 3)
    mlp_only = planning_time.recompute_flops_per_token(arch, seq, "selective", ["mlp"])
    assert mlp_only == 2 * sum(p.numel() for n, p in named.items() if ".mlp." in n)


def test_tiny_dense_plans_and_refuses_expert_parallelism():
    from megatron_agentic.recipes import load_recipe, training_config

    overrides = ["model.preset=tiny-dense", "model.vocab_size=8192", "parallel.expert=1"]
    plan = planning.make_plan("tiny-moe-stage1", overrides=overrides)
    cfg = training_config(load_recipe("tiny-moe-stage1", overrides))
    arch = cfg.model.architecture()
    assert arch == registry.get_preset("tiny-dense").replace(vocab_size=8192)
    assert not plan.errors, plan.errors
    assert plan.total_params == plan.active_params == memory.param_breakdown(arch).total
    assert plan.flops_per_token == planning_time.flops_per_token(arch, cfg.train.seq_length)
    assert plan.params_per_gpu == memory.params_per_rank(arch, plan.layout)["dense"]
    bad = planning.make_plan("tiny-moe-stage1", overrides=["model.preset=tiny-dense", "parallel.expert=2"])
    assert any("needs a MoE model" in e for e in bad.errors)
    with pytest.raises(ConfigError, match="parallel.expert"):
        load_config(None, ["model.preset=tiny-dense", "parallel.expert=2"]).validate(2)


def test_dense_selective_recompute_drops_the_mlp():
    arch = registry.get_preset("tiny-dense")
    layout = planning_layout.ParallelLayout(world=1)
    parts = memory.activation_components(arch, layout, 64, 2, 4, False)
    kept = memory.activation_bytes_per_layer(arch, layout, 64, 2, 4, False, ["mlp"])
    assert kept == pytest.approx(sum(parts.values()) - parts["mlp"] - parts["mlp_act"])
    assert memory.activation_bytes_per_layer(arch, layout, 64, 2, 4, False, ["moe"]) == sum(parts.values())


@pytest.mark.slow
def test_tiny_dense_shards_match_megatron_modules(tmp_path):
    """Per-rank parameter counts of tiny-dense equal megatron-core's built modules for TP=2 (SP) and PP=2."""
    from tests.recipes.recipes_testlib import model_sizes, run_spawned

    layouts = [{}, {"tensor": 2}, {"pipeline": 2}]
    per_rank = run_spawned(2, model_sizes, layouts, "tiny-dense", out_dir=str(tmp_path))
    arch = registry.get_preset("tiny-dense")
    for rank_results in per_rank:
        for entry in rank_results:
            lay = entry["layout"]
            layout = planning_layout.ParallelLayout(world=2, sequence_parallel=lay.get("tensor", 1) > 1, **lay)
            expected = memory.params_per_rank(arch, layout, first=entry["first"], last=entry["last"])
            assert entry["expert"] == expected["expert"] == 0
            assert entry["dense"] == expected["dense"], entry
    assert per_rank[0][0]["dense"] == memory.param_breakdown(arch).total  # the whole model on one rank


@pytest.mark.slow
def test_tiny_dense_trains_on_cpu(tmp_path):
    """``megatron-agentic train`` runs tiny-dense on CPU (local spec) and its loss falls."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    args = [
        *("--config", str(REPO / "examples/configs/tiny_moe.yaml")),
        *("--set", "model.preset=tiny-dense", "--set", "model.vocab_size=512", "--set", "train.iters=8"),
        *("--set", "train.seq_length=64", "--set", "train.lr_warmup_iters=1", "--set", "log.tensorboard=false"),
        *("--set", f"log.dir={tmp_path / 'log'}"),
    ]
    out = subprocess.run(
        [sys.executable, "-m", "megatron_agentic", "train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "log" / "summary.json").read_text())
    assert summary["model"] == "tiny-dense" and summary["final_step"] == 8
    losses = summary["losses"]
    assert losses["last"] < losses["first"]


def test_mcore_to_hf_refuses_a_dense_checkpoint_clearly():
    """Conversion is Qwen3-MoE only: a dense training checkpoint's recorded config gets a one-line error."""
    from megatron_agentic.convert.errors import ConversionError
    from megatron_agentic.convert.mcore_to_hf import checkpoint_arch

    with pytest.raises(ConversionError, match="DensePreset model \\(tiny-dense\\): mcore-to-hf converts Qwen3-MoE"):
        checkpoint_arch({"config": {"model": {"preset": "tiny-dense"}}}, None)
    assert checkpoint_arch({"config": {"model": {"preset": "tiny-moe"}}}, None).num_experts == 4
