"""The judge's measured accuracy: a labelled set of FAS samples with planted defects, and precision/recall on it.

The set (``tests/fas/fixtures/judge_labelled.jsonl``, made by ``python -m data_tools.synthesis.fas.judge_eval make``)
holds planning and reasoning samples of a template FAS run drawn from the generator's output *before* judging (accepted
and judge-rejected alike): half as generated (``defect: null``, labelled good: a judge rejection of one counts as
a false positive even where the judge had a point, so precision is a lower bound), half with one planted defect
each:

``wrong_answer``        A2's answer replaced by the answer of another question of the same style;
``answer_leak``         the question states its own answer;
``unanswerable``        the mapped knowledge replaced by another question's knowledge;
``wrong_entity``        the planning action searches for another question's subject;
``malformed_call``      the tool call names an unknown tool or has arguments that break its schema.

:func:`evaluate` runs a judge on every sample and counts a *rejection* as the positive decision: precision =
defective among the rejected, recall = rejected among the defective. ``accuracy_before`` is the share of good
samples in the set (0.5) and ``accuracy_after`` the share of good samples among those the judge keeps: the
figure the paper reports rising from ~50% to 82% with its judge.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from data_tools.common.atomic import atomic_write_text
from data_tools.common.jsonl import dumps_line, read_jsonl
from data_tools.synthesis.fas import judge

DEFECTS = {
    "planning": ("answer_leak", "unanswerable", "wrong_entity", "malformed_call"),
    "reasoning": ("wrong_answer", "answer_leak", "unanswerable"),
}
DEFAULT_SET = Path(__file__).resolve().parents[3] / "tests" / "fas" / "fixtures" / "judge_labelled.jsonl"
"""The labelled set in a source checkout (absent from an installed wheel)."""
_QKEYS = ("style", "question", "answer", "statement_ids", "required_facts", "entities", "attribute", "kind", "unit")


def _question(rec: dict[str, Any]) -> dict[str, Any]:
    q = {k: rec[k] for k in _QKEYS if k in rec}
    q["answer"] = rec["ground_truth"]
    return q


def _sample(rec: dict[str, Any]) -> dict[str, Any]:
    knowledge = [
        {
            "id": k["id"],
            "subject": k.get("subject"),
            "entity": k.get("entity"),
            "text": k["text"],
            "source": {
                "title": (k.get("source") or {}).get("title", ""),
                "url": (k.get("source") or {}).get("url", ""),
            },
        }
        for k in rec["knowledge"]
    ]
    out = {"id": rec["id"], "type": rec["type"], "question": _question(rec), "knowledge": knowledge}
    if rec["type"] == "planning":
        act = rec["tool_call"]
        action = {"type": "tool_call", **act} if act else {"type": "answer", "answer": rec["answer"]}
        out["plan"] = {"think": rec["think"], "action": action}
    else:
        out["a1"] = {"sub_questions": rec["sub_questions"], "draft_answer": rec["draft_answer"]}
        out["a2"] = {"reasoning": rec["a2"].split("<answer>")[0].strip(), "answer": rec["final_answer"]}
    return out


def plant(sample: dict[str, Any], defect: str, other: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    """A copy of ``sample`` with ``defect`` planted (``other``: a sample of the same type and style to borrow
    from); ``None`` when the defect cannot be planted."""
    s = copy.deepcopy(sample)
    s["id"] = f"{sample['id']}~{defect}"
    s["defect"] = defect
    q = s["question"]
    if defect == "answer_leak":
        q["question"] = rng.choice(("{q} (The answer is {a}.)", "{a}: {q}", "{q} Hint: {a}.")).format(
            q=q["question"], a=q["answer"][:200]
        )
    elif defect == "unanswerable":
        if {k["id"] for k in other["knowledge"]} & {k["id"] for k in s["knowledge"]}:
            return None
        s["knowledge"] = copy.deepcopy(other["knowledge"])
    elif defect == "wrong_answer":
        wrong = other["question"]["answer"]
        if judge.answers_agree(wrong, q["answer"], q["style"], q.get("required_facts") or ()):
            return None
        s["a2"]["answer"] = wrong
    elif defect == "wrong_entity":
        act = s["plan"]["action"]
        theirs = (other["plan"]["action"].get("arguments") or {}).get("query")
        if act.get("type") != "tool_call" or not theirs or theirs == (act.get("arguments") or {}).get("query"):
            return None
        act["arguments"] = {"query": list(theirs)}
    elif defect == "malformed_call":
        act = s["plan"]["action"]
        if rng.random() < 0.5:
            act["name"] = rng.choice(("web_search", "browse", "lookup"))
        else:
            act["arguments"] = {"query": "not a list"} if act.get("name") != "visit" else {"url": []}
    return s


def make_set(fas_dir: str | Path, per_type: int = 150, seed: int = 0) -> list[dict[str, Any]]:
    """A labelled set from a template FAS run: ``per_type`` planning and reasoning samples drawn from its
    pre-judge output, half good, half with a planted defect (the defects cycled)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for kind in ("planning", "reasoning"):
        # the generator's output *before* judging (accepted + judge-rejected), so "good" does not mean "the judge
        # accepted it": a judge rejection of a pre-judge sample counts against its precision
        pre = read_jsonl(Path(fas_dir) / f"{kind}.jsonl") + [
            r
            for r in read_jsonl(Path(fas_dir) / "rejected.jsonl")
            if r.get("type") == kind and r["rejection"]["kind"] == "judge"
        ]
        recs = [_sample(r) for r in sorted(pre, key=lambda r: r["id"])]
        rng.shuffle(recs)
        good = [{**r, "defect": None} for r in recs[: per_type // 2]]
        pool = recs[per_type // 2 :]
        bad: list[dict[str, Any]] = []
        for i, r in enumerate(pool):
            if len(bad) >= per_type - len(good):
                break
            defect = DEFECTS[kind][i % len(DEFECTS[kind])]
            same = [o for o in recs if o["question"]["style"] == r["question"]["style"] and o["id"] != r["id"]]
            planted = plant(r, defect, rng.choice(same), rng) if same else None
            if planted is not None:
                bad.append(planted)
        out += good + bad
    return out


def template_verdict(sample: dict[str, Any]) -> judge.SampleVerdict:
    """The template (rule) judge's verdict on a labelled sample."""
    q, k = sample["question"], sample["knowledge"]
    if sample["type"] == "planning":
        return judge.rule_judge_planning(q, k, sample["plan"])
    return judge.rule_judge_reasoning(q, k, sample["a1"], sample["a2"])


async def llm_verdicts(samples: list[dict[str, Any]], client, model: str) -> list[judge.SampleVerdict | None]:
    """The LLM judge's verdicts (structural rules first, as in a run); ``None`` where the request failed."""

    async def one(s: dict[str, Any]) -> judge.SampleVerdict | None:
        q, k = s["question"], s["knowledge"]
        if s["type"] == "planning":
            v = judge.structural_planning(s["plan"])
            req = judge.llm_judge_planning_request(q, k, s["plan"])
        else:
            v = judge.structural_reasoning(s["a1"], s["a2"])
            req = judge.llm_judge_reasoning_request(q, k, s["a2"])
        if v is not None:
            return v
        res = await client.chat(
            req["messages"],
            schema=req["schema"],
            schema_name=req["template"].family + "_" + req["template"].name,
            temperature=0.0,
            seed=0,
        )
        return judge.verdict_from_llm(res.parsed, model) if res.ok else None

    return list(await asyncio.gather(*(one(s) for s in samples)))


def metrics(samples: list[dict[str, Any]], verdicts: list[judge.SampleVerdict | None]) -> dict[str, Any]:
    """Precision/recall of rejection (positive = defective), accuracy before/after filtering, per-defect recall,
    overall and per sample type."""

    def block(pairs: list[tuple[dict[str, Any], judge.SampleVerdict]]) -> dict[str, Any]:
        tp = sum(s["defect"] is not None and not v.accepted for s, v in pairs)
        fp = sum(s["defect"] is None and not v.accepted for s, v in pairs)
        fn = sum(s["defect"] is not None and v.accepted for s, v in pairs)
        kept = [s for s, v in pairs if v.accepted]
        by_defect: Counter = Counter()
        caught: Counter = Counter()
        for s, v in pairs:
            if s["defect"]:
                by_defect[s["defect"]] += 1
                caught[s["defect"]] += not v.accepted
        n = len(pairs)
        return {
            "samples": n,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "accuracy_before": round(sum(s["defect"] is None for s, _ in pairs) / n, 4) if n else None,
            "accuracy_after": round(sum(s["defect"] is None for s in kept) / len(kept), 4) if kept else None,
            "recall_by_defect": {d: round(caught[d] / c, 4) for d, c in sorted(by_defect.items())},
        }

    done = [(s, v) for s, v in zip(samples, verdicts) if v is not None]
    out = block(done)
    out["failed_requests"] = len(samples) - len(done)
    for kind in ("planning", "reasoning"):
        out[kind] = block([(s, v) for s, v in done if s["type"] == kind])
    return out


def evaluate_template(path: str | Path = DEFAULT_SET) -> dict[str, Any]:
    """Template judge figures on the labelled set at ``path``."""
    samples = read_jsonl(path)
    return metrics(samples, [template_verdict(s) for s in samples])


def evaluate_llm(path: str | Path, client, model: str) -> dict[str, Any]:
    """LLM judge figures on the labelled set (one request per sample that passes the structural rules)."""
    samples = read_jsonl(path)

    async def run():
        try:
            return await llm_verdicts(samples, client, model)
        finally:
            await client.aclose()

    return metrics(samples, asyncio.run(run()))


def main(argv: list[str] | None = None) -> int:
    """``make``: write a labelled set from a FAS output directory; ``eval``: template judge figures."""
    p = argparse.ArgumentParser(
        prog="python -m data_tools.synthesis.fas.judge_eval", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="labelled set from a template `data fas` output directory")
    mk.add_argument("fas_dir")
    mk.add_argument("--output", default=str(DEFAULT_SET))
    mk.add_argument("--per-type", type=int, default=150)
    mk.add_argument("--seed", type=int, default=0)
    ev = sub.add_parser("eval", help="template judge precision/recall on a labelled set")
    ev.add_argument("path", nargs="?", default=str(DEFAULT_SET))
    args = p.parse_args(argv)
    if args.cmd == "make":
        samples = make_set(args.fas_dir, args.per_type, args.seed)
        atomic_write_text(Path(args.output), "".join(dumps_line(s) + "\n" for s in samples))
        print(f"{len(samples)} labelled samples -> {args.output}")
        return 0
    json.dump(evaluate_template(args.path), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
