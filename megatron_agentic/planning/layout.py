"""The parallel layout a plan is made for (TP, PP, EP, ETP, CP, VPP, SP over ``world`` GPUs)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_agentic.config import ParallelConfig

GIB = float(1 << 30)
"""Bytes per GiB."""


@dataclasses.dataclass
class ParallelLayout:
    """A resolved parallel layout over ``world`` GPUs."""

    world: int
    """Total GPUs."""
    tensor: int = 1
    """Tensor-parallel size (TP)."""
    pipeline: int = 1
    """Pipeline-parallel size (PP)."""
    expert: int = 1
    """Expert-parallel size (EP)."""
    expert_tensor: int | None = None
    """Expert-tensor-parallel size (ETP); None: equal to TP, as in megatron-core."""
    context: int = 1
    """Context-parallel size (CP)."""
    virtual_pipeline: int | None = None
    """Model chunks per pipeline rank (interleaved 1F1B)."""
    sequence_parallel: bool = False
    """Sequence parallelism (required when TP > 1 with MoE)."""

    def __post_init__(self) -> None:
        for name in ("world", "tensor", "pipeline", "expert", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"layout.{name} must be an integer >= 1, got {value!r}")
        if self.expert_tensor is None:
            self.expert_tensor = self.tensor

    @classmethod
    def of(cls, parallel: ParallelConfig, world: int) -> ParallelLayout:
        """The layout of a config's ``parallel`` section over ``world`` GPUs."""
        return cls(
            world=world,
            tensor=parallel.tensor,
            pipeline=parallel.pipeline,
            expert=parallel.expert,
            expert_tensor=parallel.expert_tensor,
            context=parallel.context,
            virtual_pipeline=parallel.virtual_pipeline,
            sequence_parallel=parallel.use_sequence_parallel,
        )

    @property
    def data(self) -> int:
        """Data-parallel size: world / (TP x PP x CP)."""
        return self.world // (self.tensor * self.pipeline * self.context)

    @property
    def expert_data(self) -> int:
        """Expert-data-parallel size: world / (ETP x EP x PP)."""
        return self.world // (self.expert_tensor * self.expert * self.pipeline)
