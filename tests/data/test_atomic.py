"""data_tools.common.atomic: the one atomic-write helper (data tools, trainer, demo, converter)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from data_tools.common.atomic import (
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    fsync_path,
    remove_stale_temporaries,
    temporary_name,
)


def test_json_bytes_follow_the_options(tmp_path):
    obj = {"b": "é", "a": [1, 2]}
    p = atomic_write_json(tmp_path / "deep" / "x.json", obj)
    assert p.read_text(encoding="utf-8") == json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write_json(p, obj, sort_keys=True, ensure_ascii=True, indent=None)
    assert p.read_text(encoding="utf-8") == json.dumps(obj, sort_keys=True) + "\n"
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "x.txt"
    atomic_write_text(p, "old\n")
    with pytest.raises(RuntimeError), atomic_open(p) as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["x.txt"]


def test_target_is_invisible_until_the_block_ends_and_gets_default_permissions(tmp_path):
    p = tmp_path / "x.bin"
    with atomic_open(p, "wb", fsync=False) as f:
        f.write(b"\x00\x01")
        assert not p.exists()
        (tmp_name,) = [q.name for q in tmp_path.iterdir()]
        assert tmp_name.startswith(".x.bin.") and tmp_name.endswith(".tmp")
    assert p.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass


def test_fsync_path_takes_files_and_directories_and_names_a_missing_one(tmp_path):
    atomic_write_text(tmp_path / "x", "1")
    fsync_path(tmp_path / "x")
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "out[1].json"  # glob metacharacters in the name are matched literally
    mine = temporary_name(target)  # this process's own write in progress
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have this id
    dead = mine.with_name(mine.name.replace(f".{os.getpid()}.", f".{gone}.", 1))
    live = mine.with_name(mine.name.replace(f".{os.getpid()}.", ".1.", 1))  # pid 1 runs: a concurrent writer
    for path in (dead, live, mine):
        path.write_text("partial")  # a killed writer's leftover, and two writes in progress
    other = tmp_path / f".other.json.{gone}.abcd1234.tmp"  # another target's temporary, its writer gone too
    other.write_text("x")
    assert remove_stale_temporaries(target) == [dead]
    assert not dead.exists() and live.exists() and mine.exists() and other.exists()
    assert remove_stale_temporaries(target) == []
