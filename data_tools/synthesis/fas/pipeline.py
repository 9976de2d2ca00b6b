"""The FAS run: memory items -> questions -> planning + reasoning actions -> judge -> JSONL outputs, resumable.

Items are processed concurrently (a window of items in flight, the LLM client bounding requests) but
*committed in input order*: for each item its planning, reasoning and rejected records are appended, then a
line in ``progress.jsonl`` marks it complete. A rerun skips completed items, replays an item interrupted
between those writes (records already written are skipped by id), and rebuilds the near-duplicate index from
``progress.jsonl``, so after a SIGKILL the outputs equal those of an uninterrupted run: none lost, none
duplicated (LLM answers come back from the request cache).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.common.atomic import atomic_write_text
from data_tools.common.jsonl import BadLine, ResumableJsonlWriter, dumps_line, iter_jsonl, read_jsonl
from data_tools.synthesis.common.progress import SynthesisProgress, count_lines
from data_tools.synthesis.common.settings import claim_settings
from data_tools.synthesis.common.sharding import shard_of, shard_suffix
from data_tools.synthesis.fas import actions, judge, template_actions
from data_tools.synthesis.fas import records as R
from data_tools.synthesis.fas.dedup import NearDuplicateFilter
from data_tools.synthesis.fas.knowledge import find_dates
from data_tools.synthesis.fas.questions import (
    STYLES,
    choose_styles,
    knowledge_index,
    llm_questions_request,
    question_id,
    stable_int,
    template_questions,
    validate_llm_questions,
)
from data_tools.synthesis.fas.summary import finished_summary, write_summary
from data_tools.synthesis.fas.system_prompts import choose_system
from data_tools.synthesis.llm.client import LLMClient, LLMConfig

log = logging.getLogger(__name__)
OUTPUT_FILES = ("planning.jsonl", "reasoning.jsonl", "rejected.jsonl")


@dataclass
class FasConfig:
    """Settings of one FAS run (one shard)."""

    memory_path: str
    """Memory JSONL written by ``data memory``."""
    output_dir: str
    """Output directory; shards of a multi-shard run write to ``DIR/shard-XXXXX-of-YYYYY/``."""
    questions_per_memory: int = 3
    """K: questions per memory item, each of a different style (styles cycle when K > 5)."""
    backend: str = "template"
    """``template`` (deterministic, offline) or ``openai`` (an OpenAI-compatible server)."""
    llm: LLMConfig | None = None
    """LLM client settings (required for the ``openai`` backend)."""
    seed: int = 0
    """Base seed for style choice, template sampling and per-request seeds."""
    shard_index: int = 0
    """This worker's shard."""
    num_shards: int = 1
    """Total shards; memory items are assigned by a stable hash of their id."""
    dedup_threshold: float = 0.8
    """MinHash Jaccard threshold above which a question is a near duplicate of an earlier one."""
    max_items: int | None = None
    """Process at most this many memory items of the shard (for trials)."""
    window: int | None = None
    """Memory items in flight (default: enough to keep ``concurrency`` requests busy)."""
    progress: bool | None = None
    """Show a progress bar (``None``: when stderr is a terminal)."""
    judge_temperature: float = 0.0
    """Sampling temperature of judge requests."""
    retry_failed: bool = False
    """On resume, redo the memory items that have failed requests (their records are removed first)."""
    full_tools_share: float = 0.2
    """Share of samples whose system turn declares the full tool set (others: the used tool plus 0-2 others;
    see :mod:`data_tools.synthesis.fas.system_prompts`)."""
    judge_set: str | None = None
    """Labelled judge set (:mod:`data_tools.synthesis.fas.judge_eval`) to measure the judge on; ``None``: skip."""
    summary_tokenizer: str | None = "qwen3"
    """Tokenizer for the summary's repeated-block figure (``None``: skip that figure)."""
    max_failure_rate: float = 0.1
    """The run fails (``data fas`` exits 1) when failed requests + invalid questions + judge rejections exceed
    this share of the attempted samples (:mod:`data_tools.synthesis.common.failure_rate`)."""

    def __post_init__(self) -> None:
        if self.backend not in ("template", "openai"):
            raise ValueError(f"backend must be 'template' or 'openai', got {self.backend!r}")
        if self.backend == "openai" and self.llm is None:
            raise ValueError("the openai backend needs an LLMConfig (--llm-url)")
        if self.questions_per_memory < 1:
            raise ValueError(f"questions_per_memory must be >= 1, got {self.questions_per_memory}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard {self.shard_index} out of range for {self.num_shards} shards")
        if self.window is not None and self.window < 1:
            raise ValueError("window must be >= 1")
        if not 0.0 <= self.full_tools_share <= 1.0:
            raise ValueError(f"full_tools_share must be in [0, 1], got {self.full_tools_share}")

    @property
    def out_dir(self) -> Path:
        """Directory this shard writes to."""
        suffix = shard_suffix(self.shard_index, self.num_shards)
        return Path(self.output_dir) / suffix if suffix else Path(self.output_dir)


@dataclass
class ItemResult:
    """Everything one memory item produced, before dedup and commit."""

    questions: list[dict[str, Any]] = field(default_factory=list)
    """The item's questions (with ids), in slot order."""
    unavailable: list[str] = field(default_factory=list)
    """Requested styles the item could not support (or the LLM did not deliver)."""
    planning: dict[str, dict[str, Any]] = field(default_factory=dict)
    """question id -> planning record (accepted or judge-rejected)."""
    reasoning: dict[str, dict[str, Any]] = field(default_factory=dict)
    """question id -> reasoning record (accepted or judge-rejected)."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Failures and invalid questions (judge rejections are decided at commit)."""


def normalize_item(rec: dict[str, Any]) -> dict[str, Any]:
    """Validate a memory item and fill optional fields; raises ``ValueError`` naming the bad field."""
    sts = []
    for i, st in enumerate(rec["statements"]):
        if not isinstance(st, dict) or not isinstance(st.get("id"), str) or not isinstance(st.get("text"), str):
            raise ValueError(f"statements[{i}] needs string 'id' and 'text'")
        times = st.get("times")
        if times is None:
            times = [{"surface": d.surface, "value": d.value, "year": d.year} for d in find_dates(st["text"])]
        sts.append(
            {
                "id": st["id"],
                "text": st["text"],
                "subject": st.get("subject"),
                "time": st.get("time") or (times[0]["value"] if times else None),
                "times": times,
                "stance": st.get("stance", "neutral"),
                "source": st.get("source") or {},
                "mentions": list(st.get("mentions") or []),
            }
        )
    if not sts:
        raise ValueError("statements is empty")
    related = rec.get("related") or []
    if not isinstance(related, list):
        raise ValueError("related must be a list")
    return {**rec, "id": str(rec["id"]), "statements": sts, "related": related}


def iter_memory(cfg: FasConfig, bad: Counter, valid: Counter | None = None) -> Iterator[dict[str, Any]]:
    """This shard's memory items (bad lines and invalid items counted in ``bad``, valid lines of all shards in
    ``valid["records"]``)."""
    valid = Counter() if valid is None else valid
    n = 0
    for _, rec in iter_jsonl(
        cfg.memory_path, required=["id", "entity", "statements"], types={"entity": str, "statements": list}
    ):
        if isinstance(rec, BadLine):
            bad[rec.reason] += 1
            log.warning("skipping memory line: %s", rec)
            continue
        valid["records"] += 1
        if shard_of(str(rec["id"]), cfg.num_shards) != cfg.shard_index:
            continue
        try:
            item = normalize_item(rec)
        except ValueError as exc:
            bad["invalid_item"] += 1
            log.warning("%s: memory item %s: %s", cfg.memory_path, rec.get("id"), exc)
            continue
        yield item
        n += 1
        if cfg.max_items is not None and n >= cfg.max_items:
            return


class FasRunner:
    """Runs FAS for one shard; see the module docstring."""

    def __init__(self, cfg: FasConfig) -> None:
        self.cfg = cfg
        self.client = LLMClient(cfg.llm) if cfg.backend == "openai" else None
        self.model = cfg.llm.model if cfg.llm else None
        if cfg.backend == "openai":
            tags = {name: load.tag + "#" + load.digest for name, load in _templates().items()}
        else:
            tags = {"generator": R.TEMPLATE_GENERATOR}
        self.template_tags = tags

    def attribute_index(self):
        """Typed attributes of the whole memory file (comparison/arithmetic partners), built on first use."""
        if getattr(self, "_index", None) is None:
            from data_tools.synthesis.fas.research import AttributeIndex

            self._index = AttributeIndex()
            for _, rec in iter_jsonl(self.cfg.memory_path):
                if isinstance(rec, dict) and isinstance(rec.get("entity"), str):
                    self._index.add_item(rec)
        return self._index

    def settings(self) -> dict[str, Any]:
        """What determines this shard's outputs (stored as ``settings.json``; a resume must match it)."""
        cfg = self.cfg
        out: dict[str, Any] = {
            "tool": "fas",
            "fas_version": R.FAS_VERSION,
            "memory": str(Path(cfg.memory_path).resolve()),
            "questions_per_memory": cfg.questions_per_memory,
            "seed": cfg.seed,
            "backend": cfg.backend,
            "dedup_threshold": cfg.dedup_threshold,
            "shard_index": cfg.shard_index,
            "num_shards": cfg.num_shards,
            "templates": self.template_tags,
            "full_tools_share": cfg.full_tools_share,
        }
        if cfg.llm is not None:
            out.update(
                model=cfg.llm.model,
                temperature=cfg.llm.temperature,
                top_p=cfg.llm.top_p,
                max_tokens=cfg.llm.max_tokens,
                extra_body=cfg.llm.extra_body,
                judge_temperature=cfg.judge_temperature,
            )
        return out

    # -- per item ----------------------------------------------------------------------------------------------
    def _seed(self, *parts: Any) -> int:
        return stable_int(self.cfg.seed, *parts)

    async def _chat(self, req: dict[str, Any], seed: int, **sampling: Any):
        assert self.client is not None
        return await self.client.chat(
            req["messages"],
            schema=req["schema"],
            seed=seed,
            schema_name=req["template"].family + "_" + req["template"].name,
            **sampling,
        )

    async def process_item(self, item: dict[str, Any]) -> ItemResult:
        """Questions, actions and verdicts for one memory item."""
        cfg = self.cfg
        out = ItemResult()
        styles = choose_styles(item["id"], cfg.questions_per_memory, cfg.seed)
        prov = R.provenance(item, cfg.backend, self.model, cfg.seed, self.template_tags)
        if cfg.backend == "template":
            qs, out.unavailable = template_questions(item, styles, cfg.seed, self.attribute_index())
        else:
            res = await self._chat(llm_questions_request(item, styles), self._seed(item["id"], "questions"))
            if not res.ok:
                stub = R.stub("questions", f"questions-{item['id']}", item, None, prov)
                out.rejected.append(R.rejected(stub, "questions", "failure", f"llm_{res.error}", res.detail))
                return out
            qs, invalid = validate_llm_questions(item, res.parsed, styles)
            covered = Counter(q["style"] for q in qs)
            wanted = Counter(styles)
            out.unavailable = sorted((wanted - covered).elements())
            for j, (q, reason) in enumerate(invalid):
                stub = R.stub("question", f"question-{item['id']}-{j}", item, q, prov)
                out.rejected.append(R.rejected(stub, "questions", "invalid", reason))
        kidx = knowledge_index(item)
        tasks = []
        for slot, q in enumerate(qs):
            q = {**q, "id": question_id(item["id"], slot, q["style"])}
            partner = {st["id"]: st for st in q.pop("partner_statements", None) or []}
            out.questions.append(q)
            knowledge = [kidx.get(i) or partner[i] for i in q["statement_ids"]]
            qprov = {**prov, "sources": R.provenance(item, cfg.backend, self.model, cfg.seed, {}, knowledge)["sources"]}
            tasks.append(self._planning(item, q, knowledge, qprov, out))
            tasks.append(self._reasoning(item, q, knowledge, qprov, out))
        await asyncio.gather(*tasks)
        return out

    async def _planning(self, item, q, knowledge, prov, out: ItemResult) -> None:
        if self.cfg.backend == "template":
            plan = template_actions.template_plan(q, item["entity"])
            verdict = judge.rule_judge_planning(q, knowledge, plan)
        else:
            res = await self._chat(actions.llm_plan_request(q), self._seed(q["id"], "planning"))
            if not res.ok:
                stub = R.stub("planning", "plan-" + q["id"][2:], item, q, prov)
                out.rejected.append(R.rejected(stub, "planning", "failure", f"llm_{res.error}", res.detail))
                return
            plan = actions.normalize_plan(res.parsed)
            verdict = judge.structural_planning(plan)
            if verdict is None:
                jr = await self._chat(
                    judge.llm_judge_planning_request(q, knowledge, plan),
                    self._seed(q["id"], "judge-planning"),
                    temperature=self.cfg.judge_temperature,
                )
                if not jr.ok:
                    stub = R.planning_record(
                        item, q, knowledge, plan, judge.SampleVerdict(False, None, "", "none"), prov
                    )
                    out.rejected.append(R.rejected(stub, "planning", "failure", f"judge_{jr.error}", jr.detail))
                    return
                verdict = judge.verdict_from_llm(jr.parsed, self.model or "")
        tool = (plan.get("action") or {}).get("name")
        system = choose_system("plan-" + q["id"], tool, self.cfg.seed, self.cfg.full_tools_share)
        out.planning[q["id"]] = R.planning_record(item, q, knowledge, plan, verdict, prov, system)

    async def _reasoning(self, item, q, knowledge, prov, out: ItemResult) -> None:
        if self.cfg.backend == "template":
            a1 = template_actions.template_a1(q, item)
            a2 = template_actions.template_a2(q, knowledge, a1)
            verdict = judge.rule_judge_reasoning(q, knowledge, a1, a2)
        else:
            rid = "reas-" + q["id"][2:]
            r1 = await self._chat(actions.llm_a1_request(q), self._seed(q["id"], "a1"))
            if not r1.ok:
                out.rejected.append(
                    R.rejected(
                        R.stub("reasoning", rid, item, q, prov), "reasoning_a1", "failure", f"llm_{r1.error}", r1.detail
                    )
                )
                return
            a1 = r1.parsed
            r2 = await self._chat(actions.llm_a2_request(q, a1, knowledge), self._seed(q["id"], "a2"))
            if not r2.ok:
                out.rejected.append(
                    R.rejected(
                        R.stub("reasoning", rid, item, q, prov), "reasoning_a2", "failure", f"llm_{r2.error}", r2.detail
                    )
                )
                return
            a2 = r2.parsed
            verdict = judge.structural_reasoning(a1, a2)
            if verdict is None:
                jr = await self._chat(
                    judge.llm_judge_reasoning_request(q, knowledge, a2),
                    self._seed(q["id"], "judge-reasoning"),
                    temperature=self.cfg.judge_temperature,
                )
                if not jr.ok:
                    stub = R.reasoning_record(
                        item, q, knowledge, a1, a2, judge.SampleVerdict(False, None, "", "none"), prov
                    )
                    out.rejected.append(R.rejected(stub, "reasoning", "failure", f"judge_{jr.error}", jr.detail))
                    return
                verdict = judge.verdict_from_llm(jr.parsed, self.model or "")
        system = choose_system("reas-" + q["id"], "search", self.cfg.seed, self.cfg.full_tools_share)
        out.reasoning[q["id"]] = R.reasoning_record(item, q, knowledge, a1, a2, verdict, prov, system)

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Process the shard (resuming if outputs exist) and write ``summary.json``; returns the summary."""
        try:
            return asyncio.run(self._run())
        finally:
            if self.client is not None:
                self.client.close()

    async def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        out_dir = cfg.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        existed = claim_settings(out_dir, settings)  # raises SettingsMismatch naming what differs
        if existed and not cfg.retry_failed and (done := finished_summary(out_dir, cfg)) is not None:
            log.info("%s is already done with these settings", out_dir)
            return {**done, "already_done": True}
        t0 = time.time()
        retried = drop_failed_items(out_dir) if cfg.retry_failed else 0
        if retried:
            log.warning("retrying %d memory items with failed requests", retried)
        writers = {name: ResumableJsonlWriter(out_dir / name) for name in OUTPUT_FILES}
        progress = ResumableJsonlWriter(out_dir / "progress.jsonl")
        dedup = NearDuplicateFilter(cfg.dedup_threshold)
        for line in _read_progress(out_dir / "progress.jsonl"):
            for q in line["questions"]:
                if q["duplicate_of"] is None:
                    dedup.add(q["id"], q["question"])
        resumed = len(progress)
        bad: Counter = Counter()
        valid: Counter = Counter()
        items = (it for it in iter_memory(cfg, bad, valid) if it["id"] not in progress)
        # Enough running items to keep every request slot busy (an item has at most 2K requests in flight and
        # 4 sequential stages).
        window = cfg.window or max(4, 2 * (cfg.llm.concurrency if cfg.llm else 1) // max(1, cfg.questions_per_memory))
        if cfg.backend == "template":
            window = 1
        total = count_lines(cfg.memory_path)
        if total is not None and cfg.num_shards > 1:
            total = -(-total // cfg.num_shards)  # about this shard's share
        if cfg.max_items is not None:
            total = cfg.max_items if total is None else min(total, cfg.max_items)
        bar = SynthesisProgress(
            "fas",
            total,
            unit="item",
            enabled=cfg.progress,
            initial=resumed,
            stats=self.client.stats if self.client else None,
        )
        pending: deque = deque()  # (item, task) in input (= commit) order
        exhausted = False

        def fill() -> None:
            # `window` items *running*; finished ones wait for the head of the commit order (up to 4x window),
            # so one slow item does not idle the request slots.
            nonlocal exhausted
            running = sum(not t.done() for _, t in pending)
            while not exhausted and running < window and len(pending) < 4 * window:
                item = next(items, None)
                if item is None:
                    exhausted = True
                    return
                pending.append((item, asyncio.ensure_future(self.process_item(item))))
                running += 1

        try:
            fill()
            while pending:
                while pending and pending[0][1].done():
                    item, task = pending.popleft()
                    result = task.result()
                    self._commit(item, result, writers, progress, dedup)
                    bar.advance(1, failed=int(any(r["rejection"]["kind"] == "failure" for r in result.rejected)))
                fill()
                if pending and not pending[0][1].done():
                    await asyncio.wait([t for _, t in pending if not t.done()], return_when=asyncio.FIRST_COMPLETED)
            judge_figures = await self._judge_figures()
        finally:
            bar.close()
            for w in [*writers.values(), progress]:
                w.close()
            if self.client is not None:
                await self.client.aclose()
        llm_stats = self.client.stats.as_dict() if self.client else None
        return write_summary(
            out_dir,
            cfg,
            bad,
            llm_stats,
            resumed_items=resumed,
            seconds=time.time() - t0,
            settings=settings,
            valid_records=valid["records"],
            extra={"judge_accuracy": judge_figures, "repetition": self._repetition(out_dir)},
        )

    async def _judge_figures(self) -> dict[str, Any] | None:
        """The template judge's (and with a server the LLM judge's) precision/recall on the labelled set."""
        from data_tools.synthesis.fas import judge_eval

        path = self.cfg.judge_set
        if not path or not Path(path).is_file():
            return None
        samples = read_jsonl(path)
        out = {
            "set": str(path),
            "template": judge_eval.metrics(samples, [judge_eval.template_verdict(s) for s in samples]),
        }
        if self.client is not None:
            verdicts = await judge_eval.llm_verdicts(samples, self.client, self.model or "")
            out["llm"] = judge_eval.metrics(samples, verdicts)
        return out

    def _repetition(self, out_dir: Path) -> dict[str, Any]:
        """Repetition figures of all accepted samples (:func:`data_tools.synthesis.fas.quality.repetition_figures`)."""
        from data_tools.synthesis.fas.quality import repetition_figures

        encode = None
        if self.cfg.summary_tokenizer:
            from data_tools.indexed.tokenizers import load_tokenizer

            encode = load_tokenizer(self.cfg.summary_tokenizer).encode
        return repetition_figures(
            read_jsonl(out_dir / "planning.jsonl"), read_jsonl(out_dir / "reasoning.jsonl"), encode
        )

    def _commit(self, item, result: ItemResult, writers, progress: ResumableJsonlWriter, dedup) -> None:
        plan_w, reas_w, rej_w = (writers[n] for n in OUTPUT_FILES)
        qlog = []
        for q in result.questions:
            dup = dedup.check_and_add(q["id"], q["question"])
            qlog.append({"id": q["id"], "style": q["style"], "question": q["question"], "duplicate_of": dup})
            for rec, writer in ((result.planning.get(q["id"]), plan_w), (result.reasoning.get(q["id"]), reas_w)):
                if rec is None:
                    continue
                if dup is not None:
                    rej_w.write(R.rejected(rec, "dedup", "duplicate", "near_duplicate", f"near duplicate of {dup}"))
                elif rec["verdict"]["accepted"]:
                    writer.write(rec)
                else:
                    rej_w.write(
                        R.rejected(rec, rec["type"], "judge", rec["verdict"]["reason"], rec["verdict"]["explanation"])
                    )
        for rec in result.rejected:
            rej_w.write(rec)
        progress.write(
            {"id": item["id"], "entity": item["entity"], "questions": qlog, "unavailable_styles": result.unavailable}
        )


def drop_failed_items(out_dir: Path) -> int:
    """Remove every record and the completion marker of items that have a failed request; return their count.

    The completion markers are rewritten first, so a crash in between leaves those items to be redone (records
    still present are then skipped by id); rerun with ``retry_failed`` until it completes.
    """
    rejected = out_dir / "rejected.jsonl"
    if not rejected.exists():
        return 0
    failed = {r["memory_id"] for r in read_jsonl(rejected) if r["rejection"]["kind"] == "failure"}
    if not failed:
        return 0
    for name in ("progress.jsonl", *OUTPUT_FILES):
        path = out_dir / name
        if path.exists():
            ResumableJsonlWriter(path).close()  # truncate a partial last line before reading
            key = "id" if name == "progress.jsonl" else "memory_id"
            keep = [r for r in read_jsonl(path) if r[key] not in failed]
            atomic_write_text(path, "".join(dumps_line(r) + "\n" for r in keep))
    return len(failed)


def _templates():
    from data_tools.synthesis.llm.prompts import load_prompt

    names = ("questions", "planning", "reasoning_a1", "reasoning_a2", "judge_planning", "judge_reasoning")
    return {n: load_prompt("fas", n, "v1") for n in names}


def _read_progress(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_fas(cfg: FasConfig) -> dict[str, Any]:
    """Run FAS for one shard and return its summary (also written to ``summary.json``)."""
    return FasRunner(cfg).run()


__all__ = ["FasConfig", "FasRunner", "ItemResult", "OUTPUT_FILES", "STYLES", "run_fas"]
