"""Multi-process training on CPU/gloo through the real CLI (`torchrun -m megatron_agentic train`).

One set of runs on a small indexed dataset (written with megatron-core's own IndexedDatasetBuilder) is
shared by the assertions:

- reference: 1 rank, 8 iterations, checkpoints at 4 and 8, eval every 4 (validation split + an eval set);
- TP=2 (sequence parallel), PP=2 and DP=2 from scratch: loss falls and matches the reference step by step
  (initialisation is layout-independent);
- kill + resume (1 rank, ``train.eval_at_start``): stop abruptly after step 6, resume from the step-4 checkpoint:
  identical losses (evaluating the initial weights changes nothing), the step-0 evaluation once and equal to an
  evaluation-only run of the initial weights;
- resharded resume: the reference's step-4 checkpoint (TP=1, EP=1) loaded into TP=2 and into EP=2 continues
  exactly like the reference;
- iters=0 with checkpoint.pretrained only evaluates and reproduces the reference's final eval losses.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.train.launch import run_train

pytestmark = pytest.mark.slow  # trains under torchrun (module fixture)

REPO = Path(__file__).resolve().parents[2]
VOCAB, EOD = 512, 511
ITERS = 8


def _write_indexed(prefix: Path, n_docs: int, seed: int) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for _ in range(n_docs):
        length = int(rng.integers(20, 120))
        start, step = int(rng.integers(0, 500)), int(rng.integers(1, 4))
        doc = (start + step * np.arange(length)) % 500  # learnable arithmetic progressions
        builder.add_document(torch.from_numpy(np.append(doc, EOD).astype(np.int32)), [length + 1])
    builder.finalize(str(prefix) + ".idx")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Runner:
    def __init__(self, root: Path, train_prefix: Path, eval_prefix: Path) -> None:
        self.root = root
        self.base = [
            "--config",
            str(REPO / "examples/configs/tiny_moe.yaml"),
            "--set",
            "model.num_layers=2",
            "--set",
            f"model.vocab_size={VOCAB}",
            "--set",
            f"train.iters={ITERS}",
            "--set",
            "train.seq_length=64",
            "--set",
            "train.global_batch_size=8",
            "--set",
            "train.micro_batch_size=2",
            "--set",
            "train.lr=3.0e-3",
            "--set",
            "train.lr_warmup_iters=2",
            "--set",
            "train.eval_iters=1",
            "--set",
            "log.tensorboard=false",
            "--set",
            f"data.blend=[1.0, {train_prefix}]",
            "--set",
            "data.split=90,10,0",
            "--set",
            "data.tokenizer=custom",
            "--set",
            f"data.eod_token_id={EOD}",
            "--set",
            f"data.eval_sets={{heldout: {eval_prefix}}}",
            "--set",
            f"data.cache_dir={root / 'cache'}",
        ]

    def run(self, name: str, *overrides: str, nproc: int = 1) -> dict:
        log_dir = self.root / name
        args = list(self.base)
        for o in (f"log.dir={log_dir}", *overrides):
            args += ["--set", o]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = "1"
        out = run_train(args, nproc, env=env)
        assert out.returncode == 0, f"{name} failed:\n{out.stderr[-4000:]}"
        records = _read_jsonl(log_dir / "metrics.jsonl") if (log_dir / "metrics.jsonl").exists() else []
        summary_path = log_dir / "summary.json"
        return {
            "steps": [r for r in records if "loss" in r],
            "evals": [r for r in records if "eval" in r],
            "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None,
            "log_dir": log_dir,
        }

    def checkpoint_copy(self, src: Path, iteration: int, name: str) -> Path:
        dst = self.root / name
        shutil.copytree(src / f"iter_{iteration:07d}", dst / f"iter_{iteration:07d}")
        (dst / "latest_checkpointed_iteration.txt").write_text(f"{iteration}\n")
        return dst


@pytest.fixture(scope="module")
def runs():
    # A private directory (not pytest's rotating basetemp, which concurrent pytest sessions may prune).
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_train_"))
    try:
        yield _all_runs(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _all_runs(root: Path) -> dict:
    _write_indexed(root / "train_text", 400, seed=0)
    _write_indexed(root / "heldout_text", 60, seed=1)
    r = Runner(root, root / "train_text", root / "heldout_text")
    results = {}
    ref_ckpt = root / "ref_ckpt"
    results["ref"] = r.run(
        "ref",
        f"checkpoint.dir={ref_ckpt}",
        "checkpoint.interval=4",
        "train.eval_interval=4",
        "log.tensorboard=true",
        "checkpoint.optimizer_format=fully_reshardable",  # resumed below in TP=2 / EP=2 layouts (dp_reshardable: DP only)
    )
    results["ref_ckpt"] = ref_ckpt
    results["tp2"] = r.run("tp2", "parallel.tensor=2", nproc=2)
    results["pp2"] = r.run("pp2", "parallel.pipeline=2", nproc=2)
    results["dp2"] = r.run("dp2", nproc=2)
    kill_ckpt = root / "kill_ckpt"
    at_start = "train.eval_at_start=true"
    results["killed"] = r.run(
        "kill", f"checkpoint.dir={kill_ckpt}", "checkpoint.interval=4", at_start, "train.exit_interval=6"
    )
    results["kill_ckpt"] = kill_ckpt
    results["resumed"] = r.run("kill", f"checkpoint.dir={kill_ckpt}", "checkpoint.interval=4", at_start)
    results["eval_init"] = r.run("eval_init", "train.iters=0")
    tp_ckpt = r.checkpoint_copy(ref_ckpt, 4, "reshard_tp_ckpt")
    results["reshard_tp2"] = r.run("reshard_tp2", f"checkpoint.dir={tp_ckpt}", "parallel.tensor=2", nproc=2)
    ep_ckpt = r.checkpoint_copy(ref_ckpt, 4, "reshard_ep_ckpt")
    results["reshard_ep2"] = r.run("reshard_ep2", f"checkpoint.dir={ep_ckpt}", "parallel.expert=2", nproc=2)
    results["eval_only"] = r.run("eval_only", "train.iters=0", f"checkpoint.pretrained={ref_ckpt}")
    return results


def _losses(run: dict) -> list[float]:
    return [r["loss"] for r in run["steps"]]


def test_reference_learns_and_logs_everything(runs):
    ref = runs["ref"]
    steps = ref["steps"]
    assert [r["step"] for r in steps] == list(range(1, ITERS + 1))
    for r in steps:
        for key in ("loss", "lr", "grad_norm", "tokens", "tokens_per_s", "aux_loss", "expert_load"):
            assert key in r, key
        assert r["tokens"] == r["step"] * 8 * 64
        assert len(r["expert_load"]) == 4 and sum(r["expert_load"]) == pytest.approx(4.0, abs=1e-2)
    losses = _losses(ref)
    assert losses[-1] < losses[0] - 0.3, losses
    assert [e["step"] for e in ref["evals"]] == [4, 8]
    assert set(ref["evals"][-1]["eval"]) == {"valid", "heldout"}
    summary = ref["summary"]
    assert summary["final_step"] == ITERS and summary["tokens"] == ITERS * 8 * 64
    assert summary["eval"] == ref["evals"][-1]["eval"]
    assert summary["losses"]["last"] == losses[-1]
    assert list((ref["log_dir"] / "tensorboard").glob("events.out.tfevents.*"))
    assert (runs["ref_ckpt"] / "latest_checkpointed_iteration.txt").read_text().strip() == "8"
    assert (runs["ref_ckpt"] / "iter_0000004").is_dir()


@pytest.mark.parametrize("layout", ["tp2", "pp2", "dp2"])
def test_parallel_layouts_match_single_rank(runs, layout):
    ref, other = _losses(runs["ref"]), _losses(runs[layout])
    assert len(other) == ITERS
    assert other[-1] < other[0] - 0.3
    np.testing.assert_allclose(other, ref, rtol=2e-3, atol=0)
    for name, value in runs["ref"]["summary"]["eval"].items():
        assert runs[layout]["summary"]["eval"][name] == pytest.approx(value, rel=2e-3)


def test_kill_and_resume_equals_uninterrupted_run(runs):
    killed = runs["killed"]
    assert killed["summary"] is None  # stopped abruptly: no summary
    assert (runs["kill_ckpt"] / "latest_checkpointed_iteration.txt").read_text().strip() in ("4", "8")
    resumed = runs["resumed"]
    # metrics.jsonl holds every step exactly once (steps 5-6 of the killed run were dropped on resume).
    assert [r["step"] for r in resumed["steps"]] == list(range(1, ITERS + 1))
    assert _losses(resumed) == _losses(runs["ref"])
    assert [r["lr"] for r in resumed["steps"]] == [r["lr"] for r in runs["ref"]["steps"]]
    assert resumed["summary"]["eval"] == runs["ref"]["summary"]["eval"]


def test_eval_at_start_evaluates_the_initial_weights_once(runs):
    killed, resumed = runs["killed"], runs["resumed"]
    assert killed["evals"][0]["step"] == 0 and killed["steps"][0]["step"] == 1  # before the first step
    assert [e["step"] for e in resumed["evals"]] == [0, ITERS]  # not repeated by the resumed run
    initial = runs["eval_init"]["summary"]["eval"]  # an evaluation-only run of the same initial weights
    assert set(initial) == {"valid", "heldout"}
    for name, value in initial.items():
        assert resumed["evals"][0]["eval"][name] == pytest.approx(value, rel=1e-6)
    # the training is unchanged by it: test_kill_and_resume_equals_uninterrupted_run compares these losses exactly


@pytest.mark.parametrize("layout", ["reshard_tp2", "reshard_ep2"])
def test_resharded_resume_continues_reference(runs, layout):
    run = runs[layout]
    assert [r["step"] for r in run["steps"]] == list(range(5, ITERS + 1))
    ref_tail = _losses(runs["ref"])[4:]
    np.testing.assert_allclose(_losses(run), ref_tail, rtol=2e-3, atol=0)
    assert [r["lr"] for r in run["steps"]] == pytest.approx([r["lr"] for r in runs["ref"]["steps"][4:]])


def test_eval_only_reproduces_final_eval(runs):
    run = runs["eval_only"]
    assert run["steps"] == []
    assert run["summary"]["final_step"] == 0
    for name, value in runs["ref"]["summary"]["eval"].items():
        assert run["summary"]["eval"][name] == pytest.approx(value, rel=1e-6)
