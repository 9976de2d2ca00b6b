"""``MicroBatchLoader`` with persistent DataLoader workers yields exactly the in-process batches.

Reference: the same loader with ``num_workers=0`` (plain indexing of the megatron-core dataset), over
consecutive iterations, past the end of the dataset (wrap-around), after a resume at a non-zero start
iteration and after a seek (random access), on a data-parallel rank other than 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_agentic.config import config_from_dict
from tests.support.lazy import lazy_import

training_data = lazy_import("megatron_agentic.training.data")  # megatron-core: imported when a test runs
loaders = lazy_import("megatron_agentic.loaders.torch_loader")

MBS, GBS, DP_RANK, DP_SIZE = 2, 8, 1, 2


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(str(root / "docs.bin"), dtype=np.int32)
    for length in rng.integers(5, 40, 20):
        builder.add_document(
            torch.from_numpy(np.append(rng.integers(0, 500, length), 511).astype(np.int32)), [length + 1]
        )
    builder.finalize(str(root / "docs.idx"))
    return config_from_dict(
        {
            "model": {"preset": "tiny-moe", "vocab_size": 512},
            "train": {"seq_length": 16, "micro_batch_size": MBS, "global_batch_size": GBS},
            "data": {
                "mock": False,
                "blend": [str(root / "docs")],
                "split": "100,0,0",
                "tokenizer": "custom",
                "eod_token_id": 511,
                "reset_position_ids": True,
                "reset_attention_mask": True,
                "cache_dir": str(root / "cache"),
                "num_workers": 2,
                "prefetch_factor": 3,
            },
        }
    )


@pytest.fixture(scope="module")
def dataset(cfg):
    return training_data.build_datasets(cfg, train_samples=44, eval_samples=0).train


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) == GBS // (MBS * DP_SIZE)
    for g, w in zip(got, want):
        assert sorted(g) == sorted(w)
        for key in w:
            if w[key] is None:
                assert g[key] is None, key
            else:
                assert g[key].dtype == w[key].dtype and torch.equal(g[key], w[key]), key


def _pids(loader: loaders.MicroBatchLoader) -> list[int]:
    return [w.pid for w in loader._stream._workers]


@pytest.mark.slow
def test_workers_match_in_process_including_resume_and_seek(dataset):
    n_iters = len(dataset) // GBS + 2  # runs past the end of the dataset: indices wrap around
    assert n_iters < 20
    ref = loaders.MicroBatchLoader(dataset, MBS, GBS, DP_RANK, DP_SIZE)
    want = [list(ref.iteration_batches(i)) for i in range(n_iters)]
    assert not torch.equal(want[0][0]["tokens"], want[1][0]["tokens"])

    workers = loaders.MicroBatchLoader(dataset, MBS, GBS, DP_RANK, DP_SIZE, num_workers=2)
    try:
        for i in range(n_iters):
            _assert_same(list(workers.next_iteration()), want[i])
            if i == 0:
                pids = _pids(workers)
        assert workers.iteration == n_iters
        assert _pids(workers) == pids  # one set of persistent workers for the whole stream
        # seek back (random access, e.g. a re-read): same batches, then the stream continues from there
        _assert_same(list(workers.iteration_batches(1)), want[1])
        _assert_same(list(workers.iteration_batches(2)), want[2])
        assert _pids(workers) == pids
    finally:
        workers.close()

    # resume at a non-zero data position: a new loader starting at iteration 3
    resumed = loaders.MicroBatchLoader(dataset, MBS, GBS, DP_RANK, DP_SIZE, start_iteration=3, num_workers=2)
    try:
        for i in range(3, n_iters):
            _assert_same(list(resumed.next_iteration()), want[i])
    finally:
        resumed.close()


@pytest.mark.slow
def test_build_loader_passes_worker_settings(cfg, dataset):
    loader = loaders.build_loader(dataset, cfg, DP_RANK, DP_SIZE, start_iteration=2)
    try:
        assert isinstance(loader, loaders.MicroBatchLoader)
        assert (loader.num_workers, loader.prefetch_factor, loader.iteration) == (2, 3, 2)
        ref = loaders.MicroBatchLoader(dataset, MBS, GBS, DP_RANK, DP_SIZE)
        _assert_same(list(loader.next_iteration()), list(ref.iteration_batches(2)))
    finally:
        loader.close()


def test_bad_batch_shape_is_rejected(dataset):
    with pytest.raises(ValueError, match="not a multiple"):
        loaders.MicroBatchLoader(dataset, 3, GBS, DP_RANK, DP_SIZE)
