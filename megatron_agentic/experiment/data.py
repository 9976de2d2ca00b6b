"""The experiment's data steps: corpus, disjoint pools, CPT synthesis, SFT trajectories, tokenization, vocabulary.

Every step calls one of the project's public commands through its Python entry point (``megatron-agentic data
memory|fas|rollout|has|sft|tokenize``, in this process: no interpreter start per step) or is a short in-process
function. Workdir layout::

    corpus/wiki.jsonl, corpus/POOL.jsonl           built-in Wikipedia summaries and the five disjoint pools
    synth/{base,cpt}/general.jsonl                   general text (base pre-training; the non-CPT arm)
    synth/cpt/{memory.jsonl, fas/, trajectories_{env,fas}.jsonl, has.jsonl}   CPT data (FAS, HAS)
    synth/{sft,heldout_sft}/trajectories.jsonl       ReAct rollouts of the SFT / held-out SFT pools
    synth/agent/questions.jsonl                      held-out agent questions
    tokens/qwen3/*                                   Qwen3-tokenized datasets (``data tokenize``, ``data sft``)
    tokens/exp/*, tokens/vocab.json                  the same in the experiment vocabulary (or links to qwen3/)
    checks/disjoint.json                             the disjointness check's counts
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from data_tools.common.atomic import atomic_write_json
from megatron_agentic.demo.pipeline import DemoContext, Step
from megatron_agentic.demo.steps import general_text
from megatron_agentic.experiment.config import ExperimentConfig
from megatron_agentic.experiment.partition import POOLS, check_disjoint, partition, write_pools

CPT_KINDS = ("general_base", "general_cpt", "planning", "reasoning", "has")
"""Pre-training datasets: general text of the base and CPT pools, FAS planning/reasoning, HAS."""
SFT_SETS = ("sft", "heldout_sft")
"""SFT datasets: training trajectories and the held-out set."""


def call_cli(argv: list[str], log: TextIO) -> None:
    """Run ``megatron-agentic ARGV`` in this process with its output (and logging) going to ``log``.

    Raises ``RuntimeError`` naming the command when it exits non-zero.
    """
    from megatron_agentic.cli import main

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []  # the command's own logging.basicConfig then writes to this step's log
    log.write(f"$ megatron-agentic {' '.join(argv)}\n")
    log.flush()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            rc = main(argv)
    finally:
        for h in root.handlers:
            h.flush()
        root.handlers = saved
    if rc:
        raise RuntimeError(f"megatron-agentic {' '.join(argv[:2])} exited with status {rc}")


def synth(ctx: DemoContext, pool: str, *parts: str) -> Path:
    """A path under ``synth/POOL``."""
    return ctx.path("synth", pool, *parts)


def qwen3_prefix(ctx: DemoContext, name: str) -> Path:
    """Qwen3-tokenized dataset prefix of ``name`` (a CPT kind or an SFT set)."""
    suffix = "" if name in SFT_SETS else "_text_document"
    return ctx.path("tokens", "qwen3", name + suffix)


def exp_prefix(ctx: DemoContext, name: str) -> Path:
    """The dataset prefix training reads (experiment vocabulary) of ``name``."""
    return ctx.path("tokens", "exp", name)


def read_jsonl(path: Path) -> list[dict]:
    """JSON objects of a JSONL file ([] when missing)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------- in-process steps


def write_corpus(ctx: DemoContext, log: TextIO) -> dict:
    """The built-in Wikipedia summaries (``python -m data_tools.synthesis.corpus --limit N``)."""
    from data_tools.synthesis.corpus import write_wiki_corpus

    cfg: ExperimentConfig = ctx.config
    out = ctx.path("corpus", "wiki.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    n = write_wiki_corpus(str(out), "en", cfg.data.corpus_docs)
    log.write(f"wrote {n} documents to {out}\n")
    return {"documents": n}


def make_partition(ctx: DemoContext, log: TextIO) -> dict:
    """Partition the corpus into the five disjoint document pools."""
    cfg: ExperimentConfig = ctx.config
    docs = read_jsonl(ctx.path("corpus", "wiki.jsonl"))
    pools = partition(docs, cfg.data.pools, cfg.data.seed)
    counts = write_pools(pools, ctx.path("corpus"))
    log.write(f"documents per pool: {counts}\n")
    return {"documents": counts}


def agent_questions(ctx: DemoContext, log: TextIO) -> dict:
    """Held-out agent questions: built-in questions of the agent pool (``data rollout``'s ``builtin:N``)."""
    from data_tools.synthesis.env.questions import builtin_questions
    from data_tools.synthesis.env.search import EnvConfig, load_environment

    cfg: ExperimentConfig = ctx.config
    env = load_environment(str(ctx.path("corpus", "agent.jsonl")), "text", EnvConfig())
    questions = builtin_questions(env.docs, cfg.data.agent_questions)
    out = synth(ctx, "agent", "questions.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps({"id": q.id, "question": q.question, "answer": q.answer, "style": q.style}) + "\n")
    tmp.replace(out)
    log.write(f"{len(questions)} agent questions -> {out}\n")
    return {"questions": len(questions)}


def disjointness(ctx: DemoContext, log: TextIO) -> dict:
    """Assert that SFT, held-out and agent data share no document or question with the CPT data."""
    pools = {p: read_jsonl(ctx.path("corpus", f"{p}.jsonl")) for p in POOLS}
    cpt_texts: list[str] = []
    for path in (
        synth(ctx, "base", "general.jsonl"),
        synth(ctx, "cpt", "general.jsonl"),
        synth(ctx, "cpt", "fas", "planning.jsonl"),
        synth(ctx, "cpt", "fas", "reasoning.jsonl"),
        synth(ctx, "cpt", "has.jsonl"),
    ):
        cpt_texts += [r.get("text", "") for r in read_jsonl(path)]
    for source in ("env", "fas"):
        cpt_texts += [r.get("question", "") for r in read_jsonl(synth(ctx, "cpt", f"trajectories_{source}.jsonl"))]
    trajectories = {p: read_jsonl(synth(ctx, p, "trajectories.jsonl")) for p in SFT_SETS}
    questions = {p: [t["question"] for t in trajectories[p]] for p in SFT_SETS}
    questions["agent"] = [q["question"] for q in read_jsonl(synth(ctx, "agent", "questions.jsonl"))]
    counts = check_disjoint(pools, cpt_texts, questions, trajectories)
    atomic_write_json(ctx.path("checks", "disjoint.json"), {"passed": True, **counts})
    log.write(f"disjointness check passed: {counts}\n")
    return counts


def experiment_vocab(ctx: DemoContext, log: TextIO) -> dict:
    """Map every dataset to the experiment vocabulary (``model.vocab: compact``) or link the Qwen3 ones."""
    from megatron_agentic.experiment.vocab import ExperimentVocab, dataset_ids, remap_dataset

    cfg: ExperimentConfig = ctx.config
    names = list(CPT_KINDS) + list(SFT_SETS)
    out_dir = ctx.path("tokens", "exp")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.model.vocab == "qwen3":
        for name in names:
            for suffix in ("", "_loss_mask") if name in SFT_SETS else ("",):
                for ext in (".bin", ".idx"):
                    dst = Path(str(exp_prefix(ctx, name)) + suffix + ext)
                    dst.unlink(missing_ok=True)
                    dst.symlink_to(Path(str(qwen3_prefix(ctx, name)) + suffix + ext))
        log.write("full Qwen3 vocabulary: datasets linked\n")
        return {"vocab": "qwen3"}
    # the agent questions' tokens count too (their prompts are encoded with the same map)
    from data_tools.indexed.tokenizers import load_tokenizer

    tok = load_tokenizer("qwen3")
    extra = [tok.encode(q["question"]) for q in read_jsonl(synth(ctx, "agent", "questions.jsonl"))]
    vocab = ExperimentVocab.build([dataset_ids(qwen3_prefix(ctx, n)) for n in names] + extra)
    vocab.save(ctx.path("tokens", "vocab.json"))
    tokens = {name: remap_dataset(qwen3_prefix(ctx, name), exp_prefix(ctx, name), vocab) for name in names}
    log.write(f"experiment vocabulary: {len(vocab.kept)} Qwen3 ids kept (+1 unknown), padded {vocab.padded_size()}\n")
    return {"vocab": "compact", "kept": len(vocab.kept), "padded": vocab.padded_size(), "tokens": tokens}


# ----------------------------------------------------------------------------------------------- step list


def _cli_step(name: str, title: str, argv: Callable[[DemoContext], list[str]], outputs, clean=None) -> Step:
    def run(ctx: DemoContext, log: TextIO) -> dict:
        call_cli(argv(ctx), log)
        return {"command": "megatron-agentic " + " ".join(argv(ctx))}

    run.__doc__ = title
    return Step(name=name, title=title, func=run, outputs=outputs, clean=clean)


def _rollout(pool: str, questions: Callable[[DemoContext], str], out: Callable[[DemoContext], Path], limit: int):
    def argv(ctx: DemoContext) -> list[str]:
        cfg: ExperimentConfig = ctx.config
        return [
            "data", "rollout", "--questions", questions(ctx), "--corpus", str(ctx.path("corpus", f"{pool}.jsonl")),
            "--output", str(out(ctx)), "--limit", str(limit), "--seed", str(cfg.data.seed),
            "--backend", "scripted", *cfg.data.rollout_args,
        ]  # fmt: skip

    return argv


def data_steps(cfg: ExperimentConfig) -> list[Step]:
    """Every data step in order."""
    d = cfg.data
    corpus = lambda ctx, pool: str(ctx.path("corpus", f"{pool}.jsonl"))  # noqa: E731

    def traj(pool: str, src: str | None = None) -> Callable[[DemoContext], Path]:
        name = f"trajectories_{src}.jsonl" if src else "trajectories.jsonl"
        return lambda ctx: synth(ctx, pool, name)

    steps = [
        Step(
            name="corpus",
            title=f"built-in Wikipedia corpus ({d.corpus_docs} documents)",
            func=write_corpus,
            outputs=lambda ctx: [ctx.path("corpus", "wiki.jsonl")],
        ),  # fmt: skip
        Step(
            name="partition",
            title="five disjoint document pools",
            func=make_partition,
            outputs=lambda ctx: [ctx.path("corpus", f"{p}.jsonl") for p in POOLS],
        ),  # fmt: skip
        Step(
            name="general-base",
            title="general text (base pool)",
            func=general_text("base"),
            outputs=lambda ctx: [synth(ctx, "base", "general.jsonl")],
        ),  # fmt: skip
        Step(
            name="general-cpt",
            title="general text (CPT pool: the non-CPT arm)",
            func=general_text("cpt"),
            outputs=lambda ctx: [synth(ctx, "cpt", "general.jsonl")],
        ),  # fmt: skip
        _cli_step(
            "memory",
            "knowledge memory (CPT pool)",
            lambda ctx: [
                "data",
                "memory",
                "--input",
                corpus(ctx, "cpt"),
                "--output",
                str(synth(ctx, "cpt", "memory.jsonl")),
                "--backend",
                "heuristic",
            ],  # fmt: skip
            outputs=lambda ctx: [synth(ctx, "cpt", "memory.jsonl")],
        ),
        _cli_step(
            "fas",
            "FAS planning + reasoning (CPT pool)",
            lambda ctx: [
                "data",
                "fas",
                "--memory",
                str(synth(ctx, "cpt", "memory.jsonl")),
                "--output-dir",
                str(synth(ctx, "cpt", "fas")),
                "--questions-per-memory",
                str(d.questions_per_memory),
                "--seed",
                str(d.seed),
                "--backend",
                "template",
            ],  # fmt: skip
            outputs=lambda ctx: [synth(ctx, "cpt", "fas", f) for f in ("planning.jsonl", "reasoning.jsonl")],
        ),
        _cli_step(
            "rollout-cpt-env",
            "rollouts of built-in questions (CPT pool, for HAS)",
            _rollout("cpt", lambda ctx: f"builtin:{d.cpt_rollouts}", traj("cpt", "env"), d.cpt_rollouts),
            outputs=lambda ctx: [traj("cpt", "env")(ctx)],
        ),
        _cli_step(
            "rollout-cpt-fas",
            "rollouts of FAS questions (CPT pool, for HAS)",
            _rollout(
                "cpt", lambda ctx: str(synth(ctx, "cpt", "fas", "planning.jsonl")), traj("cpt", "fas"), d.cpt_rollouts
            ),  # fmt: skip
            outputs=lambda ctx: [traj("cpt", "fas")(ctx)],
        ),
        _cli_step(
            "has",
            "HAS decision samples (CPT pool)",
            lambda ctx: [
                "data",
                "has",
                "--input",
                str(traj("cpt", "env")(ctx)),
                "--input",
                str(traj("cpt", "fas")(ctx)),
                "--output",
                str(synth(ctx, "cpt", "has.jsonl")),
                "--candidates",
                str(d.has_candidates),
                "--seed",
                str(d.seed),
                "--corpus",
                corpus(ctx, "cpt"),
                "--backend",
                "template",
            ],  # fmt: skip
            outputs=lambda ctx: [synth(ctx, "cpt", "has.jsonl")],
        ),
    ]
    for pool, n in (("sft", d.sft_rollouts), ("heldout_sft", d.heldout_rollouts)):
        steps.append(
            _cli_step(
                f"rollout-{pool}",
                f"ReAct rollouts of built-in questions ({pool} pool)",
                _rollout(pool, lambda ctx, n=n: f"builtin:{n}", traj(pool), n),
                outputs=lambda ctx, pool=pool: [traj(pool)(ctx)],
            )
        )
        steps.append(
            _cli_step(
                f"sft-data-{pool}",
                f"SFT set from the correct {pool} trajectories (loss masks)",
                lambda ctx, pool=pool: [
                    "data",
                    "sft",
                    "--input",
                    str(traj(pool)(ctx)),
                    "--output-prefix",
                    str(qwen3_prefix(ctx, pool)),
                    "--only-correct",
                    "--tools",
                    ",".join(cfg.data.sft_tools),
                ],  # fmt: skip
                outputs=lambda ctx, pool=pool: [Path(str(qwen3_prefix(ctx, pool)) + ".bin")],
            )
        )
    steps.append(Step(name="agent-questions", title="held-out agent questions (agent pool)", func=agent_questions,
                      outputs=lambda ctx: [synth(ctx, "agent", "questions.jsonl")]))  # fmt: skip
    inputs = {
        "general_base": lambda ctx: synth(ctx, "base", "general.jsonl"),
        "general_cpt": lambda ctx: synth(ctx, "cpt", "general.jsonl"),
        "planning": lambda ctx: synth(ctx, "cpt", "fas", "planning.jsonl"),
        "reasoning": lambda ctx: synth(ctx, "cpt", "fas", "reasoning.jsonl"),
        "has": lambda ctx: synth(ctx, "cpt", "has.jsonl"),
    }
    for kind in CPT_KINDS:
        steps.append(
            _cli_step(
                f"tokenize-{kind}",
                f"tokenize {kind} (Qwen3)",
                lambda ctx, kind=kind: [
                    "data",
                    "tokenize",
                    "--input",
                    str(inputs[kind](ctx)),
                    "--output-prefix",
                    str(ctx.path("tokens", "qwen3", kind)),
                    "--tokenizer",
                    "qwen3",
                    "--json-keys",
                    "text",
                    "--append-eod",
                    "--workers",
                    "1",
                    "--no-progress",
                    "--overwrite",
                ],  # fmt: skip
                outputs=lambda ctx, kind=kind: [Path(str(qwen3_prefix(ctx, kind)) + ".bin")],
            )
        )
    steps += [
        Step(
            name="disjoint",
            title="disjointness check (documents, questions, quoted pages)",
            func=disjointness,
            outputs=lambda ctx: [ctx.path("checks", "disjoint.json")],
        ),  # fmt: skip
        Step(
            name="vocab",
            title="experiment vocabulary (dense ids of the Qwen3 ids in the data)",
            func=experiment_vocab,
            outputs=lambda ctx: [Path(str(exp_prefix(ctx, "sft")) + ".bin")],
        ),  # fmt: skip
    ]
    return steps
