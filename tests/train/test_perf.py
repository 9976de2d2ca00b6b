"""The performance surface: one pure decision function of (platform, config), validation, printed settings.

The CUDA + Transformer Engine expectations are Megatron-Bridge's H100 Qwen3-30B-A3B recipe values
(``src/megatron/bridge/recipes/qwen/h100/qwen3_moe.py``, ``qwen3_30b_a3b_pretrain_8gpu_h100_bf16_config`` and
``qwen3_30b_a3b_pretrain_16gpu_h100_bf16_config``), written out here from that file.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from megatron_agentic import platform as plat_mod
from megatron_agentic.config import ConfigError, PerfConfig, config_from_dict, load_config
from megatron_agentic.perf import resolve_settings
from megatron_agentic.platform import Platform

CPU = Platform("cpu", "gloo", False, False)
H100_TE = Platform("cuda", "nccl", True, False)
H100_TE_DEEPEP = Platform("cuda", "nccl", True, False, has_deep_ep=True)
H100_NO_TE = Platform("cuda", "nccl", False, False)


def _cfg(**sections):
    base = {"model": {"preset": "qwen3-30b-a3b"}, "parallel": {"expert": 8}, "train": {"seq_length": 4096}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return config_from_dict(base)


def test_cuda_with_te_gets_bridge_h100_values():
    s = resolve_settings(H100_TE, _cfg())
    assert (s.platform, s.layer_spec, s.attention_backend, s.precision) == ("cuda", "te", "te", "bf16")
    assert s.moe_token_dispatcher == "alltoall" and s.fp8 is None
    t = s.transformer
    # Bridge "Kernel selections" (8-GPU) and "Precision and fused kernels" (16-GPU).
    assert t["moe_grouped_gemm"] and t["moe_router_fusion"]
    assert not t["moe_permute_fusion"]  # Bridge's 25.11 smoke runs turned it off (test_te_settings.py)
    assert t["cross_entropy_loss_fusion"] and t["cross_entropy_fusion_impl"] == "te"
    assert t["bias_activation_fusion"] and t["apply_rope_fusion"]
    assert not t["gradient_accumulation_fusion"]  # no Apex fused_weight_gradient_mlp_cuda (test_te_settings.py)
    assert t["expert_tensor_parallel_size"] == 1
    assert t["tp_comm_overlap"] is False  # Bridge's CommOverlapConfig turns itself off at TP=1
    assert t["overlap_moe_expert_parallel_comm"] is False and t["cuda_graph_impl"] == "none"
    assert s.ddp == {
        "grad_reduce_in_fp32": False,  # 16-GPU: off together with the precision-aware optimizer
        "overlap_grad_reduce": True,
        "overlap_param_gather": True,
        "use_distributed_optimizer": True,
        "check_for_nan_in_grad": True,
        "bucket_size": None,
        "fp8_param_gather": False,
    }
    assert s.optimizer["use_precision_aware_optimizer"] is True
    assert s.manual_gc and s.manual_gc_interval == 100
    # TP comm overlap does turn on where it applies.
    tp2 = resolve_settings(H100_TE, _cfg(parallel={"tensor": 2, "expert": 8}))
    assert tp2.transformer["tp_comm_overlap"] is True


def test_cpu_gets_everything_off():
    s = resolve_settings(CPU, _cfg(model={"preset": "tiny-moe"}, parallel={"expert": 2}))
    assert (s.platform, s.layer_spec, s.attention_backend, s.precision) == ("cpu", "local", "local", "fp32")
    assert s.moe_token_dispatcher == "allgather"
    flags = {k: v for k, v in {**s.transformer, **s.ddp, **s.optimizer}.items() if isinstance(v, bool)}
    on = {k for k, v in flags.items() if v}
    assert on == {"grad_reduce_in_fp32", "use_distributed_optimizer"}, on
    assert s.transformer["cross_entropy_fusion_impl"] == "native" and not s.manual_gc


def test_cuda_without_te_keeps_only_what_needs_no_te():
    s = resolve_settings(H100_NO_TE, _cfg())
    assert s.layer_spec == "local" and s.precision == "bf16" and s.moe_token_dispatcher == "alltoall"
    assert not s.transformer["moe_grouped_gemm"] and not s.transformer["moe_permute_fusion"]
    assert s.ddp["overlap_grad_reduce"] and s.ddp["overlap_param_gather"]  # DDP overlap needs no TE
    assert s.ddp["grad_reduce_in_fp32"] and not s.optimizer["use_precision_aware_optimizer"]


def test_explicit_values_override_auto():
    cfg = _cfg(perf={"overlap_grad_reduce": False, "overlap_param_gather": False, "manual_gc": False})
    s = resolve_settings(H100_TE, cfg)
    assert not s.ddp["overlap_grad_reduce"] and not s.ddp["overlap_param_gather"] and not s.manual_gc
    s = resolve_settings(H100_TE, _cfg(train={"fp8": "tensorwise", "fp8_param_gather": True}))
    assert s.transformer["fp8"] == "hybrid" and s.transformer["fp8_recipe"] == "tensorwise"
    assert s.transformer["fp8_param"] and s.ddp["fp8_param_gather"]
    s = resolve_settings(H100_TE, _cfg(model={"recompute": "selective", "recompute_modules": ["moe_act", "layernorm"]}))
    assert s.transformer["recompute_granularity"] == "selective"
    assert s.transformer["recompute_modules"] == ["moe_act", "layernorm"]
    s = resolve_settings(H100_TE, _cfg(model={"recompute": True}))
    assert (s.transformer["recompute_granularity"], s.transformer["recompute_method"]) == ("full", "uniform")
    s = resolve_settings(H100_TE_DEEPEP, _cfg(model={"moe_token_dispatcher": "flex"}))
    assert s.transformer["moe_token_dispatcher_type"] == "flex"
    assert s.transformer["moe_flex_dispatcher_backend"] == "deepep"


@pytest.mark.parametrize(
    ("platform", "sections", "fields"),
    [
        (CPU, {"train": {"fp8": "tensorwise"}}, ["train.fp8"]),
        (H100_TE, {"train": {"fp8": "delayed", "precision": "fp32"}}, ["train.fp8", "train.precision"]),
        (H100_TE, {"train": {"fp8_param_gather": True}}, ["train.fp8_param_gather", "train.fp8"]),
        (
            H100_TE,
            {"train": {"distributed_optimizer": False}, "perf": {"overlap_param_gather": True}},
            ["perf.overlap_param_gather", "train.distributed_optimizer"],
        ),
        (
            H100_TE,
            {"perf": {"overlap_grad_reduce": False, "overlap_param_gather": True}},
            ["perf.overlap_param_gather", "perf.overlap_grad_reduce"],
        ),
        (H100_TE, {"model": {"moe_token_dispatcher": "flex"}}, ["model.moe_token_dispatcher", "moe_flex_backend"]),
        (
            H100_TE_DEEPEP,
            {"model": {"moe_token_dispatcher": "flex", "moe_flex_backend": "hybridep"}},
            ["model.moe_flex_backend=hybridep"],
        ),
        (H100_TE, {"parallel": {"expert": 8, "expert_tensor": 5}}, ["parallel.expert_tensor", "moe_ffn_hidden_size"]),
        (CPU, {"perf": {"moe_permute_fusion": True}}, ["perf.moe_permute_fusion"]),
        (CPU, {"perf": {"apply_rope_fusion": True}}, ["perf.apply_rope_fusion"]),
        (
            CPU,
            {"perf": {"cross_entropy_loss_fusion": True, "cross_entropy_fusion_impl": "te"}},
            ["perf.cross_entropy_fusion_impl"],
        ),
        (CPU, {"model": {"recompute": "selective", "recompute_modules": ["moe_act"]}}, ["model.recompute_modules"]),
        (H100_TE, {"perf": {"cuda_graph_impl": "transformer_engine"}}, ["perf.cuda_graph_impl"]),
        (CPU, {"perf": {"cuda_graph_impl": "local"}}, ["perf.cuda_graph_impl"]),
        (H100_TE, {"perf": {"tp_comm_overlap": True}}, ["perf.tp_comm_overlap", "parallel.tensor"]),
        (
            H100_TE,
            {"parallel": {"expert": 1}, "perf": {"overlap_moe_expert_parallel_comm": True}},
            ["perf.overlap_moe_expert_parallel_comm", "parallel.expert"],
        ),
        (
            H100_TE,
            {"model": {"recompute": "full"}, "perf": {"overlap_moe_expert_parallel_comm": True}},
            ["perf.overlap_moe_expert_parallel_comm", "model.recompute"],
        ),
        (H100_TE, {"perf": {"moe_grouped_gemm": False}}, ["perf.moe_grouped_gemm"]),
        (
            H100_TE,
            {"train": {"precision": "fp32"}, "perf": {"precision_aware_optimizer": True}},
            ["perf.precision_aware_optimizer", "train.precision"],
        ),
    ],
)
def test_invalid_combinations_are_refused_with_one_line_naming_fields(platform, sections, fields):
    with pytest.raises(ConfigError) as exc:
        resolve_settings(platform, _cfg(**sections))
    message = str(exc.value)
    assert "\n" not in message
    for field in fields:
        assert field in message, (field, message)


@pytest.mark.parametrize(
    ("section", "values", "field"),
    [
        ("perf", {"overlap_grad_reduce": "yes"}, "perf.overlap_grad_reduce"),
        ("perf", {"cross_entropy_fusion_impl": "apex"}, "perf.cross_entropy_fusion_impl"),
        ("perf", {"ddp_bucket_size": 0}, "perf.ddp_bucket_size"),
        ("model", {"recompute": "partial"}, "model.recompute"),
        ("model", {"recompute_modules": ["attention"]}, "model.recompute_modules"),
        ("model", {"moe_token_dispatcher": "deepep"}, "model.moe_token_dispatcher"),
        ("train", {"fp8": "e4m3"}, "train.fp8"),
        ("parallel", {"expert_tensor": 0}, "parallel.expert_tensor"),
    ],
)
def test_bad_field_values_name_the_field(section, values, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict({section: values})


def test_etp_group_must_divide_world():
    cfg = _cfg(parallel={"expert": 8, "expert_tensor": 2}, train={"global_batch_size": 64, "micro_batch_size": 1})
    with pytest.raises(ConfigError, match="parallel.expert_tensor"):
        cfg.validate(world_size=8)  # ETP*EP = 16 > 8
    assert cfg.validate(world_size=16) == 16


def test_force_cpu_makes_one_decision(monkeypatch):
    """Under MEGATRON_AGENTIC_FORCE_CPU=1 on a GPU machine, precision, spec and dispatcher all take the CPU path."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(plat_mod, "has_transformer_engine", lambda: True)
    monkeypatch.setenv("MEGATRON_AGENTIC_FORCE_CPU", "1")
    detected = plat_mod.detect_platform()
    assert detected == Platform("cpu", "gloo", False, detected.has_apex)
    cfg = _cfg(model={"preset": "tiny-moe"}, parallel={"expert": 1})
    s = cfg.effective_settings()
    assert (s.precision, s.layer_spec, s.moe_token_dispatcher) == ("fp32", "local", "allgather")
    monkeypatch.setenv("MEGATRON_AGENTIC_FORCE_CPU", "0")
    s = cfg.effective_settings()
    assert (s.precision, s.layer_spec, s.moe_token_dispatcher) == ("bf16", "te", "alltoall")


def test_transformer_config_receives_the_effective_settings():
    from megatron_agentic.models.qwen3_moe.model import transformer_config_from

    cfg = _cfg(
        model={"preset": "tiny-moe", "recompute": "selective", "recompute_modules": ["core_attn", "moe"]},
        parallel={"expert": 1},
        train={"precision": "bf16"},
        perf={"bias_activation_fusion": True},
    )
    settings = resolve_settings(CPU, cfg)
    tconfig = transformer_config_from(cfg, settings)
    for key, value in settings.transformer.items():
        assert getattr(tconfig, key) == value, key
    assert tconfig.bf16 and tconfig.params_dtype == torch.bfloat16


def test_print_config_shows_every_new_field_and_effective_settings(capsys):
    from megatron_agentic.train import main

    rc = main(["--print-config", "--set", "parallel.expert_tensor=1", "--set", "model.moe_token_dispatcher=alltoall"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["perf"]) == {f.name for f in dataclasses.fields(PerfConfig)}
    assert printed["parallel"]["expert_tensor"] == 1 and printed["model"]["moe_token_dispatcher"] == "alltoall"
    for key in ("moe_flex_backend", "recompute", "recompute_method", "recompute_num_layers", "recompute_modules"):
        assert key in printed["model"]
    assert printed["train"]["fp8"] is None and printed["train"]["fp8_param_gather"] is False
    effective = printed["effective"]
    assert effective["moe_token_dispatcher"] == "alltoall"
    assert effective["transformer"]["expert_tensor_parallel_size"] == 1
    # The printed config (without "effective") loads back unchanged.
    del printed["effective"]
    assert config_from_dict(printed).to_dict() == printed


def test_validate_only_refuses_fp8_without_te(capsys, monkeypatch):
    from megatron_agentic.train import main

    monkeypatch.setattr(plat_mod, "has_transformer_engine", lambda: False)
    assert main(["--validate-only", "--set", "train.fp8=tensorwise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp8" in err[0]


def test_load_config_keeps_bool_recompute_compatible(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {preset: tiny-moe, recompute: true}\n")
    assert load_config(path).model.recompute == "full"
    assert load_config(path, ["model.recompute=false"]).model.recompute == "none"
