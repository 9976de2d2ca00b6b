"""GPU-default code paths exercised on CPU through the real CLI (issue 11 item 3).

- EP=2 under ``torchrun --nproc-per-node 2``: the ``alltoall`` token dispatcher (the H100 default; on CPU it
  runs through the ``alltoall_dispatcher`` platform redirection), with DDP overlap of the gradient reduce and
  parameter gather, NaN check and the non-TE fusions on, gives the same losses as the ``allgather`` dispatcher
  with everything off.
- ``train.precision=bf16`` trains on CPU: the loss falls, and a run resumed from its step-3 checkpoint
  continues exactly like the uninterrupted run (bf16 checkpoint round trip).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.zygote import run_command
from tests.train.launch import free_port

REPO = Path(__file__).resolve().parents[2]
BASE = [
    "--config",
    str(REPO / "examples/configs/tiny_moe.yaml"),
    "--set",
    "model.num_layers=2",
    "--set",
    "model.vocab_size=1024",
    "--set",
    "train.seq_length=64",
    "--set",
    "train.lr_warmup_iters=1",
    "--set",
    "log.tensorboard=false",
]


def _train(log_dir: Path, *overrides: str, nproc: int = 1, evals: bool = False) -> Any:
    args = list(BASE)
    for o in (f"log.dir={log_dir}", *overrides):
        args += ["--set", o]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MEGATRON_AGENTIC_FORCE_CPU="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    launcher += [f"--master-port={free_port()}", "-m", "megatron_agentic"]
    cmd = launcher if nproc > 1 else [sys.executable, "-m", "megatron_agentic"]
    out = run_command([*cmd, "train", *args], cwd=REPO, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if "loss" in r]
    if evals:
        return losses, [(r["step"], r["eval"]["valid"]) for r in records if "eval" in r]
    return losses


@pytest.fixture
def workdir():
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_gpu_paths_"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_alltoall_dispatcher_and_ddp_overlap_match_allgather(workdir):
    common = ("parallel.expert=2", "train.iters=6", "train.eval_interval=3", "train.eval_iters=1")
    reference, ref_evals = _train(
        workdir / "allgather", *common, "model.moe_token_dispatcher=allgather", nproc=2, evals=True
    )
    gpu_default = (
        "model.moe_token_dispatcher=alltoall",
        "perf.overlap_grad_reduce=true",
        "perf.overlap_param_gather=true",
        "perf.check_for_nan_in_grad=true",
        "perf.bias_activation_fusion=true",
        "perf.cross_entropy_loss_fusion=true",
        "perf.manual_gc=true",
        "perf.manual_gc_interval=2",
    )
    ckpt = workdir / "ckpt"
    full = _train(
        workdir / "alltoall", *common, *gpu_default, f"checkpoint.dir={ckpt}", "checkpoint.interval=3", nproc=2
    )
    assert len(reference) == len(full) == 6
    assert reference[-1] < reference[0] - 0.1, reference
    np.testing.assert_allclose(full, reference, rtol=1e-4, atol=0)
    # With the parameter all-gather overlapped, the step-3 checkpoint still holds every rank's updated shard.
    resume = workdir / "resume_ckpt"
    shutil.copytree(ckpt / "iter_0000003", resume / "iter_0000003")
    (resume / "latest_checkpointed_iteration.txt").write_text("3\n")
    resumed = _train(workdir / "resumed", *common, *gpu_default, f"checkpoint.dir={resume}", nproc=2)
    np.testing.assert_allclose(resumed, full[3:], rtol=1e-6, atol=0)


@pytest.mark.slow
def test_bf16_trains_on_cpu_and_resumes_exactly(workdir):
    ckpt = workdir / "ckpt"
    bf16 = ("train.precision=bf16", "train.iters=6", f"checkpoint.dir={ckpt}", "checkpoint.interval=3")
    full = _train(workdir / "full", *bf16)
    assert len(full) == 6 and full[-1] < full[0] - 0.1, full
    resume = workdir / "resume_ckpt"
    shutil.copytree(ckpt / "iter_0000003", resume / "iter_0000003")
    (resume / "latest_checkpointed_iteration.txt").write_text("3\n")
    resumed = _train(workdir / "resumed", *bf16[:2], f"checkpoint.dir={resume}", "checkpoint.interval=3")
    assert resumed == full[3:]
