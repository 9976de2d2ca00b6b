"""The typed interface of a model family (a leaf module: the registry, config, perf, planning and convert use it).

A model family is one folder under ``megatron_agentic/models/`` (presets, layer spec, model builder, checkpoint keys,
HF mapping, parameter/activation formulas, performance defaults) that exports one :class:`ModelFamily`; the registry
(:mod:`megatron_agentic.models.registry`) lists the families. Everything else asks the family of the configured preset
instead of naming a model.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig


class Architecture(Protocol):
    """What every preset dataclass provides (the fields megatron-core's ``GPTModel`` needs from any family)."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    kv_channels: int
    ffn_hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    rotary_base: float
    norm_epsilon: float
    qk_layernorm: bool
    untie_embeddings_and_output_weights: bool
    init_method_std: float

    @property
    def num_experts(self) -> int:
        """Routed experts per layer (0: a dense model)."""
        ...

    def replace(self, **overrides: Any) -> Architecture:
        """A validated copy with some fields overridden."""
        ...


@dataclasses.dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts of one model by component (full model, unsharded), as megatron-core shards them."""

    embedding: int
    """Input embedding (V x h)."""
    output_layer: int
    """Output projection (V x h; 0 when tied)."""
    final_norm: int
    """Final RMSNorm."""
    attention_per_layer: int
    """QKV + output projection of one layer (TP-split)."""
    replicated_per_layer: int
    """Norms (input, pre-MLP, QK) and router of one layer (replicated over TP)."""
    expert: int
    """One routed expert (SwiGLU fc1 + fc2; 0 in a dense model)."""
    num_layers: int
    """Transformer layers."""
    num_experts: int
    """Routed experts per layer (0 in a dense model)."""
    topk: int
    """Experts per token (0 in a dense model)."""
    router_per_layer: int = 0
    """Router weights of one layer (part of ``replicated_per_layer``; matmul FLOPs)."""
    mlp_per_layer: int = 0
    """Dense MLP of one layer (SwiGLU fc1 + fc2, TP-split; 0 in an all-MoE model)."""

    @property
    def total(self) -> int:
        """All parameters."""
        per_layer = (
            self.attention_per_layer + self.replicated_per_layer + self.mlp_per_layer + self.num_experts * self.expert
        )
        return self.embedding + self.output_layer + self.final_norm + self.num_layers * per_layer

    @property
    def active(self) -> int:
        """Parameters used per token (top-k experts), embeddings included."""
        per_layer = self.attention_per_layer + self.replicated_per_layer + self.mlp_per_layer + self.topk * self.expert
        return self.embedding + self.output_layer + self.final_norm + self.num_layers * per_layer

    @property
    def matmul_per_layer_active(self) -> int:
        """Weights one token multiplies with in one layer (attention, dense MLP, router, top-k experts)."""
        return self.attention_per_layer + self.mlp_per_layer + self.router_per_layer + self.topk * self.expert


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """Everything model-specific, in one object per family (``models/<name>/__init__.py`` exports ``FAMILY``)."""

    name: str
    """Family name (the folder name)."""
    package: str
    """Its package; ``<package>.model`` holds ``transformer_config_from`` and ``build_model`` (imported lazily:
    megatron-core and torch load only when a model is built)."""
    presets: Mapping[str, Architecture]
    """Named presets (``model.preset`` values); copies are handed out by the registry."""
    param_breakdown: Callable[[Any], ParamBreakdown]
    """Per-component parameter counts of a preset."""
    activation_components: Callable[..., dict[str, float]]
    """Activation bytes one layer saves for backward, by component (see ``qwen3_moe/formulas.py``)."""
    selective_drops: Mapping[str, tuple[str, ...]]
    """Activation components each ``model.recompute_modules`` entry drops."""
    h100_defaults: Mapping[str, Any]
    """Values of the ``auto`` performance fields on CUDA + Transformer Engine (the family's reference H100 recipe)."""

    @property
    def moe(self) -> bool:
        """Whether the family's layers are MoE layers."""
        return any(arch.num_experts > 0 for arch in self.presets.values())

    def _model_module(self) -> Any:
        return importlib.import_module(f"{self.package}.model")

    def transformer_config_from(self, cfg: Any, settings: Any = None, **extra: Any) -> TransformerConfig:
        """megatron-core ``TransformerConfig`` of ``cfg`` (``<package>.model.transformer_config_from``)."""
        return self._model_module().transformer_config_from(cfg, settings, **extra)

    def build_model(self, cfg: Any, *args: Any, **kwargs: Any) -> GPTModel:
        """This rank's ``GPTModel`` chunk (``<package>.model.build_model``)."""
        return self._model_module().build_model(cfg, *args, **kwargs)
