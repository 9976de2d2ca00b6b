"""On-disk request cache (sqlite) so reruns of a synthesis job are free and a killed job resumes exactly.

Keys are a SHA-256 over the canonical JSON of everything that determines an answer: model, messages, sampling
parameters (including ``extra_body``), seed and response schema. Run-time noise that does not change what is
asked (the current date a system prompt states, see :data:`KEY_NOISE_PATTERNS`) is masked before hashing, so
tomorrow's rerun of a job still hits today's cache. Only successful (and, when a schema was given, validated) answers are
stored; failures are retried on the next run. Several processes may share one cache file (WAL mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

KEY_NOISE_PATTERNS: tuple[str, ...] = (
    r"(?i)(current date|today's date|today is|the date is)\s*:?\s*\d{4}-\d{2}-\d{2}",
    r"(?i)(current date|today's date|today is)\s*:?\s*[A-Z][a-z]+ \d{1,2}, \d{4}",
)
"""Regexes of run-time noise masked out of message texts before hashing (the rollout prompt's current date)."""
_NOISE = [re.compile(p) for p in KEY_NOISE_PATTERNS]


def mask_noise(text: str) -> str:
    """``text`` with every :data:`KEY_NOISE_PATTERNS` match replaced by its label and ``<date>``."""
    for rx in _NOISE:
        text = rx.sub(lambda m: f"{m.group(1)}: <date>", text)
    return text


def _masked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        content = m.get("content")
        out.append({**m, "content": mask_noise(content)} if isinstance(content, str) else m)
    return out


def request_key(
    model: str, messages: list[dict[str, Any]], sampling: dict[str, Any], seed: int | None, schema: dict | None
) -> str:
    """Stable hash of one logical request (independent of dict ordering and of the dates in :func:`mask_noise`)."""
    payload = {"model": model, "messages": _masked(messages), "sampling": sampling, "seed": seed, "schema": schema}
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
        cols = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "reasoning" not in cols:  # caches written before reasoning_content was kept
            self._db.execute("ALTER TABLE responses ADD COLUMN reasoning TEXT")

    def get(self, key: str) -> str | None:
        """Return the cached content for ``key`` or ``None``."""
        hit = self.get_entry(key)
        return None if hit is None else hit[0]

    def get_entry(self, key: str) -> tuple[str, str | None] | None:
        """Return ``(content, reasoning_content)`` cached for ``key`` or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT content, reasoning FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, key: str, content: str, model: str = "", reasoning: str | None = None) -> None:
        """Store ``content`` (and the server's ``reasoning_content``) under ``key`` (committed before returning)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, content, model, reasoning) VALUES (?, ?, ?, ?)",
                (key, content, model, reasoning),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
