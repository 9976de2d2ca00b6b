"""The torch and DALI loaders share batch keys and sample order through a neutral module, not each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megatron_agentic.loaders import batches, dali
from tests.support.lazy import lazy_import

torch_loader = lazy_import("megatron_agentic.loaders.torch_loader")


def test_loaders_share_one_definition():
    assert torch_loader.BATCH_KEYS is batches.BATCH_KEYS is dali.BATCH_KEYS
    assert issubclass(torch_loader.MicroBatchLoader, batches.RankBatchLoader)
    assert issubclass(dali.DaliMicroBatchLoader, batches.RankBatchLoader)
    for name in ("next_iteration", "sample_index", "micro_batch_indices"):  # one schedule, not two copies
        assert name not in vars(torch_loader.MicroBatchLoader) and name not in vars(dali.DaliMicroBatchLoader)


@pytest.mark.slow
def test_dali_module_does_not_import_the_torch_loader():
    code = (
        "import sys, megatron_agentic.loaders.dali; "
        "print(any(m in sys.modules for m in ('megatron_agentic.training.data', 'megatron_agentic.loaders.torch_loader')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_rank_sample_indices_partition_each_global_batch():
    gbs, dp = 12, 3
    for it in range(3):
        parts = [list(batches.rank_sample_indices(it, gbs, r, dp)) for r in range(dp)]
        assert sum(parts, []) == list(range(it * gbs, (it + 1) * gbs))
