"""``TritonAttention``: megatron-core ``core_attention`` backed by the Triton flash / zigzag ring attention.

Drop-in for megatron-core 0.16.1's ``DotProductAttention`` in a layer spec (same constructor and forward), with
what the local implementation lacks: context parallelism without Transformer Engine (zigzag ring over the CP
group, on the shard megatron-core's ``get_batch_on_this_cp_rank`` produces), packed ``thd`` sequences
(``PackedSeqParams``), and no ``[b, heads, s, s]`` score matrix. GQA K/V are read without repetition. On CUDA the
block compute is the Triton kernel; elsewhere the torch block implementation (same ring, same math), so the same
spec trains on CPU/gloo. Attention dropout, sliding windows and non-vanilla softmax are not implemented and are
refused at construction.
"""

from __future__ import annotations

import math
import os

import torch
from megatron.core import parallel_state
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide

from megatron_agentic.kernels import flash_attention as _fa
from megatron_agentic.kernels import ring_attention as _ring

BACKEND_ENV = "MEGATRON_AGENTIC_ATTN_BLOCK_BACKEND"
_CAUSAL_TYPES = (AttnMaskType.causal, AttnMaskType.padding_causal)


def thd_max_seqlen(cu_seqlens: torch.Tensor) -> int:
    """Longest document of a packed ``thd`` batch given its (possibly padded) ``cu_seqlens``."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    return int(lengths.max()) if lengths.numel() else 0


class TritonAttention(MegatronModule):
    """Core attention (``q, k, v -> context``) on the Triton kernels, with zigzag ring attention when CP > 1.

    Args (as megatron-core's ``DotProductAttention``):
        config: the transformer config (heads, ``kv_channels``, ``num_query_groups``, ``context_parallel_size``).
        layer_number: 1-based layer index (unused apart from bookkeeping).
        attn_mask_type: ``causal``/``padding_causal`` (causal) or ``no_mask`` (full attention).
        attention_type: ``self`` (cross attention is not used by GPT models).
        attention_dropout: must be 0 (or ``None`` with ``config.attention_dropout == 0``).
        softmax_scale: defaults to ``kv_channels ** -0.5``.
        cp_comm_type: accepted for interface compatibility; the ring is always peer-to-peer.
        pg_collection: process groups (``tp`` and ``cp``); defaults to megatron's parallel_state groups.
        block_backend: ``triton``, ``torch`` or ``None`` (env ``MEGATRON_AGENTIC_ATTN_BLOCK_BACKEND``, else Triton
            on CUDA and torch on CPU).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
        block_backend: str | None = None,
    ) -> None:
        super().__init__(config=config)
        self.config: TransformerConfig = config
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type
        self.cp_comm_type = cp_comm_type
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        if dropout:
            raise ValueError(
                f"TritonAttention does not implement attention dropout (got {dropout}); set attention_dropout=0.0 "
                "in the model config (Qwen3 uses 0)"
            )
        if getattr(config, "window_size", None) is not None:
            raise ValueError("TritonAttention does not implement sliding-window attention (config.window_size)")
        if getattr(config, "softmax_type", "vanilla") != "vanilla":
            raise ValueError(f"TritonAttention supports softmax_type='vanilla' only, got {config.softmax_type!r}")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp", "cp"])
        self.pg_collection = pg_collection
        tp_size = pg_collection.tp.size() if getattr(pg_collection, "tp", None) is not None else 1
        self.head_dim = config.kv_channels
        _fa.check_head_dim(self.head_dim)  # same policy on CPU (torch blocks) and GPU (Triton): refused at build time
        self.num_heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.num_query_groups_per_partition = divide(config.num_query_groups or config.num_attention_heads, tp_size)
        # apply_query_key_layer_scaling only guards fp16 overflow in the unfused softmax; the effective scale is
        # unchanged, and our kernels accumulate in fp32, so it is ignored here.
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.block_backend = block_backend or os.environ.get(BACKEND_ENV) or None
        self.cp_size = config.context_parallel_size

    def _cp_group(self):
        group = getattr(self.pg_collection, "cp", None)
        return group if group is not None else parallel_state.get_context_parallel_group()

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        """``[s, b, heads, d]`` q/k/v (``[t, heads, d]`` for packed ``thd``) -> ``[s, b, heads * d]`` (``[t, heads * d]``).

        With CP > 1 the inputs are this rank's zigzag shard (chunks ``r`` and ``2W-1-r``; per document for
        ``thd``). A causal ``attention_mask`` is ignored (the kernels apply causality); other masks are refused.
        """
        if attention_bias is not None:
            raise NotImplementedError("TritonAttention does not support attention_bias")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        causal = mask_type in _CAUSAL_TYPES
        if not causal and attention_mask is not None:
            raise NotImplementedError(f"TritonAttention supports causal or unmasked attention, not {mask_type}")
        if query.shape[-2] % key.shape[-2]:
            raise ValueError(f"query heads {query.shape[-2]} not a multiple of key/value heads {key.shape[-2]}")
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            return self._forward_thd(query, key, value, causal, packed_seq_params)
        # [s, b, h, d] -> [b, s, h, d]
        q, k, v = (t.transpose(0, 1).contiguous() for t in (query, key, value))
        if self.cp_size > 1:
            out = _ring.ring_attn_func(
                q, k, v, self._cp_group(), causal=causal, softmax_scale=self.softmax_scale, backend=self.block_backend
            )
        else:
            out = _fa.flash_attn_func(
                q, k, v, causal=causal, softmax_scale=self.softmax_scale, backend=self._backend(q)
            )
        s, b = query.shape[0], query.shape[1]
        return out.transpose(0, 1).reshape(s, b, -1)

    def _backend(self, q: torch.Tensor) -> str:
        return self.block_backend or ("triton" if q.is_cuda else "torch")

    def _forward_thd(self, q, k, v, causal: bool, params: PackedSeqParams) -> torch.Tensor:
        # Documents padded for CP (cu_seqlens_*_padded) are the units of the per-document zigzag split; padding
        # sits at the end of each document, so under the causal mask real tokens never attend to it.
        padded = params.cu_seqlens_q_padded is not None
        cu = params.cu_seqlens_q_padded if padded else params.cu_seqlens_q
        # params.max_seqlen_q counts real tokens; the kernels' grid must cover the padded documents (otherwise the
        # padded tail rows of the longest document are never written)
        max_seqlen = thd_max_seqlen(cu) if padded or params.max_seqlen_q is None else int(params.max_seqlen_q)
        if q.dim() == 4:  # [t, 1, h, d]
            q, k, v = q.squeeze(1), k.squeeze(1), v.squeeze(1)
        if self.cp_size > 1:
            out = _ring.ring_attn_func(
                q, k, v, self._cp_group(), causal=causal, softmax_scale=self.softmax_scale,
                cu_seqlens=cu, backend=self.block_backend,
            )  # fmt: skip
        else:
            out = _fa.flash_attn_func(
                q, k, v, causal=causal, softmax_scale=self.softmax_scale, cu_seqlens=cu,
                max_seqlen=max_seqlen, backend=self._backend(q),
            )  # fmt: skip
        return out.reshape(out.shape[0], -1)
