"""Quality figures of the offline (template-backend) FAS text on the built-in Wikipedia corpus, against targets.

Runs ``data memory --builtin-wiki --limit N`` and ``data fas -k K`` (the demo's memory/FAS steps) in a temporary
directory and prints :func:`data_tools.synthesis.fas.quality.fas_quality`: the most frequent planning-think sentence
(quoted spans masked) and its share of samples (target <= 5%), the first-action distribution, the share of
distinct A1 drafts (target >= 50%), the judge's acceptance rate and rejection reasons, the questions per style,
and the repetition figures of ``summary.json`` (issue 23 targets on the 1,000-document run: 0% blank questions,
top 8-gram share <= 10% of the samples of every style, knowledge equal to the clue in 0% of reasoning samples,
top 256-token block <= 20% of tokens) with the judge's precision/recall on the labelled set.

    python benchmarks/bench_fas_quality.py                 # 300 documents, K = 3
    python benchmarks/bench_fas_quality.py --docs 1000 --k 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_tools.synthesis.fas.quality import fas_quality  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=300, help="built-in Wikipedia documents (default 300)")
    p.add_argument("--k", type=int, default=3, help="questions per memory item (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mem, out = Path(tmp) / "memory.jsonl", Path(tmp) / "fas"
        py = [sys.executable, "-m"]
        subprocess.run(
            [*py, "data_tools.synthesis.memory", "--builtin-wiki", "--limit", str(args.docs), "--output", str(mem)],
            check=True,
        )
        subprocess.run(
            [
                *py,
                "data_tools.synthesis.fas",
                "--memory",
                str(mem),
                "--output-dir",
                str(out),
                "-k",
                str(args.k),
                "--seed",
                str(args.seed),
                "--no-progress",
            ],
            check=True,
        )
        q = fas_quality(out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    print(json.dumps(q, indent=2, ensure_ascii=False))
    rep = summary["repetition"]
    print(json.dumps({"repetition": rep, "judge_accuracy": summary.get("judge_accuracy")}, indent=2))
    big = {k: v["top_8gram_share"] for k, v in rep["top_8gram_by_style"].items() if v["samples"] >= 50}
    ok_rep = (
        rep["blank_question_share"] == 0
        and rep["knowledge_equals_clue_share"] == 0
        and all(v <= 0.10 for v in big.values())
        and rep.get("top_256_token_block_share", 0) <= 0.20
    )
    print(
        f"blank questions {rep['blank_question_share']:.1%}, worst top 8-gram share {max(big.values(), default=0):.1%} "
        f"(styles with >= 50 samples), knowledge = clue {rep['knowledge_equals_clue_share']:.1%}, top 256-token "
        f"block {rep.get('top_256_token_block_share', 0):.1%}: {'ok' if ok_rep else 'MISSED'}"
    )
    plan, reas = q["planning"], q["reasoning"]
    ok_think = plan["top_sentence_share"] <= 0.05
    ok_a1 = (reas["distinct_a1_drafts"] or 0) >= 0.5
    print(
        f"top think sentence share {plan['top_sentence_share']:.1%} (target <= 5%: {'ok' if ok_think else 'MISSED'}); "
        f"distinct A1 drafts {reas['distinct_a1_drafts']:.1%} (target >= 50%: {'ok' if ok_a1 else 'MISSED'}); "
        f"planning acceptance {q['judge']['planning']['acceptance_rate']:.1%}, "
        f"rejections {q['judge']['planning']['rejected_by_reason']}; questions by style {q['questions_by_style']}"
    )
    return 0 if ok_think and ok_a1 and ok_rep else 1


if __name__ == "__main__":
    sys.exit(main())
