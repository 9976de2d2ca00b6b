"""DALI loader: same micro-batches as the torch path on a megatron-core GPTDataset; clean error without DALI."""

from __future__ import annotations

import sys

import pytest
import torch


def _gpt_dataset(prefix: str, reset: bool):
    from megatron_agentic.config import config_from_dict
    from megatron_agentic.training.data import build_datasets

    cfg = config_from_dict(
        {
            "model": {"preset": "tiny-moe"},
            "train": {"seq_length": 32, "micro_batch_size": 2, "global_batch_size": 8},
            "data": {
                "mock": False,
                "blend": [prefix],
                "split": "100,0,0",
                "reset_position_ids": reset,
                "reset_attention_mask": reset,
            },
        }
    )
    return build_datasets(cfg, train_samples=64, eval_samples=0).train


@pytest.mark.parametrize("reset", [False, True])
def test_dali_batches_equal_torch_loader(make_indexed, tmp_path, reset):
    pytest.importorskip("nvidia.dali")
    from megatron_agentic.loaders.dali import build_dali_loader
    from megatron_agentic.loaders.torch_loader import MicroBatchLoader

    dataset = _gpt_dataset(make_indexed("docs", [37, 5, 120, 64, 9, 250, 33] * 3), reset)
    dali = build_dali_loader(dataset, 2, global_batch_size=8, dp_rank=1, dp_size=2, start_iteration=1)
    ref = MicroBatchLoader(dataset, 2, 8, dp_rank=1, dp_size=2, start_iteration=1)
    for _ in range(3):
        got, want = list(dali.next_iteration()), list(ref.next_iteration())
        assert len(got) == len(want) == 2
        for g, w in zip(got, want):
            assert sorted(g) == sorted(w)
            for key in w:
                if w[key] is None:
                    assert g[key] is None, key
                else:
                    assert g[key].dtype == w[key].dtype and torch.equal(g[key], w[key]), key
    assert (got[0]["attention_mask"] is not None) == reset
    # random access (resume at another iteration) rebuilds the pipeline at the right position
    for g, w in zip(dali.iteration_batches(6), ref.iteration_batches(6)):
        assert torch.equal(g["tokens"], w["tokens"])


def test_without_dali_the_error_names_the_extra(monkeypatch):
    from megatron_agentic.loaders import dali

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    assert not dali.dali_available()
    with pytest.raises(ImportError, match=r"megatron-agentic\[dali\]"):
        dali.build_dali_loader([{"tokens": torch.zeros(4)}], 1)
