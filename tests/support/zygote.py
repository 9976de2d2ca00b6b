"""A pre-imported launcher for the slow tests: project commands run without paying the import each time.

Importing torch and megatron-core costs a process 5-8 s on the 2-core test machines, more than a tiny-MoE run
itself, and the suite starts well over a hundred such processes. The zygote is one server process (started on
first use, once per pytest session) that imports the training stack once and then ``fork``s a child per rank
for each request. A child takes the requested environment, working directory and ``argv`` and runs
``python -m MODULE`` (``megatron_agentic`` by default: the console script's code), a script or ``-c`` code with
its stdout/stderr in files (:func:`run`, :func:`run_command`, :func:`subprocess_run`, :func:`spawn`) or on the
streams of a shim command (:func:`shim_dir`: ``megatron-agentic`` on ``PATH`` for the shell of the docs tests).
With ``torchrun`` semantics the ranks get torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``) and its failure policy: when one rank fails the others are stopped and the run
reports 1. ``tests/ops/test_zygote.py`` checks it against real processes (identical training metrics).

Tests about the process itself (signals, torchrun's own handling, process groups, memory of a process, the
installed console script) keep starting real processes.

Protocol (JSON lines): the client writes ``{"module", "argv", "env", "cwd", "nproc", "torchrun", "out"}``; the
server answers ``{"pids": [...]}`` once the ranks are started and ``{"codes": [...]}`` when they have all ended.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PRELOAD = ("megatron_agentic.cli", "megatron_agentic.train", "megatron_agentic.training.loop")
"""Modules the server imports once; everything they import is shared by every child."""
STOP_GRACE_S = 5.0
"""After one rank fails, how long the others get between SIGTERM and SIGKILL."""
SOCKET_ENV = "MEGATRON_AGENTIC_TEST_ZYGOTE"
"""Where a shim finds the server's socket."""
SHIM = """
import json, os, signal, socket, sys

argv, module, nproc, torchrun = sys.argv[1:], "megatron_agentic", 1, False
if os.path.basename(sys.argv[0]) == "torchrun":  # torchrun [--opt[=v] ...] -m MODULE ARGS: as its workers
    torchrun, rest = True, list(argv)
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        name, _, value = opt.partition("=")
        if name in ("--standalone", "--no-python", "--no_python", "--run-path", "--run_path"):
            if name not in ("--standalone",):
                rest = []
                break
            continue
        value = value or (rest.pop(0) if rest else "")
        if name in ("--nproc-per-node", "--nproc_per_node"):
            nproc = int(value) if value.isdigit() else -1
    if nproc < 1 or rest[:1] != ["-m"] or len(rest) < 2:  # anything else: the real torchrun
        folder = os.path.dirname(os.path.abspath(sys.argv[0]))
        path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != folder)
        os.environ["PATH"] = path
        os.execvp("torchrun", ["torchrun", *argv])
    module, argv = rest[1], rest[2:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["MEGATRON_AGENTIC_TEST_ZYGOTE"])
socket.send_fds(sock, [b"F"], [0, 1, 2])
request = {"module": module, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "nproc": nproc,
           "torchrun": torchrun}
sock.sendall((json.dumps(request) + "\\n").encode())
stream = sock.makefile("rb")
pids = json.loads(stream.readline())["pids"]
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, lambda s, _: [os.killpg(p, s) for p in pids])
line = stream.readline()
codes = json.loads(line)["codes"] if line else [1]
code = codes[0] if not torchrun else (0 if not any(codes) else 1)
sys.exit(code if code >= 0 else 128 - code)
"""
"""The ``megatron-agentic`` and ``torchrun`` commands of :meth:`Zygote.shim_dir` (stdlib only: they start in
milliseconds). ``torchrun ... -m MODULE`` runs its ranks from the zygote; other torchrun forms run the real one."""


# ----------------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(
    module: str, argv: list[str], env: dict[str, str], cwd: str, out: Path | None, fds: list[int] | None
) -> None:
    """Runs in the forked child: become ``python -m MODULE ARGV``, exit with its code (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, like a process the test started itself
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        if fds is not None:  # a shim's own stdin/stdout/stderr
            for fd, passed in enumerate(fds):
                os.dup2(passed, fd)
        else:
            assert out is not None
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(out / f"{name}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
        sys.argv = [module, *argv] if module != "-c" else ["-c", *argv[1:]]
        if cwd not in sys.path:  # `python -m` puts the working directory first
            sys.path.insert(0, cwd)
        import torch

        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
        if module == "-c":
            exec(compile(argv[0], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif module.endswith(".py"):
            sys.path.insert(0, str(Path(module).resolve().parent))  # `python SCRIPT` puts the script's folder first
            runpy.run_path(module, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:  # what interpreter shutdown would do: join non-daemon threads, run atexit callbacks
            threading._shutdown()  # type: ignore[attr-defined]
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _launch(req: dict[str, Any], fds: list[int] | None = None) -> list[int]:
    nproc = int(req["nproc"])
    port = str(_free_port())
    pids = []
    for rank in range(nproc):
        env = dict(req["env"])
        if req["torchrun"]:
            env.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc),
                GROUP_RANK="0",
            )
        out = None
        if fds is None:
            out = Path(req["out"]) / f"rank{rank}"
            out.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req["module"], list(req["argv"]), env, req["cwd"], out, fds)
        pids.append(pid)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@dataclass(eq=False)
class _Job:
    """One request's ranks, and where to send their exit codes."""

    pids: list[int]
    reply: Callable[[dict[str, Any]], None]
    codes: dict[int, int] = field(default_factory=dict)
    kill_at: float | None = None

    def ended(self, pid: int, code: int) -> bool:
        """Record a rank's exit; when one fails, stop the others (torchrun's policy). True when all have ended."""
        self.codes[pid] = code
        if code != 0 and self.kill_at is None and len(self.codes) < len(self.pids):
            for p in self.pids:
                if p not in self.codes:
                    _signal(p, signal.SIGTERM)
            self.kill_at = time.monotonic() + STOP_GRACE_S
        return len(self.codes) == len(self.pids)

    def tick(self) -> None:
        """SIGKILL the ranks that outlived the grace period."""
        if self.kill_at is not None and time.monotonic() > self.kill_at:
            for p in self.pids:
                if p not in self.codes:
                    _signal(p, signal.SIGKILL)
            self.kill_at = None


def _reply_line(stream: Any) -> Callable[[dict[str, Any]], None]:
    def reply(msg: dict[str, Any]) -> None:
        try:
            if isinstance(stream, socket.socket):
                stream.sendall((json.dumps(msg) + "\n").encode())
            else:
                stream.write(json.dumps(msg) + "\n")
                stream.flush()
        except OSError:  # the shim went away; its ranks still run to the end
            pass

    return reply


def _accept_shim(listener: socket.socket) -> tuple[dict[str, Any], list[int], socket.socket]:
    """A shim's request: its stdin/stdout/stderr (passed as file descriptors), then one JSON line."""
    conn, _ = listener.accept()
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return json.loads(data), list(fds), conn


def serve() -> None:
    """The server loop (``python -m tests.support.zygote [SOCKET]``): requests from the test process on stdin and,
    with a socket path, from :data:`SHIM` commands (``megatron-agentic`` run by a shell in the docs tests)."""
    import warnings

    warnings.simplefilter("ignore")  # megatron-core's import warnings; each child's own warnings are its business
    for name in PRELOAD:
        __import__(name)
    warnings.resetwarnings()
    listener = None
    if len(sys.argv) > 1:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sys.argv[1])
        listener.listen(8)
    out = _reply_line(sys.stdout)
    out({"ready": os.getpid()})
    stdin = sys.stdin.buffer.raw  # unbuffered: select() sees every line
    pending = b""
    jobs: dict[int, _Job] = {}  # pid -> its job
    while True:
        readable, _, _ = select.select([stdin, *([listener] if listener else [])], [], [], 0.02)
        if stdin in readable:
            chunk = os.read(stdin.fileno(), 1 << 16)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    job = _Job(_launch(json.loads(line)), out)
                    out({"pids": job.pids})
                    jobs.update({p: job for p in job.pids})
        if listener is not None and listener in readable:
            req, fds, conn = _accept_shim(listener)
            try:
                job = _Job(_launch(req, fds), _reply_line(conn))
            finally:
                for fd in fds:
                    os.close(fd)
            job.reply({"pids": job.pids})
            jobs.update({p: job for p in job.pids})
        while jobs:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            job = jobs.pop(pid, None)
            if job is not None and job.ended(pid, os.waitstatus_to_exitcode(status)):
                job.reply({"codes": [job.codes[p] for p in job.pids]})
        for job in set(jobs.values()):
            job.tick()


# ----------------------------------------------------------------------------------------------------- client


class Zygote:
    """The client side: starts the server on first use and runs one request at a time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.socket_path: str | None = None
        self._buffer = b""

    def _start(self) -> subprocess.Popen:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(key, None)
        self.socket_path = os.path.join(tempfile.mkdtemp(prefix="zygote-"), "sock")
        self._buffer = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.zygote", self.socket_path],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(os.path.dirname(self.socket_path), "server.log"), "wb"),  # noqa: SIM115
        )
        self._read(timeout=300)  # {"ready": pid}
        atexit.register(self.close)
        return self.proc

    def _read(self, timeout: float | None) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        end = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = None if end is None else max(0.0, end - time.monotonic())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"the test zygote died (exit {self.proc.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def shim_dir(self) -> tuple[str, dict[str, str]]:
        """A folder with ``megatron-agentic`` and ``torchrun`` commands served by the zygote, and the environment
        they need: put the folder first on ``PATH`` of a shell whose commands should start without the import
        cost."""
        self._start()
        assert self.socket_path is not None
        folder = os.path.dirname(self.socket_path)
        for name in ("megatron-agentic", "torchrun"):
            shim = os.path.join(folder, name)
            if not os.path.exists(shim):
                with open(shim, "w") as f:
                    f.write(f"#!{sys.executable} -IS\n" + SHIM)
                os.chmod(shim, 0o755)
        return folder, {SOCKET_ENV: self.socket_path}

    def run(
        self,
        module: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        nproc: int,
        torchrun: bool,
        out: Path,
        timeout: float,
    ) -> subprocess.CompletedProcess:
        """``python -m MODULE ARGV`` on ``nproc`` ranks; like ``subprocess.run(..., capture_output=True)``."""
        proc = self._start()
        assert proc.stdin is not None
        request = {"module": module, "argv": argv, "env": env, "cwd": str(cwd), "nproc": nproc, "out": str(out)}
        request["torchrun"] = torchrun
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        pids = self._read(timeout=60)["pids"]
        try:
            codes = self._read(timeout=timeout)["codes"]
        except TimeoutError:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            self._read(timeout=60)
            raise subprocess.TimeoutExpired(["python", "-m", module, *argv], timeout) from None
        stdout = "".join((out / f"rank{r}" / "stdout.txt").read_text(errors="replace") for r in range(nproc))
        stderr = "".join((out / f"rank{r}" / "stderr.txt").read_text(errors="replace") for r in range(nproc))
        shutil.rmtree(out, ignore_errors=True)
        code = codes[0] if not torchrun else (0 if not any(codes) else 1)
        return subprocess.CompletedProcess(["python", "-m", module, *argv], code, stdout, stderr)

    def close(self) -> None:
        """Stop the server (at exit)."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.socket_path is not None:
            shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)
            self.socket_path = None


_ZYGOTE = Zygote()
_RUNS = iter(range(1 << 62))


def run(
    argv: list[str],
    *,
    module: str = "megatron_agentic",
    nproc: int = 1,
    torchrun: bool | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 400,
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGV`` (default: the ``megatron-agentic`` CLI) on ``nproc`` ranks from the pre-imported
    server (see the module docstring).

    ``env`` replaces the environment (default: this process's, without rank variables, ``OMP_NUM_THREADS=1``).
    ``torchrun`` (default: ``nproc > 1``) gives the ranks torchrun's environment and its exit code (1 when any rank
    failed). ``MODULE`` may also be a script path (``x.py``) or ``-c`` with the code as the first argument.
    Returns a :class:`subprocess.CompletedProcess` with the ranks' stdout/stderr concatenated in rank order."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["OMP_NUM_THREADS"] = "1"
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"zygote-{os.getpid()}" / f"run{next(_RUNS)}"
    torchrun = nproc > 1 if torchrun is None else torchrun
    return _ZYGOTE.run(
        module, list(argv), env=dict(env), cwd=cwd, nproc=nproc, torchrun=torchrun, out=out, timeout=timeout
    )


def spawn(fn: Callable[..., Any], args: tuple = (), nprocs: int = 1, *, timeout: float = 600) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)`` from the pre-imported server: ``fn(rank, *args)`` in each
    of ``nprocs`` processes (``fn`` importable by module and name, ``args`` picklable); raises AssertionError with
    the failing rank's output when one fails."""
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump((fn.__module__, fn.__qualname__, args), f)
    try:
        out = run([f.name], module="tests.support.zygote_call", nproc=nprocs, torchrun=True, timeout=timeout)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise AssertionError(f"{fn.__qualname__} failed on a rank:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")


def shim_dir() -> tuple[str, dict[str, str]]:
    """``(folder, environment)`` of the ``megatron-agentic`` shim (see :meth:`Zygote.shim_dir`)."""
    return _ZYGOTE.shim_dir()


def subprocess_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=, env=, capture_output=True, text=True, timeout=)`` with Python commands served
    by the zygote (see :func:`run_command`); any other command, or other keyword arguments, run as usual."""
    plain = {k: v for k, v in kwargs.items() if k not in ("capture_output", "text")}
    if kwargs.get("capture_output") and kwargs.get("text") and set(plain) <= {"cwd", "env", "timeout"}:
        try:
            parse_command(list(cmd))
        except ValueError:
            pass
        else:
            return run_command(list(cmd), cwd=Path(plain.get("cwd") or os.getcwd()), env=plain.get("env"),
                               timeout=plain.get("timeout") or 600)  # fmt: skip
    return subprocess.run(cmd, **kwargs)


def parse_command(cmd: list[str]) -> tuple[str, list[str], int, bool]:
    """``(module, args, nproc, torchrun)`` of ``python [-m torch.distributed.run --nproc-per-node=N ...] -m MODULE
    ARGS``, ``python SCRIPT.py ARGS`` or ``python -c CODE ARGS`` (module ``-c``, the code first in ``args``);
    ValueError for any other command."""
    rest = list(cmd[1:])
    nproc = 1
    torchrun = rest[:2] == ["-m", "torch.distributed.run"]
    if torchrun:
        rest = rest[2:]
        while rest and rest[0].startswith("--"):
            opt = rest.pop(0)
            if opt.startswith("--nproc-per-node") or opt.startswith("--nproc_per_node"):
                nproc = int(opt.split("=", 1)[1] if "=" in opt else rest.pop(0))
            elif "=" not in opt and opt not in ("--standalone", "--no-python", "--no_python"):
                rest.pop(0)  # the option's value
    if rest[:1] in (["-m"], ["-c"]) and len(rest) > 1:
        return (rest[1], rest[2:], nproc, torchrun) if rest[0] == "-m" else ("-c", rest[1:], nproc, torchrun)
    if rest and rest[0].endswith(".py"):
        return rest[0], rest[1:], nproc, torchrun
    raise ValueError(f"not a python -m / script command: {cmd}")


def run_command(
    cmd: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 400
) -> subprocess.CompletedProcess:
    """A drop-in for ``subprocess.run(cmd, cwd=, env=, capture_output=True, text=True, timeout=)`` for a Python
    command (``python -m MODULE ...``, ``python SCRIPT.py ...``, optionally under ``torch.distributed.run``)."""
    module, args, nproc, torchrun = parse_command(cmd)
    return run(args, module=module, nproc=nproc, torchrun=torchrun, env=env, cwd=cwd, timeout=timeout)


if __name__ == "__main__":
    serve()
