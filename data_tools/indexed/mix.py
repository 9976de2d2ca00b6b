"""``megatron-agentic data mix``: stage blends from real token counts.

A stage config lists typed sources (megatron indexed-dataset prefixes) and token budgets::

    stage: stage1                 # paper defaults: stage1 (200B) or stage2 (100B)
    total_tokens: 200e9           # optional; default from the stage
    max_epochs: 4.0               # warn when a source would repeat more often
    sources:
      - {name: planning, type: planning, prefix: data/fas/planning_text_document}
      - {name: reasoning, type: reasoning, prefix: data/fas/reasoning_text_document}
      - {name: has, type: has, prefix: data/has/short_text_document, target_tokens: 40e9}
      - {name: math, type: general, prefix: data/general/math_text_document}
      - {type: replay, blend_file: data/blends/stage1.json}   # stage 2: stage-1 sources, as mixed there

Budgets: a source's own ``target_tokens`` wins; otherwise the paper's budget of its type (stage 1: planning
~110B, reasoning ~30B, HAS ~40B; stage 2: replay ~20B) is split over the sources of that type in proportion
to their real sizes; every other source (general data; stage-2 HAS and tool use) shares the rest of
``total_tokens`` in proportion to size. Token counts come from the ``.idx`` headers (checked against the
``.bin`` size). The output JSON holds the ``blend`` list ``[weight, prefix, ...]`` read by
``megatron-agentic train`` (``data.blend_file``) and a per-source report with epochs and the document-length
histogram (``doc_length_histogram``, :mod:`data_tools.indexed.doc_lengths`) that ``plan`` prices per-document
attention by.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from data_tools.common.argtypes import positive_int
from data_tools.common.atomic import atomic_write_json
from data_tools.indexed.doc_lengths import dataset_histogram
from data_tools.indexed.indexed_io import read_index
from data_tools.indexed.provenance import tokenized_synthetic_inputs

logger = logging.getLogger(__name__)

SOURCE_TYPES = ("planning", "reasoning", "has", "general", "tool_use", "replay")
"""Types a source may have."""

PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "stage1": {"total_tokens": 200e9, "budgets": {"planning": 110e9, "reasoning": 30e9, "has": 40e9}},
    "stage2": {"total_tokens": 100e9, "budgets": {"replay": 20e9}},
}
"""Token budgets of the AgentFounder recipe (approximate, from the paper); other types share the rest.

When ``total_tokens`` differs from the paper's (a scaled-down run), the default type budgets keep their
shares of it (stage 1: planning 55%, reasoning 15%, HAS 20%; stage 2: replay 20%)."""


class MixError(ValueError):
    """A stage-config or dataset problem, naming the file and field."""


@dataclasses.dataclass(frozen=True)
class IndexStats:
    """Counts read from a megatron ``.idx`` header."""

    sequences: int
    """Number of sequences."""
    documents: int
    """Number of documents."""
    tokens: int
    """Sum of sequence lengths."""


def read_index_stats(prefix: str | os.PathLike) -> IndexStats:
    """Sequence, document and token counts of the indexed dataset ``prefix`` (``.idx`` + ``.bin``).

    Parsed and checked by :func:`~data_tools.indexed.indexed_io.read_index`; raises :class:`MixError` naming the file
    when the dataset is missing, is not a megatron ``MMIDIDX`` version-1 index or is inconsistent (the ``.bin`` size
    included).
    """
    info = read_index(prefix)
    if info.errors:
        raise MixError(info.errors[0])
    return IndexStats(sequences=info.num_sequences, documents=info.num_documents, tokens=info.num_tokens)


@dataclasses.dataclass
class Source:
    """One entry of a stage config's ``sources`` list."""

    type: str
    """One of :data:`SOURCE_TYPES`."""
    prefix: str | None = None
    """Indexed-dataset prefix (``.bin``/``.idx`` without extension)."""
    name: str | None = None
    """Display name (default: the prefix's file name)."""
    target_tokens: float | None = None
    """Tokens this source contributes to the stage (default: from its type's budget or the remainder)."""
    blend_file: str | None = None
    """Replay only: a previous stage's ``data mix`` output; its sources are replayed in its proportions."""

    def __post_init__(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise MixError(f"type must be one of {SOURCE_TYPES}, got {self.type!r}")
        if (self.prefix is None) == (self.blend_file is None):
            raise MixError("give exactly one of prefix or blend_file")
        if self.blend_file is not None and self.type != "replay":
            raise MixError("blend_file is only valid for type: replay")
        if self.target_tokens is not None:
            if not isinstance(self.target_tokens, (int, float)) or self.target_tokens < 0:
                raise MixError(f"target_tokens must be a number >= 0, got {self.target_tokens!r}")
        if self.name is None:
            self.name = Path(self.prefix).name if self.prefix else f"replay:{Path(str(self.blend_file)).stem}"


@dataclasses.dataclass
class StageMix:
    """A stage config for ``data mix``."""

    stage: str = "stage1"
    """``stage1`` or ``stage2``: selects the paper's default budgets."""
    sources: list[Source] = dataclasses.field(default_factory=list)
    """Typed sources."""
    total_tokens: float | None = None
    """Tokens of the whole stage (default: 200B for stage 1, 100B for stage 2)."""
    max_epochs: float = 4.0
    """Warn (``--strict``: fail) when a source would be repeated more than this many times."""
    budgets: dict[str, float] | None = None
    """Per-type budgets in tokens replacing the paper's defaults (``{type: tokens}``); None: the paper's shares."""

    def __post_init__(self) -> None:
        if self.stage not in PAPER_DEFAULTS:
            raise MixError(f"stage must be one of {sorted(PAPER_DEFAULTS)}, got {self.stage!r}")
        if not self.sources:
            raise MixError("sources must be a non-empty list")
        if self.total_tokens is None:
            self.total_tokens = PAPER_DEFAULTS[self.stage]["total_tokens"]
        if not isinstance(self.total_tokens, (int, float)) or self.total_tokens <= 0:
            raise MixError(f"total_tokens must be a positive number, got {self.total_tokens!r}")
        if not isinstance(self.max_epochs, (int, float)) or self.max_epochs <= 0:
            raise MixError(f"max_epochs must be a positive number, got {self.max_epochs!r}")
        for key, value in (self.budgets or {}).items():
            if key not in SOURCE_TYPES or not isinstance(value, (int, float)) or value < 0:
                raise MixError(f"budgets.{key}: expected a source type with tokens >= 0, got {value!r}")

    def type_budgets(self) -> dict[str, float]:
        """Tokens per source type: the explicit ``budgets``, else the paper's shares of ``total_tokens``."""
        if self.budgets is not None:
            return dict(self.budgets)
        paper = PAPER_DEFAULTS[self.stage]
        return {k: v * self.total_tokens / paper["total_tokens"] for k, v in paper["budgets"].items()}


def _num(value: Any) -> Any:
    """YAML reads ``200e9`` as a string; accept it as a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_stage_config(path: str | os.PathLike) -> StageMix:
    """Read and validate a stage config YAML/JSON; errors name the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MixError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise MixError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise MixError(f"{path}: top level must be a mapping")
    known = {f.name for f in dataclasses.fields(StageMix)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MixError(f"{path}: unknown field(s) {unknown}; valid: {sorted(known)}")
    sources_raw = raw.get("sources")
    if not isinstance(sources_raw, list):
        raise MixError(f"{path}: sources must be a list")
    sources = []
    for i, item in enumerate(sources_raw):
        if not isinstance(item, dict):
            raise MixError(f"{path}: sources[{i}] must be a mapping")
        try:
            fields = {k: (_num(v) if k == "target_tokens" else v) for k, v in item.items()}
            sources.append(Source(**fields))
        except TypeError as exc:
            raise MixError(f"{path}: sources[{i}]: {exc}") from None
        except MixError as exc:
            raise MixError(f"{path}: sources[{i}]: {exc}") from None
    try:
        budgets = raw.get("budgets")
        if budgets is not None:
            budgets = {k: _num(v) for k, v in budgets.items()}
        return StageMix(
            stage=raw.get("stage", "stage1"),
            sources=sources,
            total_tokens=_num(raw.get("total_tokens")),
            max_epochs=_num(raw.get("max_epochs", 4.0)),
            budgets=budgets,
        )
    except MixError as exc:
        raise MixError(f"{path}: {exc}") from None


def _expand_replay(source: Source, base_dir: Path) -> list[tuple[Source, float]]:
    """Replay sources of a previous stage's blend file, with their relative weights there."""
    path = Path(source.blend_file)
    if not path.is_absolute() and not path.exists():
        path = base_dir / path
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MixError(f"{path}: cannot read blend file: {exc}") from None
    entries = previous.get("sources") if isinstance(previous, dict) else None
    if not entries:
        raise MixError(f"{path}: no 'sources' list (was it written by `data mix`?)")
    out = []
    for entry in entries:
        replay = Source(type="replay", prefix=entry["prefix"], name=f"replay:{entry['name']}")
        out.append((replay, float(entry["target_tokens"])))
    return out


def compute_mix(config: StageMix, base_dir: str | os.PathLike = ".", strict: bool = False) -> dict[str, Any]:
    """Resolve budgets against real token counts; returns the blend document written by ``data mix``.

    Raises :class:`MixError` on unreadable datasets, over-committed budgets, or (``strict``) a source
    repeated more than ``config.max_epochs`` times.
    """
    base_dir = Path(base_dir)
    warnings: list[str] = []
    resolved: list[tuple[Source, float | None]] = []  # (source, relative weight for replay expansions)
    replay_budget_sources: list[tuple[Source, float]] = []
    for source in config.sources:
        if source.blend_file is not None:
            expanded = _expand_replay(source, base_dir)
            if source.target_tokens is not None:
                total = sum(w for _, w in expanded)
                resolved += [(s, None) for s, _ in expanded]
                for s, w in expanded:
                    s.target_tokens = source.target_tokens * w / total
            else:
                replay_budget_sources += expanded
                resolved += [(s, w) for s, w in expanded]
        else:
            resolved.append((source, None))
    sources = [s for s, _ in resolved]
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MixError(f"duplicate source names {dupes}; give each source a distinct name")
    stats = {s.name: read_index_stats(s.prefix) for s in sources}
    for s in sources:
        synthetic = tokenized_synthetic_inputs(str(s.prefix))
        if synthetic:
            warnings.append(
                f"source {s.name} ({s.prefix}) was tokenized from template-backend synthetic text "
                f"(synthetic_template: true in {', '.join(synthetic[:3])}): fine for demos and tests, not for "
                f"real training; synthesize with --backend openai"
            )
    for s in sources:
        if stats[s.name].tokens == 0:
            raise MixError(f"source {s.name} ({s.prefix}): dataset holds 0 tokens")
    targets: dict[str, float] = {s.name: float(s.target_tokens) for s in sources if s.target_tokens is not None}
    replay_weights = {s.name: w for s, w in resolved if w is not None}
    for type_name, budget in config.type_budgets().items():
        members = [s for s in sources if s.type == type_name and s.name not in targets]
        if not members:
            if not any(s.type == type_name for s in sources):
                warnings.append(f"no {type_name} sources: its {budget / 1e9:g}B default budget goes to the rest")
            continue
        if all(s.name in replay_weights for s in members):
            weights = [replay_weights[s.name] for s in members]  # replay mirrors the previous stage's mix
        else:
            weights = [stats[s.name].tokens for s in members]
        for s, w in zip(members, weights):
            targets[s.name] = budget * w / sum(weights)
    rest_members = [s for s in sources if s.name not in targets]
    remainder = config.total_tokens - sum(targets.values())
    if remainder < -1e-6 * config.total_tokens:
        raise MixError(
            f"budgets add up to {sum(targets.values()) / 1e9:.3f}B tokens, more than total_tokens "
            f"{config.total_tokens / 1e9:.3f}B"
        )
    if rest_members:
        size = sum(stats[s.name].tokens for s in rest_members)
        for s in rest_members:
            targets[s.name] = max(remainder, 0.0) * stats[s.name].tokens / size
        if remainder <= 0:
            warnings.append(f"no tokens left for {[s.name for s in rest_members]} after the typed budgets")
    elif remainder > 1e-6 * config.total_tokens:
        warnings.append(
            f"{remainder / 1e9:.3f}B tokens of total_tokens are unassigned (no untyped-budget sources); "
            f"the stage has {sum(targets.values()) / 1e9:.3f}B tokens"
        )
    total = sum(targets.values())
    if total <= 0:
        raise MixError("the blend has no tokens (all targets are 0)")
    report = []
    for s in sources:
        st = stats[s.name]
        epochs = targets[s.name] / st.tokens
        if epochs > config.max_epochs:
            message = (
                f"source {s.name} ({s.prefix}) would be repeated {epochs:.2f} times "
                f"(> max_epochs {config.max_epochs:g}): {targets[s.name] / 1e9:.3f}B target vs "
                f"{st.tokens / 1e9:.3f}B available"
            )
            if strict:
                raise MixError(message)
            warnings.append(message)
        report.append(
            {
                "name": s.name,
                "type": s.type,
                "prefix": s.prefix,
                "tokens": st.tokens,
                "documents": st.documents,
                "target_tokens": int(round(targets[s.name])),
                "weight": targets[s.name] / total,
                "epochs": epochs,
                # per-document attention costs sum(len^2): the planner reads this (data_tools/indexed/doc_lengths.py)
                "doc_length_histogram": dataset_histogram(s.prefix),
            }
        )
    blend: list[Any] = []
    for entry in report:
        if entry["target_tokens"] > 0:
            blend += [entry["weight"], entry["prefix"]]
    for w in warnings:
        logger.warning("%s", w)
    return {
        "stage": config.stage,
        "total_tokens": int(round(total)),
        "max_epochs": config.max_epochs,
        "blend": blend,
        "sources": report,
        "warnings": warnings,
        "created_by": "megatron-agentic data mix",
    }


def format_tokens(n: float) -> str:
    """Human-readable token count: ``200.000B``, ``1.25M``, ``930``."""
    if n >= 1e8:
        return f"{n / 1e9:.3f}B"
    if n >= 1e5:
        return f"{n / 1e6:.2f}M"
    return f"{n:,.0f}"


def iterations_for(tokens: float, global_batch_size: int, seq_length: int) -> int:
    """Optimizer steps to train ``tokens``: ceil(tokens / (global_batch_size * seq_length))."""
    if global_batch_size < 1 or seq_length < 1:
        raise MixError("global_batch_size and seq_length must be >= 1")
    return math.ceil(tokens / (global_batch_size * seq_length))


def _parse_source_flag(text: str) -> Source:
    """``TYPE:PREFIX[:TARGET_TOKENS]`` from ``--source``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise MixError(f"--source {text!r}: expected TYPE:PREFIX[:TARGET_TOKENS]")
    target = float(parts[2]) if len(parts) == 3 else None
    return Source(type=parts[0], prefix=parts[1], target_tokens=target)


def main(argv: list[str] | None = None) -> int:
    """``megatron-agentic data mix (--config STAGE.yaml | --source TYPE:PREFIX ...) --output BLEND.json``."""
    parser = argparse.ArgumentParser(prog="megatron-agentic data mix", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="stage config YAML (see module docs)")
    parser.add_argument("--source", action="append", default=[], help="TYPE:PREFIX[:TARGET_TOKENS] (no --config)")
    parser.add_argument("--stage", choices=sorted(PAPER_DEFAULTS), help="stage defaults (overrides the config's)")
    parser.add_argument("--total-tokens", type=float, help="tokens of the whole stage (overrides the config's)")
    parser.add_argument("--max-epochs", type=float, help="repeat threshold (overrides the config's)")
    parser.add_argument("--strict", action="store_true", help="fail instead of warning when a source repeats")
    parser.add_argument("--output", "-o", required=True, help="blend JSON to write (data.blend_file)")
    parser.add_argument("--global-batch-size", type=positive_int, help="with --seq-length: print the iterations")
    parser.add_argument("--seq-length", type=positive_int, help="with --global-batch-size: print the iterations")
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.source):
        parser.error("give either --config or one or more --source")
    if (args.total_tokens is not None and args.total_tokens <= 0) or (
        args.max_epochs is not None and args.max_epochs <= 0
    ):
        parser.error("--total-tokens and --max-epochs must be positive")
    try:
        if args.config:
            if args.stage:
                parser.error("--stage is for --source mode; set `stage:` in the config")
            config = load_stage_config(args.config)
            base_dir = Path(args.config).parent
        else:
            config = StageMix(stage=args.stage or "stage1", sources=[_parse_source_flag(s) for s in args.source])
            base_dir = Path(".")
        if args.total_tokens is not None:
            config.total_tokens = args.total_tokens
        if args.max_epochs is not None:
            config.max_epochs = args.max_epochs
        result = compute_mix(config, base_dir=base_dir, strict=args.strict)
    except MixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['stage']} blend: {format_tokens(result['total_tokens'])} tokens")
    for col in ("source", "type", "tokens", "target", "weight", "epochs", "mean doc", "max doc"):
        table.add_column(col, justify="left" if col in ("source", "type") else "right")
    for s in result["sources"]:
        hist = s["doc_length_histogram"]
        table.add_row(
            s["name"],
            s["type"],
            format_tokens(s["tokens"]),
            format_tokens(s["target_tokens"]),
            f"{s['weight']:.4f}",
            f"{s['epochs']:.2f}",
            f"{hist['tokens'] / max(hist['documents'], 1):,.0f}",
            f"{hist['max_length']:,}",
        )
    console = Console()
    console.print(table)
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    if args.global_batch_size and args.seq_length:
        iters = iterations_for(result["total_tokens"], args.global_batch_size, args.seq_length)
        result["iterations"] = iters
        console.print(
            f"iterations = {result['total_tokens']:,} / ({args.global_batch_size} x {args.seq_length}) = {iters:,}"
        )
    path = atomic_write_json(args.output, result, ensure_ascii=True)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
