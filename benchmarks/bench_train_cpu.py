"""Training throughput on CPU: ``megatron-agentic train`` vs a plain megatron-core loop, same run, same data.

The baseline is the loop megatron-core's own examples use: ``GPTModel`` with the *stock* local layer spec
(``get_gpt_layer_local_spec``), megatron-core DDP, ``get_megatron_optimizer`` (distributed optimizer) and
``get_forward_backward_func``, fed the same micro-batches (megatron-core's mock GPT dataset) with the same
model shape and batch sizes. megatron-core cannot run on a CPU without the platform redirections, so the
baseline activates them too; the difference measured is our spec, loop, logging and metrics.

Both run as separate single-rank processes, alternating, several rounds; tokens/s is computed from the
median step time after ``--warmup`` steps. Prints both medians and the ratio (ours / baseline).

    OMP_NUM_THREADS=1 python benchmarks/bench_train_cpu.py --iters 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "tiny_moe.yaml"


def _overrides(iters: int, seq: int, vocab: int) -> list[str]:
    return [
        f"train.iters={iters}",
        f"train.seq_length={seq}",
        f"model.vocab_size={vocab}",
        "train.eval_iters=1",
        "data.split=99,1,0",
        "log.tensorboard=false",
    ]


def baseline_worker(iters: int, seq: int, vocab: int, out: str) -> None:
    """Plain megatron-core training loop with the stock local spec (runs in its own process)."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_agentic.config import load_config
    from megatron_agentic.loaders.torch_loader import MicroBatchLoader
    from megatron_agentic.models.qwen3_moe.model import transformer_config_from
    from megatron_agentic.platform import Platform, setup_platform
    from megatron_agentic.training.builders import init_distributed
    from megatron_agentic.training.data import build_datasets

    cfg = load_config(CONFIG, _overrides(iters, seq, vocab))
    setup_platform()
    init_distributed(cfg, setup_platform())
    arch = cfg.model.architecture()
    t = cfg.train
    tconfig = transformer_config_from(cfg, cfg.effective_settings(Platform("cpu", "gloo", False, False)))
    spec = get_gpt_layer_local_spec(num_experts=arch.num_experts, qk_layernorm=True, normalization="RMSNorm")
    model = GPTModel(
        config=tconfig,
        transformer_layer_spec=spec,
        vocab_size=arch.vocab_size,
        max_sequence_length=max(t.seq_length, arch.max_position_embeddings),
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=int(arch.rotary_base),
    )
    ddp = DistributedDataParallel(
        config=tconfig,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=True),
        module=model,
    )
    tconfig.finalize_model_grads_func = finalize_model_grads
    tconfig.no_sync_func = ddp.no_sync
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=t.lr,
            weight_decay=t.weight_decay,
            clip_grad=t.clip_grad,
            use_distributed_optimizer=True,
        ),
        [ddp],
    )
    datasets = build_datasets(cfg, t.iters * t.global_batch_size, t.global_batch_size)
    loader = MicroBatchLoader(datasets.train, t.micro_batch_size, t.global_batch_size, 0, 1)
    fwd_bwd = get_forward_backward_func()

    def step_func(data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])

        def loss_func(output_tensor):
            mask = batch["loss_mask"].float().reshape(-1)
            loss = torch.sum(output_tensor.float().reshape(-1) * mask)
            return loss, mask.sum().to(torch.int), {"lm loss": torch.stack([loss.detach(), mask.sum()])}

        return output, loss_func

    times = []
    for _ in range(t.iters):
        start = time.perf_counter()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        fwd_bwd(
            forward_step_func=step_func,
            data_iterator=iter(list(loader.next_iteration())),
            model=[ddp],
            num_microbatches=t.global_batch_size // t.micro_batch_size,
            seq_length=t.seq_length,
            micro_batch_size=t.micro_batch_size,
            forward_only=False,
        )
        optimizer.step()
        times.append(time.perf_counter() - start)
    Path(out).write_text(json.dumps({"step_times": times, "tokens_per_step": t.global_batch_size * t.seq_length}))
    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()


def _tokens_per_s(step_times: list[float], tokens_per_step: int, warmup: int) -> float:
    # Median step time: robust to other processes stealing the (shared) cores for a few steps.
    return tokens_per_step / statistics.median(step_times[warmup:])


def run_ours(iters: int, seq: int, vocab: int, warmup: int, env: dict) -> float:
    """tokens/s of ``megatron-agentic train`` (per-step times from metrics.jsonl)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "megatron_agentic", "train", "--config", str(CONFIG)]
        for o in [*_overrides(iters, seq, vocab), f"log.dir={tmp}"]:
            cmd += ["--set", o]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
        records = [json.loads(x) for x in Path(tmp, "metrics.jsonl").read_text().splitlines() if x.strip()]
        steps = [r for r in records if "loss" in r]
        tokens_per_step = steps[0]["tokens"]
        return _tokens_per_s([r["step_time_s"] for r in steps], tokens_per_step, warmup)


def run_baseline(iters: int, seq: int, vocab: int, warmup: int, env: dict) -> float:
    """tokens/s of the plain megatron-core loop."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "baseline.json")
        cmd = [
            sys.executable,
            __file__,
            "--baseline-worker",
            "--iters",
            str(iters),
            "--seq",
            str(seq),
            "--vocab",
            str(vocab),
            "--out",
            out,
        ]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
        result = json.loads(Path(out).read_text())
        return _tokens_per_s(result["step_times"], result["tokens_per_step"], warmup)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline_worker:
        baseline_worker(args.iters, args.seq, args.vocab, args.out)
        return 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    ours, base = [], []
    for r in range(args.rounds):
        base.append(run_baseline(args.iters, args.seq, args.vocab, args.warmup, env))
        ours.append(run_ours(args.iters, args.seq, args.vocab, args.warmup, env))
        print(f"round {r + 1}: baseline {base[-1]:.0f} tok/s, megatron-agentic {ours[-1]:.0f} tok/s")
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"tiny-moe CPU fp32, seq {args.seq}, vocab {args.vocab}, {args.iters} iters x {args.rounds} rounds")
    print(f"plain megatron-core loop (stock local spec): {mb:.0f} tokens/s (median)")
    print(f"megatron-agentic train:                      {mo:.0f} tokens/s (median)")
    print(f"ratio ours/baseline: {mo / mb:.3f}  (overhead {100 * (1 - mo / mb):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
