"""Qwen3-MoE performance defaults: Megatron-Bridge's H100 Qwen3-30B-A3B values of the ``auto`` performance fields.

Source: NVIDIA Megatron-Bridge ``src/megatron/bridge/recipes/qwen/h100/qwen3_moe.py``
(``qwen3_30b_a3b_pretrain_8gpu_h100_bf16_config`` and ``..._16gpu_h100_bf16_config``); the line each value comes
from is in the comment beside it. :func:`megatron_agentic.perf.resolve_settings` applies them under ``auto`` when the
platform has CUDA + Transformer Engine.
"""

from __future__ import annotations

from typing import Any

BRIDGE_H100: dict[str, Any] = {
    # recipes/qwen/h100/qwen3_moe.py, qwen3_30b_a3b_pretrain_8gpu_h100_bf16_config ("Kernel selections")
    "moe_grouped_gemm": True,  # cfg.model.moe_grouped_gemm = True
    # cfg.model.moe_permute_fusion = True in the recipe, but Bridge's own Qwen3-30B-A3B H100 smoke runs on the
    # PyTorch 25.11 image set moe_permute_fusion=False (TE's fused permutation failed there): off under auto until a
    # GPU acceptance run on our image shows it works (benchmarks/gpu_acceptance.py; perf.moe_permute_fusion=true).
    "moe_permute_fusion": False,
    "cross_entropy_loss_fusion": True,  # cfg.model.cross_entropy_loss_fusion = True
    "cross_entropy_fusion_impl": "te",  # cfg.model.cross_entropy_fusion_impl = "te"
    # ... _16gpu_h100_bf16_config ("Precision and fused kernels")
    "moe_router_fusion": True,  # cfg.model.moe_router_fusion = True
    "bias_activation_fusion": True,  # cfg.model.bias_activation_fusion = True
    "apply_rope_fusion": True,  # cfg.model.apply_rope_fusion = True
    "grad_reduce_in_fp32": False,  # cfg.ddp.grad_reduce_in_fp32 = False
    "precision_aware_optimizer": True,  # cfg.optimizer.use_precision_aware_optimizer = True
    # Megatron-LM arguments.py default (--no-gradient-accumulation-fusion turns it off). megatron-core's
    # ColumnParallelLinear (output layer) needs Apex's fused_weight_gradient_mlp_cuda for it, which TE containers
    # often lack (Bridge); under auto it is on only where that extension imports (Platform.has_apex_gradient_fusion).
    "gradient_accumulation_fusion": True,
    # ... _8gpu_h100_bf16_config ("DDP config")
    "overlap_grad_reduce": True,  # cfg.ddp.overlap_grad_reduce = True
    "overlap_param_gather": True,  # cfg.ddp.overlap_param_gather = True
    "check_for_nan_in_grad": True,  # cfg.ddp.check_for_nan_in_grad = True
    # ... ("Training config")
    "manual_gc": True,  # cfg.train.manual_gc = True
    # ... _16gpu: cfg.comm_overlap = CommOverlapConfig(tp_comm_overlap=True) (only meaningful with TP > 1)
    "tp_comm_overlap": True,
    # ... _8gpu: overlap_moe_expert_parallel_comm left False in the base recipe (True only in perf_recipes)
    "overlap_moe_expert_parallel_comm": False,
}
"""Megatron-Bridge's H100 Qwen3-30B-A3B values for the ``auto`` performance fields (source line in comments)."""
