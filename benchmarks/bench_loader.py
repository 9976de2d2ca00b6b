"""Training batch loaders on CPU: DALI pipeline vs the torch path, on the same megatron-core GPTDataset.

    .venv/bin/python benchmarks/bench_loader.py [--seq-length 4096] [--iters 20] [--step-ms 50]

Builds an indexed dataset (random tokens, random document lengths) with megatron-core's builder, a
``GPTDataset`` over it (with document-boundary position resets, as the agentic data uses), then measures
for each loader the micro-batches per second (a) loading alone and (b) with a simulated training step of
``--step-ms`` milliseconds of compute after each micro-batch, where a prefetching loader can hide its
work. The baseline is ``MicroBatchLoader`` (torch, in-process); ratios > 1 mean faster than it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_dataset(root: Path, seq_length: int, num_tokens: int, samples: int):
    """A megatron-core GPTDataset over a random indexed dataset of about ``num_tokens`` tokens."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_agentic.config import config_from_dict
    from megatron_agentic.training.data import build_datasets

    prefix = str(root / "bench")
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    written = 0
    while written < num_tokens:
        n = int(rng.integers(64, 4096))
        builder.add_item(torch.from_numpy(rng.integers(0, 151643, size=n, dtype=np.int64)))
        builder.end_document()
        written += n
    builder.finalize(f"{prefix}.idx")
    cfg = config_from_dict(
        {
            "model": {"preset": "tiny-moe"},
            "train": {"seq_length": seq_length, "micro_batch_size": 1, "global_batch_size": 1},
            "data": {
                "mock": False,
                "blend": [prefix],
                "split": "100,0,0",
                "reset_position_ids": True,
                "eod_mask_loss": True,
            },
        }
    )
    return build_datasets(cfg, train_samples=samples, eval_samples=0).train


def run(loader, iters: int, step_s: float) -> float:
    """Micro-batches per second over ``iters`` iterations (first iteration excluded as warm-up)."""

    def consume(it: int) -> int:
        count = 0
        for batch in loader.iteration_batches(it):
            count += 1
            if step_s > 0:
                end = time.perf_counter() + step_s
                while time.perf_counter() < end:  # busy compute stand-in, holds the GIL like a real step
                    pass
            del batch
        return count

    consume(0)
    start = time.perf_counter()
    n = sum(consume(i) for i in range(1, iters + 1))
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the comparison and print a table of throughputs and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from megatron_agentic.loaders.dali import build_dali_loader, dali_available
    from megatron_agentic.loaders.torch_loader import MicroBatchLoader

    with tempfile.TemporaryDirectory() as tmp:
        samples = args.global_batch * (args.iters + 2)
        dataset = build_dataset(Path(tmp), args.seq_length, samples * args.seq_length + 8192, samples)
        loaders = {
            "torch (in-process, baseline)": lambda: MicroBatchLoader(
                dataset, args.micro_batch, args.global_batch, 0, 1
            ),
            "torch DataLoader (2 workers)": lambda: MicroBatchLoader(
                dataset, args.micro_batch, args.global_batch, 0, 1, num_workers=2
            ),
        }
        if dali_available():
            loaders["DALI (2 threads, prefetch 2)"] = lambda: build_dali_loader(
                dataset, args.micro_batch, global_batch_size=args.global_batch
            )
        else:
            print("nvidia-dali not installed (pip install 'megatron-agentic[dali]'): DALI row skipped")
        print(f"GPTDataset seq={args.seq_length} micro-batch={args.micro_batch} global-batch={args.global_batch}")
        print(f"{'loader':32} {'load-only mb/s':>15} {'ratio':>7} {'with step mb/s':>15} {'ratio':>7}")
        base = None
        for name, make in loaders.items():
            alone = run(make(), args.iters, 0.0)
            stepped = run(make(), args.iters, args.step_ms / 1000.0)
            if base is None:
                base = (alone, stepped)
            print(f"{name:32} {alone:15.1f} {alone / base[0]:7.2f} {stepped:15.2f} {stepped / base[1]:7.2f}")


if __name__ == "__main__":
    main()
