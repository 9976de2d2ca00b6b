"""Subprocess helper for ``test_checkpoint_layout.py``: build a Qwen3-MoE model, print its checkpoint keys.

``python tests/train/layout_worker.py PRESET [--set k=v ...] [--meta] [--te]`` prints one JSON line
``{checkpoint key: global shape}`` for every tensor of the model's ``sharded_state_dict`` (what
``dist_checkpointing.save`` would write). ``--meta`` builds on the meta device (no memory: the full-width
Qwen3-30B-A3B fits), ``--te`` builds megatron-core's TE spec on CUDA (needs Transformer Engine).
``--load CKPT --dump FILE`` instead loads the checkpoint ``CKPT`` (an ``iter_*`` directory) into the model with
the project's ``load_checkpoint`` and saves ``{"model": model.state_dict() tensors, "raw": every model tensor of
the checkpoint read by its stored key}`` to ``FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json


def checkpoint_shapes(model) -> dict[str, list[int]]:
    """``{key: global_shape}`` of the tensors a model's sharded state dict would save."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    shapes: dict[str, list[int]] = {}
    for item in nested_values(model.sharded_state_dict()):
        built = item.build() if isinstance(item, ShardedTensorFactory) else item
        for sh in nested_values({"x": built}):  # a factory builds a dict or list of ShardedTensors
            if isinstance(sh, ShardedTensor):
                shape = list(sh.global_shape)
                assert shapes.setdefault(sh.key, shape) == shape, (sh.key, shapes[sh.key], shape)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--meta", action="store_true")
    parser.add_argument("--te", action="store_true")
    parser.add_argument("--load")
    parser.add_argument("--dump")
    args = parser.parse_args()

    import torch

    from megatron_agentic.config import load_config
    from megatron_agentic.models.qwen3_moe.model import build_model, transformer_config_from
    from megatron_agentic.platform import setup_platform
    from megatron_agentic.training.builders import init_distributed

    overrides = [f"model.preset={args.preset}", *args.set]
    if args.te:
        overrides.append("model.attention_backend=te")
    cfg = load_config(None, overrides)
    platform = setup_platform()
    init_distributed(cfg, platform)
    if args.load:
        from megatron.core import dist_checkpointing

        from megatron_agentic.training.checkpoint import load_checkpoint

        model = build_model(cfg)
        load_checkpoint(args.load, [model], load_rng=False)
        stored = {k: v for k, v in dist_checkpointing.load_tensors_metadata(args.load).items() if "optimizer" not in k}
        loaded = dist_checkpointing.load(stored, args.load)
        raw = {k: loaded[k] for k in stored}
        tensors = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and "_extra" not in k}
        torch.save({"model": tensors, "raw": raw}, args.dump)
        return
    with torch.device("meta") if args.meta else contextlib.nullcontext():
        model = build_model(cfg, transformer_config=transformer_config_from(cfg, perform_initialization=False))
    print(json.dumps(checkpoint_shapes(model)))


if __name__ == "__main__":
    main()
