"""GPU acceptance run: the first command to run on a new cluster (one node; ~8 minutes, plus the first-day steps on 2+ GPUs).

    python benchmarks/gpu_acceptance.py --out runs/gpu-check        # or: make gpu-check

Steps (each with its own time limit; a failed step is reported and the others still run):

1. ``kernels``: the Triton kernel tests (flash attention, ring attention, megatron-core attention module) on the GPU.
2. ``attention``: ``benchmarks/bench_attention.py`` at 8K and 32K (our kernel vs torch SDPA / flash-attn).
3. ``train-bf16``: a Qwen3-30B-A3B-width model cut to ``--layers`` layers and ``--experts`` experts trained
   ``--iters`` steps with every GPU of the node (EP = GPUs): TE spec, bf16, alltoall dispatcher, grouped GEMM,
   fusions and DDP overlap as ``auto`` resolves them on CUDA + TE (``megatron_agentic.perf``).
4. ``train-fp8``: the same with ``train.fp8=tensorwise`` when Transformer Engine reports FP8 support.
5. ``first-day/*``: the first production day (``benchmarks/first_day.py``): a synthetic full-width HF checkpoint
   cut to 2 layers -> ``convert hf-to-mcore`` -> ``checkpoint.pretrained`` -> train with CP=2 (ring attention),
   selective recompute ``[moe]``, alltoall, grouped GEMM and an asynchronous save -> resume and continue with the
   losses of an uninterrupted run. One line per step; needs 2 GPUs.

It writes ``OUT/report.json`` (every step: status, seconds, numbers, log tail; GPU and library versions) and
``OUT/throughput.json``, the table ``megatron-agentic plan --throughput OUT/throughput.json`` reads for a measured
MFU. Throughput is model FLOPs: ``megatron_agentic.planning.time.flops_per_token`` = 6 x (active non-embedding
parameters) + 6 x layers x seq x heads x head_dim (causal attention), per token, times tokens/s per GPU, over
steps after ``--warmup``. Without a CUDA GPU it prints one line and exits 2. Exit 1 when a step failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import first_day  # noqa: E402
from data_tools.common.atomic import atomic_write_json  # noqa: E402
from megatron_agentic.models.qwen3_moe.presets import ModelPreset, get_preset  # noqa: E402
from megatron_agentic.planning.time import THROUGHPUT_SCHEMA, flops_per_token  # noqa: E402

NO_GPU_MESSAGE = "gpu_acceptance: a CUDA GPU is needed (torch.cuda.is_available() is False); nothing was run"
PEAK_FILE = "peak_memory_rank0.json"


def cut_model(layers: int, experts: int) -> ModelPreset:
    """Qwen3-30B-A3B at full width (hidden, heads, expert FFN, top-8, vocabulary) with fewer layers and experts."""
    return get_preset("qwen3-30b-a3b").replace(name=f"qwen3-30b-a3b-cut-{layers}l-{experts}e", num_layers=layers,
                                               num_experts=experts)  # fmt: skip


def model_tflops_per_gpu(arch: ModelPreset, seq_length: int, tokens_per_s_per_gpu: float) -> float:
    """Model TFLOP/s per GPU: tokens/s per GPU x training FLOPs per token (no recompute counted)."""
    return tokens_per_s_per_gpu * flops_per_token(arch, seq_length) / 1e12


def steady_tokens_per_s(steps: list[dict[str, Any]], warmup: int) -> float:
    """Median ``tokens_per_s`` (whole job) over the steps after the first ``warmup`` (metrics.jsonl records)."""
    rates = [float(r["tokens_per_s"]) for r in steps if r.get("step", 0) > warmup and "tokens_per_s" in r]
    if not rates:
        raise ValueError(f"no step after warm-up {warmup} in {len(steps)} records")
    return float(statistics.median(rates))


@dataclasses.dataclass
class TrainRun:
    """The measured outcome of one training step of the acceptance run."""

    name: str
    """``bf16`` or ``fp8``."""
    precision: str
    """``bf16`` or ``fp8:<recipe>``."""
    arch: ModelPreset
    """Model trained."""
    seq_length: int
    """Tokens per sequence."""
    gpus: int
    """GPUs used (= expert parallelism)."""
    tokens_per_s: float
    """Steady-state tokens per second of the whole job."""
    peak_memory_gib: float | None
    """``torch.cuda.max_memory_allocated`` of rank 0."""
    losses: list[float]
    """Training losses, first to last."""

    def row(self, peak_tflops: float) -> dict[str, Any]:
        """A row of the throughput table."""
        per_gpu = self.tokens_per_s / self.gpus
        tflops = model_tflops_per_gpu(self.arch, self.seq_length, per_gpu)
        return {
            "name": self.name,
            "precision": self.precision,
            "seq_length": self.seq_length,
            "num_layers": self.arch.num_layers,
            "num_experts": self.arch.num_experts,
            "gpus": self.gpus,
            "tokens_per_s_per_gpu": per_gpu,
            "tflops_per_gpu": tflops,
            "mfu": tflops / peak_tflops,
            "peak_memory_gib": self.peak_memory_gib,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
        }


def throughput_table(runs: list[TrainRun], gpu_name: str, peak_tflops: float) -> dict[str, Any]:
    """The table ``plan --throughput`` reads."""
    return {
        "schema": THROUGHPUT_SCHEMA,
        "gpu": gpu_name,
        "peak_tflops": peak_tflops,
        "flops_formula": "megatron_agentic.planning.time.flops_per_token (6*active non-embedding params + 6*L*s*heads*d)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entries": [r.row(peak_tflops) for r in runs],
    }


def write_outputs(out: Path, report: dict[str, Any], runs: list[TrainRun], gpu_name: str, peak: float) -> None:
    """Write ``report.json`` and, when a training step succeeded, ``throughput.json`` (both atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    report = dict(report, throughput=[r.row(peak) for r in runs])
    atomic_write_json(out / "report.json", report, sort_keys=True, ensure_ascii=True)
    if runs:
        atomic_write_json(
            out / "throughput.json", throughput_table(runs, gpu_name, peak), sort_keys=True, ensure_ascii=True
        )


# --------------------------------------------------------------------------------------------------
# GPU steps (subprocesses with time limits).


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status, rc, text = ("ok" if proc.returncode == 0 else "failed"), proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, rc = "timeout", None
        text = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    return {"status": status, "returncode": rc, "seconds": round(time.time() - start, 1), "log_tail": text[-3000:]}


def train_overrides(arch: ModelPreset, args: argparse.Namespace, gpus: int, log_dir: Path) -> list[str]:
    """``--set`` overrides of the acceptance training run (everything else: config defaults, ``auto``)."""
    sets = [
        "model.preset=qwen3-30b-a3b",
        f"model.num_layers={arch.num_layers}",
        f"model.num_experts={arch.num_experts}",
        "model.moe_token_dispatcher=alltoall",
        f"parallel.expert={gpus}",
        f"train.iters={args.iters}",
        f"train.seq_length={args.seq_length}",
        "train.micro_batch_size=1",
        f"train.global_batch_size={gpus * args.micro_batches}",
        "train.precision=bf16",
        "train.lr=1.0e-4",
        "train.min_lr=1.0e-5",
        "train.lr_warmup_iters=2",
        "train.eval_iters=1",
        "data.mock=true",
        f"log.dir={log_dir}",
        "log.tensorboard=false",
    ]
    return [x for s in sets for x in ("--set", s)]


def run_training(name: str, extra: list[str], arch: ModelPreset, args: argparse.Namespace, gpus: int,
                 out: Path) -> tuple[dict[str, Any], TrainRun | None]:  # fmt: skip
    """One training step of the acceptance run under torchrun; returns (step report, measurement or None)."""
    log_dir = out / f"train-{name}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}", f"--master-port={_free_port()}",
           str(Path(__file__).resolve()), "--worker", "--out", str(log_dir),
           *train_overrides(arch, args, gpus, log_dir), *[x for s in extra for x in ("--set", s)]]  # fmt: skip
    step = _run(cmd, args.train_timeout)
    if step["status"] != "ok":
        return step, None
    records = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in records if "loss" in r]
    peak_path = log_dir / PEAK_FILE
    peak = json.loads(peak_path.read_text())["peak_memory_gib"] if peak_path.exists() else None
    precision = "bf16" if not extra else "fp8:" + extra[0].split("=", 1)[1]
    run = TrainRun(name, precision, arch, args.seq_length, gpus, steady_tokens_per_s(steps, args.warmup), peak,
                   [float(r["loss"]) for r in steps])  # fmt: skip
    step.update(run.row(args.peak_tflops))
    return step, run


def worker(argv: list[str]) -> int:
    """Under torchrun: ``megatron-agentic train`` with the given ``--set`` overrides, then rank 0's peak memory."""
    import torch

    from megatron_agentic.config import load_config
    from megatron_agentic.training.loop import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, _ = parser.parse_known_args(argv)
    cfg = load_config(None, args.overrides)
    cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
    train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        peak = torch.cuda.max_memory_allocated() / 2**30
        atomic_write_json(Path(args.out) / PEAK_FILE, {"peak_memory_gib": peak}, sort_keys=True, ensure_ascii=True)
    return 0


def first_day_steps(out: Path, gpus: int, skip: list[str]) -> dict[str, dict[str, Any]]:
    """The ``first-day/*`` lines of the report (skipped with the reason on one GPU or with ``--skip first-day``)."""
    if "first-day" in skip or gpus < first_day.GPU.nproc:
        why = "--skip first-day" if "first-day" in skip else f"needs {first_day.GPU.nproc} GPUs (CP=2), found {gpus}"
        return {"first-day": {"status": "skipped", "reason": why}}
    first_day.prepare(out)
    return first_day.run(first_day.plan(out, first_day.GPU, _free_port))


def fp8_supported() -> tuple[bool, str]:
    """Whether Transformer Engine can run FP8 on this GPU (its own check), with the reason when not."""
    try:
        from transformer_engine.pytorch.fp8 import check_fp8_support

        ok, reason = check_fp8_support()
        return bool(ok), str(reason)
    except Exception as exc:  # noqa: BLE001 - TE missing or too old
        return False, f"Transformer Engine FP8 check unavailable: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Run the acceptance steps; exit 0 when all passed, 1 when one failed, 2 without a CUDA GPU."""
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        return worker([a for a in argv if a != "--worker"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for report.json and throughput.json")
    parser.add_argument("--layers", type=int, default=4, help="layers of the cut model (2-4)")
    parser.add_argument("--experts", type=int, default=32, help="experts of the cut model (16-32)")
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--micro-batches", type=int, default=4, help="micro-batches per GPU per step")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the throughput")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100/H200: 989)")
    parser.add_argument("--train-timeout", type=float, default=150.0)
    parser.add_argument("--skip", action="append", default=[], choices=["kernels", "attention", "fp8", "first-day"])
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    gpu_name = torch.cuda.get_device_name(0)
    from megatron_agentic.doctor import library_report

    report: dict[str, Any] = {"gpu": gpu_name, "gpus": gpus, "torch": torch.__version__,
                              "libraries": library_report(), "steps": {}}  # fmt: skip
    if "kernels" not in args.skip:
        tests = ["tests/kernels/test_flash_attention.py", "tests/kernels/test_ring_attention.py",
                 "tests/kernels/test_megatron_attention.py"]  # fmt: skip
        report["steps"]["kernels"] = _run([sys.executable, "-m", "pytest", "-q", "-x", *tests], 180)
    if "attention" not in args.skip:
        bench = [sys.executable, "benchmarks/bench_attention.py", "--seqlens", "8192", "32768"]
        report["steps"]["attention"] = _run(bench, 120)
    arch = cut_model(args.layers, args.experts)
    runs: list[TrainRun] = []
    step, run = run_training("bf16", [], arch, args, gpus, out)
    report["steps"]["train-bf16"] = step
    runs += [run] if run else []
    ok, reason = fp8_supported()
    if "fp8" in args.skip or not ok:
        report["steps"]["train-fp8"] = {"status": "skipped", "reason": "--skip fp8" if ok else reason}
    else:
        step, run = run_training("fp8", ["train.fp8=tensorwise"], arch, args, gpus, out)
        report["steps"]["train-fp8"] = step
        runs += [run] if run else []
    report["steps"].update(first_day_steps(out / "first-day", gpus, args.skip))
    write_outputs(out, report, runs, gpu_name, args.peak_tflops)
    failed = [name for name, s in report["steps"].items() if s["status"] not in ("ok", "skipped")]
    for name, s in report["steps"].items():
        numbers = f" {s['tokens_per_s_per_gpu']:.0f} tok/s/GPU {s['tflops_per_gpu']:.0f} TFLOP/s/GPU" if (
            "tflops_per_gpu" in s) else ""  # fmt: skip
        print(f"{name:12s} {s['status']:8s} {s.get('seconds', 0):6.1f} s{numbers}")
    print(f"wrote {out / 'report.json'}" + (f" and {out / 'throughput.json'}" if runs else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
