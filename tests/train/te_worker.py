"""Subprocess of ``test_te_harness.py``: the real Transformer Engine-spec model on CPU (see ``te_harness.py``).

``python tests/train/te_worker.py TE_DIR --preset P [--set k=v ...] [--meta] [--load NAME=CKPT ...]
[--project-load NAME=CKPT ...] [--save-from NAME --save OUT]`` builds the model through the project's
``build_model`` with the settings ``resolve_settings`` gives a CUDA + Transformer Engine platform, and prints one
JSON line:

- ``modules``: class of the layer-0 modules that decide the checkpoint layout;
- ``tensors`` / ``objects``: every ``ShardedTensor`` key with its global shape, every ``ShardedObject`` key with
  its global (layer / expert) shape, of the model's ``sharded_state_dict()``;
- ``loads``: per ``--load`` checkpoint, the result of ``dist_checkpointing.load`` of the *full* sharded state dict
  followed by ``load_state_dict(strict=True)`` (``ok`` or the error's first line), and whether every parameter
  then equals the stored tensor it was read from; per ``--project-load`` the same through the project's
  ``training.checkpoint.load_checkpoint`` (tolerant of TE ``_extra_state`` objects an older checkpoint lacks).

``--save OUT`` then saves the TE model's sharded state dict (after loading ``--save-from``) as ``OUT/iter_0000000``
with the latest marker: a checkpoint written by the TE model, for the reverse direction.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.train import te_harness  # noqa: E402

LAYOUT_MODULES = (
    "decoder.layers.0.input_layernorm",
    "decoder.layers.0.self_attention.linear_qkv",
    "decoder.layers.0.self_attention.q_layernorm",
    "decoder.layers.0.self_attention.k_layernorm",
    "decoder.layers.0.self_attention.linear_proj",
    "decoder.layers.0.pre_mlp_layernorm",
    "decoder.layers.0.mlp.router",
    "decoder.layers.0.mlp.experts",
    "decoder.final_layernorm",
    "output_layer",
)


def sharded_items(model) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """``({tensor key: global shape}, {object key: global shape})`` of ``model.sharded_state_dict()``."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory

    tensors: dict[str, list[int]] = {}
    objects: dict[str, list[int]] = {}
    for item in nested_values(model.sharded_state_dict()):
        built = item.build() if isinstance(item, ShardedTensorFactory) else item
        for sh in nested_values({"x": built}):
            if isinstance(sh, ShardedTensor):
                assert tensors.setdefault(sh.key, list(sh.global_shape)) == list(sh.global_shape), sh.key
            elif isinstance(sh, ShardedObject):
                assert objects.setdefault(sh.key, list(sh.global_shape)) == list(sh.global_shape), sh.key
    return tensors, objects


def first_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the harness compares error kinds, not tracebacks)."""
    return f"{type(exc).__name__}: {' | '.join(str(exc).strip().splitlines())[:600]}"


def parameters_match_checkpoint(model, ckpt: str) -> bool:
    """Whether every parameter equals the stored tensor it was read from (layer / expert slice of stacked keys)."""
    import torch
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    stored = dist_checkpointing.load_tensors_metadata(ckpt)
    raw = dist_checkpointing.load({k: v for k, v in stored.items() if not k.startswith("optimizer")}, ckpt)
    from megatron_agentic.models.qwen3_moe.checkpoint_keys import LEGACY_KEY_MAP

    new_to_old = {new: old for old, new in LEGACY_KEY_MAP.items()}
    checked = 0
    for item in nested_values(model.sharded_state_dict()):
        built = item.build() if isinstance(item, ShardedTensorFactory) else item
        for sh in nested_values({"x": built}):
            if not isinstance(sh, ShardedTensor):
                continue
            key = sh.key if sh.key in raw else new_to_old.get(sh.key, sh.key)
            view = raw[key]
            for dim, (off, size) in enumerate(zip(sh.global_offset, [1] * sh.prepend_axis_num + list(sh.local_shape))):
                view = view.narrow(dim, off, size)
            if not torch.equal(view.reshape(sh.data.shape).to(sh.data.dtype), sh.data):
                return False
            checked += 1
    return checked > 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("te_dir")
    parser.add_argument("--preset", default="tiny-moe")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--meta", action="store_true")
    parser.add_argument("--load", action="append", default=[], help="NAME=CKPT (an iter_* directory)")
    parser.add_argument("--project-load", action="append", default=[], help="NAME=CKPT")
    parser.add_argument("--save-from")
    parser.add_argument("--save")
    args = parser.parse_args()

    te_harness.activate(Path(args.te_dir))
    import torch
    from megatron.core import dist_checkpointing

    from megatron_agentic.config import load_config
    from megatron_agentic.models.qwen3_moe.model import build_model, transformer_config_from
    from megatron_agentic.perf import resolve_settings
    from megatron_agentic.platform import Platform, setup_platform
    from megatron_agentic.training.builders import init_distributed

    cfg = load_config(None, [f"model.preset={args.preset}", *args.set])
    init_distributed(cfg, setup_platform())
    settings = resolve_settings(Platform("cuda", "nccl", True, True), cfg)
    tconfig = transformer_config_from(cfg, settings, perform_initialization=False)
    with te_harness.te_construction("meta" if args.meta else "cpu"):
        model = build_model(cfg, transformer_config=tconfig, settings=settings)
    named = dict(model.named_modules())
    tensors, objects = sharded_items(model)
    result: dict = {
        "te_version": importlib.metadata.version("transformer_engine"),
        "settings": {k: settings.transformer[k] for k in ("gradient_accumulation_fusion", "moe_permute_fusion")},
        "modules": {n: f"{type(named[n]).__module__}.{type(named[n]).__name__}" for n in LAYOUT_MODULES if n in named},
        "tensors": tensors,
        "objects": objects,
        "loads": {},
    }
    for spec, project in [(x, False) for x in args.load] + [(x, True) for x in args.project_load]:
        name, ckpt = spec.split("=", 1)
        entry: dict = {}
        try:
            if project:
                from megatron_agentic.training.checkpoint import load_checkpoint

                load_checkpoint(ckpt, [model], load_rng=False)
            else:
                # (nested under "model" as a training checkpoint is: load() also returns the common state at top level)
                loaded = dist_checkpointing.load({"model": model.sharded_state_dict()}, ckpt)
                model.load_state_dict(loaded["model"], strict=True)
            entry["load"] = "ok"
            entry["parameters_match"] = parameters_match_checkpoint(model, ckpt)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the test (DCP's CheckpointException is a BaseException)
            entry["load"] = first_line(exc)
        result["loads"][name] = entry
        if name == args.save_from and entry["load"] == "ok" and args.save:
            target = Path(args.save) / "iter_0000000"
            target.mkdir(parents=True)
            import dataclasses

            arch = dataclasses.asdict(cfg.model.architecture())
            state = {"model": model.sharded_state_dict(), "iteration": 0, "tokens": 0, "arch": arch}
            dist_checkpointing.save(state, str(target))
            (Path(args.save) / "latest_checkpointed_iteration.txt").write_text("0\n")
            result["saved"] = str(target)
    torch.distributed.destroy_process_group()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
