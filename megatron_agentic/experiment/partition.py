"""Disjoint document pools of the built-in corpus and the check that the experiment's data stays disjoint.

Every document goes to exactly one pool by a stable hash of ``seed:id``: ``base`` (general text of the base
model), ``cpt`` (the non-CPT arm's general text, and the memory/FAS/rollouts/HAS of the CPT arms), ``sft`` (the
ReAct SFT trajectories: their questions and their search environment), ``heldout_sft`` (the held-out SFT set) and
``agent`` (held-out agent questions and their environment). :func:`check_disjoint` verifies it on the files the
steps wrote: pools share no document id or title, the questions of the SFT/held-out/agent sets occur in no CPT
data, and every page those trajectories' tool responses quote belongs to their own pool.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from data_tools.common.atomic import atomic_open

POOLS = ("base", "cpt", "sft", "heldout_sft", "agent")
"""Pool names in partition order."""

_URL = re.compile(r"https?://[^\s)\]\"']+")


class OverlapError(AssertionError):
    """Two parts of the experiment's data that must be disjoint share something."""


def partition(docs: Sequence[Mapping], shares: Mapping[str, float], seed: int) -> dict[str, list[Mapping]]:
    """Split ``docs`` into the pools of ``shares`` (by a stable hash of ``seed:id``; every pool gets >= 1 doc).

    Documents left over when the shares sum to less than 1 are not used. Raises ``ValueError`` when there are
    too few documents for one per pool.
    """
    if len(docs) < len(shares):
        raise ValueError(f"{len(docs)} documents cannot fill {len(shares)} pools")
    order = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d['id']}".encode()).hexdigest())
    out: dict[str, list[Mapping]] = {}
    start = 0
    for name in POOLS if set(shares) == set(POOLS) else shares:
        n = max(1, round(shares[name] * len(docs)))
        out[name] = order[start : start + n]
        start += n
        if not out[name]:
            raise ValueError(f"pool {name!r} got no documents ({len(docs)} documents in all)")
    return out


def _urls_in(text: str) -> set[str]:
    return {u.rstrip(".,;:") for u in _URL.findall(text)}


def _tool_urls(trajectories: Sequence[Mapping]) -> set[str]:
    urls: set[str] = set()
    for t in trajectories:
        for m in t.get("messages") or []:
            if m.get("role") == "user" and "<tool_response>" in str(m.get("content", "")):
                urls |= _urls_in(str(m["content"]))
    return urls


def check_disjoint(
    pools: Mapping[str, Sequence[Mapping]],
    cpt_texts: Sequence[str],
    questions: Mapping[str, Sequence[str]],
    trajectories: Mapping[str, Sequence[Mapping]],
) -> dict[str, int]:
    """Assert the experiment's disjointness; returns the counts that were checked.

    ``pools``: documents per pool. ``cpt_texts``: every CPT training text (general, FAS, HAS) and every CPT
    question. ``questions``: question texts of the ``sft``, ``heldout_sft`` and ``agent`` sets.
    ``trajectories``: rollout records per pool (``sft``, ``heldout_sft``) whose tool responses may only quote pages
    of that pool. Raises :class:`OverlapError` naming the first overlap found.
    """
    ids: dict[str, str] = {}
    titles: dict[str, str] = {}
    for pool, docs in pools.items():
        for d in docs:
            for seen, key in ((ids, str(d["id"])), (titles, str(d.get("title", "")).strip().lower())):
                if key and key in seen and seen[key] != pool:
                    raise OverlapError(f"document {key!r} is in pool {seen[key]!r} and in pool {pool!r}")
                if key:
                    seen[key] = pool
    cpt_blob = "\n".join(cpt_texts)
    checked_questions = 0
    names = list(questions)
    for i, name in enumerate(names):
        for q in questions[name]:
            checked_questions += 1
            if q.strip() and q.strip() in cpt_blob:
                raise OverlapError(f"{name} question {q[:80]!r} occurs in the CPT data")
            for other in names[i + 1 :]:
                if q in set(questions[other]):
                    raise OverlapError(f"question {q[:80]!r} is in both {name} and {other}")
    url_pool = {str(d.get("url", "")): pool for pool, docs in pools.items() for d in docs if d.get("url")}
    checked_urls = 0
    for pool, records in trajectories.items():
        for url in _tool_urls(records):
            checked_urls += 1
            owner = url_pool.get(url)
            if owner is not None and owner != pool:
                raise OverlapError(f"a {pool} trajectory quotes {url}, a document of pool {owner!r}")
    return {
        "documents": len(ids),
        "questions": checked_questions,
        "tool_response_urls": checked_urls,
        "cpt_texts": len(cpt_texts),
    }


def write_pools(pools: Mapping[str, Sequence[Mapping]], folder: Path) -> dict[str, int]:
    """Write ``folder/POOL.jsonl`` per pool (atomically); returns documents per pool."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, docs in pools.items():
        with atomic_open(folder / f"{name}.jsonl") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        counts[name] = len(docs)
    return counts
