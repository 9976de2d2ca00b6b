"""Qwen3-MoE parameter mapping between Hugging Face and megatron-core (local-spec names).

Hugging Face checkpoints (the Hub format written by ``save_pretrained``) hold one tensor per expert
projection (``model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight``); transformers >= 5 keeps them
fused in memory (``mlp.experts.gate_up_proj`` / ``down_proj``), and both layouts are accepted here.
megatron-core names (``decoder.layers.L.self_attention.linear_qkv.weight``, ...) are used with *global*
layer and expert indices in the "full" dicts of this module; :func:`local_shard` cuts the piece one rank
holds under a TP/PP/EP layout from them.

``linear_qkv`` interleaves per query group: for each of the ``G`` key/value heads, the ``H/G`` query
heads of the group, then its key head, then its value head. ``linear_fc1`` of an expert is
``[gate; up]``; under tensor parallelism each rank holds ``[gate_r; up_r]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from megatron_agentic.convert.errors import ConversionError
from megatron_agentic.models.qwen3_moe.presets import ModelPreset

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.(.+)$")


def preset_from_hf_config(config: Mapping[str, Any]) -> ModelPreset:
    """The :class:`ModelPreset` of a HF ``Qwen3MoeForCausalLM`` ``config.json`` (all layers MoE)."""
    if config.get("model_type") not in (None, "qwen3_moe"):
        raise ConversionError(f"config.json: model_type {config.get('model_type')!r} is not qwen3_moe")
    if config.get("decoder_sparse_step", 1) != 1 or config.get("mlp_only_layers"):
        raise ConversionError(
            "config.json: only every-layer-MoE models are supported (decoder_sparse_step=1, no mlp_only_layers)"
        )
    if config.get("norm_topk_prob", True) is not True:
        raise ConversionError("config.json: norm_topk_prob=false is not supported (megatron routes top-k then softmax)")
    if config.get("attention_bias", False):
        raise ConversionError("config.json: attention_bias=true is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"config.json: hidden_act {config.get('hidden_act')!r} is not silu")
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    if (rope.get("rope_type") or scaling.get("rope_type") or "default") != "default":
        raise ConversionError("config.json: RoPE scaling is not supported by the converter; convert the base model")
    rope_theta = rope.get("rope_theta", config.get("rope_theta", 1_000_000.0))
    config = dict(config)
    if "num_experts" not in config and "num_local_experts" in config:  # transformers >= 5 spelling
        config["num_experts"] = config["num_local_experts"]
    required = (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "num_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "vocab_size",
    )
    missing = [k for k in required if k not in config]
    if missing:
        raise ConversionError(f"config.json: missing field(s) {missing}")
    heads = config["num_attention_heads"]
    return ModelPreset(
        name=str(config.get("_name_or_path") or "hf-qwen3-moe"),
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        num_attention_heads=heads,
        num_query_groups=config.get("num_key_value_heads", heads),
        kv_channels=config.get("head_dim") or config["hidden_size"] // heads,
        num_experts=config["num_experts"],
        moe_router_topk=config["num_experts_per_tok"],
        moe_ffn_hidden_size=config["moe_intermediate_size"],
        ffn_hidden_size=config.get("intermediate_size", 4 * config["hidden_size"]),
        vocab_size=config["vocab_size"],
        max_position_embeddings=config.get("max_position_embeddings", 40960),
        rotary_base=float(rope_theta),
        norm_epsilon=config.get("rms_norm_eps", 1e-6),
        moe_aux_loss_coeff=config.get("router_aux_loss_coef", 1e-3),
        untie_embeddings_and_output_weights=not config.get("tie_word_embeddings", False),
    )


def hf_config_from_preset(arch: ModelPreset, torch_dtype: str = "bfloat16") -> dict[str, Any]:
    """A HF ``config.json`` dict for ``arch`` (inverse of :func:`preset_from_hf_config`)."""
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.ffn_hidden_size,
        "moe_intermediate_size": arch.moe_ffn_hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_query_groups,
        "head_dim": arch.kv_channels,
        "num_experts": arch.num_experts,
        "num_experts_per_tok": arch.moe_router_topk,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": arch.max_position_embeddings,
        "rms_norm_eps": arch.norm_epsilon,
        "rope_theta": arch.rotary_base,
        "rope_parameters": {"rope_theta": arch.rotary_base, "rope_type": "default"},
        "router_aux_loss_coef": arch.moe_aux_loss_coeff,
        "output_router_logits": False,
        "tie_word_embeddings": not arch.untie_embeddings_and_output_weights,
        "use_cache": True,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    }


def _split_fused_experts(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub-format per-expert tensors from transformers-5 fused ``gate_up_proj``/``down_proj`` (if present)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in hf.items():
        m = re.match(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$", key)
        if not m:
            out[key] = value
            continue
        prefix = m.group(1)
        for e in range(value.shape[0]):
            if m.group(2) == "gate_up_proj":
                gate, up = value[e].chunk(2, dim=0)
                out[f"{prefix}.{e}.gate_proj.weight"] = gate
                out[f"{prefix}.{e}.up_proj.weight"] = up
            else:
                out[f"{prefix}.{e}.down_proj.weight"] = value[e]
    return out


def _take(hf: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        return hf.pop(key)
    except KeyError:
        raise ConversionError(f"megatron checkpoint is missing tensor {key!r}") from None


def megatron_names(arch: ModelPreset) -> list[str]:
    """Every parameter name of the full megatron-core model (global layer and expert indices)."""
    names = ["embedding.word_embeddings.weight"]
    for i in range(arch.num_layers):
        p = f"decoder.layers.{i}."
        names += [p + "input_layernorm.weight", p + "self_attention.linear_qkv.weight"]
        names += [p + "self_attention.q_layernorm.weight", p + "self_attention.k_layernorm.weight"]
        names += [p + "self_attention.linear_proj.weight", p + "pre_mlp_layernorm.weight", p + "mlp.router.weight"]
        for e in range(arch.num_experts):
            names += [f"{p}mlp.experts.local_experts.{e}.linear_fc1.weight"]
            names += [f"{p}mlp.experts.local_experts.{e}.linear_fc2.weight"]
    names.append("decoder.final_layernorm.weight")
    if arch.untie_embeddings_and_output_weights:
        names.append("output_layer.weight")
    return names


_SIMPLE = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.router.weight": "mlp.gate.weight",
}


def hf_sources(name: str) -> list[str]:
    """HF tensor names that make up the full megatron tensor ``name``."""
    if name in _SIMPLE:
        return [_SIMPLE[name]]
    m = _LAYER.match(name)
    if not m:
        raise ConversionError(f"unknown megatron parameter {name!r}")
    src, rest = f"model.layers.{m.group(1)}.", m.group(2)
    if rest in _SIMPLE:
        return [src + _SIMPLE[rest]]
    if rest == "self_attention.linear_qkv.weight":
        return [src + "self_attn.q_proj.weight", src + "self_attn.k_proj.weight", src + "self_attn.v_proj.weight"]
    e = _EXPERT.match(rest)
    if e and e.group(2) == "linear_fc1.weight":
        return [f"{src}mlp.experts.{e.group(1)}.gate_proj.weight", f"{src}mlp.experts.{e.group(1)}.up_proj.weight"]
    if e and e.group(2) == "linear_fc2.weight":
        return [f"{src}mlp.experts.{e.group(1)}.down_proj.weight"]
    raise ConversionError(f"unknown megatron parameter {name!r}")


def megatron_tensor(name: str, get_hf: Callable[[str], torch.Tensor], arch: ModelPreset) -> torch.Tensor:
    """The full megatron tensor ``name`` (global indices) built from HF tensors read with ``get_hf``."""
    parts = [get_hf(k) for k in hf_sources(name)]
    if name.endswith("linear_qkv.weight"):
        h, d, nq, ng = arch.hidden_size, arch.kv_channels, arch.num_attention_heads, arch.num_query_groups
        q, k, v = parts
        if tuple(q.shape) != (nq * d, h) or tuple(k.shape) != (ng * d, h) or tuple(v.shape) != (ng * d, h):
            raise ConversionError(
                f"{name}: q/k/v shapes {tuple(q.shape)}/{tuple(k.shape)}/{tuple(v.shape)} do not match the config"
            )
        return torch.cat([q.reshape(ng, nq // ng * d, h), k.reshape(ng, d, h), v.reshape(ng, d, h)], 1).reshape(-1, h)
    if len(parts) == 2:
        return torch.cat(parts, dim=0)
    return parts[0]


def hf_to_megatron(hf_state: Mapping[str, torch.Tensor], arch: ModelPreset) -> dict[str, torch.Tensor]:
    """Full (unsharded) megatron-core state dict with global layer/expert indices from a HF state dict.

    Raises :class:`ConversionError` on missing, unexpected or wrongly shaped tensors.
    """
    hf = _split_fused_experts(hf_state)
    used: set[str] = set()

    def get(key: str) -> torch.Tensor:
        if key not in hf:
            raise ConversionError(f"HF checkpoint is missing tensor {key!r}")
        used.add(key)
        return hf[key]

    out = {name: megatron_tensor(name, get, arch) for name in megatron_names(arch)}
    leftover = sorted(k for k in hf if k not in used and not k.endswith("rotary_emb.inv_freq"))
    if not arch.untie_embeddings_and_output_weights:
        leftover = [k for k in leftover if k != "lm_head.weight"]
    if leftover:
        raise ConversionError(f"HF checkpoint has tensors the converter does not map: {leftover[:5]}")
    _check_shapes(out, arch)
    return out


def megatron_layer_to_hf(mg: dict[str, torch.Tensor], layer: int, arch: ModelPreset) -> dict[str, torch.Tensor]:
    """HF tensors of decoder layer ``layer``, taken (popped) from full megatron tensors named with global indices."""
    h, d = arch.hidden_size, arch.kv_channels
    nq, ng = arch.num_attention_heads, arch.num_query_groups
    src, dst = f"decoder.layers.{layer}.", f"model.layers.{layer}."
    out: dict[str, torch.Tensor] = {}
    qkv = _take(mg, src + "self_attention.linear_qkv.weight").reshape(ng, (nq // ng + 2) * d, h)
    q, k, v = qkv.split([nq // ng * d, d, d], dim=1)
    out[dst + "self_attn.q_proj.weight"] = q.reshape(nq * d, h).contiguous()
    out[dst + "self_attn.k_proj.weight"] = k.reshape(ng * d, h).contiguous()
    out[dst + "self_attn.v_proj.weight"] = v.reshape(ng * d, h).contiguous()
    out[dst + "self_attn.o_proj.weight"] = _take(mg, src + "self_attention.linear_proj.weight")
    out[dst + "self_attn.q_norm.weight"] = _take(mg, src + "self_attention.q_layernorm.weight")
    out[dst + "self_attn.k_norm.weight"] = _take(mg, src + "self_attention.k_layernorm.weight")
    out[dst + "input_layernorm.weight"] = _take(mg, src + "input_layernorm.weight")
    out[dst + "post_attention_layernorm.weight"] = _take(mg, src + "pre_mlp_layernorm.weight")
    out[dst + "mlp.gate.weight"] = _take(mg, src + "mlp.router.weight")
    for e in range(arch.num_experts):
        es, ed = f"{src}mlp.experts.local_experts.{e}.", f"{dst}mlp.experts.{e}."
        gate, up = _take(mg, es + "linear_fc1.weight").chunk(2, dim=0)
        out[ed + "gate_proj.weight"] = gate.contiguous()
        out[ed + "up_proj.weight"] = up.contiguous()
        out[ed + "down_proj.weight"] = _take(mg, es + "linear_fc2.weight")
    return out


def megatron_to_hf(mg_state: Mapping[str, torch.Tensor], arch: ModelPreset) -> dict[str, torch.Tensor]:
    """HF Hub-format state dict from a full megatron-core state dict (inverse of :func:`hf_to_megatron`)."""
    mg = dict(mg_state)
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": _take(mg, "embedding.word_embeddings.weight")}
    for i in range(arch.num_layers):
        out.update(megatron_layer_to_hf(mg, i, arch))
    out["model.norm.weight"] = _take(mg, "decoder.final_layernorm.weight")
    if arch.untie_embeddings_and_output_weights:
        out["lm_head.weight"] = _take(mg, "output_layer.weight")
    leftover = sorted(mg)
    if leftover:
        raise ConversionError(f"megatron checkpoint has tensors the converter does not map: {leftover[:5]}")
    return out


def _check_shapes(mg: Mapping[str, torch.Tensor], arch: ModelPreset) -> None:
    h, d, f = arch.hidden_size, arch.kv_channels, arch.moe_ffn_hidden_size
    expected = {
        "embedding.word_embeddings.weight": (arch.vocab_size, h),
        "decoder.layers.0.self_attention.linear_qkv.weight": (
            (arch.num_attention_heads + 2 * arch.num_query_groups) * d,
            h,
        ),
        "decoder.layers.0.self_attention.linear_proj.weight": (h, arch.num_attention_heads * d),
        "decoder.layers.0.mlp.router.weight": (arch.num_experts, h),
        "decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.weight": (2 * f, h),
        "decoder.layers.0.mlp.experts.local_experts.0.linear_fc2.weight": (h, f),
    }
    for key, shape in expected.items():
        if tuple(mg[key].shape) != shape:
            raise ConversionError(f"{key}: shape {tuple(mg[key].shape)} does not match config {shape}")


def _tp_slice(name: str, full: torch.Tensor, tp_rank: int, tp: int, etp_rank: int, etp: int) -> torch.Tensor:
    """The tensor-parallel piece of a full megatron tensor (layer/expert indices already resolved)."""
    if name.endswith("linear_fc1.weight"):  # GLU: gate and up split separately
        if etp == 1:
            return full
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(etp, dim=0)[etp_rank], up.chunk(etp, dim=0)[etp_rank]], dim=0)
    if name.endswith("linear_fc2.weight"):
        return full.chunk(etp, dim=1)[etp_rank] if etp > 1 else full
    if tp == 1:
        return full
    if name.endswith(("linear_qkv.weight", "word_embeddings.weight", "output_layer.weight")):
        return full.chunk(tp, dim=0)[tp_rank]
    if name.endswith("linear_proj.weight"):
        return full.chunk(tp, dim=1)[tp_rank]
    return full  # norms and router are replicated


def global_name(local_name: str, layer_numbers: Mapping[int, int], expert_offset: int) -> str:
    """The full-dict name of a local parameter: local layer index -> global, local expert -> global."""
    m = _LAYER.match(local_name)
    if not m:
        return local_name
    layer, rest = int(m.group(1)), m.group(2)
    e = _EXPERT.match(rest)
    if e:
        rest = f"mlp.experts.local_experts.{int(e.group(1)) + expert_offset}.{e.group(2)}"
    return f"decoder.layers.{layer_numbers[layer]}.{rest}"


def local_shard(
    full: Mapping[str, torch.Tensor],
    local_names: list[str],
    layer_numbers: Mapping[int, int],
    *,
    tp_rank: int = 0,
    tp: int = 1,
    etp_rank: int = 0,
    etp: int = 1,
    ep_rank: int = 0,
    num_local_experts: int,
) -> dict[str, torch.Tensor]:
    """The state dict of one rank's model chunk, cut from the full megatron dict.

    ``local_names`` are the chunk's parameter names, ``layer_numbers`` maps its local layer index to the
    global (0-based) one; experts ``ep_rank * num_local_experts ...`` live on this rank.
    """
    out = {}
    for name in local_names:
        key = global_name(name, layer_numbers, ep_rank * num_local_experts)
        if key not in full:
            raise ConversionError(f"no source tensor for megatron parameter {name} ({key})")
        out[name] = _tp_slice(name, full[key], tp_rank, tp, etp_rank, etp).clone()
    return out


def to_global(
    local: Mapping[str, torch.Tensor], layer_numbers: Mapping[int, int], ep_rank: int, num_local_experts: int
) -> dict[str, torch.Tensor]:
    """Rename a (TP=1) chunk's state dict to full-dict names with global layer/expert indices."""
    return {global_name(k, layer_numbers, ep_rank * num_local_experts): v for k, v in local.items()}
