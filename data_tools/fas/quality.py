"""Quality figures of a FAS output directory: how varied the planning thoughts are, how often each first action
is chosen, how distinct the A1 drafts are, and what the judge rejected and why.

``python -m data_tools.fas.quality DIR`` prints them as JSON; ``benchmarks/bench_fas_quality.py`` runs the demo's
memory + FAS steps and checks the targets (no think sentence in more than 5% of planning samples, at least 50%
distinct A1 drafts).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from data_tools.common.jsonl import read_jsonl

_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|«[^»]*»')
_SENT = re.compile(r"(?<=[.!?])\s+")


def think_sentences(think: str) -> set[str]:
    """The distinct sentences of a thought, with quoted spans masked (``"..."`` -> ``"Q"``), case-folded."""
    masked = _QUOTED.sub('"Q"', think)
    return {" ".join(s.split()).casefold() for s in _SENT.split(masked) if s.strip()}


def planning_figures(planning: list[dict[str, Any]]) -> dict[str, Any]:
    """Most frequent think sentence and its share of samples, first-action distribution, distinct thoughts."""
    n = len(planning)
    counts: Counter = Counter()
    for rec in planning:
        counts.update(think_sentences(rec.get("think") or ""))
    top = counts.most_common(3)
    actions = Counter((rec.get("tool_call") or {}).get("name") or "answer" for rec in planning)
    return {
        "samples": n,
        "distinct_thoughts": round(len({rec.get("think") for rec in planning}) / n, 4) if n else None,
        "top_sentence_share": round(top[0][1] / n, 4) if n and top else 0.0,
        "top_sentences": [{"sentence": s, "share": round(c / n, 4)} for s, c in top],
        "first_actions": dict(sorted(actions.items())),
    }


def reasoning_figures(reasoning: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of distinct A1 draft answers and of A2 answers that differ from the draft."""
    n = len(reasoning)
    drafts = [" ".join(str(r.get("draft_answer", "")).split()).casefold() for r in reasoning]
    finals = [" ".join(str(r.get("final_answer", "")).split()).casefold() for r in reasoning]
    changed = sum(d != f for d, f in zip(drafts, finals))
    return {
        "samples": n,
        "distinct_a1_drafts": round(len(set(drafts)) / n, 4) if n else None,
        "a2_changed_draft": round(changed / n, 4) if n else None,
    }


def fas_quality(out_dir: str | Path) -> dict[str, Any]:
    """All figures for one FAS output directory."""
    d = Path(out_dir)
    planning = read_jsonl(d / "planning.jsonl")
    reasoning = read_jsonl(d / "reasoning.jsonl")
    summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    c = summary["counts"]
    judge = {
        kind: {
            "acceptance_rate": c[kind]["acceptance_rate"],
            "rejected": c[kind]["rejected"],
            "rejected_by_reason": c[kind]["rejected_by_reason"],
        }
        for kind in ("planning", "reasoning")
    }
    return {
        "planning": planning_figures(planning),
        "reasoning": reasoning_figures(reasoning),
        "questions_by_style": c["questions_by_style"],
        "judge": judge,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the figures of a FAS output directory as JSON."""
    p = argparse.ArgumentParser(prog="python -m data_tools.fas.quality", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="a `data fas` output directory")
    args = p.parse_args(argv)
    json.dump(fas_quality(args.out_dir), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
