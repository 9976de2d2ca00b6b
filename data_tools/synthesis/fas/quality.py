"""Quality figures of a FAS output directory: how varied the planning thoughts are, how often each first action
is chosen, how distinct the A1 drafts are, and what the judge rejected and why.

``python -m data_tools.synthesis.fas.quality DIR`` prints them as JSON; ``benchmarks/bench_fas_quality.py`` runs the
demo's memory + FAS steps and checks the targets (no think sentence in more than 5% of planning samples, at least 50%
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


_MARKUP = re.compile(r"<\|im_start\|>\w+\n|<\|im_end\|>|</?(?:think|tool_call|tool_response|answer|code)>")
_WORD = re.compile(r"\w+")
_CALL_KEYS = re.compile(r'"(?:name|arguments|query|url|goal|code|files)":')


def body_text(text: str) -> str:
    """A sample's text without its system turn, chat markup and the tool-call JSON keys (what the 8-gram figure
    is taken on)."""
    if text.startswith("<|im_start|>system"):
        end = text.find("<|im_end|>")
        text = text[end + len("<|im_end|>") :] if end >= 0 else ""
    return _CALL_KEYS.sub(" ", _MARKUP.sub(" ", text))


def top_ngram_share(texts: list[str], n: int = 8) -> tuple[float, str]:
    """Share of samples containing the most common word ``n``-gram (each sample counted once) and that n-gram,
    taken on :func:`body_text`."""
    counts: Counter = Counter()
    for t in texts:
        w = _WORD.findall(body_text(t).casefold())
        counts.update({" ".join(w[i : i + n]) for i in range(len(w) - n + 1)})
    if not counts or not texts:
        return 0.0, ""
    gram, c = counts.most_common(1)[0]
    return round(c / len(texts), 4), gram


def top_block_share(texts: list[str], encode, block: int = 256) -> tuple[float, int]:
    """Share of all tokens taken by the most common ``block``-token block (each sample cut into aligned blocks
    from its start; the opening block holds the system turn) and the total token count."""
    counts: Counter = Counter()
    total = 0
    for t in texts:
        ids = encode(t)
        total += len(ids)
        for i in range(0, len(ids) - block + 1, block):
            counts[hash(tuple(ids[i : i + block]))] += 1
    if not counts or not total:
        return 0.0, total
    return round(counts.most_common(1)[0][1] * block / total, 4), total


def knowledge_clue_share(reasoning: list[dict[str, Any]]) -> float:
    """Share of reasoning samples whose mapped knowledge is the question's own clue: a knowledge statement
    shares 8+ consecutive words with the question."""
    from data_tools.synthesis.fas.clues import copied_span

    if not reasoning:
        return 0.0
    hits = sum(copied_span(r["question"], [k["text"] for k in r.get("knowledge") or []]) is not None for r in reasoning)
    return round(hits / len(reasoning), 4)


def repetition_figures(planning: list[dict[str, Any]], reasoning: list[dict[str, Any]], encode=None) -> dict:
    """Repetition figures for ``summary.json``: blank questions, the top 8-gram share per type and style,
    knowledge equal to the clue, and (with a tokenizer's ``encode``) the most common 256-token block's share."""
    out: dict[str, Any] = {}
    qs = {r["question_id"]: r["question"] for r in [*planning, *reasoning]}
    out["blank_question_share"] = round(sum("___" in q for q in qs.values()) / len(qs), 4) if qs else 0.0
    per: dict[str, Any] = {}
    for kind, recs in (("planning", planning), ("reasoning", reasoning)):
        styles = sorted({r["style"] for r in recs})
        for style in styles:
            texts = [r["text"] for r in recs if r["style"] == style and r.get("text")]
            share, gram = top_ngram_share(texts)
            per[f"{kind}/{style}"] = {"samples": len(texts), "top_8gram_share": share, "top_8gram": gram}
    out["top_8gram_by_style"] = per
    out["max_top_8gram_share"] = max((v["top_8gram_share"] for v in per.values()), default=0.0)
    out["knowledge_equals_clue_share"] = knowledge_clue_share(reasoning)
    if encode is not None:
        texts = [r["text"] for r in [*planning, *reasoning] if r.get("text")]
        share, total = top_block_share(texts, encode)
        out["top_256_token_block_share"] = share
        out["tokens"] = total
    return out


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
    p = argparse.ArgumentParser(prog="python -m data_tools.synthesis.fas.quality", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", help="a `data fas` output directory")
    args = p.parse_args(argv)
    json.dump(fas_quality(args.out_dir), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
