"""On-disk request cache (sqlite) so reruns of a synthesis job are free and a killed job resumes exactly.

Keys are a SHA-256 over the canonical JSON of everything that determines an answer: model, messages, sampling
parameters, seed and response schema. Only successful (and, when a schema was given, validated) answers are
stored; failures are retried on the next run. Several processes may share one cache file (WAL mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


def request_key(
    model: str, messages: list[dict[str, Any]], sampling: dict[str, Any], seed: int | None, schema: dict | None
) -> str:
    """Stable hash of one logical request (independent of dict ordering)."""
    payload = {"model": model, "messages": messages, "sampling": sampling, "seed": seed, "schema": schema}
    canon = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class RequestCache:
    """A sqlite table ``key -> (content, model)``, safe to use from one event loop and several processes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, content TEXT NOT NULL, model TEXT,"
            " created REAL DEFAULT (strftime('%s','now')))"
        )

    def get(self, key: str) -> str | None:
        """Return the cached content for ``key`` or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT content FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, content: str, model: str = "") -> None:
        """Store ``content`` under ``key`` (committed before returning)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, content, model) VALUES (?, ?, ?)", (key, content, model)
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
