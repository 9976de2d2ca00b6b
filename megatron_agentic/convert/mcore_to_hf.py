"""``megatron-agentic convert mcore-to-hf --checkpoint CKPT --output HF [--dtype bf16]``.

Loads a megatron-core checkpoint saved from any TP/PP/EP layout (written by ``megatron-agentic train``
or ``convert hf-to-mcore``) into a single CPU process (dist_checkpointing reshards it to TP=PP=EP=1)
and writes a HF Qwen3-MoE checkpoint: safetensors shards in the Hub layout (one tensor per expert) +
``config.json``. Needs host memory for up to twice the model in the chosen dtype (30B-A3B in bf16: ~130 GB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from megatron_agentic.convert.hf_io import write_hf_checkpoint
from megatron_agentic.convert.mapping import ConversionError, hf_config_from_preset, megatron_to_hf, to_global
from megatron_agentic.convert.runtime import build_local_model, init_layout, layer_numbers, run_on_ranks, tensor_state
from megatron_agentic.models.qwen3_moe.presets import ModelPreset, get_preset

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")


def checkpoint_arch(common: dict[str, Any], preset: str | None) -> ModelPreset:
    """The architecture recorded in a checkpoint's common state (``arch`` or a training ``config``)."""
    if preset:
        return get_preset(preset)
    if isinstance(common.get("arch"), dict):
        return ModelPreset(**common["arch"])
    if isinstance(common.get("config"), dict):
        from megatron_agentic.config import config_from_dict

        return config_from_dict(common["config"], source="checkpoint config").model.architecture()
    raise ConversionError("checkpoint records no architecture (no 'arch' or 'config'); pass --preset NAME")


def _worker(
    rank: int, world: int, checkpoint: str, output: str, dtype: str, preset: str | None, tokenizer: str | None
) -> None:
    from megatron.core import dist_checkpointing

    from megatron_agentic.training.checkpoint import load_checkpoint, resolve_checkpoint_dir

    ckpt_dir = resolve_checkpoint_dir(checkpoint)
    arch = checkpoint_arch(dist_checkpointing.load_common_state_dict(str(ckpt_dir)), preset)
    init_layout(1, 1, 1)
    model = build_local_model(arch, 1, 1, 1, dtype)
    load_checkpoint(ckpt_dir, [model], load_rng=False)
    full = to_global(tensor_state(model), layer_numbers(model), 0, arch.num_experts)
    hf_state = {k: v.to(DTYPES[dtype]) for k, v in megatron_to_hf(full, arch).items()}
    extra = []
    if tokenizer:
        extra = [Path(tokenizer, f) for f in TOKENIZER_FILES if Path(tokenizer, f).is_file()]
    torch_dtype = "bfloat16" if dtype == "bf16" else "float32"
    write_hf_checkpoint(output, hf_state, hf_config_from_preset(arch, torch_dtype), extra_files=extra)


def convert(
    checkpoint: str, output: str, dtype: str = "bf16", preset: str | None = None, tokenizer_dir: str | None = None
) -> Path:
    """Convert the megatron checkpoint ``checkpoint`` (root or ``iter_*`` directory) to HF at ``output``."""
    from megatron_agentic.training.checkpoint import resolve_checkpoint_dir

    try:
        resolve_checkpoint_dir(checkpoint)
    except FileNotFoundError as exc:
        raise ConversionError(str(exc)) from None
    run_on_ranks(1, _worker, checkpoint, output, dtype, preset, tokenizer_dir)
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
    try:
        path = convert(args.checkpoint, args.output, args.dtype, args.preset, args.tokenizer_dir)
    except (ConversionError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
