"""The one console script, ``megatron-agentic``, with subcommand groups.

Every subcommand lives in its own module that exposes ``main(argv: list[str] | None) -> int`` and is
imported lazily, so ``megatron-agentic data tokenize`` does not import torch and a broken optional
component never breaks the others. Each subcommand is also reachable as ``python -m MODULE``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

# group -> {subcommand -> (module, one-line help)}; a group with a single None key takes no subcommand.
COMMANDS: dict[str, dict[str | None, tuple[str, str]]] = {
    "train": {None: ("megatron_agentic.train", "train a model with megatron-core (launch with torchrun)")},
    "sft-eval": {None: ("megatron_agentic.sft_eval", "masked SFT loss of a checkpoint on SFT datasets (eval only)")},
    "plan": {None: ("megatron_agentic.planner", "validate a parallel layout and estimate memory/time")},
    "demo": {None: ("megatron_agentic.demo", "run the whole Agentic CPT pipeline end to end on CPU")},
    "experiment": {
        None: (
            "megatron_agentic.experiment",
            "the CPT data ablation: arms, identical SFT, held-out loss, agent metrics",
        )
    },
    "doctor": {None: ("megatron_agentic.doctor", "report GPUs, NCCL, TE, Apex, DALI, Triton and code paths")},
    "convert": {
        "hf-to-mcore": ("megatron_agentic.convert.hf_to_mcore", "convert a HF Qwen3-MoE checkpoint to megatron"),
        "mcore-to-hf": ("megatron_agentic.convert.mcore_to_hf", "convert a megatron checkpoint to HF safetensors"),
    },
    "data": {
        "tokenize": ("data_tools.indexed.tokenize_dataset", "tokenize JSONL/Parquet into megatron .bin/.idx"),
        "merge": ("data_tools.indexed.merge", "concatenate indexed datasets in order"),
        "inspect": ("data_tools.indexed.inspect_dataset", "validate and summarise an indexed dataset"),
        "memory": ("data_tools.synthesis.memory", "build entity-anchored knowledge memory from a corpus"),
        "fas": ("data_tools.synthesis.fas.cli", "first-order action synthesis (planning + reasoning)"),
        "rollout": ("data_tools.synthesis.rollout", "roll out agent trajectories in the offline environment"),
        "has": ("data_tools.synthesis.has.cli", "higher-order action synthesis from trajectories"),
        "has-probe": ("data_tools.synthesis.has.probe", "tell probe: can a classifier find the original HAS option?"),
        "mix": ("data_tools.indexed.mix", "compute stage blends from real token counts"),
        "sft": ("data_tools.synthesis.sft", "trajectories / chat JSONL -> indexed dataset + per-token loss mask"),
    },
}


def _usage() -> str:
    lines = ["usage: megatron-agentic COMMAND [SUBCOMMAND] [ARGS...]", "", "commands:"]
    for group, subs in COMMANDS.items():
        for sub, (_, help_text) in subs.items():
            name = group if sub is None else f"{group} {sub}"
            lines.append(f"  {name:<22} {help_text}")
    lines.append("")
    lines.append("Run `megatron-agentic COMMAND [SUBCOMMAND] --help` for a command's options.")
    return "\n".join(lines)


def resolve(argv: Sequence[str]) -> tuple[str, str, list[str]]:
    """Map ``argv`` to ``(display name, module, remaining args)``; raises ``SystemExit`` on unknown commands."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        raise SystemExit(0 if argv else 2)
    group, rest = argv[0], list(argv[1:])
    if group not in COMMANDS:
        print(f"megatron-agentic: unknown command {group!r}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    subs = COMMANDS[group]
    if None in subs:
        return group, subs[None][0], rest
    if not rest or rest[0] in ("-h", "--help"):
        names = ", ".join(str(s) for s in subs)
        print(f"usage: megatron-agentic {group} {{{names}}} [ARGS...]", file=sys.stderr if not rest else sys.stdout)
        raise SystemExit(2 if not rest else 0)
    sub = rest[0]
    if sub not in subs:
        print(
            f"megatron-agentic {group}: unknown subcommand {sub!r} (choose from {', '.join(map(str, subs))})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return f"{group} {sub}", subs[sub][0], rest[1:]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``megatron-agentic`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name, module_name, rest = resolve(argv)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(
                f"megatron-agentic {name}: not implemented in this version ({module_name} is missing)", file=sys.stderr
            )
            return 3
        raise
    try:
        result = module.main(rest)
    except (OSError, UnicodeError) as exc:  # one error path for every command: one line, no traceback (issue 25)
        print(f"megatron-agentic {name}: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    return int(result or 0)


def describe_error(exc: BaseException) -> str:
    """One line for an I/O or decoding error: what failed, on which file (disk full and permissions said plainly)."""
    import errno

    if isinstance(exc, UnicodeDecodeError):
        return f"cannot decode input as {exc.encoding} (byte {exc.start}): {exc.reason}; is it a text file?"
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = {
            errno.ENOSPC: "disk full (no space left on device)",
            errno.EDQUOT: "disk quota exceeded",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system",
            errno.EISDIR: "is a directory, expected a file",
            errno.ENOTDIR: "a path component is a file, not a directory",
            errno.ENOENT: "no such file or directory",
            errno.EFBIG: "file too large (file size limit reached)",
        }.get(exc.errno, exc.strerror or str(exc))
        if exc.errno == errno.EEXIST and exc.filename is not None and not os.path.isdir(exc.filename):
            what = "exists and is a file, not a directory"
        return f"{where}: {what}" if where else f"{what} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
