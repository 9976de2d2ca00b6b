"""Planner: parameter counts vs transformers and megatron-core, memory estimate, layout checks, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_agentic.models.qwen3_moe.presets import get_preset
from megatron_agentic.planning import cli, memory, search
from megatron_agentic.planning import layout as planning_layout
from megatron_agentic.planning import plan as planning
from megatron_agentic.planning import time as planning_time

REPO = Path(__file__).resolve().parents[2]


def _hf_config(arch):
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        moe_intermediate_size=arch.moe_ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.kv_channels,
        num_experts=arch.num_experts,
        num_experts_per_tok=arch.moe_router_topk,
        tie_word_embeddings=not arch.untie_embeddings_and_output_weights,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    )


def test_qwen3_30b_a3b_counts_match_transformers():
    """Total/active parameters of the 30B-A3B preset equal the HF model's (built on the meta device)."""
    import torch
    from transformers import Qwen3MoeForCausalLM

    arch = get_preset("qwen3-30b-a3b")
    with torch.device("meta"):
        hf = Qwen3MoeForCausalLM(_hf_config(arch))
    hf_total = sum(p.numel() for p in hf.parameters())
    expert_params = sum(p.numel() for n, p in hf.named_parameters() if ".experts." in n)
    hf_active = hf_total - expert_params * (arch.num_experts - arch.moe_router_topk) // arch.num_experts
    b = memory.param_breakdown(arch)
    assert b.total == hf_total
    assert b.active == hf_active
    assert 30.4e9 < b.total < 30.6e9
    assert 3.2e9 < b.active < 3.4e9


@pytest.mark.slow
def test_tiny_moe_shards_match_megatron_modules(tmp_path):
    """Per-rank dense/expert parameter counts equal megatron-core's modules for TP=2 (SP), EP=2 and PP=2."""
    from tests.recipes.recipes_testlib import model_sizes, run_spawned

    layouts = [{}, {"tensor": 2}, {"expert": 2}, {"pipeline": 2}]
    per_rank = run_spawned(2, model_sizes, layouts, out_dir=str(tmp_path))
    arch = get_preset("tiny-moe")
    checked = 0
    for rank_results in per_rank:
        for entry in rank_results:
            lay = entry["layout"]
            layout = planning_layout.ParallelLayout(world=2, sequence_parallel=lay.get("tensor", 1) > 1, **lay)
            expected = memory.params_per_rank(arch, layout, first=entry["first"], last=entry["last"])
            assert (entry["dense"], entry["expert"]) == (expected["dense"], expected["expert"]), entry
            checked += 1
    assert checked == 2 * len(layouts)


@pytest.mark.slow
def test_activation_estimate_vs_saved_tensors(tmp_path):
    """The activation + logits estimate is within 15% of what autograd saves for tiny-moe (fp32, local attn)."""
    from tests.recipes.recipes_testlib import run_spawned, saved_activation_bytes

    seq, mb = 256, 2
    (measured,) = run_spawned(1, saved_activation_bytes, seq, mb, out_dir=str(tmp_path))
    arch = get_preset("tiny-moe")
    mem = memory.estimate_memory(
        arch,
        planning_layout.ParallelLayout(world=1),
        seq_length=seq,
        micro_batch=mb,
        num_microbatches=1,
        precision="fp32",
        recompute=False,
        distributed_optimizer=True,
        local_attention=True,
        overhead_gib=0.0,
    )
    estimate = (mem["activations"] + mem["logits"]) * planning_layout.GIB
    assert measured["saved_bytes"] == pytest.approx(estimate, rel=0.15)
    # the non-logits part alone is also close (logits are computed exactly)
    layers = measured["saved_bytes"] - mem["logits"] * planning_layout.GIB
    assert layers == pytest.approx(mem["activations"] * planning_layout.GIB, rel=0.3)


def test_weights_grads_optimizer_bytes():
    arch = get_preset("tiny-moe")
    layout = planning_layout.ParallelLayout(world=4, expert=2)
    mem = memory.estimate_memory(
        arch,
        layout,
        seq_length=64,
        micro_batch=1,
        num_microbatches=1,
        precision="bf16",
        recompute=False,
        distributed_optimizer=True,
        local_attention=False,
        overhead_gib=0.0,
    )
    p = memory.params_per_rank(arch, layout)
    n = p["dense"] + p["expert"]
    assert mem["weights"] * planning_layout.GIB == pytest.approx(2 * n)
    assert mem["gradients"] * planning_layout.GIB == pytest.approx(4 * n)
    # dense states sharded over DP=4, expert states over EDP = 4 / EP = 2
    assert mem["optimizer"] * planning_layout.GIB == pytest.approx(12 * p["dense"] / 4 + 12 * p["expert"] / 2)


def test_stage_recipes_fit_and_iterations():
    for name, tokens, seq, gbs in (
        ("qwen3-30b-a3b-stage1", 200e9, 32768, 128),
        ("qwen3-30b-a3b-stage2", 100e9, 131072, 32),
    ):
        result = planning.make_plan(name)
        assert result.fits and not result.errors, result.errors
        assert result.iterations == math.ceil(tokens / (seq * gbs))
        assert result.memory_gib_per_gpu < 80
        assert result.gpu_hours > 0


def test_rejects_layout_over_80gb_and_bad_world():
    result = planning.make_plan("qwen3-30b-a3b-stage2", overrides=["model.recompute=false"])
    assert not result.fits
    assert any("exceeds 80 GiB" in e and "model.recompute=selective or full" in e for e in result.errors)
    result = planning.make_plan("qwen3-30b-a3b-stage2", nodes=3)
    assert any("world size 24 is not divisible" in e for e in result.errors)
    result = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["parallel.tensor=8"])
    assert any("num_query_groups (4) must be divisible by parallel.tensor (8)" in e for e in result.errors)


def test_more_context_parallel_less_activation_memory():
    base = planning.make_plan("qwen3-30b-a3b-stage2", overrides=["model.recompute=false"])
    more = planning.make_plan(
        "qwen3-30b-a3b-stage2", nodes=64, overrides=["model.recompute=false", "parallel.context=32"]
    )
    assert more.memory["activations"] == pytest.approx(base.memory["activations"] / 2, rel=1e-6)


def test_cli_json(capsys):
    rc = cli.main(["--recipe", "qwen3-30b-a3b-stage1", "--nodes", "32", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    for key in ("total_params", "active_params", "memory_gib_per_gpu", "iterations", "gpu_hours"):
        assert key in data
    # issue 13 contract: the plan states its layout and assumptions
    assert data["expert_tensor_parallel"] == 1 and data["recompute"] == "selective"
    assert data["mfu_assumed"] == 0.25 and data["mfu_source"].startswith("assumption: ")
    assert data["mfu_range"] == [0.15, 0.30]
    assert data["step_time_range_s"][0] < data["step_time_s"] < data["step_time_range_s"][1]
    assert data["memory_gib_per_gpu"] <= 80
    assert data["layout"]["data"] == 256 // 4  # TP=1, CP=4
    rc = cli.main(["--recipe", "qwen3-30b-a3b-stage2", "--set", "model.recompute=false"])
    assert rc == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert cli.main(["--recipe", "no-such-recipe"]) == 2


def test_cli_json_output_writes_the_json_beside_the_table(tmp_path, capsys):
    """One planner process writes both files of a Slurm job (plan.txt from stdout, plan.json)."""
    args = ["--recipe", "qwen3-30b-a3b-stage1", "--nodes", "32"]
    assert cli.main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / "job" / "plan.json"
    out.parent.mkdir()
    assert cli.main([*args, "--json-output", str(out)]) == 0
    assert "memory per GPU" in capsys.readouterr().out  # the table, as without the flag
    assert json.loads(out.read_text()) == printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["plan.json"]  # no temporary left
    assert cli.main([*args, "--json-output", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    rc = cli.main(["--recipe", "qwen3-30b-a3b-stage2", "--set", "model.recompute=false", "--json-output", str(out)])
    assert rc == 1 and json.loads(out.read_text())["errors"]  # a plan that does not fit is written too
    with pytest.raises(SystemExit):
        cli.main([*args, "--search", "--json-output", str(out)])


@pytest.mark.slow  # a fresh interpreter
def test_planner_does_not_import_torch():
    """The planner runs before every job start (launch_train.sh): it plans a cluster, it needs no torch."""
    code = "import sys, megatron_agentic.planning.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_search_lists_only_fitting_valid_layouts(capsys):
    results = search.search_layouts("qwen3-30b-a3b-stage2", nodes=32, top=50)
    assert results
    for r in results:
        assert r.fits and not r.errors and r.memory_gib_per_gpu <= 80
        lay = r.layout
        assert 256 % (lay.tensor * lay.context * lay.pipeline) == 0 and 128 % lay.expert == 0
        # each listed layout is exactly what `plan` says for the same overrides
        again = planning.make_plan(
            "qwen3-30b-a3b-stage2",
            nodes=32,
            overrides=[
                f"parallel.tensor={lay.tensor}",
                f"parallel.context={lay.context}",
                f"parallel.pipeline={lay.pipeline}",
                f"parallel.expert={lay.expert}",
                f"model.recompute={r.recompute}",
            ],
        )
        assert again.memory_gib_per_gpu == r.memory_gib_per_gpu
    order = {"none": 0, "selective": 1, "full": 2}
    ranks = [(order[r.recompute], r.memory_gib_per_gpu > 72) for r in results]
    assert ranks == sorted(ranks)  # no-recompute first, then the ones with headroom
    assert cli.main(["--recipe", "qwen3-30b-a3b-stage2", "--nodes", "1", "--search"]) == 1  # 8 GPUs: none fit
    assert "no layout fits" in capsys.readouterr().out


def test_stage2_fits_on_32_nodes_and_etp_is_modelled():
    result = planning.make_plan("qwen3-30b-a3b-stage2", nodes=32)
    assert result.fits and result.memory_gib_per_gpu <= 80 and result.expert_tensor_parallel == 1
    arch = get_preset("qwen3-30b-a3b")
    etp1 = memory.params_per_rank(arch, planning_layout.ParallelLayout(world=16, expert=8, expert_tensor=1))
    etp2 = memory.params_per_rank(arch, planning_layout.ParallelLayout(world=16, expert=8, expert_tensor=2))
    assert etp2["expert"] * 2 == etp1["expert"] and etp2["dense"] == etp1["dense"]
    etp = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["parallel.expert_tensor=2"])
    assert etp.layout.expert_tensor == 2 and etp.layout.expert_data == 256 // (2 * 8)
    assert any(
        "expert_tensor" in e
        for e in planning.make_plan("qwen3-30b-a3b-stage1", overrides=["parallel.expert_tensor=5"]).errors
    )


def test_recompute_memory_and_cost():
    runs = {
        mode: planning.make_plan("qwen3-30b-a3b-stage1", overrides=[f"model.recompute={mode}"])
        for mode in ("none", "selective", "full")
    }
    mem = {k: r.memory["activations"] for k, r in runs.items()}
    assert mem["full"] < mem["selective"] < mem["none"]
    assert runs["none"].recompute_flops_per_token == 0
    assert runs["none"].step_time_s < runs["selective"].step_time_s < runs["full"].step_time_s
    # full recompute = one more forward of every layer: a third of the layers' training FLOPs
    arch = get_preset("qwen3-30b-a3b")
    b = memory.param_breakdown(arch)
    layer_fpt = runs["full"].flops_per_token - 6 * b.output_layer  # (embedding and final norm are not in it)
    layer_fpt -= 6 * arch.num_layers * (2 * arch.hidden_size + 2 * arch.kv_channels)  # norms: no recompute GEMM
    assert runs["full"].recompute_flops_per_token == pytest.approx(layer_fpt / 3, rel=1e-9)
    expected = runs["none"].step_time_s * (1 + runs["full"].recompute_flops_per_token / runs["full"].flops_per_token)
    assert runs["full"].step_time_s == pytest.approx(expected)
    # selective drops exactly the components of the recomputed modules
    layout = planning_layout.ParallelLayout(world=8, expert=8, context=4)
    parts = memory.activation_components(arch, layout, 32768, 1, 2, False)
    moe = memory.activation_bytes_per_layer(arch, layout, 32768, 1, 2, False, ["moe"])
    assert moe == pytest.approx(sum(parts.values()) - parts["router"] - parts["experts"] - parts["moe_act"])


def test_fp8_memory():
    arch = get_preset("qwen3-30b-a3b")
    layout = planning_layout.ParallelLayout(world=8, expert=8, context=4)
    kw = dict(
        seq_length=32768,
        micro_batch=1,
        num_microbatches=1,
        precision="bf16",
        recompute="none",
        distributed_optimizer=True,
        local_attention=False,
        overhead_gib=0.0,
    )
    bf16 = memory.estimate_memory(arch, layout, **kw)
    fp8 = memory.estimate_memory(arch, layout, fp8="tensorwise", **kw)
    fp8_pg = memory.estimate_memory(arch, layout, fp8="tensorwise", fp8_param_gather=True, **kw)
    assert fp8["weights"] == pytest.approx(2 * bf16["weights"])  # bf16 weights + FP8 copy and transpose
    assert fp8_pg["weights"] == pytest.approx(bf16["weights"])  # the FP8 copy replaces the bf16 weights
    assert fp8["activations"] < bf16["activations"]
    plan = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["train.fp8=tensorwise"])
    assert plan.precision == "bf16+fp8:tensorwise" and not plan.errors


def _write_table(path, rows):
    path.write_text(
        json.dumps({"schema": planning_time.THROUGHPUT_SCHEMA, "gpu": "NVIDIA H100 80GB HBM3", "entries": rows})
    )
    return path


def test_planner_reads_measured_throughput(tmp_path, capsys):
    row = {
        "name": "bf16",
        "precision": "bf16",
        "seq_length": 4096,
        "num_layers": 4,
        "num_experts": 32,
        "tokens_per_s_per_gpu": 1.0e4,
        "tflops_per_gpu": 296.7,
        "peak_memory_gib": 40.0,
    }
    fp8_row = dict(row, name="fp8", precision="fp8:tensorwise", tflops_per_gpu=395.6)
    table_path = _write_table(tmp_path / "throughput.json", [row, fp8_row])
    table = planning_time.load_throughput(str(table_path))
    assumed = planning.make_plan("qwen3-30b-a3b-stage1")
    measured = planning.make_plan("qwen3-30b-a3b-stage1", throughput=table)
    assert measured.mfu_assumed == pytest.approx(296.7 / 989)
    assert measured.mfu_source.startswith(f"measured: {table_path}") and "'bf16'" in measured.mfu_source
    assert measured.mfu_range == pytest.approx([296.7 / 989 * planning_time.MEASURED_DISCOUNT, 296.7 / 989])
    assert measured.step_time_s == pytest.approx(assumed.step_time_s * 0.25 / (296.7 / 989))
    fp8 = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["train.fp8=tensorwise"], throughput=table)
    assert fp8.mfu_assumed == pytest.approx(395.6 / 989)
    only_bf16 = planning_time.load_throughput(str(_write_table(tmp_path / "b.json", [row])))
    fallback = planning.make_plan("qwen3-30b-a3b-stage1", overrides=["train.fp8=tensorwise"], throughput=only_bf16)
    assert fallback.mfu_assumed == 0.25 and "no FP8 row" in fallback.mfu_source
    rc = cli.main(["--recipe", "qwen3-30b-a3b-stage1", "--json", "--throughput", str(table_path)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["mfu_source"].startswith("measured")
    bad = tmp_path / "bad.json"
    _write_table(bad, [dict(row, tflops_per_gpu="fast")])
    assert cli.main(["--recipe", "qwen3-30b-a3b-stage1", "--throughput", str(bad)]) == 2
    assert "entries[0].tflops_per_gpu" in capsys.readouterr().err
