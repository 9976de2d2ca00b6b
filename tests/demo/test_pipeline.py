"""The demo's step runner: logs, done-markers, resume, invalidation and failure reporting (fast, no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from megatron_agentic.demo.config import DemoConfig, get_preset
from megatron_agentic.demo.pipeline import DemoContext, Runner, Step, StepFailed, prepare_workdir


def _ctx(tmp_path: Path, preset: str = "small") -> DemoContext:
    ctx = DemoContext(workdir=tmp_path / "work", config=get_preset(preset))
    prepare_workdir(ctx, fresh=False)
    return ctx


def _runner(ctx: DemoContext) -> Runner:
    return Runner(ctx, console=Console(file=open("/dev/null", "w")), poll_s=0.05)


def _append_step(name: str, fail_flag: Path | None = None) -> Step:
    """A subprocess step that appends its name to ``runs.txt`` (and fails while ``fail_flag`` exists)."""
    code = (
        "import sys, pathlib\n"
        "name, flag = sys.argv[1], sys.argv[2]\n"
        "print('hello from', name)\n"
        "if flag and pathlib.Path(flag).exists():\n"
        "    print('boom: flag present', file=sys.stderr); sys.exit(3)\n"
        "with open('runs.txt', 'a') as f: f.write(name + '\\n')\n"
        "pathlib.Path(name + '.out').write_text('ok')\n"
    )
    return Step(
        name=name,
        title=f"step {name}",
        command=lambda ctx: [sys.executable, "-c", code, name, str(fail_flag or "")],
        outputs=lambda ctx: [ctx.path(name + ".out")],
    )


def _runs(ctx: DemoContext) -> list[str]:
    path = ctx.path("runs.txt")
    return path.read_text().split() if path.exists() else []


@pytest.mark.slow
def test_runs_in_order_writes_logs_and_markers(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    steps = [_append_step("a"), _append_step("b"), _append_step("c")]
    results = _runner(ctx).run(steps)
    assert _runs(ctx) == ["a", "b", "c"]
    assert [r.cached for r in results] == [False, False, False]
    for name in "abc":
        log = ctx.path("logs", f"{name}.log").read_text()
        assert log.startswith("$ ") and f"hello from {name}" in log
        marker = json.loads(ctx.path("state", f"{name}.done").read_text())
        assert marker["step"] == name and marker["seconds"] >= 0


@pytest.mark.slow
def test_rerun_skips_finished_steps(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    steps = [_append_step("a"), _append_step("b")]
    _runner(ctx).run(steps)
    results = _runner(ctx).run(steps)
    assert _runs(ctx) == ["a", "b"]  # nothing ran twice
    assert all(r.cached for r in results)


@pytest.mark.slow
def test_failure_names_step_and_log_then_resume_continues(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    flag = tmp_path / "fail-b"
    flag.write_text("x")
    steps = [_append_step("a"), _append_step("b", fail_flag=flag), _append_step("c")]
    with pytest.raises(StepFailed) as info:
        _runner(ctx).run(steps)
    err = info.value
    assert err.step == "b" and err.log == ctx.path("logs", "b.log")
    assert "exit status 3" in str(err) and str(err.log) in str(err)
    assert "boom: flag present" in err.tail
    assert _runs(ctx) == ["a"]
    assert not ctx.path("state", "b.done").exists() and not ctx.path("state", "c.done").exists()
    flag.unlink()
    results = _runner(ctx).run(steps)
    assert _runs(ctx) == ["a", "b", "c"]  # a was reused, b and c ran once
    assert [r.cached for r in results] == [True, False, False]


@pytest.mark.slow
def test_rerunning_a_step_invalidates_later_steps(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    steps = [_append_step("a"), _append_step("b"), _append_step("c")]
    _runner(ctx).run(steps)
    ctx.path("state", "b.done").unlink()
    _runner(ctx).run(steps)
    assert _runs(ctx) == ["a", "b", "c", "b", "c"]


@pytest.mark.slow
def test_missing_outputs_and_missing_module_fail_clearly(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    silent = Step(
        name="silent",
        title="writes nothing",
        command=lambda c: [sys.executable, "-c", "pass"],
        outputs=lambda c: [c.path("never.txt")],
    )
    with pytest.raises(StepFailed, match="did not write .*never.txt"):
        _runner(ctx).run([silent])
    empty = Step(
        name="empty",
        title="writes an empty file",
        command=lambda c: [sys.executable, "-c", f"open({str(c.path('empty.jsonl'))!r}, 'w')"],
        outputs=lambda c: [c.path("empty.jsonl")],
    )
    with pytest.raises(StepFailed, match="wrote no records to .*empty.jsonl"):
        _runner(ctx).run([empty])
    absent = Step(
        name="absent",
        title="needs a module",
        command=lambda c: [sys.executable, "-c", "pass"],
        modules=("data_tools.no_such_component",),
    )
    with pytest.raises(StepFailed, match="needs data_tools.no_such_component"):
        _runner(ctx).run([absent])


def test_in_process_step_failure_keeps_traceback_in_log(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)

    def broken(c: DemoContext, log) -> dict:
        log.write("about to fail\n")
        raise KeyError("field 'text'")

    with pytest.raises(StepFailed, match="KeyError") as info:
        _runner(ctx).run([Step(name="glue", title="glue", func=broken)])
    log = info.value.log.read_text()
    assert "about to fail" in log and "Traceback" in log


def test_workdir_guards(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo workdir"):
        prepare_workdir(DemoContext(workdir=foreign, config=get_preset("small")), fresh=True)
    assert (foreign / "precious.txt").exists()

    ctx = _ctx(tmp_path)
    ctx.path("state", "x.done").write_text("{}")
    with pytest.raises(ValueError, match="another demo configuration"):
        prepare_workdir(DemoContext(workdir=ctx.workdir, config=get_preset("full")), fresh=False)
    prepare_workdir(DemoContext(workdir=ctx.workdir, config=get_preset("full")), fresh=True)
    assert not ctx.path("state", "x.done").exists()
    assert json.loads(ctx.path("demo.json").read_text())["preset"] == "full"


def test_config_validation() -> None:
    base = get_preset("small").to_dict()
    with pytest.raises(ValueError, match="heldout_fraction"):
        DemoConfig(**{**base, "heldout_fraction": 0.7})
    bad_stage = {**base["stage2"], "seq_length": 250, "parallel": {"context": 2}}
    with pytest.raises(ValueError, match="divisible by 2 \\* context"):
        DemoConfig(**{**base, "stage2": bad_stage})
    with pytest.raises(ValueError, match="does not fit"):
        DemoConfig(**{**base, "stage1": {**base["stage1"], "parallel": {"tensor": 4}}})
    with pytest.raises(ValueError, match="unknown demo preset"):
        get_preset("huge")
    assert get_preset("full").fingerprint() != get_preset("small").fingerprint()
    with pytest.raises(ValueError, match="--model"):
        DemoContext(workdir=Path("x"), config=get_preset("small"), llm_urls=["http://localhost:8000/v1"])


@pytest.mark.slow
def test_invalidated_steps_start_clean_but_the_resumed_step_keeps_partial_work(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    code = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )

    def step(name: str, resumable: bool = True) -> Step:
        return Step(
            name=name,
            title=name,
            command=lambda c: [sys.executable, "-c", code, str(c.path(name + ".out"))],
            clean=lambda c: [c.path(name + ".out")],
            resumable=resumable,
        )

    steps = [step("a"), step("b"), step("c", resumable=False)]
    _runner(ctx).run(steps)
    ctx.path("state", "a.done").unlink()  # a "was killed": it resumes, b and c start clean
    _runner(ctx).run(steps)
    assert ctx.path("a.out").read_text() == "xx"
    assert ctx.path("b.out").read_text() == "x"
    assert ctx.path("c.out").read_text() == "x"
    ctx.path("state", "c.done").unlink()  # a step that cannot resume always starts clean
    _runner(ctx).run(steps)
    assert ctx.path("c.out").read_text() == "x"


def test_error_lines_find_the_root_cause_in_a_torchrun_log(tmp_path: Path) -> None:
    from megatron_agentic.demo.console import error_lines

    log = tmp_path / "stage1.log"
    log.write_text(
        "$ torchrun ...\n"
        "[rank0]: Traceback (most recent call last):\n"
        "[rank0]: KeyError: 'decoder.layers.0.mlp' from model not in state dict\n"
        "[rank1]: KeyError: 'decoder.layers.0.mlp' from model not in state dict\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "  exitcode  : 1 (pid: 42)\n"
    )
    assert error_lines(log) == [
        "[rank0]: KeyError: 'decoder.layers.0.mlp' from model not in state dict",
        "[rank1]: KeyError: 'decoder.layers.0.mlp' from model not in state dict",
    ]
    assert error_lines(tmp_path / "missing.log") == []


@pytest.mark.slow
def test_every_log_starts_with_what_ran(tmp_path: Path) -> None:
    """Subprocess steps log their command first; in-process steps name the function (docs/demo.md says so)."""
    ctx = _ctx(tmp_path)

    def glue(c: DemoContext, log) -> dict:
        """Write the glue file."""
        c.path("glue.out").write_text("ok")
        log.write("glued\n")
        return {}

    _runner(ctx).run([_append_step("a"), Step(name="glue", title="glue", func=glue)])
    assert ctx.path("logs", "a.log").read_text().startswith("$ ")
    first = ctx.path("logs", "glue.log").read_text().splitlines()[0]
    assert first.startswith("# in-process step: ") and "glue" in first and "Write the glue file." in first
