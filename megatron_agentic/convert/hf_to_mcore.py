"""``megatron-agentic convert hf-to-mcore --hf-dir HF --output CKPT [--tp N --pp N --ep N --etp N]``.

Reads a HF Qwen3-MoE checkpoint (safetensors) and writes a megatron-core ``dist_checkpointing`` checkpoint
(``torch_dist``) in the layout of ``megatron-agentic train`` (``CKPT/iter_0000000`` + the latest marker),
with the sharded keys of megatron-core's Transformer Engine layer spec (:mod:`megatron_agentic.convert.keys`),
so it can be given as ``checkpoint.pretrained`` and loaded into any TP/PP/EP layout, TE or local spec.

No model is built: one process reads the HF tensors one at a time and streams them into the checkpoint
(:mod:`megatron_agentic.convert.dcp_stream`); peak memory is about the largest tensor (the embedding),
not the model. The chunks follow the given TP/ETP layout (each rank of that layout reads whole chunks);
``--pp``/``--ep`` only validate that the layout divides the model, as layers and experts are chunked
one by one anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from data_tools.common.atomic import atomic_write_text
from megatron_agentic.convert import keys
from megatron_agentic.convert.dcp_stream import BytesObject, TensorChunk, write_torch_dist
from megatron_agentic.convert.hf_io import HFCheckpoint
from megatron_agentic.models.qwen3_moe.hf_mapping import (
    ConversionError,
    hf_sources,
    megatron_names,
    megatron_tensor,
    preset_from_hf_config,
)
from megatron_agentic.models.qwen3_moe.presets import ModelPreset

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class TargetShards:
    """The TP/PP/EP/ETP sizes whose ranks the checkpoint chunks are cut for (the conversion target)."""

    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size (validation only)."""
    ep: int = 1
    """Expert-parallel size (validation only)."""
    etp: int | None = None
    """Expert tensor-parallel size (megatron-core's default: the tensor-parallel size)."""

    @property
    def expert_tp(self) -> int:
        """The effective expert tensor-parallel size."""
        return self.tp if self.etp is None else self.etp


def check_shards(arch: ModelPreset, shards: TargetShards) -> None:
    """Raise :class:`ConversionError` when ``shards`` does not divide the model."""
    tp, etp = shards.tp, shards.expert_tp
    checks = [
        (arch.num_attention_heads % tp, f"num_attention_heads ({arch.num_attention_heads}) % --tp {tp}"),
        (arch.num_query_groups % tp, f"num_key_value_heads ({arch.num_query_groups}) % --tp {tp}"),
        (arch.num_layers % shards.pp, f"num_hidden_layers ({arch.num_layers}) % --pp {shards.pp}"),
        (arch.num_experts % shards.ep, f"num_experts ({arch.num_experts}) % --ep {shards.ep}"),
        (arch.vocab_size % tp, f"vocab_size ({arch.vocab_size}) % --tp {tp}"),
        (arch.moe_ffn_hidden_size % etp, f"moe_intermediate_size ({arch.moe_ffn_hidden_size}) % --etp {etp}"),
    ]
    for bad, what in checks:
        if bad:
            raise ConversionError(f"layout does not divide the model: {what} != 0")


# split of a per-layer tensor under tensor parallelism: (dimension, which size, gated linear unit)
_SPLITS: dict[str, tuple[int, str, bool]] = {
    keys.EMBEDDING: (0, "tp", False),
    keys.OUTPUT_LAYER: (0, "tp", False),
    keys.LAYER_KEYS["linear_qkv"]: (0, "tp", False),
    keys.LAYER_KEYS["linear_proj"]: (1, "tp", False),
    keys.EXPERT_KEYS["linear_fc1"]: (0, "etp", True),
    keys.EXPERT_KEYS["linear_fc2"]: (1, "etp", False),
}


def tp_pieces(key: str, shape: tuple[int, ...], tp: int, etp: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(offsets, sizes) of the pieces of a per-layer tensor that the ranks of a TP/ETP layout hold.

    A gated ``linear_fc1`` (``[gate; up]``) is split as megatron-core's swiglu sharded factory does: rank r
    holds rows r of the gate half and r of the up half, two separate chunks of the global tensor.
    """
    if key not in _SPLITS:
        return [((0,) * len(shape), shape)]
    dim, which, glu = _SPLITS[key]
    n = tp if which == "tp" else etp
    halves = [(0, shape[dim] // 2), (shape[dim] // 2, shape[dim] // 2)] if glu else [(0, shape[dim])]
    pieces = []
    for start, length in halves:
        step = length // n
        for r in range(n):
            offsets = tuple(start + r * step if i == dim else 0 for i in range(len(shape)))
            sizes = tuple(step if i == dim else s for i, s in enumerate(shape))
            pieces.append((offsets, sizes))
    return pieces


class _LastTensor:
    """Builds megatron tensors from HF ones, keeping the last one (a tensor's TP pieces come in a row)."""

    def __init__(self, hf: HFCheckpoint, arch: ModelPreset) -> None:
        self.hf, self.arch = hf, arch
        self.name: str | None = None
        self.tensor: torch.Tensor | None = None

    def piece(self, name: str, offsets: tuple[int, ...], sizes: tuple[int, ...], lead: int) -> torch.Tensor:
        if name != self.name:
            self.name, self.tensor = None, None  # free the previous tensor before reading the next
            self.tensor, self.name = megatron_tensor(name, self.hf.get, self.arch), name
        view = self.tensor
        for dim, (o, s) in enumerate(zip(offsets, sizes)):
            view = view.narrow(dim, o, s)
        return view.reshape((1,) * lead + sizes)


def plan_chunks(
    hf: HFCheckpoint, arch: ModelPreset, shards: TargetShards, dtype: torch.dtype
) -> tuple[list[TensorChunk], list[BytesObject]]:
    """Every chunk of the checkpoint (layer by layer) and the ``_extra_state`` objects, with lazy producers."""
    h, d, f = arch.hidden_size, arch.kv_channels, arch.moe_ffn_hidden_size
    nq, ng, n_layers, n_exp = arch.num_attention_heads, arch.num_query_groups, arch.num_layers, arch.num_experts
    source = _LastTensor(hf, arch)
    chunks: list[TensorChunk] = []

    def add(key: str, name: str, shape: tuple[int, ...], lead: tuple[int, ...], lead_shape: tuple[int, ...]) -> None:
        for offsets, sizes in tp_pieces(key, shape, shards.tp, shards.expert_tp):
            produce = functools.partial(source.piece, name, offsets, sizes, len(lead))
            chunks.append(
                TensorChunk(key, lead_shape + shape, lead + offsets, (1,) * len(lead) + sizes, dtype, produce)
            )

    layer_shapes = {
        "input_layernorm": ("input_layernorm.weight", (h,)),
        "linear_qkv": ("self_attention.linear_qkv.weight", ((nq + 2 * ng) * d, h)),
        "q_layernorm": ("self_attention.q_layernorm.weight", (d,)),
        "k_layernorm": ("self_attention.k_layernorm.weight", (d,)),
        "linear_proj": ("self_attention.linear_proj.weight", (h, nq * d)),
        "pre_mlp_layernorm": ("pre_mlp_layernorm.weight", (h,)),
        "router": ("mlp.router.weight", (n_exp, h)),
    }
    expert_shapes = {"linear_fc1": (2 * f, h), "linear_fc2": (h, f)}
    add(keys.EMBEDDING, keys.EMBEDDING, (arch.vocab_size, h), (), ())
    objects: list[BytesObject] = []
    for layer in range(n_layers):
        for what, (suffix, shape) in layer_shapes.items():
            add(keys.LAYER_KEYS[what], f"decoder.layers.{layer}.{suffix}", shape, (layer,), (n_layers,))
        for e in range(n_exp):
            for what, shape in expert_shapes.items():
                name = f"decoder.layers.{layer}.mlp.experts.local_experts.{e}.{what}.weight"
                add(keys.EXPERT_KEYS[what], name, shape, (layer, e), (n_layers, n_exp))
            objects += [
                BytesObject(keys.extra_state_key(b, (layer, e), (n_layers, n_exp))) for b in keys.EXPERT_EXTRA_STATES
            ]
        objects += [BytesObject(keys.extra_state_key(b, (layer,), (n_layers,))) for b in keys.LAYER_EXTRA_STATES]
    add(keys.FINAL_NORM, keys.FINAL_NORM, (h,), (), ())
    objects += [BytesObject(keys.extra_state_key(b, (0,), (1,))) for b in keys.FINAL_EXTRA_STATES]
    if arch.untie_embeddings_and_output_weights:
        add(keys.OUTPUT_LAYER, keys.OUTPUT_LAYER, (arch.vocab_size, h), (), ())
    return chunks, objects


def check_sources(hf: HFCheckpoint, arch: ModelPreset) -> None:
    """Fail before writing anything when a HF tensor is missing or a HF tensor would be left unconverted."""
    needed: set[str] = set()
    for name in megatron_names(arch):
        needed.update(hf_sources(name))
    present = set(hf.hub_keys())
    for key in sorted(needed):
        if key not in present:
            raise ConversionError(f"{hf.directory}: HF checkpoint is missing tensor {key!r}")
    leftover = sorted(k for k in present if k not in needed and not k.endswith("rotary_emb.inv_freq"))
    if not arch.untie_embeddings_and_output_weights:
        leftover = [k for k in leftover if k != "lm_head.weight"]
    if leftover:
        raise ConversionError(f"HF checkpoint has tensors the converter does not map: {leftover[:5]}")


def convert(
    hf_dir: str,
    output: str,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    precision: str = "bf16",
    etp: int | None = None,
    progress: bool = True,
) -> Path:
    """Convert ``hf_dir`` to a megatron checkpoint at ``output`` chunked for a TP/PP/EP/ETP layout; returns it.

    The layout is validated against the HF config and every HF tensor's presence is checked before
    anything is written; ``output/iter_0000000`` and the latest marker are written atomically.
    """
    from megatron_agentic.training.checkpoint import LATEST_FILE, checkpoint_path

    hf = HFCheckpoint(hf_dir)
    arch = preset_from_hf_config(hf.config)
    shards = TargetShards(tp, pp, ep, etp)
    check_shards(arch, shards)
    chunks, objects = plan_chunks(hf, arch, shards, DTYPES[precision])
    check_sources(hf, arch)
    common = {
        "iteration": 0,
        "tokens": 0,
        "arch": dataclasses.asdict(arch),
        "converted_from": str(Path(hf_dir).resolve()),
        "converted_layout": dataclasses.asdict(shards),
    }
    total = sum(torch.Size(c.shape).numel() * DTYPES[precision].itemsize for c in chunks)
    with _progress(total, f"hf-to-mcore {Path(hf_dir).name}", enabled=progress) as advance:
        write_torch_dist(checkpoint_path(output, 0), chunks, objects, common, on_write=advance)
    marker = Path(output) / LATEST_FILE
    atomic_write_text(marker, "0\n")
    logger.info("wrote %s (%d chunks, %.2f GB)", output, len(chunks), total / 1e9)
    return Path(output)


class _progress:
    """A rich byte progress bar on stderr (a no-op when disabled); yields the ``advance(nbytes)`` callback."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda nbytes: None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda nbytes: self.bar.advance(task, nbytes)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="megatron-agentic convert hf-to-mcore", description=__doc__.split("\n")[0])
    parser.add_argument("--hf-dir", required=True, help="HF checkpoint directory (config.json + *.safetensors)")
    parser.add_argument("--output", required=True, help="megatron checkpoint directory to write")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size the chunks are cut for")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (validated)")
    parser.add_argument("--ep", type=int, default=1, help="expert-parallel size (validated)")
    parser.add_argument("--etp", type=int, default=None, help="expert tensor-parallel size (default: --tp)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="stored precision (default bf16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if min(args.tp, args.pp, args.ep, args.etp or 1) < 1:
        parser.error("--tp, --pp, --ep and --etp must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = convert(
            args.hf_dir, args.output, args.tp, args.pp, args.ep, args.dtype, args.etp, progress=not args.no_progress
        )
    except (ConversionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    etp = args.etp or args.tp
    print(f"wrote {path} (TP={args.tp} PP={args.pp} EP={args.ep} ETP={etp}, {args.dtype}); loadable into any layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
