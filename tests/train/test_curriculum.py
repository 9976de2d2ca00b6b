"""Stage 2 from a stage-1 checkpoint (``checkpoint.pretrained``) keeping or resetting optimizer and LR scheduler.

Reference: the uninterrupted stage-1 run. The data is one document repeated (length = sequence length), so
every training sample is the same and stage 2, whose data position restarts at 0, sees exactly the batches
stage 1 saw after its checkpoint. A stage 2 that loads stage 1's Adam state and LR schedule must then
continue stage 1's loss curve exactly; with a fresh Adam state it must not.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.zygote import run_command

pytestmark = pytest.mark.slow  # trains under torchrun (module fixture)

REPO = Path(__file__).resolve().parents[2]
VOCAB, EOD, SEQ = 512, 511, 32


def _write_repeated_doc(prefix: Path, copies: int) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    doc = np.append(np.random.default_rng(0).integers(0, 500, SEQ - 1), EOD).astype(np.int32)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for _ in range(copies):
        builder.add_document(torch.from_numpy(doc), [SEQ])
    builder.finalize(str(prefix) + ".idx")


DRIVER = """
import json, sys
from megatron_agentic.config import load_config
from megatron_agentic.training.loop import train
for overrides in json.loads(sys.argv[2]):
    train(load_config(sys.argv[1], overrides))
"""


def _overrides(root: Path, name: str, iters: int, *extra: str) -> list[str]:
    return [
        "model.num_layers=1",
        f"model.vocab_size={VOCAB}",
        f"train.iters={iters}",
        f"train.seq_length={SEQ}",
        "train.global_batch_size=2",
        "train.micro_batch_size=2",
        "train.lr=1.0e-2",
        "train.lr_warmup_iters=2",
        "train.lr_decay_iters=20",
        "log.tensorboard=false",
        f"log.dir={root / name}",
        f"data.blend=[1.0, {root / 'doc'}]",
        "data.split=100,0,0",
        "data.tokenizer=custom",
        f"data.eod_token_id={EOD}",
        f"data.cache_dir={root / 'cache'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs():
    # The runs go one after another in one process (each ``train`` starts and tears down its process group),
    # which saves the interpreter start-up and imports per run.
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_curriculum_"))
    try:
        _write_repeated_doc(root / "doc", 64)
        stage1_ckpt = root / "stage1_ckpt"
        plan = {"stage1": _overrides(root, "stage1", 4, f"checkpoint.dir={stage1_ckpt}", "checkpoint.interval=2")}
        pretrained = f"checkpoint.pretrained={stage1_ckpt / 'iter_0000002'}"
        for name, opt, sched in [("keep_all", True, True), ("fresh_adam", False, True), ("fresh_lr", True, False)]:
            plan[name] = _overrides(
                root,
                name,
                2,
                pretrained,
                f"checkpoint.pretrained_load_optimizer={str(opt).lower()}",
                f"checkpoint.pretrained_load_scheduler={str(sched).lower()}",
            )
        config = str(REPO / "examples/configs/tiny_moe.yaml")
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-c", DRIVER, config, json.dumps(list(plan.values()))]
        out = run_command(cmd, cwd=REPO, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-4000:]
        results = {}
        for name in plan:
            lines = (root / name / "metrics.jsonl").read_text().splitlines()
            results[name] = [r for r in map(json.loads, lines) if "loss" in r]
        yield results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_kept_optimizer_and_scheduler_continue_stage1_exactly(runs):
    stage1, stage2 = runs["stage1"], runs["keep_all"]
    # the iteration counter (= data position) and the token count restart for the new stage
    assert [r["step"] for r in stage2] == [1, 2]
    assert stage2[0]["tokens"] == 2 * SEQ
    # same weights, Adam moments/step and LR as stage 1 after its step 2: identical steps 3-4
    for got, want in zip(stage2, stage1[2:]):
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)


def test_fresh_optimizer_state_changes_the_first_update(runs):
    stage1, fresh = runs["stage1"], runs["fresh_adam"]
    # step 1 is evaluated before any update: the weights were loaded either way
    assert fresh[0]["loss"] == pytest.approx(stage1[2]["loss"], rel=1e-5, abs=1e-6)
    assert fresh[0]["lr"] == pytest.approx(stage1[2]["lr"], rel=1e-12)
    # the update from zero Adam moments (bias-corrected step 1) differs from the continued one
    assert abs(fresh[1]["loss"] - stage1[3]["loss"]) > 1e-4


def test_fresh_scheduler_restarts_the_lr_schedule(runs):
    stage1, fresh_lr = runs["stage1"], runs["fresh_lr"]
    # warmup again from the new config: stage 2's LRs are stage 1's first two, not its steps 3-4
    assert [r["lr"] for r in fresh_lr] == pytest.approx([r["lr"] for r in stage1[:2]], rel=1e-12)
    assert fresh_lr[0]["lr"] != pytest.approx(stage1[2]["lr"], rel=1e-6)
    assert fresh_lr[0]["loss"] == pytest.approx(stage1[2]["loss"], rel=1e-5, abs=1e-6)


def test_pretrained_flags_need_a_pretrained_checkpoint():
    from megatron_agentic.config import ConfigError, config_from_dict

    for name in ("pretrained_load_optimizer", "pretrained_load_scheduler"):
        with pytest.raises(ConfigError, match=f"checkpoint.{name}=true needs checkpoint.pretrained"):
            config_from_dict({"checkpoint": {name: True}})
