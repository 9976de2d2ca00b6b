"""The CPU-testable parts of ``benchmarks/gpu_acceptance.py``: no-GPU exit, model-FLOPs formula, report, planner."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from megatron_agentic.planning import plan as planning
from megatron_agentic.planning import time as planning_time

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def acceptance():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the acceptance run really runs")
def test_exits_2_with_one_line_without_gpu(acceptance, tmp_path, capsys):
    assert acceptance.main(["--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "CUDA GPU is needed" in lines[0] and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_model_flops_match_transformers_parameter_count(acceptance):
    """6 x active non-embedding parameters (counted on HF's Qwen3MoeForCausalLM) + causal attention FLOPs."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    arch = acceptance.cut_model(4, 32)
    assert (arch.num_layers, arch.num_experts, arch.hidden_size, arch.moe_ffn_hidden_size) == (4, 32, 2048, 768)
    hf_cfg = Qwen3MoeConfig(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, moe_intermediate_size=arch.moe_ffn_hidden_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups, head_dim=arch.kv_channels, num_experts=arch.num_experts,
        num_experts_per_tok=arch.moe_router_topk, tie_word_embeddings=False, decoder_sparse_step=1, mlp_only_layers=[],
    )  # fmt: skip
    with torch.device("meta"):
        hf = Qwen3MoeForCausalLM(hf_cfg)
    expert = sum(p.numel() for n, p in hf.named_parameters() if ".experts." in n)
    active = sum(p.numel() for p in hf.parameters()) - expert * (arch.num_experts - arch.moe_router_topk) // 32
    non_embedding = active - hf.model.embed_tokens.weight.numel() - hf.model.norm.weight.numel()
    seq, tokens_per_s = 4096, 12_345.0
    attention = 6 * arch.num_layers * seq * arch.num_attention_heads * arch.kv_channels
    expected = tokens_per_s * (6 * non_embedding + attention) / 1e12
    assert acceptance.model_tflops_per_gpu(arch, seq, tokens_per_s) == pytest.approx(expected, rel=1e-12)


def test_steady_rate_skips_warmup(acceptance):
    steps = [{"step": i, "loss": 1.0, "tokens_per_s": 10.0 if i <= 2 else 100.0 + i} for i in range(1, 8)]
    assert acceptance.steady_tokens_per_s(steps, warmup=2) == 105.0
    with pytest.raises(ValueError, match="no step after warm-up"):
        acceptance.steady_tokens_per_s(steps[:2], warmup=2)


def test_report_and_throughput_table_feed_the_planner(acceptance, tmp_path):
    arch = acceptance.cut_model(4, 32)
    runs = [
        acceptance.TrainRun("bf16", "bf16", arch, 4096, 8, 8 * 20_000.0, 41.5, [11.9, 9.0]),
        acceptance.TrainRun("fp8", "fp8:tensorwise", arch, 4096, 8, 8 * 26_000.0, 38.0, [11.9, 9.1]),
    ]
    report = {"gpu": "NVIDIA H100 80GB HBM3", "steps": {"train-bf16": {"status": "ok"}}}
    acceptance.write_outputs(tmp_path, report, runs, "NVIDIA H100 80GB HBM3", 989.0)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["steps"] == report["steps"] and len(written["throughput"]) == 2
    table = planning_time.load_throughput(str(tmp_path / "throughput.json"))
    bf16_tflops = acceptance.model_tflops_per_gpu(arch, 4096, 20_000.0)
    assert table.entries[0]["tflops_per_gpu"] == pytest.approx(bf16_tflops)
    assert table.entries[0]["mfu"] == pytest.approx(bf16_tflops / 989.0)
    plan = planning.make_plan("qwen3-30b-a3b-stage1", throughput=table)
    assert plan.mfu_assumed == pytest.approx(bf16_tflops / 989.0)
    assert "NVIDIA H100" in plan.mfu_source and "'bf16'" in plan.mfu_source
    fp8 = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["train.fp8=tensorwise"], throughput=table)
    assert fp8.mfu_assumed == pytest.approx(acceptance.model_tflops_per_gpu(arch, 4096, 26_000.0) / 989.0)
    # no training step succeeded: a report, no table
    acceptance.write_outputs(tmp_path / "failed", report, [], "x", 989.0)
    assert (tmp_path / "failed" / "report.json").exists() and not (tmp_path / "failed" / "throughput.json").exists()


def test_training_overrides_are_a_valid_config(acceptance, tmp_path):
    """The acceptance training config loads and validates for 8 GPUs on the H100 platform the planner uses."""
    import argparse

    from megatron_agentic.config import load_config

    args = argparse.Namespace(iters=30, seq_length=4096, micro_batches=4)
    sets = acceptance.train_overrides(acceptance.cut_model(4, 32), args, 8, tmp_path)
    cfg = load_config(None, sets[1::2])
    assert cfg.validate(8, planning.PLAN_PLATFORM) == 8
    settings = cfg.effective_settings(planning.PLAN_PLATFORM)
    assert settings.layer_spec == "te" and settings.moe_token_dispatcher == "alltoall"
    assert settings.transformer["moe_grouped_gemm"] and settings.ddp["overlap_grad_reduce"]
    fp8 = load_config(None, [*sets[1::2], "train.fp8=tensorwise"])
    assert fp8.effective_settings(planning.PLAN_PLATFORM).transformer["fp8_recipe"] == "tensorwise"
