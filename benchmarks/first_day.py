"""The first production day, end to end, as steps of the GPU acceptance run (``benchmarks/gpu_acceptance.py``).

What stage 1 does on its first day, on a model small enough for one node:

1. ``first-day/hf``: a synthetic HF Qwen3-MoE checkpoint (random, Hub key names; on GPU the full-width
   Qwen3-30B-A3B cut to 2 layers, all 128 experts).
2. ``first-day/convert``: ``megatron-agentic convert hf-to-mcore --hf-dir HF --output MCORE``.
3. ``first-day/stage1``: ``train`` with ``checkpoint.pretrained=MCORE``, context parallelism 2 with the Triton ring
   attention, selective recompute ``[moe]``, the alltoall dispatcher, grouped GEMM (``auto``: on with TE), and an
   asynchronous save (``checkpoint.async_save=true``) after which it stops (``train.exit_interval``).
4. ``first-day/resume``: the same command again resumes from that checkpoint and continues.
5. ``first-day/reference``: the same run uninterrupted from ``MCORE``.
6. ``first-day/equal-losses``: the resumed steps' losses equal the uninterrupted run's (``tolerance``), and the
   first step of both starts from the same converted weights.

Each step is one line of ``report.json`` (status, seconds, time limit, log tail); a failed step makes the later
ones ``skipped`` with the reason. The time limits include the first run's compilation (Triton kernels, TE).
:func:`plan` is pure (tested on CPU); :func:`run` executes a plan, here or on GPUs: ``tests/train/
test_first_day.py`` runs the CPU profile of the same plan (tiny-moe, 2 gloo ranks; there the asynchronous save
degrades to a synchronous one, which the training log says).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Profile:
    """The model and sizes of one first-day plan."""

    model: tuple[str, ...]
    """``--set`` overrides naming the model (preset and cuts); the HF checkpoint is written with the same shape."""
    nproc: int
    """Ranks (GPUs, or CPU processes): context parallelism 2 needs at least 2."""
    seq_length: int
    """Tokens per sequence (divisible by 2 x CP for the zigzag ring)."""
    stage1_iters: int = 2
    """Steps of the stage-1 run before it stops (``train.exit_interval``), saved there."""
    total_iters: int = 4
    """Steps after resuming (and of the uninterrupted reference)."""
    hf_dtype: str = "bf16"
    """Stored precision of the synthetic HF checkpoint and of the conversion."""
    tolerance: float = 0.0
    """Relative tolerance of the resumed-vs-uninterrupted loss comparison (0: exactly equal)."""
    step_timeout: float = 600.0
    """Time limit of each training step, first-run compilation included."""
    extra: tuple[str, ...] = ()
    """Further ``--set`` overrides of every training run."""


GPU = Profile(
    model=("model.preset=qwen3-30b-a3b", "model.num_layers=2"),
    nproc=2,
    seq_length=4096,
    tolerance=1e-3,  # bf16 GPU kernels (grouped GEMM, alltoall) are not bitwise deterministic
    step_timeout=420.0,
)
"""Full-width Qwen3-30B-A3B cut to 2 layers on 2 GPUs (EP=1, CP=2)."""

CPU = Profile(
    model=("model.preset=tiny-moe", "model.num_layers=2", "model.vocab_size=512"),
    nproc=2,
    seq_length=32,
    hf_dtype="fp32",
    step_timeout=600.0,
    extra=("train.global_batch_size=2", "train.micro_batch_size=1"),
)
"""tiny-moe on 2 gloo ranks: the same steps on this machine (``MEGATRON_AGENTIC_FORCE_CPU=1``)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the plan: a command line, or a function run in this process."""

    name: str
    """``first-day/<what>``: the key in ``report.json``."""
    timeout: float
    """Time limit in seconds."""
    argv: tuple[str, ...] = ()
    """Command (run from the repository root) when ``call`` is None."""
    call: Callable[[], dict[str, Any]] | None = None
    """In-process step returning extra report fields (raises on failure)."""


def training_sets(profile: Profile, out: Path, name: str) -> list[str]:
    """``--set`` overrides of one first-day training run ``name`` (all three start from ``MCORE``).

    Stage 1 and its resumption are one command (same iterations, schedule and data order): stage 1 stops after
    ``stage1_iters`` steps (``train.exit_interval``, as a job at its time limit, which a resume may drop), having
    saved there; the command then resumes from that checkpoint. The reference runs all steps in its own directory.
    """
    ckpt = out / ("ckpt-reference" if name == "reference" else "ckpt-stage1")
    stop = [f"train.exit_interval={profile.stage1_iters}"] if name == "stage1" else []
    return [
        *profile.model,
        f"checkpoint.pretrained={out / 'mcore'}",
        f"checkpoint.dir={ckpt}",
        f"checkpoint.interval={profile.stage1_iters}",
        "checkpoint.async_save=true",
        "parallel.context=2",
        "model.attention_backend=triton",  # the ring (TE's own CP would be picked by auto)
        "model.recompute=selective",
        "model.recompute_modules=[moe]",
        "model.moe_token_dispatcher=alltoall",
        f"train.iters={profile.total_iters}",
        *stop,
        f"train.seq_length={profile.seq_length}",
        "train.lr_warmup_iters=1",
        "data.mock=true",
        "log.tensorboard=false",
        f"log.dir={out / ('log-' + name)}",
        *profile.extra,
    ]


def train_argv(profile: Profile, sets: list[str], port: int) -> tuple[str, ...]:
    """``torchrun`` of ``megatron-agentic train`` with ``sets``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={profile.nproc}"]
    return (*launcher, f"--master-port={port}", "-m", "megatron_agentic", "train",
            *[x for s in sets for x in ("--set", s)])  # fmt: skip


def losses(log_dir: Path) -> dict[int, float]:
    """``{step: loss}`` of a run's ``metrics.jsonl``."""
    records = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {int(r["step"]): float(r["loss"]) for r in records if "loss" in r and "step" in r}


def compare_losses(out: Path, profile: Profile) -> dict[str, Any]:
    """The resumed steps equal the uninterrupted run's; stage 1 and the reference start alike. Raises otherwise."""
    stage1, resumed, ref = (losses(out / f"log-{n}") for n in ("stage1", "resume", "reference"))
    first, last = profile.stage1_iters + 1, profile.total_iters
    expected = list(range(first, last + 1))
    if sorted(resumed) != expected or sorted(ref) != list(range(1, last + 1)):
        raise AssertionError(f"steps: resumed {sorted(resumed)}, reference {sorted(ref)}; expected {expected}")

    def close(a: float, b: float) -> bool:
        return a == b if profile.tolerance == 0 else math.isclose(a, b, rel_tol=profile.tolerance)

    bad = [s for s in expected if not close(resumed[s], ref[s])]
    if bad:
        raise AssertionError(
            f"resumed losses differ at steps {bad}: {[resumed[s] for s in bad]} vs {[ref[s] for s in bad]}"
        )
    if not close(stage1[1], ref[1]):
        raise AssertionError(f"step 1 from the converted checkpoint differs: {stage1[1]} vs {ref[1]}")
    return {"resumed": [resumed[s] for s in expected], "reference": [ref[s] for s in expected],
            "tolerance": profile.tolerance}  # fmt: skip


def write_hf(out: Path, profile: Profile) -> dict[str, Any]:
    """The synthetic HF checkpoint of the profile's model (random weights, Hub key names)."""
    import torch

    from megatron_agentic.config import load_config
    from megatron_agentic.convert.synthetic import write_random_hf_checkpoint

    arch = load_config(None, list(profile.model)).model.architecture()
    arch = arch.replace(max_position_embeddings=max(arch.max_position_embeddings, profile.seq_length))
    dtype = torch.bfloat16 if profile.hf_dtype == "bf16" else torch.float32
    write_random_hf_checkpoint(out / "hf", arch, dtype=dtype)
    return {"layers": arch.num_layers, "experts": arch.num_experts, "hidden": arch.hidden_size}


def plan(out: Path, profile: Profile, ports: Callable[[], int]) -> list[Step]:
    """The first-day steps for ``profile`` writing under ``out`` (nothing runs here)."""
    convert = (sys.executable, "-m", "megatron_agentic", "convert", "hf-to-mcore", "--hf-dir", str(out / "hf"),
               "--output", str(out / "mcore"), "--dtype", profile.hf_dtype)  # fmt: skip
    return [
        Step("first-day/hf", 300, call=lambda: write_hf(out, profile)),
        Step("first-day/convert", 600, argv=convert),
        Step("first-day/stage1", profile.step_timeout,
             argv=train_argv(profile, training_sets(profile, out, "stage1"), ports())),
        Step("first-day/resume", profile.step_timeout,
             argv=train_argv(profile, training_sets(profile, out, "resume"), ports())),
        Step("first-day/reference", profile.step_timeout,
             argv=train_argv(profile, training_sets(profile, out, "reference"), ports())),
        Step("first-day/equal-losses", 60, call=lambda: compare_losses(out, profile)),
    ]  # fmt: skip


def run(
    steps: list[Step],
    env: dict[str, str] | None = None,
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> dict[str, dict[str, Any]]:
    """Run ``steps`` in order; ``{name: {status, seconds, limit_s, ...}}``. After a failure the rest are skipped.

    ``runner`` runs a step's command with ``subprocess.run``'s signature (``cwd``, ``env``, ``capture_output``,
    ``text``, ``timeout``); the tests pass a launcher that forks pre-imported processes."""
    report: dict[str, dict[str, Any]] = {}
    failed: str | None = None
    for step in steps:
        if failed is not None:
            report[step.name] = {"status": "skipped", "reason": f"{failed} did not succeed"}
            continue
        start = time.time()
        entry: dict[str, Any] = {"limit_s": step.timeout}
        if step.call is not None:
            try:
                entry.update(step.call(), status="ok")
            except Exception as exc:  # noqa: BLE001 - reported, later steps skipped
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        else:
            try:
                proc = runner(step.argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=step.timeout)  # fmt: skip
                entry.update(status="ok" if proc.returncode == 0 else "failed", returncode=proc.returncode,
                             log_tail=(proc.stdout + proc.stderr)[-3000:])  # fmt: skip
            except subprocess.TimeoutExpired:
                entry.update(status="timeout", reason=f"over its {step.timeout:.0f} s limit (compilation included)")
        entry["seconds"] = round(time.time() - start, 1)
        report[step.name] = entry
        if entry["status"] != "ok":
            failed = step.name
    return report


def prepare(out: Path) -> None:
    """Start from an empty first-day directory (a rerun must not resume an earlier run's checkpoints)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
