"""Configuration: YAML + --set parsing and validation before any process group starts."""

from __future__ import annotations

import math

import pytest

from megatron_agentic import train as train_cli
from megatron_agentic.config import ConfigError, load_config
from megatron_agentic.models.qwen3_moe.presets import PRESETS, get_preset

EXAMPLE = "examples/configs/tiny_moe.yaml"


def test_example_config_loads_and_later_set_wins():
    cfg = load_config(EXAMPLE, ["parallel.tensor=2", "train.iters=5", "train.iters=7", "model.num_layers=2"])
    assert cfg.parallel.tensor == 2 and cfg.train.iters == 7
    assert cfg.model.architecture().num_layers == 2
    assert cfg.model.architecture().num_experts == PRESETS["tiny-moe"].num_experts
    assert cfg.validate(2) == 1  # world 2 = TP 2 -> DP 1
    assert cfg.validate(4) == 2


def test_train_tokens_overrides_iters():
    cfg = load_config(EXAMPLE, ["train.train_tokens=10000", "train.global_batch_size=8", "train.seq_length=128"])
    assert cfg.train.total_iters() == math.ceil(10000 / (8 * 128))


def test_qwen3_30b_a3b_preset_matches_published_sizes():
    p = get_preset("qwen3-30b-a3b")
    assert (p.num_layers, p.hidden_size, p.num_attention_heads, p.num_query_groups, p.kv_channels) == (
        48,
        2048,
        32,
        4,
        128,
    )
    assert (p.num_experts, p.moe_router_topk, p.moe_ffn_hidden_size, p.vocab_size) == (128, 8, 768, 151936)
    assert p.rotary_base == 1e6 and p.norm_epsilon == 1e-6 and p.qk_layernorm and p.untie_embeddings_and_output_weights
    counts = p.num_parameters()
    # Hugging Face model card: 30.5B total, 3.3B activated.
    assert abs(counts["total"] / 1e9 - 30.5) < 0.2
    assert abs(counts["active"] / 1e9 - 3.3) < 0.1


@pytest.mark.parametrize(
    ("overrides", "world", "message"),
    [
        (["parallel.tensor=3"], 3, "num_attention_heads (4) must be divisible by parallel.tensor (3)"),
        (
            ["parallel.tensor=4", "model.num_attention_heads=8"],
            4,
            "num_query_groups (2) must be divisible by parallel.tensor (4)",
        ),
        (["parallel.pipeline=3"], 3, "num_layers (4) must be divisible by parallel.pipeline (3)"),
        (["parallel.expert=3"], 3, "num_experts (4) must be divisible by parallel.expert (3)"),
        (
            ["parallel.context=2", "train.seq_length=130"],
            2,
            "seq_length (130) must be divisible by 2*parallel.context (4)",
        ),
        (["parallel.tensor=2", "parallel.sequence_parallel=false"], 2, "needs sequence parallelism"),
        (["parallel.tensor=2"], 3, "world size 3 is not divisible by parallel.tensor*pipeline*context"),
        (
            ["train.global_batch_size=6", "train.micro_batch_size=2"],
            2,
            "global_batch_size (6) must be divisible by micro_batch_size*data",
        ),
        (["data.blend=[1.0, /nonexistent/prefix]"], 1, "vocab_size (8192) is smaller than the qwen3 tokenizer"),
    ],
)
def test_invalid_layouts_rejected(overrides, world, message):
    cfg = load_config(EXAMPLE, overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        cfg.validate(world)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr_schedule=linear"], "train.lr_schedule must be cosine or wsd"),
        (["model.preset=nope"], "unknown model preset 'nope'"),
        (["model.bogus=1"], "unknown model field"),
        (["train.bogus=1"], "unknown field.*train.bogus"),
        (["nosection.x=1"], "unknown section 'nosection'"),
        (["train.iters"], "expected KEY=VALUE"),
        (["train.global_batch_size=7"], "global_batch_size \\(7\\) must be divisible by train.micro_batch_size"),
        (["data.loader=spark"], "data.loader must be torch or dali"),
    ],
)
def test_bad_fields_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EXAMPLE, overrides)


def test_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iters: 3\n  lr: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{bad}:\d+: invalid YAML"):
        load_config(bad)


def test_cli_reports_config_errors_before_process_groups(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = train_cli.main(["--config", EXAMPLE, "--set", "parallel.tensor=3", "--validate-only"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "config error" in err and "parallel.tensor" in err
    import torch

    assert not torch.distributed.is_initialized()
    rc = train_cli.main(["--config", EXAMPLE, "--set", "parallel.tensor=2", "--validate-only"])
    assert rc == 0
