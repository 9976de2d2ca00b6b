"""A settings fingerprint per output directory, so a resume never mixes outputs made with other settings.

The first run into a directory writes ``DIR/settings.json`` (the settings that determine the outputs); a rerun
compares its own settings with it: equal settings resume (or report "already done"), different ones are refused
with a :class:`SettingsMismatch` naming every differing setting with its stored and requested value, like
``data tokenize`` does for its inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_tools.common.atomic import atomic_write_json

SETTINGS_FILE = "settings.json"


class SettingsMismatch(ValueError):
    """The output directory was made with other settings; :attr:`diffs` maps name -> (stored, requested)."""

    def __init__(self, path: Path, diffs: dict[str, tuple[Any, Any]]) -> None:
        self.path = path
        self.diffs = diffs
        parts = ", ".join(f"{k}: {json.dumps(a)} there, {json.dumps(b)} now" for k, (a, b) in diffs.items())
        super().__init__(
            f"{path.parent} was made with other settings ({parts}); use another output directory, "
            f"or rerun with the original settings to resume"
        )


def diff_settings(stored: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``name -> (stored, requested)`` for every setting whose values differ (a missing one counts as None)."""
    keys = list(requested) + [k for k in stored if k not in requested]
    return {k: (stored.get(k), requested.get(k)) for k in keys if stored.get(k) != requested.get(k)}


def claim_settings(out_dir: str | Path, settings: dict[str, Any]) -> bool:
    """Check ``settings`` against ``out_dir/settings.json`` (written when absent); return whether it existed.

    Raises :class:`SettingsMismatch` when the directory holds outputs of other settings. ``settings`` must be
    JSON-serializable; values are compared after a JSON round trip (tuples equal lists).
    """
    path = Path(out_dir) / SETTINGS_FILE
    requested = json.loads(json.dumps(settings))
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        diffs = diff_settings(stored, requested)
        if diffs:
            raise SettingsMismatch(path, diffs)
        return True
    atomic_write_json(path, requested)
    return False
