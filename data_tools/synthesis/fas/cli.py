"""``megatron-agentic data fas``: first-order action synthesis (planning + reasoning actions).

Examples::

    megatron-agentic data memory --builtin-wiki --limit 500 --output runs/memory.jsonl
    megatron-agentic data fas --memory runs/memory.jsonl --output-dir runs/fas --questions-per-memory 3
    megatron-agentic data fas --memory runs/memory.jsonl --output-dir runs/fas --backend openai \\
        --llm-url http://node1:8000/v1 --llm-url http://node2:8000/v1 --model Qwen/Qwen3-30B-A3B --concurrency 256

Writes ``DIR/planning.jsonl``, ``DIR/reasoning.jsonl``, ``DIR/rejected.jsonl`` (judge rejections, invalid
questions, failures; each with its reason) and ``DIR/summary.json``. Rerunning with the same ``DIR`` resumes.
With ``--num-shards N`` each shard writes ``DIR/shard-XXXXX-of-0000N/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.common.argtypes import positive_int
from data_tools.common.lock import lock_output_dir
from data_tools.synthesis.common.cli_args import add_llm_args, llm_config_from_args
from data_tools.synthesis.common.command import (
    CommandError,
    build_config,
    failure_exit_status,
    require_file,
    run_command,
)
from data_tools.synthesis.common.failure_rate import add_failure_rate_arg
from data_tools.synthesis.common.settings import SettingsMismatch
from data_tools.synthesis.common.sharding import add_shard_args, shard_from_args
from data_tools.synthesis.fas.judge_eval import DEFAULT_SET
from data_tools.synthesis.fas.pipeline import FasConfig, run_fas
from data_tools.synthesis.fas.summary import failure_counts


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``data fas``."""
    p = argparse.ArgumentParser(
        prog="megatron-agentic data fas",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--memory", required=True, help="memory JSONL from `data memory`")
    p.add_argument("--output-dir", required=True, help="output directory (rerun with the same one to resume)")
    p.add_argument("--questions-per-memory", "-k", type=int, default=3, help="K questions of different styles")
    p.add_argument("--dedup-threshold", type=float, default=0.8, help="MinHash near-duplicate threshold")
    p.add_argument("--max-items", type=positive_int, default=None, help="process at most this many memory items")
    p.add_argument("--window", type=int, default=None, help="memory items in flight")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="when resuming, redo the memory items whose requests failed (their records are replaced)",
    )
    p.add_argument(
        "--full-tools-share",
        type=float,
        default=0.2,
        help="share of samples whose system turn declares every tool (others: the used tool plus 0-2 others)",
    )
    p.add_argument(
        "--judge-set",
        default=str(DEFAULT_SET) if DEFAULT_SET.is_file() else None,
        help="labelled judge set to report the judge's precision/recall on ('none' to skip; default: "
        "tests/fas/fixtures/judge_labelled.jsonl of a source checkout)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    add_failure_rate_arg(p)
    add_shard_args(p)
    add_llm_args(p, default_backend="template")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``data fas``."""
    return run_command("data fas", build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    require_file(args.memory, "memory file")
    index, num = shard_from_args(args)
    lock_output_dir(args.output_dir, "data fas", index, num)  # one writer per output (issue 16)
    llm = None
    if args.backend == "openai":
        cache = Path(args.output_dir) / "llm_cache.sqlite"
        llm = llm_config_from_args(args, default_cache=str(cache))
    cfg = build_config(
        FasConfig,
        memory_path=args.memory,
        output_dir=args.output_dir,
        questions_per_memory=args.questions_per_memory,
        backend=args.backend,
        llm=llm,
        seed=args.seed,
        shard_index=index,
        num_shards=num,
        dedup_threshold=args.dedup_threshold,
        max_items=args.max_items,
        window=args.window,
        progress=args.progress,
        retry_failed=args.retry_failed,
        full_tools_share=args.full_tools_share,
        judge_set=None if args.judge_set in (None, "none") else args.judge_set,
        max_failure_rate=args.max_failure_rate,
    )
    try:
        summary = run_fas(cfg)
    except SettingsMismatch as exc:
        raise CommandError(str(exc)) from None
    c = summary["counts"]
    if summary.get("valid_input_records") == 0:
        bad = ", ".join(f"{k} {v}" for k, v in c["memory_bad_lines"].items()) or "the file is empty"
        print(f"data fas: no valid memory item in {args.memory} ({bad}); nothing was synthesized", file=sys.stderr)
        return 1
    llm_part = ""
    if summary["llm"]:
        s = summary["llm"]
        u = s.get("usage", {})
        llm_part = (
            f"; requests {s['requests']} (cache hits {s['cache_hits']}, retries {s['retries']}, "
            f"re-asks {s['reasks']}, failed {s['failed']}); tokens {u.get('prompt_tokens', 0):,} prompt / "
            f"{u.get('completion_tokens', 0):,} completion / {u.get('reasoning_tokens', 0):,} reasoning"
        )
    done = "already done (nothing to do): " if summary.get("already_done") else ""
    print(
        f"fas: {done}{c['memory_items']} memory items, {c['questions']} questions ({c['near_duplicates']} near-duplicates)"
        f" -> planning {c['planning']['accepted']} accepted / {c['planning']['rejected']} rejected, reasoning "
        f"{c['reasoning']['accepted']} accepted / {c['reasoning']['rejected']} rejected, failures "
        f"{sum(c['failures'].values())}{llm_part}; outputs in {cfg.out_dir}"
    )
    for name, fig in (summary.get("judge_accuracy") or {}).items():
        if isinstance(fig, dict):
            print(
                f"fas: {name} judge on the labelled set: precision {fig['precision']}, recall {fig['recall']}, "
                f"accuracy {fig['accuracy_before']} -> {fig['accuracy_after']}"
            )
    rep = summary.get("repetition") or {}
    if rep:
        print(
            f"fas: blank questions {rep['blank_question_share']:.1%}, top 8-gram share {rep['max_top_8gram_share']:.1%} "
            f"(worst style), knowledge equal to the clue {rep['knowledge_equals_clue_share']:.1%}"
            + (
                f", top 256-token block {rep['top_256_token_block_share']:.1%} of {rep['tokens']:,} tokens"
                if "tokens" in rep
                else ""
            )
        )
    failed, total = failure_counts(summary)
    return failure_exit_status(
        "data fas",
        failed=failed,
        total=total,
        max_rate=args.max_failure_rate,
        listed_in=f"{cfg.out_dir / 'rejected.jsonl'} (each with its rejection reason)",
    )
