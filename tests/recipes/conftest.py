"""Fixtures for the recipe/planner/mix/conversion tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def make_indexed(tmp_path: Path) -> Callable[..., str]:
    """Write a megatron indexed dataset with megatron-core's own builder; returns its prefix."""

    def make(name: str, doc_lengths: list[int], vocab: int = 151936, seed: int = 0) -> str:
        import torch
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        prefix = str(tmp_path / name)
        dtype = np.int32 if vocab >= 65500 else np.uint16
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
        rng = np.random.default_rng(seed)
        for n in doc_lengths:
            builder.add_item(torch.from_numpy(rng.integers(0, min(vocab, 1000), size=n).astype(np.int64)))
            builder.end_document()
        builder.finalize(f"{prefix}.idx")
        return prefix

    return make
