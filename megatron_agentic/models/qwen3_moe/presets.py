"""Qwen3-MoE architecture presets as typed dataclasses.

``qwen3-30b-a3b`` has the numbers of the Hugging Face config of Qwen3-30B-A3B; ``tiny-moe`` keeps the
same structure (GQA, QK-norm, every layer MoE with top-k routing and renormalised softmax, SwiGLU,
RoPE, untied embeddings, Qwen3 vocabulary) at a size that trains on a CPU in seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from megatron_agentic.models.qwen3_moe import formulas


@dataclasses.dataclass
class ModelPreset:
    """Architecture of a Qwen3-MoE model (every transformer layer is a MoE layer)."""

    name: str = "custom"
    """Preset name (informational)."""
    num_layers: int = 48
    """Number of transformer layers."""
    hidden_size: int = 2048
    """Model width."""
    num_attention_heads: int = 32
    """Query heads."""
    num_query_groups: int = 4
    """Key/value heads (GQA groups)."""
    kv_channels: int = 128
    """Head dimension (must be explicit: heads * head_dim != hidden for Qwen3-30B-A3B)."""
    num_experts: int = 128
    """Routed experts per MoE layer."""
    moe_router_topk: int = 8
    """Experts each token is routed to."""
    moe_ffn_hidden_size: int = 768
    """Intermediate size of one expert (SwiGLU)."""
    ffn_hidden_size: int = 6144
    """Dense FFN intermediate size (unused while every layer is MoE; kept for megatron-core's config)."""
    vocab_size: int = 151936
    """Vocabulary size (padded Qwen3 vocabulary)."""
    max_position_embeddings: int = 40960
    """Longest sequence RoPE is prepared for by default (training sequence length may be longer)."""
    rotary_base: float = 1_000_000.0
    """RoPE theta."""
    norm_epsilon: float = 1e-6
    """RMSNorm epsilon."""
    qk_layernorm: bool = True
    """RMSNorm on queries and keys per head (Qwen3)."""
    moe_aux_loss_coeff: float = 1e-3
    """Load-balancing auxiliary loss coefficient."""
    moe_router_load_balancing_type: str = "aux_loss"
    """megatron-core load-balancing type (``aux_loss``, ``seq_aux_loss``, ``none``)."""
    moe_router_pre_softmax: bool = False
    """False: top-k on logits then softmax over the k (= Qwen3 ``norm_topk_prob=True``)."""
    untie_embeddings_and_output_weights: bool = True
    """Separate input embedding and output layer (Qwen3-30B-A3B)."""
    init_method_std: float = 0.02
    """Standard deviation of the weight initialisation."""

    def __post_init__(self) -> None:
        positive = (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_query_groups",
            "kv_channels",
            "num_experts",
            "moe_router_topk",
            "moe_ffn_hidden_size",
            "ffn_hidden_size",
            "vocab_size",
            "max_position_embeddings",
        )
        for field in positive:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{field} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"model.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"model.num_query_groups ({self.num_query_groups})"
            )
        if self.moe_router_topk > self.num_experts:
            raise ValueError(
                f"model.moe_router_topk ({self.moe_router_topk}) exceeds model.num_experts ({self.num_experts})"
            )
        if self.kv_channels % 2:
            raise ValueError(f"model.kv_channels must be even for RoPE, got {self.kv_channels}")
        if self.rotary_base <= 0 or self.norm_epsilon <= 0 or self.init_method_std <= 0:
            raise ValueError("model.rotary_base, model.norm_epsilon and model.init_method_std must be positive")
        if self.moe_aux_loss_coeff < 0:
            raise ValueError(f"model.moe_aux_loss_coeff must be >= 0, got {self.moe_aux_loss_coeff}")
        if self.moe_router_load_balancing_type not in ("aux_loss", "seq_aux_loss", "global_aux_loss", "none"):
            raise ValueError(
                f"model.moe_router_load_balancing_type must be aux_loss, seq_aux_loss, global_aux_loss or none, "
                f"got {self.moe_router_load_balancing_type!r}"
            )

    def num_parameters(self) -> dict[str, int]:
        """Total and per-token active parameter counts (embeddings included; :func:`formulas.param_breakdown`)."""
        breakdown = formulas.param_breakdown(self)
        return {"total": breakdown.total, "active": breakdown.active}

    def replace(self, **overrides: Any) -> ModelPreset:
        """A copy with some fields overridden (validated); unknown fields raise a clear error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown model field(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, ModelPreset] = {
    "qwen3-30b-a3b": ModelPreset(name="qwen3-30b-a3b"),
    "tiny-moe": ModelPreset(
        name="tiny-moe",
        num_layers=4,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=16,
        num_experts=4,
        moe_router_topk=2,
        moe_ffn_hidden_size=64,
        ffn_hidden_size=128,
        vocab_size=151936,
        max_position_embeddings=4096,
        rotary_base=1_000_000.0,
        moe_aux_loss_coeff=1e-2,
    ),
}
"""Named presets; ``get_preset`` returns copies so callers may modify them."""


def get_preset(name: str) -> ModelPreset:
    """Return a copy of the preset called ``name``; raises ``KeyError`` listing the valid names."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
