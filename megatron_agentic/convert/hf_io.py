"""Reading and writing Hugging Face safetensors checkpoints (single file or sharded with an index)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from megatron_agentic.convert.mapping import ConversionError

_EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


class HFCheckpoint:
    """Lazy reader of a HF checkpoint directory: ``config.json`` + ``*.safetensors`` (+ index).

    Tensors are read one at a time (each rank of a conversion reads only what it holds). Expert tensors
    are also found in the transformers-5 fused layout (``mlp.experts.gate_up_proj`` / ``down_proj``).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        config_path = self.directory / "config.json"
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConversionError(f"{config_path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConversionError(f"{config_path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {k: self.directory / v for k, v in weight_map.items()}
        else:
            self.files = {}
            for path in sorted(self.directory.glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as f:
                    self.files.update({k: path for k in f.keys()})
        if not self.files:
            raise ConversionError(f"{self.directory}: no *.safetensors files")
        self._handles: dict[Path, Any] = {}

    def keys(self) -> list[str]:
        """Tensor names stored in the checkpoint."""
        return sorted(self.files)

    def _read(self, key: str) -> torch.Tensor:
        path = self.files[key]
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path].get_tensor(key)

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (Hub naming); raises ConversionError naming it when absent."""
        if key in self.files:
            return self._read(key)
        m = _EXPERT_KEY.match(key)
        if m:
            prefix, expert, proj = m.group(1), int(m.group(2)), m.group(3)
            if proj == "down_proj" and f"{prefix}.down_proj" in self.files:
                return self._read(f"{prefix}.down_proj")[expert]
            if proj != "down_proj" and f"{prefix}.gate_up_proj" in self.files:
                gate, up = self._read(f"{prefix}.gate_up_proj")[expert].chunk(2, dim=0)
                return gate if proj == "gate_proj" else up
        raise ConversionError(f"{self.directory}: HF checkpoint is missing tensor {key!r}")


def write_hf_checkpoint(
    directory: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    max_shard_bytes: int = 5 * 1024**3,
    extra_files: list[Path] | None = None,
) -> Path:
    """Write ``state`` as safetensors shards + index + ``config.json``; atomic (temp dir, then rename).

    ``extra_files`` (tokenizer files, generation config) are copied alongside.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for key in sorted(state):
            tensor = state[key].contiguous()
            nbytes = tensor.numel() * tensor.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][key] = tensor
            size += nbytes
        weight_map = {}
        for i, shard in enumerate(shards):
            name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        for path in extra_files or []:
            shutil.copy2(path, tmp / path.name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
