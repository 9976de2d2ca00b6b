"""Settings an H100 + Transformer Engine platform resolves to, checked where they would break the first run.

- ``gradient_accumulation_fusion=auto`` is on only where Apex's ``fused_weight_gradient_mlp_cuda`` imports
  (megatron-core 0.16.1's ``ColumnParallelLinear`` raises at construction without it; ``test_te_harness.py``
  builds the TE model with the resolved value); ``doctor`` says so and why.
- ``moe_permute_fusion=auto`` stays off (Megatron-Bridge's Qwen3-30B-A3B H100 smoke runs on the PyTorch 25.11
  image turned it off: TE's fused permutation failed there); an explicit ``true`` is honoured.
- ``OptimizerConfig`` gets every field Megatron-LM's ``get_megatron_optimizer_config`` (``megatron/training/
  training.py``, core_v0.16.1) fills from the same arguments as ``TransformerConfig`` and the DDP config: each
  field the three configs share has one value, ``fp8_recipe`` included.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from megatron_agentic.config import ConfigError, config_from_dict
from megatron_agentic.doctor import gradient_fusion_line
from megatron_agentic.perf import resolve_settings
from megatron_agentic.platform import Platform
from tests.support.lazy import lazy_import

# megatron-core is imported when a test runs, not when the suite is collected
_mcore_ddp = lazy_import("megatron.core.distributed")
_mcore_opt = lazy_import("megatron.core.optimizer")
_mcore_tc = lazy_import("megatron.core.transformer")
_model = lazy_import("megatron_agentic.models.qwen3_moe.model")
_builders = lazy_import("megatron_agentic.training.builders")

H100_TE = Platform("cuda", "nccl", True, True)
H100_TE_APEX = Platform("cuda", "nccl", True, True, has_apex_gradient_fusion=True)

SHARED_OPTIMIZER_FIELDS = {
    "fp8_recipe",  # _mcore_tc.TransformerConfig.fp8_recipe (args.fp8_recipe)
    "fp16",  # ModelParallelConfig (args.fp16)
    "bf16",  # ModelParallelConfig (args.bf16)
    "params_dtype",  # ModelParallelConfig (args.params_dtype)
    "barrier_with_L1_time",  # ModelParallelConfig (args.barrier_with_L1_time)
    "timers",  # ModelParallelConfig (set by the training loop)
    "config_logger_dir",  # ModelParallelConfig (args.config_logger_dir)
    "use_distributed_optimizer",  # _mcore_ddp.DistributedDataParallelConfig (args.use_distributed_optimizer)
    "overlap_param_gather",  # _mcore_ddp.DistributedDataParallelConfig (args.overlap_param_gather)
    "reuse_grad_buf_for_mxfp8_param_ag",  # _mcore_ddp.DistributedDataParallelConfig (args.reuse_grad_buf_for_mxfp8_param_ag)
}
"""``OptimizerConfig`` fields that megatron-core 0.16.1's ``TransformerConfig`` or DDP config also has: Megatron-LM
fills all three from one ``args`` namespace, so each has one value per run."""


def _cfg(**sections):
    base = {"model": {"preset": "qwen3-30b-a3b"}, "parallel": {"expert": 8}, "train": {"seq_length": 4096}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return config_from_dict(base)


def test_gradient_accumulation_fusion_needs_apex_extension():
    assert resolve_settings(H100_TE, _cfg()).transformer["gradient_accumulation_fusion"] is False
    assert resolve_settings(H100_TE_APEX, _cfg()).transformer["gradient_accumulation_fusion"] is True
    with pytest.raises(ConfigError, match="fused_weight_gradient_mlp_cuda"):
        resolve_settings(H100_TE, _cfg(perf={"gradient_accumulation_fusion": True}))
    off = resolve_settings(H100_TE_APEX, _cfg(perf={"gradient_accumulation_fusion": False}))
    assert off.transformer["gradient_accumulation_fusion"] is False


def test_doctor_explains_gradient_accumulation_fusion():
    assert gradient_fusion_line(True, True, True).startswith("on")
    line = gradient_fusion_line(
        True, True, False, "ModuleNotFoundError: No module named 'fused_weight_gradient_mlp_cuda'"
    )
    assert line.startswith("off") and "ColumnParallelLinear" in line and "No module named" in line
    assert gradient_fusion_line(False, False, False).startswith("off (needs CUDA")


def test_doctor_report_lists_the_apex_extension():
    from megatron_agentic.doctor import code_paths, gpu_report, library_report

    libs = library_report()
    assert libs["apex-gradient-fusion"]["available"] is False  # no Apex CUDA extension on this machine
    assert code_paths(gpu_report(), libs)["gradient accumulation fusion (auto)"].startswith("off")


def test_moe_permute_fusion_off_under_auto_and_on_when_asked():
    assert resolve_settings(H100_TE, _cfg()).transformer["moe_permute_fusion"] is False
    assert resolve_settings(H100_TE, _cfg(perf={"moe_permute_fusion": True})).transformer["moe_permute_fusion"]


def test_the_shared_optimizer_fields_are_the_listed_ones():
    names = {f.name for f in dataclasses.fields(_mcore_opt.OptimizerConfig)}
    others = {f.name for f in dataclasses.fields(_mcore_tc.TransformerConfig)} | {
        f.name for f in dataclasses.fields(_mcore_ddp.DistributedDataParallelConfig)
    }
    assert names & others == SHARED_OPTIMIZER_FIELDS


@pytest.mark.parametrize(
    ("platform", "sections"),
    [
        (H100_TE, {}),
        (H100_TE, {"train": {"seq_length": 4096, "fp8": "tensorwise", "fp8_param_gather": True}}),
        (H100_TE, {"train": {"seq_length": 4096, "fp8": "delayed"}}),
        (Platform("cpu", "gloo", False, False), {"model": {"preset": "tiny-moe"}, "parallel": {"expert": 1}}),
    ],
)
def test_optimizer_config_agrees_with_transformer_and_ddp_configs(platform, sections, monkeypatch):
    import megatron.core.utils as mcore_utils
    from packaging.version import Version

    # TransformerConfig checks the TE version for FP8: the platform modelled here has TE 2.10 (te_harness.py)
    monkeypatch.setattr(mcore_utils, "_te_version", Version("2.10.0"))
    cfg = _cfg(**sections)
    settings = resolve_settings(platform, cfg)
    # OptimizerConfig itself needs TE's FusedAdam for the precision-aware optimizer: compare its arguments on top of
    # its defaults (and, where it builds here, the real object)
    kwargs = _builders.optimizer_config_kwargs(cfg, platform)
    assert set(kwargs) <= {f.name for f in dataclasses.fields(_mcore_opt.OptimizerConfig)}
    defaults = {f.name: f.default for f in dataclasses.fields(_mcore_opt.OptimizerConfig)}
    opt = SimpleNamespace(**{**defaults, **kwargs})
    if not kwargs["use_precision_aware_optimizer"]:
        assert _builders.optimizer_config(cfg, platform) == _mcore_opt.OptimizerConfig(**kwargs)
    # (TransformerConfig imports TE's fused RoPE to validate apply_rope_fusion: not a shared field, turned off here)
    tconfig = _model.transformer_config_from(cfg, settings, apply_rope_fusion=False)
    ddp = _mcore_ddp.DistributedDataParallelConfig(**_builders.ddp_settings(settings.ddp))
    for name in sorted(SHARED_OPTIMIZER_FIELDS - {"timers"}):
        source = tconfig if hasattr(tconfig, name) else ddp
        assert getattr(opt, name) == getattr(source, name), name
    assert opt.fp8_recipe == (cfg.train.fp8 or "delayed")  # Megatron-LM's --fp8-recipe default without FP8
    assert opt.params_dtype == (torch.bfloat16 if settings.precision == "bf16" else torch.float32)
    if cfg.train.fp8_param_gather:
        assert opt.use_precision_aware_optimizer and opt.fp8_recipe == "tensorwise" and opt.overlap_param_gather
