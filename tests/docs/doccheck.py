"""Executable documentation: collect the shell blocks of the docs, run the runnable ones, check the rest.

Every fenced ```` ```bash ```` block in README.md, docs/*.md and kernels/README.md is either run as written
(in order, per document, inside a scratch copy of the repository) or marked on the line just above its fence:

    <!-- docs-check: skip gpu -->        needs a CUDA GPU
    <!-- docs-check: skip server -->     needs an LLM server
    <!-- docs-check: skip slurm -->      needs a Slurm cluster
    <!-- docs-check: skip docker -->     needs docker / an image build
    <!-- docs-check: skip long -->       takes minutes (benchmarks, the full demo, the whole test suite)
    <!-- docs-check: skip synopsis -->   a usage synopsis with placeholders (``[--flag N]``, ``FILE``)

A skipped block is still checked statically: every ``megatron-agentic`` subcommand it names exists and accepts
the ``--flags`` it uses (read from its ``--help``), every script it runs accepts its flags, and every repository
path it names (``examples/...``, ``benchmarks/...``) exists. Blocks in other languages (python, yaml, json, plain
text) are illustrations and are not run.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import zygote

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = ("README.md", "docs/*.md", "kernels/README.md")
SKIP_REASONS = ("gpu", "server", "slurm", "docker", "long", "synopsis")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARK = re.compile(r"<!--\s*docs-check:\s*(\w+)\s*([\w-]*)\s*-->")
REPO_PATH = re.compile(r"^(?:examples|benchmarks|kernels|docs|megatron_agentic|data_tools|tests)/[\w./-]+$")
FLAG = re.compile(r"^--[a-z][\w-]*")


@dataclass
class Block:
    """One fenced shell block of a document."""

    doc: str
    line: int  # 1-based line of the opening fence
    text: str
    skip: str | None = None  # None: run it; else one of SKIP_REASONS

    @property
    def where(self) -> str:
        """``file:line`` of the block's opening fence."""
        return f"{self.doc}:{self.line}"


@dataclass
class DocCheckError:
    """A problem found in one block."""

    where: str
    message: str


@dataclass
class Result:
    """Outcome of running one block."""

    block: Block
    returncode: int
    output: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def doc_paths(repo: Path = REPO) -> list[Path]:
    """The documents that are checked, in a stable order."""
    out: list[Path] = []
    for pattern in DOC_FILES:
        out.extend(sorted(repo.glob(pattern)))
    return out


def parse_blocks(path: Path, repo: Path = REPO) -> list[Block]:
    """The ``bash``/``sh``/``shell`` blocks of one markdown file with their marks.

    Raises ValueError for an unknown mark or an unterminated fence, naming the file and line.
    """
    rel = str(path.relative_to(repo))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang, indent = i, m.group(2), m.group(1)
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[j]):
            j += 1
        if j >= len(lines):
            raise ValueError(f"{rel}:{start + 1}: unterminated code fence")
        if lang in ("bash", "sh", "shell", "console"):
            skip = None
            prev = lines[start - 1] if start > 0 else ""
            mark = MARK.search(prev)
            if mark:
                verb, reason = mark.group(1), mark.group(2)
                if verb != "skip" or reason not in SKIP_REASONS:
                    raise ValueError(
                        f"{rel}:{start}: unknown docs-check mark {mark.group(0)!r} (use skip {SKIP_REASONS})"
                    )
                skip = reason
            body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[start + 1 : j])
            blocks.append(Block(doc=rel, line=start + 1, text=body, skip=skip))
        i = j + 1
    return blocks


def logical_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined and comments dropped."""
    out: list[str] = []
    cur = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        stripped = cur.strip()
        if stripped and not stripped.startswith("#"):
            out.append(stripped)
        cur = ""
    return out


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def _commands(line: str) -> list[list[str]]:
    """Simple commands of a line: split at ``&&``/``;``/``|``, ``$(``...``)`` opened, env assignments dropped."""
    line = line.replace("$(", " ; ").replace(")", " ; ")
    words = _split(line)
    cmds: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", ";", "||", "|", "&"):
            cmds.append([])
        elif not cmds[-1] and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            continue  # VAR=value prefix
        else:
            cmds[-1].append(w)
    return [c for c in cmds if c]


@functools.cache
def _help_text(argv: tuple[str, ...], cwd: str) -> str:
    env = dict(os.environ, PYTHONPATH=cwd, MEGATRON_AGENTIC_FORCE_CPU="1")
    try:  # a Python command: from the pre-imported test launcher (same code, no interpreter start-up)
        proc = zygote.run_command(list(argv) + ["--help"], cwd=Path(cwd), env=env, timeout=120)
    except ValueError:
        proc = subprocess.run(list(argv) + ["--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def _cli_argv(cmd: list[str]) -> tuple[list[str], list[str]] | None:
    """(argv prefix that names the subcommand, remaining args) for a megatron-agentic / script invocation."""
    py = sys.executable
    if cmd[0] in ("megatron-agentic", ".venv/bin/megatron-agentic"):
        rest = cmd[1:]
        prefix = [py, "-m", "megatron_agentic"]
    elif cmd[0] in ("torchrun",) and "-m" in cmd:
        k = cmd.index("-m")
        if cmd[k + 1] != "megatron_agentic":
            return None
        prefix, rest = [py, "-m", "megatron_agentic"], cmd[k + 2 :]
    elif cmd[0] in ("python", "python3", ".venv/bin/python") and len(cmd) > 1:
        if cmd[1] == "-m":
            prefix, rest = [py, "-m", cmd[2]], cmd[3:]
            if cmd[2] != "megatron_agentic":
                # python -m module [sub] ...: a module with subcommands takes the first positional as one
                if (
                    rest
                    and not rest[0].startswith("-")
                    and cmd[2] in ("data_tools.indexed.tokenizers", "megatron_agentic.recipes")
                ):
                    return [*prefix, rest[0]], rest[1:]
                return prefix, rest
        elif cmd[1].endswith(".py"):
            return [py, cmd[1]], cmd[2:]
        else:
            return None
    else:
        return None
    from megatron_agentic.cli import COMMANDS

    if not rest or rest[0] not in COMMANDS:
        return prefix, rest
    group, rest = rest[0], rest[1:]
    subs = COMMANDS[group]
    if None in subs:
        return [*prefix, group], rest
    if not rest or rest[0] not in subs:
        raise KeyError(f"`megatron-agentic {group}` has no subcommand {rest[:1]} (known: {sorted(subs)})")
    return [*prefix, group, rest[0]], rest[1:]


def static_check(block: Block, repo: Path = REPO) -> list[DocCheckError]:
    """Check that the commands, flags and repository files a (skipped) block names exist."""
    errors: list[DocCheckError] = []
    for line in logical_lines(block.text):
        for cmd in _commands(line):
            for word in cmd:
                token = word.split("=", 1)[-1]
                if REPO_PATH.match(token) and not any(ch in token for ch in "*?$") and not (repo / token).exists():
                    errors.append(DocCheckError(block.where, f"`{line}` names {token}, which does not exist"))
            try:
                parsed = _cli_argv(cmd)
            except KeyError as exc:
                errors.append(DocCheckError(block.where, f"`{line}`: {exc.args[0]}"))
                continue
            if parsed is None:
                if cmd[0] in ("bash", "sbatch") and len(cmd) > 1:
                    script = next((w for w in cmd[1:] if not w.startswith("-")), None)
                    if script and "/" in script and not (repo / script).exists() and not Path(script).is_absolute():
                        errors.append(DocCheckError(block.where, f"`{line}`: script {script} does not exist"))
                continue
            argv, rest = parsed
            if argv[1:2] == [str(Path(argv[1]))] and argv[1].endswith(".py") and not (repo / argv[1]).exists():
                errors.append(DocCheckError(block.where, f"`{line}`: script {argv[1]} does not exist"))
                continue
            flags = {FLAG.match(w).group(0) for w in rest if FLAG.match(w)}
            if not flags:
                continue
            text = _help_text(tuple(argv), str(repo))
            for flag in sorted(flags):
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    errors.append(DocCheckError(block.where, f"`{line}`: {' '.join(argv[1:])} has no flag {flag}"))
    return errors


def scratch_copy(dest: Path, repo: Path = REPO) -> Path:
    """Copy the repository's tracked and non-ignored files (a fresh clone's content, edits included) to ``dest``."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    )
    for rel in filter(None, proc.stdout.decode().split("\0")):
        src = repo / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def run_block(block: Block, cwd: Path, timeout: float, preimported: bool = True) -> Result:
    """Run one block with bash (``set -euo pipefail``) in ``cwd``, the running interpreter's venv first on PATH.

    ``preimported``: the block's ``megatron-agentic`` commands are served by the test launcher
    (:mod:`tests.support.zygote`: the same CLI code, argv, environment, working directory and stdin/stdout/stderr,
    forked from a process that imported torch and megatron-core once; the modules are this checkout's, which the
    scratch copy duplicates). Other commands (``python -m ...``, ``torchrun``, ``make``) start as usual."""
    import time

    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    path = f"{venv_bin}:{env.get('PATH', '')}"
    if preimported:
        shim_dir, shim_env = zygote.shim_dir()
        path = f"{shim_dir}:{path}"
        env.update(shim_env)
    env.update(
        PATH=path,
        PYTHONPATH=str(cwd),
        OMP_NUM_THREADS="1",
        MEGATRON_AGENTIC_FORCE_CPU="1",
        TOKENIZERS_PARALLELISM="false",
    )
    # `source .venv/bin/activate` in a block: give the scratch copy a .venv that is the running one
    venv_root = Path(sys.executable).parent.parent
    if not (cwd / ".venv").exists():
        (cwd / ".venv").symlink_to(venv_root)
    script = "set -euo pipefail\n" + block.text + "\n"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        partial = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr)]
        out = "".join(partial) + f"\ntimed out after {timeout:.0f} s\n"
    return Result(block=block, returncode=rc, output=out, seconds=time.perf_counter() - t0)
