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

from megatron_agentic.convert.errors import ConversionError

_FUSED_KEY = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$")
_EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


class HFCheckpoint:
    """Lazy reader of a HF checkpoint directory: ``config.json`` + ``*.safetensors`` (+ index).

    Tensors are read one at a time, each through its own short-lived file mapping. Expert tensors
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

    def keys(self) -> list[str]:
        """Tensor names stored in the checkpoint."""
        return sorted(self.files)

    def hub_keys(self) -> list[str]:
        """Tensor names in the Hub layout: fused expert tensors listed as their per-expert names."""
        out = []
        for key in self.files:
            m = _FUSED_KEY.match(key)
            if not m:
                out.append(key)
                continue
            with safe_open(str(self.files[key]), framework="pt") as f:
                n = f.get_slice(key).get_shape()[0]
            projs = ("down_proj",) if m.group(2) == "down_proj" else ("gate_proj", "up_proj")
            out += [f"{m.group(1)}.{e}.{p}.weight" for e in range(n) for p in projs]
        return sorted(out)

    def _read(self, key: str) -> torch.Tensor:
        # a fresh handle per tensor: safetensors memory-maps the file, and pages touched through a handle kept
        # open would stay resident (RSS) until it closes, i.e. grow with the model instead of one tensor
        with safe_open(str(self.files[key]), framework="pt") as f:
            return f.get_tensor(key)

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


class HFCheckpointWriter:
    """Streams tensors into a HF safetensors checkpoint: shards are written as they fill, then index and config.

    Use as a context manager; the directory appears atomically (temp dir, then rename) when the block exits
    without an error. Memory holds at most one shard (``max_shard_bytes``) plus what the caller adds at once.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        config: dict[str, Any],
        max_shard_bytes: int = 5 * 1024**3,
        extra_files: list[Path] | None = None,
    ) -> None:
        self.target = Path(directory)
        self.config, self.max_shard_bytes, self.extra_files = config, max_shard_bytes, extra_files or []
        self.tmp: Path | None = None
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def __enter__(self) -> HFCheckpointWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; a full shard is written before the tensor that would overflow it."""
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[key] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        assert self.tmp is not None
        path = self.tmp / f"part-{len(self._parts):05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._parts.append((path, sorted(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self.tmp is not None
        try:
            if exc_type is not None:
                return
            if self._pending or not self._parts:
                self._flush()
            n = len(self._parts)
            weight_map = {}
            for i, (path, names) in enumerate(self._parts):
                name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                os.replace(path, self.tmp / name)
                weight_map.update({k: name for k in names})
            if n > 1:
                index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
                (self.tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
            (self.tmp / "config.json").write_text(json.dumps(self.config, indent=2), encoding="utf-8")
            for extra in self.extra_files:
                shutil.copy2(extra, self.tmp / extra.name)
            os.chmod(self.tmp, 0o755)
            if self.target.exists():
                shutil.rmtree(self.target)
            os.replace(self.tmp, self.target)
        finally:
            if self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)


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
    with HFCheckpointWriter(directory, config, max_shard_bytes, extra_files) as writer:
        for key in sorted(state):
            writer.add(key, state[key])
    return Path(directory)
