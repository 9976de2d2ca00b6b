"""Write a megatron-core ``torch_dist`` checkpoint tensor by tensor, without building a model.

megatron-core's ``torch_dist`` format is PyTorch Distributed Checkpoint (DCP) plus ``common.pt`` (the
non-tensor state, ``torch.save``) and ``metadata.json`` (backend name and version). DCP stores every
sharded key as one *global* tensor made of chunks at offsets, and a load reads whatever chunks overlap
the requesting rank's piece, so a checkpoint written here loads into any TP/PP/EP layout.

:func:`write_torch_dist` plans all chunks from their shapes only and produces each chunk's data on demand
while DCP's single-threaded file writer streams them to disk one at a time: peak memory is the largest
chunk (plus what its producer reads), not the model.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

CONFIG = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}
"""``metadata.json`` of megatron-core 0.16.1's ``dist_checkpointing.save`` with its default strategies."""


@dataclasses.dataclass(frozen=True)
class TensorChunk:
    """One chunk of a global tensor of the checkpoint."""

    key: str
    """Sharded key (DCP fully qualified name)."""
    global_shape: tuple[int, ...]
    """Shape of the whole global tensor."""
    offsets: tuple[int, ...]
    """Offset of this chunk in the global tensor (one entry per dimension)."""
    shape: tuple[int, ...]
    """Shape of this chunk."""
    dtype: torch.dtype
    """Stored dtype."""
    produce: Callable[[], torch.Tensor]
    """Returns the chunk's data (any dtype, cast on write; shape must equal ``shape``)."""


@dataclasses.dataclass(frozen=True)
class BytesObject:
    """A megatron-core ``ShardedObject`` stored as ``torch.save([data])`` under its unique key."""

    key: str
    """Unique key (``base/shard_<offsets>_<shape>``)."""
    data: Any = None
    """The object (``None`` for an empty ``_extra_state``)."""


class _StreamingPlanner(DefaultSavePlanner):
    """A save planner whose plan comes from :class:`TensorChunk` shapes and whose data is produced lazily."""

    def __init__(
        self, chunks: Sequence[TensorChunk], objects: Sequence[BytesObject], on_write: Callable[[int], None]
    ) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._chunks = {MetadataIndex(c.key, torch.Size(c.offsets)): c for c in chunks}
        self._objects = {o.key: o for o in objects}
        self._on_write = on_write

    def create_local_plan(self) -> SavePlan:
        items = [WriteItem(index=MetadataIndex(o.key), type=WriteItemType.BYTE_IO) for o in self._objects.values()]
        for index, c in self._chunks.items():
            data = TensorWriteData(
                chunk=ChunkStorageMetadata(offsets=torch.Size(c.offsets), sizes=torch.Size(c.shape)),
                properties=TensorProperties(dtype=c.dtype),
                size=torch.Size(c.global_shape),
            )
            items.append(WriteItem(index=index, type=WriteItemType.SHARD, tensor_data=data))
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
        if write_item.type == WriteItemType.BYTE_IO:
            buffer = io.BytesIO()
            torch.save([self._objects[write_item.index.fqn].data], buffer)
            buffer.seek(0)
            return buffer
        c = self._chunks[MetadataIndex(write_item.index.fqn, write_item.index.offset)]
        tensor = c.produce()
        if tuple(tensor.shape) != c.shape:
            raise ValueError(f"{c.key} at {c.offsets}: produced shape {tuple(tensor.shape)}, planned {c.shape}")
        tensor = tensor.to(c.dtype).contiguous()
        self._on_write(tensor.numel() * tensor.element_size())
        return tensor


def write_torch_dist(
    directory: str | os.PathLike,
    chunks: Sequence[TensorChunk],
    objects: Sequence[BytesObject],
    common: dict[str, Any],
    on_write: Callable[[int], None] = lambda nbytes: None,
) -> Path:
    """Write a ``torch_dist`` checkpoint directory from lazily produced chunks; atomic (temp dir, rename).

    Chunks are written in the given order, one at a time (``on_write`` gets each chunk's byte count, for
    progress). ``common`` becomes ``common.pt``. Returns ``directory``.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        writer = dcp.FileSystemWriter(str(tmp), single_file_per_rank=True, thread_count=1)
        with warnings.catch_warnings():  # single-process save is intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save({}, storage_writer=writer, planner=_StreamingPlanner(chunks, objects, on_write), no_dist=True)
        torch.save(common, tmp / "common.pt")
        (tmp / "metadata.json").write_text(json.dumps(CONFIG), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
