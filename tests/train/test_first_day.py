"""The first-production-day steps of the GPU acceptance run (``benchmarks/first_day.py``), driven on CPU.

The plan's commands are checked for what the day needs (pretrained load, CP=2 ring, selective ``[moe]`` recompute,
alltoall, async save, resume), the runner's report and failure handling with stand-in steps, and the whole plan
runs on this machine with the CPU profile (tiny-moe, 2 gloo ranks): HF -> convert -> pretrained -> train ->
save -> resume -> equal losses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import first_day
from tests.support import zygote
from tests.train.launch import free_port
from tests.train.te_harness import subprocess_env


def _sets(argv: tuple[str, ...]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    return dict(p.split("=", 1) for p in pairs)


def test_gpu_plan_is_the_first_production_day(tmp_path):
    steps = first_day.plan(tmp_path, first_day.GPU, lambda: 12345)
    names = [s.name for s in steps]
    assert names == [f"first-day/{n}" for n in ("hf", "convert", "stage1", "resume", "reference", "equal-losses")]
    by_name = {s.name: s for s in steps}
    convert = by_name["first-day/convert"].argv
    assert convert[2:5] == ("megatron_agentic", "convert", "hf-to-mcore")
    assert convert[convert.index("--hf-dir") + 1] == str(tmp_path / "hf")
    assert convert[convert.index("--output") + 1] == str(tmp_path / "mcore")
    for name in ("stage1", "resume", "reference"):
        argv = by_name[f"first-day/{name}"].argv
        assert "--nproc-per-node=2" in argv
        sets = _sets(argv)
        assert sets["model.preset"] == "qwen3-30b-a3b" and sets["model.num_layers"] == "2"
        assert sets["checkpoint.pretrained"] == str(tmp_path / "mcore")
        assert sets["parallel.context"] == "2" and sets["model.attention_backend"] == "triton"
        assert sets["model.recompute"] == "selective" and sets["model.recompute_modules"] == "[moe]"
        assert sets["model.moe_token_dispatcher"] == "alltoall" and sets["checkpoint.async_save"] == "true"
    stage1, resume, ref = (_sets(by_name[f"first-day/{n}"].argv) for n in ("stage1", "resume", "reference"))
    assert stage1["checkpoint.dir"] == resume["checkpoint.dir"] != ref["checkpoint.dir"]  # resume continues stage 1
    # one command run twice (own log dirs): the second resumes with the same schedule and data order
    assert {k: v for k, v in stage1.items() if k not in ("log.dir", "train.exit_interval")} == {
        k: v for k, v in resume.items() if k != "log.dir"
    }
    assert "train.exit_interval" not in resume and "train.exit_interval" not in ref
    assert {k: v for k, v in ref.items() if k not in ("checkpoint.dir", "log.dir")} == {
        k: v for k, v in stage1.items() if k not in ("checkpoint.dir", "log.dir", "train.exit_interval")
    }
    assert int(stage1["train.exit_interval"]) == int(stage1["checkpoint.interval"]) < int(stage1["train.iters"])
    assert all(s.timeout >= 300 for s in steps[2:5])  # first-run compilation fits


def _metrics(path: Path, losses: dict[int, float]) -> None:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in losses.items()))


def test_compare_losses(tmp_path):
    profile = first_day.CPU
    _metrics(tmp_path / "log-stage1", {1: 5.0, 2: 4.5})
    _metrics(tmp_path / "log-reference", {1: 5.0, 2: 4.5, 3: 4.2, 4: 4.0})
    _metrics(tmp_path / "log-resume", {3: 4.2, 4: 4.0})
    assert first_day.compare_losses(tmp_path, profile)["resumed"] == [4.2, 4.0]
    (tmp_path / "log-resume/metrics.jsonl").write_text('{"step": 3, "loss": 4.2}\n{"step": 4, "loss": 4.0001}\n')
    with pytest.raises(AssertionError, match="steps \\[4\\]"):
        first_day.compare_losses(tmp_path, profile)
    loose = first_day.Profile(model=(), nproc=2, seq_length=32, tolerance=1e-3)
    assert first_day.compare_losses(tmp_path, loose)["tolerance"] == 1e-3


@pytest.mark.slow
def test_runner_reports_each_step_and_skips_after_a_failure():
    def boom() -> dict:
        raise AssertionError("resumed losses differ")

    steps = [
        first_day.Step("first-day/a", 30, call=lambda: {"n": 1}),
        first_day.Step("first-day/b", 30, argv=(sys.executable, "-c", "import sys; sys.exit(3)")),
        first_day.Step("first-day/c", 30, call=boom),
    ]
    report = first_day.run(steps)
    assert report["first-day/a"]["status"] == "ok" and report["first-day/a"]["n"] == 1
    assert report["first-day/b"]["status"] == "failed" and report["first-day/b"]["returncode"] == 3
    assert report["first-day/c"] == {"status": "skipped", "reason": "first-day/b did not succeed"}
    slow = first_day.run(
        [first_day.Step("first-day/slow", 1, argv=(sys.executable, "-c", "import time; time.sleep(5)"))]
    )
    assert slow["first-day/slow"]["status"] == "timeout" and "limit" in slow["first-day/slow"]["reason"]
    failed = first_day.run([first_day.Step("first-day/x", 30, call=boom)])
    assert failed["first-day/x"]["status"] == "failed" and "resumed losses differ" in failed["first-day/x"]["error"]


def test_acceptance_run_skips_the_day_on_one_gpu(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_acceptance_fd", first_day.ROOT / "benchmarks/gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance_fd"] = module
    spec.loader.exec_module(module)
    lines = module.first_day_steps(tmp_path / "fd", 1, [])
    assert lines == {"first-day": {"status": "skipped", "reason": "needs 2 GPUs (CP=2), found 1"}}
    assert module.first_day_steps(tmp_path / "fd", 8, ["first-day"])["first-day"]["reason"] == "--skip first-day"


@pytest.mark.slow
def test_cpu_profile_runs_the_whole_day(tmp_path):
    out = tmp_path / "day"
    first_day.prepare(out)
    plan = first_day.plan(out, first_day.CPU, free_port)
    report = first_day.run(plan, env=subprocess_env(), runner=zygote.subprocess_run)
    assert {name: s["status"] for name, s in report.items()} == {name: "ok" for name in report}, json.dumps(
        {k: {x: v.get(x) for x in ("status", "error", "reason", "log_tail")} for k, v in report.items()}, indent=1
    )[-6000:]
    equal = report["first-day/equal-losses"]
    assert equal["resumed"] == equal["reference"] and len(equal["resumed"]) == 2
    # stage 1 saved at its last step; the resumed run continued in the same directory
    assert (out / "ckpt-stage1/iter_0000002").is_dir() and (out / "ckpt-stage1/iter_0000004").is_dir()
