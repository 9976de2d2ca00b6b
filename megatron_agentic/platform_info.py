"""The description of a compute platform, without importing torch: the planner and the configs use it to reason
about a cluster they do not run on (``megatron_agentic.platform`` detects and sets up the one a process trains on,
and re-exports :class:`Platform`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class Platform:
    """The compute platform a process trains on."""

    device_type: str
    """``"cuda"`` or ``"cpu"``."""
    backend: str
    """``torch.distributed`` backend: ``"nccl"`` on CUDA, ``"gloo"`` on CPU."""
    has_transformer_engine: bool
    """Whether ``transformer_engine.pytorch`` imports (GPU images)."""
    has_apex: bool
    """Whether Apex imports."""
    redirections: tuple[str, ...] = ()
    """Names of the active CPU redirections (empty on CUDA)."""
    has_deep_ep: bool = False
    """Whether DeepEP (``deep_ep.Buffer``, the ``flex`` dispatcher's ``deepep`` backend) imports."""
    has_hybrid_ep: bool = False
    """Whether HybridEP (``deep_ep.HybridEPBuffer``, the ``flex`` dispatcher's ``hybridep`` backend) imports."""
    has_apex_gradient_fusion: bool = False
    """Whether Apex's CUDA extension ``fused_weight_gradient_mlp_cuda`` imports: megatron-core 0.16.1's
    ``ColumnParallelLinear`` (the output layer of every spec) raises at construction with
    ``gradient_accumulation_fusion=True`` without it, Transformer Engine or not."""

    @property
    def is_cuda(self) -> bool:
        """True when training on GPUs."""
        return self.device_type == "cuda"

    def device(self, local_rank: int = 0) -> torch.device:
        """The ``torch.device`` this process computes on."""
        import torch

        return torch.device("cuda", local_rank) if self.is_cuda else torch.device("cpu")
