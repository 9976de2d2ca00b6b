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


class ExtraStateRMSNorm(SequenceParallelRMSNorm):
    """:class:`SequenceParallelRMSNorm` with the ``_extra_state`` entry of Transformer Engine's ``RMSNorm``.

    In megatron-core 0.16.1's TE layer spec the q/k norms, ``pre_mlp_layernorm`` and the decoder's final norm are
    ``TENorm``, i.e. TE 2.10's ``RMSNorm`` (an ``ops.BasicOperation``), whose ``get_extra_state`` makes
    ``sharded_state_dict()`` request a ``ShardedObject`` ``<module>._extra_state`` (its FP8 scaling state).
    Giving the CPU norm the same entry (``None``: no FP8 state) makes every checkpoint written on CPU carry
    the objects the TE model requests, so ``dist_checkpointing.load`` into the TE model finds everything;
    TE's ``set_extra_state`` treats ``None`` as "no FP8 state" (``ops/op.py``, ``module/base.py``).
    The input norm needs none: the TE spec fuses it into ``linear_qkv``, whose ``_extra_state`` the linear
    layer already writes.
    """

    def get_extra_state(self) -> None:
        """No FP8 state on this path (TE reads ``None`` as none)."""
        return None

    def set_extra_state(self, state: object) -> None:
        """Accept TE's state (an empty or pickled FP8-scaling byte tensor) and ignore it: no FP8 on this path."""
        del state
