"""``megatron-agentic convert mcore-to-hf --checkpoint CKPT --output HF [--dtype bf16|fp32]``.

Reads a megatron-core checkpoint saved from any TP/PP/EP layout (written by ``megatron-agentic train`` or
``convert hf-to-mcore``; TE key layout or the legacy pre-TE one) and writes a HF Qwen3-MoE checkpoint:
safetensors shards in the Hub layout (one tensor per expert) + ``config.json``.

No model is built: one CPU process reads the checkpoint's global tensors layer by layer with
``dist_checkpointing.load`` (each request is one layer's slice of the stacked tensors) and streams them into
safetensors shards, so peak memory is about one layer plus one output shard, not the model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from megatron_agentic.convert import keys
from megatron_agentic.convert.errors import ConversionError
from megatron_agentic.convert.hf_io import HFCheckpointWriter
from megatron_agentic.convert.runtime import run_on_ranks
from megatron_agentic.models.qwen3_moe.hf_mapping import hf_config_from_preset, megatron_layer_to_hf
from megatron_agentic.models.qwen3_moe.presets import ModelPreset, get_preset

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")
MAX_SHARD_BYTES = 5 * 1024**3
"""Size of the safetensors shards written (the Hub's usual 5 GB)."""


def checkpoint_arch(common: dict[str, Any], preset: str | None) -> ModelPreset:
    """The architecture recorded in a checkpoint's common state (``arch`` or a training ``config``)."""
    if preset:
        return get_preset(preset)
    if isinstance(common.get("arch"), dict):
        return ModelPreset(**common["arch"])
    if isinstance(common.get("config"), dict):
        from megatron_agentic.config import config_from_dict

        arch = config_from_dict(common["config"], source="checkpoint config").model.architecture()
        if not isinstance(arch, ModelPreset):
            raise ConversionError(
                f"checkpoint is a {type(arch).__name__} model ({arch.name}): mcore-to-hf converts Qwen3-MoE only"
            )
        return arch
    raise ConversionError("checkpoint records no architecture (no 'arch' or 'config'); pass --preset NAME")


class CheckpointReader:
    """Reads slices of a ``dist_checkpointing`` checkpoint's global tensors by TE-layout key (legacy keys mapped)."""

    def __init__(self, ckpt_dir: Path) -> None:
        from megatron.core import dist_checkpointing

        self.ckpt_dir = ckpt_dir
        self.metadata = dist_checkpointing.load_tensors_metadata(str(ckpt_dir))
        self.renames = keys.legacy_renames(self.metadata)

    def shape(self, key: str) -> tuple[int, ...]:
        """Global shape of the tensor stored for TE-layout key ``key``."""
        stored = self.renames.get(key, key)
        if stored not in self.metadata:
            raise ConversionError(f"{self.ckpt_dir}: checkpoint has no tensor {key!r}")
        return tuple(self.metadata[stored].global_shape)

    def load(self, requests: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
        """``{name: (key, index)}`` -> ``{name: tensor[index]}`` (``index`` selects along the leading axes)."""
        from megatron.core import dist_checkpointing
        from megatron.core.dist_checkpointing.mapping import ShardedTensor

        state = {}
        for name, (key, index) in requests.items():
            shape = self.shape(key)
            stored = self.renames.get(key, key)
            offsets = [(axis, i, shape[axis]) for axis, i in enumerate(index)]
            # leading singleton axes (not megatron's prepended axes, whose regular-grid path assumes every rank
            # holds a piece): the request is one plain chunk of the global tensor
            local = torch.empty((1,) * len(index) + shape[len(index) :], dtype=self.metadata[stored].dtype)
            state[name] = ShardedTensor.from_rank_offsets(stored, local, *offsets, replica_id=0)
        loaded = dist_checkpointing.load(state, str(self.ckpt_dir), validate_access_integrity=False)
        # load() also returns the common state
        return {name: loaded[name].reshape(loaded[name].shape[len(requests[name][1]) :]) for name in requests}


def layer_requests(layer: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """What to read for decoder layer ``layer``: full-dict names (experts as one ``[E, ...]`` slab)."""
    p = f"decoder.layers.{layer}."
    names = {
        "input_layernorm": "input_layernorm.weight",
        "linear_qkv": "self_attention.linear_qkv.weight",
        "q_layernorm": "self_attention.q_layernorm.weight",
        "k_layernorm": "self_attention.k_layernorm.weight",
        "linear_proj": "self_attention.linear_proj.weight",
        "pre_mlp_layernorm": "pre_mlp_layernorm.weight",
        "router": "mlp.router.weight",
    }
    out = {p + suffix: (keys.LAYER_KEYS[what], (layer,)) for what, suffix in names.items()}
    out.update({f"{p}experts.{what}": (key, (layer,)) for what, key in keys.EXPERT_KEYS.items()})
    return out


def export_layers(reader: CheckpointReader, arch: ModelPreset, writer: HFCheckpointWriter, dtype: torch.dtype) -> None:
    """Stream the whole model from ``reader`` into ``writer``, one decoder layer at a time."""
    from rich.console import Console
    from rich.progress import Progress

    vocab = arch.vocab_size
    (embedding,) = reader.load({"e": (keys.EMBEDDING, ())}).values()
    writer.add("model.embed_tokens.weight", embedding[:vocab].to(dtype))
    del embedding
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("mcore-to-hf layers", total=arch.num_layers)
        for layer in range(arch.num_layers):
            mg = reader.load(layer_requests(layer))
            p = f"decoder.layers.{layer}."
            for what in keys.EXPERT_KEYS:
                slab = mg.pop(f"{p}experts.{what}")
                for e in range(arch.num_experts):
                    mg[f"{p}mlp.experts.local_experts.{e}.{what}.weight"] = slab[e]
            for name, tensor in megatron_layer_to_hf(mg, layer, arch).items():
                writer.add(name, tensor.to(dtype))
            progress.advance(task)
    tail = {"model.norm.weight": (keys.FINAL_NORM, ())}
    if arch.untie_embeddings_and_output_weights:
        tail["lm_head.weight"] = (keys.OUTPUT_LAYER, ())
    for name, tensor in reader.load(tail).items():
        writer.add(name, (tensor[:vocab] if name == "lm_head.weight" else tensor).to(dtype))


def _worker(
    rank: int, world: int, checkpoint: str, output: str, dtype: str, preset: str | None, tokenizer: str | None
) -> None:
    from megatron.core import dist_checkpointing

    from megatron_agentic.training.checkpoint import resolve_checkpoint_dir

    ckpt_dir = resolve_checkpoint_dir(checkpoint)
    arch = checkpoint_arch(dist_checkpointing.load_common_state_dict(str(ckpt_dir)), preset)
    reader = CheckpointReader(ckpt_dir)
    extra = []
    if tokenizer:
        extra = [Path(tokenizer, f) for f in TOKENIZER_FILES if Path(tokenizer, f).is_file()]
    config = hf_config_from_preset(arch, "bfloat16" if dtype == "bf16" else "float32")
    with HFCheckpointWriter(output, config, MAX_SHARD_BYTES, extra) as writer:
        export_layers(reader, arch, writer, DTYPES[dtype])


def convert(
    checkpoint: str, output: str, dtype: str = "bf16", preset: str | None = None, tokenizer_dir: str | None = None
) -> Path:
    """Convert the megatron checkpoint ``checkpoint`` (root or ``iter_*`` directory) to HF at ``output``."""
    from megatron_agentic.training.checkpoint import resolve_checkpoint_dir

    try:
        resolve_checkpoint_dir(checkpoint)
    except FileNotFoundError as exc:
        raise ConversionError(str(exc)) from None
    run_on_ranks(1, _worker, checkpoint, output, dtype, preset, tokenizer_dir)  # one gloo rank: CPU redirections
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="megatron-agentic convert mcore-to-hf", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="megatron checkpoint root (with latest marker) or iter_* dir"
    )
    parser.add_argument("--output", required=True, help="HF directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="stored precision (default bf16)")
    parser.add_argument("--preset", help="architecture preset when the checkpoint records none")
    parser.add_argument("--tokenizer-dir", help="copy tokenizer files from this HF directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = convert(args.checkpoint, args.output, args.dtype, args.preset, args.tokenizer_dir)
    except (ConversionError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
