"""``summary.json`` of a FAS run, computed from the output files so it is the same after a resume."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import ResumableJsonlWriter, read_jsonl


def _rate(acc: int, rej: int) -> float | None:
    return round(acc / (acc + rej), 4) if acc + rej else None


def _sum_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    total: Counter = Counter()
    failures: Counter = Counter()
    usage: Counter = Counter()
    for r in runs:
        llm = r.get("llm") or {}
        for k, v in llm.items():
            if isinstance(v, int):
                total[k] += v
        failures.update(llm.get("failures", {}))
        usage.update(llm.get("usage", {}))
    return {**dict(total), "failures": dict(failures), "usage": dict(usage)}


def compute_counts(out_dir: Path, bad_lines: Counter) -> dict[str, Any]:
    """Deterministic counts from ``planning/reasoning/rejected/progress.jsonl``."""
    progress = read_jsonl(out_dir / "progress.jsonl") if (out_dir / "progress.jsonl").exists() else []
    planning = read_jsonl(out_dir / "planning.jsonl")
    reasoning = read_jsonl(out_dir / "reasoning.jsonl")
    rejected = read_jsonl(out_dir / "rejected.jsonl")
    q_style: Counter = Counter()
    unavailable: Counter = Counter()
    dups = 0
    for line in progress:
        unavailable.update(line["unavailable_styles"])
        for q in line["questions"]:
            q_style[q["style"]] += 1
            dups += q["duplicate_of"] is not None
    per: dict[str, dict[str, Any]] = {}
    for kind, accepted in (("planning", planning), ("reasoning", reasoning)):
        by_style: dict[str, Counter] = defaultdict(Counter)
        reasons: Counter = Counter()
        for rec in accepted:
            by_style[rec["style"]]["accepted"] += 1
        for rec in rejected:
            rj = rec["rejection"]
            if rec.get("type") == kind and rj["kind"] == "judge":
                by_style[rec["style"]]["rejected"] += 1
                reasons[rj["reason"]] += 1
        acc = sum(c["accepted"] for c in by_style.values())
        rej = sum(c["rejected"] for c in by_style.values())
        per[kind] = {
            "accepted": acc,
            "rejected": rej,
            "acceptance_rate": _rate(acc, rej),
            "rejected_by_reason": dict(sorted(reasons.items())),
            "rejected_share_by_reason": {k: round(v / (acc + rej), 4) for k, v in sorted(reasons.items())},
            "by_style": {
                s: {
                    "accepted": c["accepted"],
                    "rejected": c["rejected"],
                    "acceptance_rate": _rate(c["accepted"], c["rejected"]),
                }
                for s, c in sorted(by_style.items())
            },
        }
    failures: Counter = Counter()
    failure_stages: Counter = Counter()
    invalid: Counter = Counter()
    kinds: Counter = Counter()
    for rec in rejected:
        rj = rec["rejection"]
        kinds[rj["kind"]] += 1
        if rj["kind"] == "failure":
            failures[rj["reason"]] += 1
            failure_stages[rj["stage"]] += 1
        elif rj["kind"] == "invalid":
            invalid[rj["reason"]] += 1
    return {
        "memory_items": len(progress),
        "memory_bad_lines": dict(sorted(bad_lines.items())),
        "questions": sum(q_style.values()),
        "questions_by_style": dict(sorted(q_style.items())),
        "unavailable_styles": dict(sorted(unavailable.items())),
        "near_duplicates": dups,
        "invalid_questions": dict(sorted(invalid.items())),
        "planning": per["planning"],
        "reasoning": per["reasoning"],
        "rejected_records": len(rejected),
        "rejected_by_kind": dict(sorted(kinds.items())),
        "failures": dict(sorted(failures.items())),
        "failures_by_stage": dict(sorted(failure_stages.items())),
    }


def finished_summary(out_dir: Path, cfg) -> dict[str, Any] | None:
    """The stored summary when a run with ``cfg``'s item limit already completed in ``out_dir``, else ``None``."""
    path = out_dir / "summary.json"
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if stored.get("complete") and stored.get("max_items") == cfg.max_items:
        return stored
    return None


def write_summary(
    out_dir: Path,
    cfg,
    bad_lines: Counter,
    llm_stats: dict[str, Any] | None,
    *,
    resumed_items: int,
    seconds: float,
    settings: dict[str, Any] | None = None,
    valid_records: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append this run to ``runs.jsonl`` and write ``summary.json`` atomically; returns the summary (``extra``:
    more top-level sections, e.g. ``judge_accuracy`` and ``repetition``)."""
    runs_path = out_dir / "runs.jsonl"
    previous = read_jsonl(runs_path) if runs_path.exists() else []
    run = {
        "id": f"run-{len(previous) + 1}",
        "resumed_items": resumed_items,
        "seconds": round(seconds, 3),
        "llm": llm_stats,
    }
    with ResumableJsonlWriter(runs_path) as w:
        w.write(run)
    runs = previous + [run]
    summary = {
        "fas_version": "fas-v1",
        "backend": cfg.backend,
        "model": cfg.llm.model if cfg.llm else None,
        "memory": str(cfg.memory_path),
        "questions_per_memory": cfg.questions_per_memory,
        "seed": cfg.seed,
        "shard": {"index": cfg.shard_index, "count": cfg.num_shards},
        "max_items": cfg.max_items,
        "complete": True,
        "valid_input_records": valid_records,
        "settings": settings,
        "counts": compute_counts(out_dir, bad_lines),
        "llm": llm_stats,
        "llm_all_runs": _sum_runs(runs),
        "runs": len(runs),
        "this_run": {"resumed_items": resumed_items, "seconds": round(seconds, 3)},
        **(extra or {}),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def load_summary(out_dir: str | Path) -> dict[str, Any]:
    """Read a run's ``summary.json``."""
    return json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))


def failure_counts(summary: dict[str, Any]) -> tuple[int, int]:
    """``(failed, attempted)`` units of a run for ``--max-failure-rate``: failed requests, invalid questions and
    judge-rejected samples, over those plus the accepted samples."""
    c = summary["counts"]
    failed = (
        sum(c["failures"].values())
        + sum(c["invalid_questions"].values())
        + c["planning"]["rejected"]
        + c["reasoning"]["rejected"]
    )
    return failed, failed + c["planning"]["accepted"] + c["reasoning"]["accepted"]
