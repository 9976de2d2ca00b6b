"""RMSNorm for the local (no Transformer Engine) layer spec that supports sequence parallelism.

megatron-core's ``WrappedTorchNorm`` refuses ``sequence_parallel=True``; with sequence parallelism each
tensor-parallel rank normalises its own slice of the sequence, so the weight's gradient is partial and
must be summed over the tensor-parallel group. Marking the weight ``sequence_parallel=True`` makes
megatron-core's ``finalize_model_grads`` do exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer import TransformerConfig


class SequenceParallelRMSNorm(torch.nn.Module):
    """``y = x / sqrt(mean(x^2) + eps) * weight`` computed in fp32; constructor matches megatron-core norms."""

    def __init__(
        self,
        config: TransformerConfig,
        hidden_size: int,
        eps: float = 1e-6,
        persist_layer_norm: bool = False,
        zero_centered_gamma: bool = False,
        normalization: str = "RMSNorm",
    ) -> None:
        super().__init__()
        if config.normalization != "RMSNorm":
            raise ValueError(f"SequenceParallelRMSNorm needs normalization='RMSNorm', got {config.normalization!r}")
        if config.layernorm_zero_centered_gamma:
            raise ValueError("SequenceParallelRMSNorm does not support zero-centred gamma")
        self.eps = eps
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype, device=device))
        self.weight.sequence_parallel = bool(config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over the last dimension."""
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        y = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return y.to(x.dtype)
