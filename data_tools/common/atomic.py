"""Atomic file output: the one helper every writer of the repository uses (data tools, trainer, demo, converter).

A file is written under a temporary name in its own directory (``.{name}.{pid}.{random}.tmp``: hidden, unique per
writer, so two processes writing the same target never share a temporary file), flushed and fsynced, then renamed
over the target with :func:`os.replace`. Readers see the old file or the new one, never a partial one; an exception
(or ``KeyboardInterrupt``) removes the temporary file and leaves the target as it was.

The module is a leaf (standard library only) so that :mod:`data_tools` and :mod:`megatron_agentic` can both import
it without pulling in torch, Triton or an LLM client.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a directory (its entries: a rename or a new file in it) to disk, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary path next to ``path`` that an atomic write goes through (hidden and unique per call)."""
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of atomic writes of ``path`` whose writer process is gone (killed mid-write:
    ``kill -9`` or a node loss between the open and the rename); returns what was removed.

    Only names of :func:`temporary_name`'s form for this exact target are touched, and only when the process id in
    the name is not running (a concurrent writer's file is left alone). Process ids are this host's: on a shared
    file system call it only while holding the target's output lock (``data tokenize`` does), since a writer on
    another node has an id this host does not know.
    """
    target = Path(path)
    removed = []
    for tmp in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when the ``with`` block ends without an exception.

    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``. Parent directories are created. With ``fsync`` the data reach the
    disk before the rename (a crash of the machine cannot leave an empty target).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike,
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    default: Callable[[Any], Any] | None = None,
    fsync: bool = True,
) -> Path:
    """Write ``obj`` as JSON (``json.dumps`` with the given options, plus a final newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=default)
    return atomic_write_text(path, text + "\n", fsync=fsync)
