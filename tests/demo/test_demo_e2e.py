"""The CI version of ``make demo``: the ``small`` preset through the real CLI, end to end on CPU.

Checks the report and every step's outputs against independent references: megatron-core's own reader for the
indexed datasets (documents = synthesized records), the loss of a uniform predictor over the Qwen3 vocabulary
for the untrained model, and an unchanged workdir for the rerun (finished steps are reused, nothing retrains). The
first run is stopped with SIGTERM in the middle of stage 1 and continued by the same command, as a user would.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from megatron_agentic.demo.config import DATA_TYPES, get_preset
from megatron_agentic.demo.pipeline import DemoContext
from megatron_agentic.demo.steps import SPLITS, build_steps, dataset_prefix, text_input

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _run_demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="160")
    cmd = [sys.executable, "-m", "megatron_agentic", "demo", "--workdir", str(workdir), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=840)


@dataclass
class DemoRun:
    """The CI demo: a first run stopped with SIGTERM during stage 1, then the same command to completion."""

    workdir: Path
    interrupted_rc: int
    interrupted_output: str
    leftover_processes: list[str]
    final: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="160")
    cmd = [sys.executable, "-m", "megatron_agentic", "demo", "--workdir", str(workdir), "--preset", "small"]
    out_path = workdir.parent / "first_run.log"
    latest = workdir / "checkpoints" / "stage1" / "latest_checkpointed_iteration.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not latest.exists():  # stage 1 wrote its mid-run checkpoint
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"demo ended before stage 1 checkpointed:\n{out_path.read_text()[-6000:]}")
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    _, alive = psutil.wait_procs(children, timeout=30)
    leftover = [" ".join(p.cmdline()[:6]) for p in alive]
    for p in alive:
        p.kill()
    final = _run_demo(workdir)  # no --preset: the workdir's own (small) is reused
    if final.returncode != 0:
        pytest.fail(f"demo failed (exit {final.returncode}):\n{final.stdout[-6000:]}\n{final.stderr[-3000:]}")
    return DemoRun(workdir, rc, out_path.read_text(), leftover, final)


def _report(workdir: Path) -> dict:
    return json.loads((workdir / "report.json").read_text(encoding="utf-8"))


def test_interrupted_demo_stops_its_ranks_and_resumes_stage1(demo: DemoRun) -> None:
    assert demo.interrupted_rc == 130, demo.interrupted_output[-3000:]
    assert "interrupted: rerun the same command" in demo.interrupted_output
    assert demo.leftover_processes == []  # the training ranks were stopped with the demo
    out = demo.final.stdout
    assert "skip  mix-stage2" in out and "done  stage1" in out  # finished steps reused, stage 1 continued
    stage1_log = (demo.workdir / "logs" / "stage1.log").read_text(encoding="utf-8")
    assert f"resumed from {demo.workdir / 'checkpoints' / 'stage1'} at iteration" in stage1_log
    # The resumed run's metrics hold every iteration exactly once (none lost, none repeated).
    metrics = [json.loads(x) for x in (demo.workdir / "train" / "stage1" / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == list(range(1, get_preset("small").stage1.iters + 1))
    assert [m["step"] for m in metrics if "eval" in m][0] == 0  # the initial weights, evaluated once (not on resume)
    assert sum(m["step"] == 0 for m in metrics) == 1


def test_demo_completes_every_step_and_writes_the_report(demo: DemoRun) -> None:
    workdir, proc = demo.workdir, demo.final
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[-1] == f"Report: {workdir / 'report.md'}"
    steps = build_steps(get_preset("small"))
    for step in steps:
        assert (workdir / "state" / f"{step.name}.done").exists(), step.name
        assert (workdir / "logs" / f"{step.name}.log").exists(), step.name
    assert (workdir / "state" / "report.done").exists()
    report = (workdir / "report.md").read_text(encoding="utf-8")
    for heading in ("FAS", "HAS", "Tokens", "Stage blends", "Training tiny-moe", "Held-out loss per data type"):
        assert heading in report
    for png in ("loss_curves.png", "heldout_loss.png", "tokens.png"):
        path = workdir / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"plots/{png}" in report


def test_indexed_datasets_hold_every_synthesized_record(demo: DemoRun) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    workdir = demo.workdir
    ctx = DemoContext(workdir=workdir, config=get_preset("small"))
    for split in SPLITS:
        for kind in DATA_TYPES:
            records = [json.loads(x) for x in text_input(ctx, kind, split).read_text(encoding="utf-8").splitlines()]
            assert records, f"no {kind} records for {split}"
            ds = IndexedDataset(dataset_prefix(ctx, kind, split))
            assert len(ds.document_indices) - 1 == len(records), (kind, split)
            # --append-eod: every document ends with Qwen3's <|endoftext|>.
            assert int(ds[0][-1]) == 151643 and int(ds[len(ds) - 1][-1]) == 151643


def test_both_stages_train_and_their_loss_decreases(demo: DemoRun) -> None:
    workdir = demo.workdir
    cfg = get_preset("small")
    training = _report(workdir)["training"]
    for stage in ("stage1", "stage2"):
        curve = training[stage]["curve"]
        assert [s for s, _ in curve] == list(range(1, getattr(cfg, stage).iters + 1)), stage
        losses = [loss for _, loss in curve]
        assert all(math.isfinite(x) for x in losses), stage
        assert training[stage]["loss_end"] < training[stage]["loss_start"], (stage, losses)
    # Stage 2 starts from the stage-1 weights, not from scratch: its first loss is far below a random model's.
    assert training["stage2"]["curve"][0][1] < training["stage1"]["curve"][0][1] - 0.5


def test_heldout_loss_per_type_before_and_after_training(demo: DemoRun) -> None:
    workdir = demo.workdir
    evals = _report(workdir)["eval"]
    uniform = math.log(151936)  # loss of a uniform predictor over the (padded) Qwen3 vocabulary
    for kind in DATA_TYPES:
        before, after1, after2 = (evals[run][kind] for run in ("eval_base", "eval_stage1", "eval_stage2"))
        assert abs(before - uniform) < 0.5, (kind, before)  # the untrained model is near uniform
        assert after1 < before - 0.5, (kind, before, after1)
        assert math.isfinite(after2) and after2 < before - 0.5, (kind, before, after2)


def test_rerun_reuses_finished_steps(demo: DemoRun) -> None:
    workdir = demo.workdir
    watched = [workdir / "train" / "stage1" / "metrics.jsonl", workdir / "tokens" / "has_train_text_document.bin"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    proc = _run_demo(workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    n_steps = len(build_steps(get_preset("small"))) + 1
    assert proc.stdout.count("skip ") == n_steps
    assert f"{n_steps} steps (0 run, {n_steps} reused)" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_other_configuration_in_same_workdir_is_refused(demo: DemoRun) -> None:
    workdir = demo.workdir
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "megatron_agentic", "demo", "--preset", "full", "--workdir", str(workdir)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "another demo configuration" in proc.stdout + proc.stderr
