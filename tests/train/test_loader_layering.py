"""The torch and DALI loaders share batch keys and sample order through a neutral module, not each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megatron_agentic.loaders import batches, dali
from tests.support.lazy import lazy_import

data = lazy_import("megatron_agentic.training.data")  # megatron-core: imported when a test runs


def test_loaders_share_one_definition():
    assert data.BATCH_KEYS is batches.BATCH_KEYS is dali.BATCH_KEYS
    assert data.rank_sample_indices is batches.rank_sample_indices is dali.rank_sample_indices


@pytest.mark.slow
def test_dali_module_does_not_import_the_torch_loader():
    code = "import sys, megatron_agentic.loaders.dali; print('megatron_agentic.training.data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_rank_sample_indices_partition_each_global_batch():
    gbs, dp = 12, 3
    for it in range(3):
        parts = [list(batches.rank_sample_indices(it, gbs, r, dp)) for r in range(dp)]
        assert sum(parts, []) == list(range(it * gbs, (it + 1) * gbs))
