"""Dense Qwen3 presets (no experts: every layer has one SwiGLU MLP) as typed dataclasses.

``tiny-dense`` keeps the Qwen3 structure (GQA, QK-norm, SwiGLU, RoPE, untied embeddings, Qwen3 vocabulary) at a size
that trains on a CPU in seconds: the second model family, proving that a model is one folder plus a registry line.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class DensePreset:
    """Architecture of a dense Qwen3 model."""

    name: str = "custom"
    """Preset name (informational)."""
    num_layers: int = 4
    """Number of transformer layers."""
    hidden_size: int = 64
    """Model width."""
    num_attention_heads: int = 4
    """Query heads."""
    num_query_groups: int = 2
    """Key/value heads (GQA groups)."""
    kv_channels: int = 16
    """Head dimension."""
    ffn_hidden_size: int = 192
    """Intermediate size of the SwiGLU MLP."""
    vocab_size: int = 151936
    """Vocabulary size (padded Qwen3 vocabulary)."""
    max_position_embeddings: int = 4096
    """Longest sequence RoPE is prepared for by default (training sequence length may be longer)."""
    rotary_base: float = 1_000_000.0
    """RoPE theta."""
    norm_epsilon: float = 1e-6
    """RMSNorm epsilon."""
    qk_layernorm: bool = True
    """RMSNorm on queries and keys per head (Qwen3)."""
    untie_embeddings_and_output_weights: bool = True
    """Separate input embedding and output layer."""
    init_method_std: float = 0.02
    """Standard deviation of the weight initialisation."""

    @property
    def num_experts(self) -> int:
        """Routed experts per layer: none."""
        return 0

    def __post_init__(self) -> None:
        positive = (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_query_groups",
            "kv_channels",
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
        if self.kv_channels % 2:
            raise ValueError(f"model.kv_channels must be even for RoPE, got {self.kv_channels}")
        if self.rotary_base <= 0 or self.norm_epsilon <= 0 or self.init_method_std <= 0:
            raise ValueError("model.rotary_base, model.norm_epsilon and model.init_method_std must be positive")

    def replace(self, **overrides: Any) -> DensePreset:
        """A copy with some fields overridden (validated); unknown fields raise a clear error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown model field(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **overrides)


PRESETS: dict[str, DensePreset] = {
    "tiny-dense": DensePreset(name="tiny-dense"),
}
"""Named presets (the registry hands out copies)."""
