"""A small, resumable step runner: one log file and one done-marker per step, rich progress, per-step timing.

Each step is either a subprocess (one of the project's own CLIs) or a short in-process function. A finished
step leaves ``WORKDIR/state/STEP.done`` (JSON with its timing); a rerun skips it. When a step has to run again,
the markers of every later step are removed, so nothing downstream of changed data is reused. A failing step
raises :class:`StepFailed` naming the step and its log.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from data_tools.common.atomic import atomic_write_json
from megatron_agentic.demo.config import DemoConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package lives in."""

WORKDIR_MARKER = "demo.json"
"""File that identifies a demo workdir and records the configuration it was made with."""


@dataclass
class DemoContext:
    """Everything a step needs to build its command: the workdir, the configuration and the LLM settings."""

    workdir: Path
    """Root of all demo outputs (absolute)."""
    config: DemoConfig
    """The demo configuration."""
    llm_urls: list[str] = field(default_factory=list)
    """OpenAI-compatible servers; empty means offline template/scripted backends."""
    model: str | None = None
    """Model name on the LLM server."""
    python: str = sys.executable
    """Interpreter used for every subprocess."""

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        if self.llm_urls and not self.model:
            raise ValueError("--llm-url needs --model NAME (the model served there)")

    def path(self, *parts: str) -> Path:
        """A path inside the workdir."""
        return self.workdir.joinpath(*parts)

    @property
    def online(self) -> bool:
        """True when synthesis talks to an LLM server."""
        return bool(self.llm_urls)


@dataclass(frozen=True)
class Step:
    """One pipeline step: a subprocess ``command`` or an in-process ``func`` (exactly one of them)."""

    name: str
    """Unique short name; also the log file (``logs/NAME.log``) and marker (``state/NAME.done``) name."""
    title: str
    """What the step does, for the progress display and the report."""
    command: Callable[[DemoContext], list[str]] | None = None
    """Builds the argv of the subprocess."""
    func: Callable[[DemoContext, TextIO], dict | None] | None = None
    """In-process function writing its log to the given stream; may return facts stored in the marker."""
    outputs: Callable[[DemoContext], list[Path]] | None = None
    """Files the step must have written (non-empty); checked after it exits 0."""
    modules: tuple[str, ...] = ()
    """Project modules the step needs; a missing one fails the step with a clear message before it starts."""
    progress: Callable[[DemoContext], tuple[int, int] | None] | None = None
    """Optional probe returning ``(done, total)`` while the step runs (e.g. training iterations)."""
    env: Callable[[DemoContext], dict[str, str]] | None = None
    """Extra environment variables of the subprocess."""
    clean: Callable[[DemoContext], list[Path]] | None = None
    """Files/folders the step (re)creates. They are deleted before it runs when an earlier step ran in the same
    invocation (its inputs changed) or when the step is not ``resumable``; otherwise they are kept so the tool
    resumes its own partial work after a kill."""
    resumable: bool = True
    """Whether the tool behind the step resumes from its partial outputs (False: always start it clean)."""

    def __post_init__(self) -> None:
        if (self.command is None) == (self.func is None):
            raise ValueError(f"step {self.name!r} needs exactly one of command or func")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"invalid step name {self.name!r}")


class StepFailed(RuntimeError):
    """A step exited non-zero, raised, timed out or did not write its outputs."""

    def __init__(self, step: str, log: Path, reason: str, tail: str = "") -> None:
        self.step, self.log, self.reason, self.tail = step, log, reason, tail
        super().__init__(f"step {step!r} failed: {reason} (log: {log})")


@dataclass
class StepResult:
    """Timing and status of one step in this run."""

    name: str
    title: str
    seconds: float
    cached: bool
    info: dict = field(default_factory=dict)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def prepare_workdir(ctx: DemoContext, fresh: bool) -> None:
    """Create (or with ``fresh`` empty) the workdir; refuse to reuse one made with another configuration.

    ``--fresh`` only deletes a folder that is empty or carries the demo's own marker file, never an arbitrary one.
    """
    root = ctx.workdir
    marker = root / WORKDIR_MARKER
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise ValueError(f"{root} exists, is not empty and is not a demo workdir; choose another --workdir")
    if fresh and root.exists():
        shutil.rmtree(root)
    fingerprint = ctx.config.fingerprint()
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("fingerprint") != fingerprint or previous.get("online") != ctx.online:
            raise ValueError(
                f"{root} was made with another demo configuration ({previous.get('preset')}, "
                f"fingerprint {previous.get('fingerprint')}); rerun with --fresh or another --workdir"
            )
        return
    for sub in ("logs", "state"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        marker,
        {
            "preset": ctx.config.name,
            "fingerprint": fingerprint,
            "online": ctx.online,
            "config": ctx.config.to_dict(),
        },
        sort_keys=True,
        ensure_ascii=True,
    )


class Runner:
    """Runs steps in order with resume markers, logs, a rich progress display and per-step timing."""

    def __init__(self, ctx: DemoContext, console: Console | None = None, poll_s: float = 0.5) -> None:
        self.ctx = ctx
        self.console = console or Console()
        self.poll_s = poll_s
        self.logs = ctx.path("logs")
        self.state = ctx.path("state")

    def marker(self, step: Step) -> Path:
        """Done-marker path of ``step``."""
        return self.state / f"{step.name}.done"

    def log_path(self, step: Step) -> Path:
        """Log file of ``step``."""
        return self.logs / f"{step.name}.log"

    def run(self, steps: Sequence[Step]) -> list[StepResult]:
        """Run ``steps`` in order, skipping finished ones; raises :class:`StepFailed` at the first failure."""
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate step names in {names}")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        results: list[StepResult] = []
        invalidated = False
        columns = (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            overall = progress.add_task("demo", total=len(steps))
            for index, step in enumerate(steps):
                marker = self.marker(step)
                if marker.exists() and not invalidated:
                    done = json.loads(marker.read_text(encoding="utf-8"))
                    results.append(StepResult(step.name, step.title, done["seconds"], True, done.get("info", {})))
                    progress.console.print(
                        f"[dim]  skip  {step.name:<26} {step.title} (done earlier)[/dim]", soft_wrap=True
                    )
                    progress.advance(overall)
                    continue
                if invalidated or not step.resumable:
                    self._clean(step)
                if not invalidated:
                    # Everything after a step that runs again must run again too (the first one may resume).
                    for later in steps[index:]:
                        self.marker(later).unlink(missing_ok=True)
                    invalidated = True
                progress.update(overall, description=f"demo: {step.name}")
                task = progress.add_task(step.title, total=None)
                start = time.monotonic()
                try:
                    info = self._run_step(step, progress, task)
                finally:
                    progress.remove_task(task)
                seconds = time.monotonic() - start
                atomic_write_json(
                    marker,
                    {"step": step.name, "seconds": round(seconds, 3), "finished": time.time(), "info": info},
                    sort_keys=True,
                    ensure_ascii=True,
                )
                results.append(StepResult(step.name, step.title, seconds, False, info))
                progress.console.print(
                    f"  [green]done[/green]  {step.name:<26} {step.title} [dim]{seconds:.1f}s[/dim]", soft_wrap=True
                )
                progress.advance(overall)
        return results

    def _clean(self, step: Step) -> None:
        if step.clean is None:
            return
        for path in step.clean(self.ctx):
            path = Path(path)
            if not path.resolve().is_relative_to(self.ctx.workdir):
                raise ValueError(f"step {step.name}: refusing to delete {path} outside the workdir")
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _run_step(self, step: Step, progress: Progress, task: int) -> dict:
        log = self.log_path(step)
        for module in step.modules:
            try:
                spec = importlib.util.find_spec(module)
            except ModuleNotFoundError:
                spec = None
            # A folder without __init__.py (a component still being written) is a namespace package: no origin.
            found = spec is not None and spec.origin not in (None, "namespace")
            if not found:
                log.write_text(f"module {module} is not in this checkout\n", encoding="utf-8")
                raise StepFailed(step.name, log, f"needs {module}, which is not in this checkout")
        if step.func is not None:
            return self._run_func(step, log)
        return self._run_command(step, log, progress, task)

    def _run_func(self, step: Step, log: Path) -> dict:
        with open(log, "w", encoding="utf-8") as f:
            # no command line to repeat: the first line names the function that ran (and what it does)
            fn = step.func
            doc = (fn.__doc__ or "").strip().splitlines()
            f.write(f"# in-process step: {fn.__module__}.{fn.__qualname__}{' - ' + doc[0] if doc else ''}\n")
            try:
                info = step.func(self.ctx, f) or {}
            except Exception as exc:  # report any failure of the step with its traceback in its log
                f.write(traceback.format_exc())
                f.flush()
                raise StepFailed(step.name, log, f"{type(exc).__name__}: {exc}", _tail(log)) from exc
        self._check_outputs(step, log)
        return info

    def _run_command(self, step: Step, log: Path, progress: Progress, task: int) -> dict:
        argv = step.command(self.ctx)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # Subprocesses run in the workdir: keep this checkout importable even when it is not pip-installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        if step.env is not None:
            env.update(step.env(self.ctx))
        timeout = self.ctx.config.step_timeout_s
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"$ {shlex.join(argv)}\n")
            f.flush()
            proc = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=self.ctx.workdir, start_new_session=True
            )
            start = time.monotonic()
            try:
                while True:
                    try:
                        proc.wait(timeout=self.poll_s)  # returns as soon as the step exits
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if step.progress is not None:
                        state = step.progress(self.ctx)
                        if state is not None:
                            progress.update(task, completed=state[0], total=state[1])
                    if time.monotonic() - start > timeout:
                        _terminate(proc)
                        raise StepFailed(step.name, log, f"timed out after {timeout}s", _tail(log))
            except BaseException:
                _terminate(proc)
                raise
        if proc.returncode != 0:
            raise StepFailed(step.name, log, f"exit status {proc.returncode}", _tail(log))
        self._check_outputs(step, log)
        return {"command": shlex.join(argv)}

    def _check_outputs(self, step: Step, log: Path) -> None:
        if step.outputs is None:
            return
        paths = [Path(p) for p in step.outputs(self.ctx)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise StepFailed(step.name, log, f"finished but did not write {', '.join(missing)}", _tail(log))
        empty = [str(p) for p in paths if p.is_file() and p.stat().st_size == 0]
        if empty:
            raise StepFailed(step.name, log, f"finished but wrote no records to {', '.join(empty)}", _tail(log))


def _terminate(proc: subprocess.Popen) -> None:
    """Stop a step's process group (the subprocess and its children, e.g. torchrun's ranks)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
