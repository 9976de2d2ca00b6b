"""``megatron-agentic data has``: higher-order action synthesis from recorded trajectories.

Reads trajectories (DeepResearch JSONL or OpenAI tool-call messages), judges them, synthesizes N alternatives
per step (``--backend template`` offline, or ``openai`` against an OpenAI-compatible server), and writes one
JSONL line per sample with ``text`` (the serialized training text) and ``meta``. Output is append-only and
resumable: a rerun after a kill skips completed trajectories and never duplicates a sample. A summary JSON
(counts, malformed trajectories by reason, candidate diversity, token-length histogram) is written next to the
output, and the run ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from data_tools.common.argtypes import positive_int, probability
from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import ResumableJsonlWriter, iter_jsonl
from data_tools.common.lock import lock_output_file
from data_tools.synthesis.common.cli_args import add_llm_args, llm_config_from_args
from data_tools.synthesis.common.command import CommandError, build_config, require_file, run_command
from data_tools.synthesis.common.failure_rate import add_failure_rate_arg
from data_tools.synthesis.common.progress import SynthesisProgress, count_lines
from data_tools.synthesis.common.sharding import add_shard_args, shard_from_args, shard_of
from data_tools.synthesis.has.collapse import CollapseGuard
from data_tools.synthesis.has.expand import (
    MALFORMED_STEP_KINDS,
    HasConfig,
    cut_before_bad_step,
    length_histogram,
    make_decisions,
    render_samples,
)
from data_tools.synthesis.has.template_backend import TemplateBackend
from data_tools.synthesis.serialize import FORMAT_VERSION
from data_tools.synthesis.trajectory import (
    JUDGE_MODES,
    LoadReport,
    Trajectory,
    judge,
    judge_with_llm,
    load_trajectories,
)

log = logging.getLogger("data_tools.synthesis.has")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``data has``."""
    p = argparse.ArgumentParser(prog="megatron-agentic data has", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, action="append", help="trajectory JSONL (repeatable; .gz/.zst ok)")
    p.add_argument("--output", required=True, help="output JSONL of HAS samples (appended to / resumed)")
    p.add_argument("--candidates", type=int, default=3, help="N alternatives per step (N+1 options; default 3)")
    p.add_argument("--judge", choices=JUDGE_MODES, default="auto",
                   help="trajectory judgment: auto (field, else normalized containment), field, exact, contains, "
                   "llm (needs --llm-url; default auto)")  # fmt: skip
    p.add_argument("--max-sample-tokens", type=int, default=131072, help="token limit per sample (default 131072)")
    p.add_argument("--history-fraction", type=float, default=0.25,
                   help="share of the limit a split part may spend replaying earlier steps (default 0.25)")  # fmt: skip
    p.add_argument("--similarity", type=float, default=0.8,
                   help="collapse guard: Jaccard similarity at which candidates are duplicates (default 0.8)")  # fmt: skip
    p.add_argument("--max-regenerate", type=int, default=3, help="regeneration rounds for short steps (default 3)")
    p.add_argument("--corpus", default=None,
                   help="optional corpus for the template backend's perturbations: builtin, builtin:N or a JSONL "
                   "path (related pages become drift / guess / visit alternatives)")  # fmt: skip
    p.add_argument("--text-key", default="text", help="text field of --corpus (default text)")
    p.add_argument("--memory", default=None,
                   help="optional FAS knowledge memory JSONL (data memory output): its entities and statements join "
                   "the perturbation sources")  # fmt: skip
    # The synthesis commands' shared --max-failure-rate (data_tools/synthesis/common/failure_rate.py): for `data has`
    # the failures are alternatives the LLM backend could not write (template fills); --max-fill-rate is the same flag.
    add_failure_rate_arg(p)
    p.add_argument("--max-fill-rate", type=probability, dest="max_failure_rate", help="alias of --max-failure-rate")
    p.add_argument("--tokenizer", default="qwen3", help="tokenizer spec for lengths (default: built-in qwen3)")
    p.add_argument("--batch", type=int, default=64, help="trajectories per generation batch (default 64)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many valid trajectories")
    p.add_argument("--summary", default=None, help="summary JSON path (default: OUTPUT.summary.json)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    add_llm_args(p, default_backend="template")
    add_shard_args(p)
    return p


def _completed(writer: ResumableJsonlWriter) -> set[str]:
    """Trajectory ids all of whose parts are already in the output (ids look like ``TRAJ:pI/N``)."""
    parts: dict[str, set[int]] = {}
    totals: dict[str, int] = {}
    for key in writer.done:
        tid, _, tail = key.rpartition(":p")
        i, _, n = tail.partition("/")
        if tid and i.isdigit() and n.isdigit():
            parts.setdefault(tid, set()).add(int(i))
            totals[tid] = int(n)
    return {tid for tid, got in parts.items() if len(got) == totals[tid]}


def output_totals(path: Path) -> dict[str, Any]:
    """Totals over everything in the output file (so a resumed or repeated run reports the whole result).

    ``trajectories`` (complete ones: their last part is written), ``samples``, ``tokens``, and complete
    trajectories by ``outcome`` and ``termination``.
    """
    totals: dict[str, Any] = {"trajectories": 0, "samples": 0, "tokens": 0, "outcomes": Counter(),
                              "terminations": Counter()}  # fmt: skip
    if not path.is_file():
        return totals
    for _, rec in iter_jsonl(path):
        meta = rec.get("meta") if isinstance(rec, dict) else None
        if not isinstance(meta, dict):
            continue
        totals["samples"] += 1
        totals["tokens"] += int(meta.get("tokens") or 0)
        if meta.get("part") == int(meta.get("num_parts") or 1) - 1:
            totals["trajectories"] += 1
            totals["outcomes"][str(meta.get("outcome"))] += 1
            totals["terminations"][str(meta.get("termination"))] += 1
    totals["outcomes"] = dict(sorted(totals["outcomes"].items()))
    totals["terminations"] = dict(sorted(totals["terminations"].items()))
    return totals


def main(argv: list[str] | None = None) -> int:
    """Run ``data has``; returns 0 on success, 1 when the LLM backend failed too often, 2 on bad arguments or input."""
    return run_command("data has", build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(
        HasConfig,
        candidates=args.candidates,
        seed=args.seed,
        max_tokens=args.max_sample_tokens,
        history_fraction=args.history_fraction,
        similarity=args.similarity,
        max_regenerate=args.max_regenerate,
    )
    for path in args.input:
        require_file(path, "input")
    shard, num_shards = shard_from_args(args)
    out = Path(args.output)
    lock_output_file(out, "data has", shard, num_shards)  # one writer per output (issue 16)
    summary_path = Path(args.summary) if args.summary else out.with_name(out.name + ".summary.json")

    from data_tools.indexed.tokenizers import load_tokenizer

    tok = load_tokenizer(args.tokenizer)

    def count_tokens(text: str) -> int:
        return len(tok.encode(text))

    guard = CollapseGuard(cfg.similarity)
    env = None
    if args.corpus or args.memory:
        from data_tools.synthesis.env.search import SearchEnvironment, load_documents, memory_documents

        try:
            docs = load_documents(args.corpus, args.text_key) if args.corpus else []
            if args.memory:
                docs += memory_documents(args.memory)[0]
            env = SearchEnvironment(docs)
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
    client = None
    if args.backend == "openai" or args.judge == "llm":
        from data_tools.synthesis.llm.client import LLMClient

        client = LLMClient(llm_config_from_args(args, default_cache=str(out.with_name(out.name + ".llm_cache.sqlite"))))
    if args.backend == "openai":
        from data_tools.synthesis.has.llm_backend import LLMBackend

        backend: Any = LLMBackend(client, guard, cfg.max_regenerate)
        backend.fallback.env = env
    else:
        backend = TemplateBackend(guard, cfg.max_regenerate, env)

    report = LoadReport()
    counts: Counter = Counter()
    bad_steps: Counter = Counter()
    lengths: list[int] = []
    t0 = time.time()
    one_file = args.limit is None and len(args.input) == 1 and num_shards == 1
    total = count_lines(args.input[0]) if one_file else None  # trajectories (progress bar)
    with (
        ResumableJsonlWriter(out, key="id") as writer,
        SynthesisProgress("has", total, unit="trajectory", stats=client.stats if client is not None else None) as bar,
    ):
        done = _completed(writer)
        counts["resumed_samples"] = writer.recovered

        def flush(batch: list[Trajectory]) -> None:
            sound = []  # malformed steps are never taught: cut before the first one, or skip (counted by kind)
            for t in batch:
                cut, kind = cut_before_bad_step(t)
                if kind is not None:
                    bad_steps[kind] += 1
                    counts["trajectories_cut" if cut is not None else "skipped_malformed_step"] += 1
                if cut is None:
                    bar.advance(1)
                else:
                    sound.append(cut)
            if args.judge == "llm":
                for k, v in judge_with_llm(sound, client).items():
                    counts[f"judge_{k}"] += v
            ready = []
            for t in sound:
                if args.judge != "llm" and "has_cut" not in t.extra:
                    judge(t, args.judge)
                if t.outcome is None:
                    counts["skipped_no_judgment"] += 1
                    bar.advance(1)
                else:
                    ready.append(t)
            alts = backend.generate(ready, cfg.candidates, cfg.seed)
            origs = backend.originals(ready, cfg.seed)
            for t in ready:
                decisions = make_decisions(t, alts[t.id], cfg.seed, origs[t.id])
                for d in decisions:
                    guard.record_set(d.options)
                    counts["decisions"] += 1
                    counts["short_decisions"] += len(d.options) < cfg.candidates + 1
                    others = [o for i, o in enumerate(d.options) if i != d.original_index]
                    counts["alternatives"] += len(others)
                    counts["template_fills"] += sum(o.source.startswith("template") for o in others)
                samples = render_samples(t, decisions, count_tokens, cfg, backend.name)
                for s in samples:
                    lengths.append(s["meta"]["tokens"])
                    counts["oversize_samples"] += s["meta"]["oversize"]
                    counts["samples_written"] += writer.write(s)
                counts["split_trajectories"] += len(samples) > 1
                counts[t.outcome or "unjudged"] += 1
                counts["trajectories_expanded"] += 1
                bar.advance(1)
            log.info("expanded %d trajectories, %d samples", counts["trajectories_expanded"], counts["samples_written"])

        batch: list[Trajectory] = []
        taken: set[str] = set()
        trajs = itertools.chain.from_iterable(load_trajectories(path, report) for path in args.input)
        for traj in itertools.islice(trajs, args.limit):
            if num_shards > 1 and shard_of(traj.id, num_shards) != shard:
                continue
            if traj.id in done:
                counts["already_done"] += 1
                bar.advance(1)
                continue
            if traj.id in taken:  # ids key the output and resume: a second trajectory with an id is left out
                counts["skipped_duplicate_id"] += 1
                bar.advance(1)
                continue
            taken.add(traj.id)
            batch.append(traj)
            if len(batch) >= args.batch:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    if client is not None:
        client.close()
    fill_rate = round(counts["template_fills"] / counts["alternatives"], 4) if counts["alternatives"] else 0.0
    summary = {
        "command": "data has",
        "format_version": FORMAT_VERSION,
        "backend": backend.name,
        "candidates": cfg.candidates,
        "seed": cfg.seed,
        "shard": [shard, num_shards],
        "trajectories_read": report.read,
        "trajectories_ok": report.ok,
        "terminations": dict(sorted(report.terminations.items())),
        "malformed": dict(sorted(report.malformed.items())),
        "malformed_examples": report.examples,
        "malformed_steps": {k: bad_steps.get(k, 0) for k in MALFORMED_STEP_KINDS},
        **{k: v for k, v in sorted(counts.items())},
        "output_totals": output_totals(out),
        "diversity": guard.report(),
        "shortfall_steps": backend.shortfall,
        "llm_backend": dict(getattr(backend, "counts", {})),
        "template_rejected": dict(sorted(getattr(backend, "rejected", {}).items())),
        "fill_rate": fill_rate,
        "max_fill_rate": args.max_failure_rate,
        "llm": client.stats.as_dict() if client is not None else None,
        "length_histogram_tokens": length_histogram(lengths),
        "tokens_total": sum(lengths),
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(summary_path, summary)
    bad = sum(report.malformed.values())
    steps_line = ", ".join(f"{k}={v}" for k, v in summary["malformed_steps"].items() if v)
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(report.malformed.items()))
    div = summary["diversity"]["mean_pairwise_distance"]
    print(
        f"data has: read {report.read} trajectories, malformed {bad}" + (f" ({reasons})" if reasons else "")
        + f", expanded {counts['trajectories_expanded']} (already done {counts['already_done']}, no judgment "
        f"{counts['skipped_no_judgment']}), samples written {counts['samples_written']}, tokens {sum(lengths)}, "
        f"option diversity {div}"
        + (f", malformed steps: {steps_line} (cut {counts['trajectories_cut']}, skipped "
           f"{counts['skipped_malformed_step']})" if steps_line else "")
        + (f", template fills {counts['template_fills']} of {counts['alternatives']} alternatives "
           f"({fill_rate:.1%})" if backend.name != "template" else "")
        + f"; summary {summary_path}"
    )  # fmt: skip
    if backend.name != "template" and counts["alternatives"] and fill_rate > args.max_failure_rate:
        print(
            f"data has: template fill rate {fill_rate:.1%} ({counts['template_fills']} of {counts['alternatives']} "
            f"alternatives) exceeds --max-failure-rate {args.max_failure_rate:.1%}: the LLM backend failed; see "
            f"llm_backend in {summary_path}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
