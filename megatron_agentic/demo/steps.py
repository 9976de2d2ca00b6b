"""The demo's steps, built from a :class:`DemoConfig`: each calls one of the project's own CLIs.

Workdir layout (all under ``WORKDIR``)::

    corpus/wiki.jsonl, corpus/train.jsonl, corpus/heldout.jsonl    Wikipedia summaries, split by document
    synth/{train,heldout}/memory.jsonl                               knowledge memory
    synth/{train,heldout}/fas/{planning,reasoning,rejected}.jsonl    FAS samples (+ summary.json)
    synth/{train,heldout}/trajectories_{fas,env}.jsonl               offline BM25 rollouts
    synth/{train,heldout}/has.jsonl                                  HAS decision samples
    synth/{train,heldout}/general.jsonl                              general text (serializer)
    tokens/{type}_{split}_text_document.{bin,idx}                    indexed datasets (Qwen3 tokenizer)
    blends/stage{1,2}.json                                           stage blends (data mix)
    configs/demo-stage{1,2}.yaml                                     the stage recipes, exported for train
    checkpoints/stage{1,2}/                                          dist_checkpointing checkpoints
    train/{stage1,stage2,eval_stage2}/                               metrics.jsonl + summary.json per run
    logs/STEP.log, state/STEP.done, report.md, plots/*.png

Every evaluation set is synthesized from held-out documents only. The initial, stage-1 and stage-2 weights are
evaluated identically (the first ``eval_iters`` batches of each set at the stage-1 shape and layout): stage 1's
evaluations before its first step (``train.eval_at_start``, logged as step 0) and after its last, and the
``train.iters=0`` run ``eval_stage2``, so the per-type held-out losses are directly comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TextIO

import yaml

from data_tools.common.atomic import atomic_open, atomic_write_text
from megatron_agentic.demo.config import DATA_TYPES, DemoConfig, StageConfig
from megatron_agentic.demo.pipeline import DemoContext, Step
from megatron_agentic.recipes import train_dict

SPLITS = ("train", "heldout")
"""Corpus splits: training data, and the held-out documents all evaluation sets come from."""

EVAL_RUNS = {"eval_stage2": "stage2"}
"""Evaluation-only runs and the checkpoint each evaluates. The held-out losses before and after stage 1 are stage
1's own evaluations at step 0 (``train.eval_at_start``) and at its end: the same sequences, shape and layout."""


def cli(ctx: DemoContext, *args: str) -> list[str]:
    """``python -m megatron_agentic ARGS`` (the same as the ``megatron-agentic`` console script)."""
    return [ctx.python, "-m", "megatron_agentic", *args]


def llm_args(ctx: DemoContext, offline_backend: str) -> list[str]:
    """Backend flags of a synthesis command: the offline backend, or ``openai`` with the servers and model."""
    if not ctx.online:
        return ["--backend", offline_backend]
    out = ["--backend", "openai", "--model", str(ctx.model)]
    for url in ctx.llm_urls:
        out += ["--llm-url", url]
    return out


def synth(ctx: DemoContext, split: str, *parts: str) -> Path:
    """A path under ``synth/SPLIT``."""
    return ctx.path("synth", split, *parts)


def token_prefix(ctx: DemoContext, kind: str, split: str) -> Path:
    """Output prefix given to ``data tokenize`` (it appends ``_text_document``)."""
    return ctx.path("tokens", f"{kind}_{split}")


def dataset_prefix(ctx: DemoContext, kind: str, split: str) -> str:
    """The megatron indexed-dataset prefix written for ``kind``/``split``."""
    return str(token_prefix(ctx, kind, split)) + "_text_document"


def text_input(ctx: DemoContext, kind: str, split: str) -> Path:
    """The JSONL with a ``text`` field that is tokenized for ``kind``/``split``."""
    if kind in ("planning", "reasoning"):
        return synth(ctx, split, "fas", f"{kind}.jsonl")
    return synth(ctx, split, f"{kind}.jsonl")


def train_log_dir(ctx: DemoContext, run: str) -> Path:
    """Log directory (``metrics.jsonl``, ``summary.json``) of a training or evaluation run."""
    return ctx.path("train", run)


# ----------------------------------------------------------------------------------------------- in-process steps


def split_corpus(ctx: DemoContext, log: TextIO) -> dict:
    """Split the corpus by document into train and held-out (deterministic hash of id and seed)."""
    cfg = ctx.config
    docs = [json.loads(line) for line in ctx.path("corpus", "wiki.jsonl").read_text(encoding="utf-8").splitlines()]
    order = sorted(range(len(docs)), key=lambda i: hashlib.sha256(f"{cfg.seed}:{docs[i]['id']}".encode()).hexdigest())
    n_heldout = max(1, round(len(docs) * cfg.heldout_fraction))
    heldout = set(order[:n_heldout])
    counts = {}
    for split, keep in (("train", lambda i: i not in heldout), ("heldout", lambda i: i in heldout)):
        path = ctx.path("corpus", f"{split}.jsonl")
        with atomic_open(path) as f:
            for i, doc in enumerate(docs):
                if keep(i):
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        counts[split] = sum(1 for i in range(len(docs)) if keep(i))
        log.write(f"{split}: {counts[split]} documents -> {path}\n")
    return {"documents": counts}


def general_text(split: str):
    """In-process step writing the general-text JSONL of ``split`` through the project's serializer."""

    def run(ctx: DemoContext, log: TextIO) -> dict:
        from data_tools.synthesis.serialize import serialize_general

        src = ctx.path("corpus", f"{split}.jsonl")
        dst = synth(ctx, split, "general.jsonl")
        n = 0
        with open(src, encoding="utf-8") as fin, atomic_open(dst) as fout:
            for line in fin:
                doc = json.loads(line)
                record = {"id": doc["id"], "type": "general", "text": serialize_general(doc["text"])}
                fout.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        log.write(f"wrote {n} general-text records to {dst}\n")
        return {"records": n}

    return run


# ----------------------------------------------------------------------------------------------- training


def _train_progress(run: str, total: int):
    def probe(ctx: DemoContext) -> tuple[int, int] | None:
        path = train_log_dir(ctx, run) / "metrics.jsonl"
        if not path.exists():
            return None
        step = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written
                if "loss" in entry:
                    step = max(step, int(entry.get("step", 0)))
        return step, total

    return probe


def eval_sets(ctx: DemoContext) -> dict[str, str]:
    """Held-out evaluation sets by data type."""
    return {kind: dataset_prefix(ctx, kind, "heldout") for kind in DATA_TYPES}


def stage_sets(ctx: DemoContext, stage: StageConfig, label: str) -> list[str]:
    """``--set`` overrides shared by a stage's training run and the evaluation runs of its shape."""
    sets = [
        f"train.seq_length={stage.seq_length}",
        f"train.global_batch_size={stage.global_batch_size}",
        f"train.micro_batch_size={stage.micro_batch_size}",
        f"train.lr={stage.lr}",
        f"train.eval_iters={stage.eval_iters}",
        f"train.seed={ctx.config.seed}",
        f"data.blend_file={ctx.path('blends', f'{label}.json')}",
        "data.eval_sets=" + json.dumps(eval_sets(ctx)),
    ]
    for key in ("tensor", "pipeline", "expert", "context"):
        sets.append(f"parallel.{key}={int(stage.parallel.get(key, 1))}")
    sets += [f"{k}={v}" for k, v in stage.extra.items()]
    return sets


def export_recipe(ctx: DemoContext, stage: StageConfig) -> Path:
    """The stage's recipe as a ``megatron-agentic train`` config in the workdir (``configs/RECIPE.yaml``)."""
    name = Path(stage.recipe).stem if stage.recipe.endswith((".yaml", ".yml")) else stage.recipe
    text = yaml.safe_dump(train_dict(stage.resolved_recipe()), sort_keys=False)
    return atomic_write_text(ctx.path("configs", f"{name}.yaml"), text)


def train_command(ctx: DemoContext, stage: StageConfig, sets: list[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m megatron_agentic train --config YAML --set ...``."""
    argv = [
        ctx.python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={ctx.config.nproc}",
        "-m",
        "megatron_agentic",
        "train",
        "--config",
        str(export_recipe(ctx, stage)),
    ]
    for item in sets:
        argv += ["--set", item]
    return argv


def _train_env(ctx: DemoContext) -> dict[str, str]:
    threads = max(1, (os.cpu_count() or 1) // ctx.config.nproc)
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}


def train_step(cfg: DemoConfig, label: str) -> Step:
    """Training stage ``label`` (``stage1`` or ``stage2``; stage 2 starts from the stage-1 checkpoint)."""
    stage: StageConfig = getattr(cfg, label)

    def command(ctx: DemoContext) -> list[str]:
        sets = stage_sets(ctx, stage, label) + [
            f"train.iters={stage.iters}",
            f"train.eval_interval={stage.eval_interval}",
            f"checkpoint.dir={ctx.path('checkpoints', label)}",
            f"checkpoint.interval={max(1, stage.iters // 2)}",
            f"log.dir={train_log_dir(ctx, label)}",
        ]
        if label == "stage1":
            sets.append("train.eval_at_start=true")  # the held-out loss of the initial weights (step 0)
        if label == "stage2":
            sets += [f"checkpoint.pretrained={ctx.path('checkpoints', 'stage1')}", "checkpoint.load_optimizer=false"]
        return train_command(ctx, stage, sets)

    what = "short context" if label == "stage1" else "4x context, ring attention, replay"
    layout = ", ".join(f"{k[0].upper()}P={v}" for k, v in stage.parallel.items() if int(v) > 1) or "DP"
    return Step(
        name=label,
        title=f"train {label}: {stage.seq_length} tokens, {layout} ({what})",
        command=command,
        outputs=lambda ctx: [train_log_dir(ctx, label) / "metrics.jsonl"],
        clean=lambda ctx: [ctx.path("checkpoints", label), train_log_dir(ctx, label)],
        modules=("megatron_agentic.train",),
        progress=_train_progress(label, stage.iters),
        env=_train_env,
    )


def eval_step(cfg: DemoConfig, run: str) -> Step:
    """Evaluation-only run (``train.iters=0``) of the held-out sets with the stage-1 shape and layout."""
    source = EVAL_RUNS[run]

    def command(ctx: DemoContext) -> list[str]:
        sets = stage_sets(ctx, cfg.stage1, "stage1") + [
            "train.iters=0",
            "checkpoint.dir=null",
            f"log.dir={train_log_dir(ctx, run)}",
            f"checkpoint.pretrained={ctx.path('checkpoints', source)}",
            "checkpoint.load_optimizer=false",
        ]
        return train_command(ctx, cfg.stage1, sets)

    return Step(
        name=run.replace("_", "-"),
        title=f"held-out loss after {source}",
        command=command,
        outputs=lambda ctx: [train_log_dir(ctx, run) / "metrics.jsonl"],
        clean=lambda ctx: [train_log_dir(ctx, run)],
        resumable=False,
        modules=("megatron_agentic.train",),
        env=_train_env,
    )


# ----------------------------------------------------------------------------------------------- the step list


def build_steps(cfg: DemoConfig) -> list[Step]:
    """All demo steps in order (the list is data: steps only depend on files earlier steps wrote)."""
    steps: list[Step] = [
        Step(
            name="corpus",
            title=f"Wikipedia summaries corpus ({cfg.corpus_docs} documents)",
            command=lambda ctx: [
                ctx.python,
                "-m",
                "data_tools.synthesis.corpus",
                "--output",
                str(ctx.path("corpus", "wiki.jsonl")),
                "--limit",
                str(cfg.corpus_docs),
            ],
            outputs=lambda ctx: [ctx.path("corpus", "wiki.jsonl")],
            clean=lambda ctx: [ctx.path("corpus", "wiki.jsonl")],
            resumable=False,
            modules=("data_tools.synthesis.corpus",),
        ),
        Step(
            name="split",
            title="hold out documents for evaluation",
            func=split_corpus,
            outputs=lambda ctx: [ctx.path("corpus", f"{s}.jsonl") for s in SPLITS],
        ),
    ]
    for split in SPLITS:
        steps += _synthesis_steps(cfg, split)
    steps.append(
        Step(
            name="has-probe",
            title="HAS tell probe (fit on train decisions, score held-out)",
            command=lambda ctx: cli(
                ctx,
                "data",
                "has-probe",
                "--train",
                str(synth(ctx, "train", "has.jsonl")),
                "--test",
                str(synth(ctx, "heldout", "has.jsonl")),
                "--output",
                str(ctx.path("synth", "has_probe.json")),
            ),
            outputs=lambda ctx: [ctx.path("synth", "has_probe.json")],
            clean=lambda ctx: [ctx.path("synth", "has_probe.json")],
            resumable=False,
            modules=("data_tools.synthesis.has.probe",),
        )
    )
    for split in SPLITS:
        for kind in DATA_TYPES:
            steps.append(_tokenize_step(cfg, kind, split))
    steps += _mix_steps(cfg)
    steps += [
        train_step(cfg, "stage1"),
        train_step(cfg, "stage2"),
        eval_step(cfg, "eval_stage2"),
    ]
    return steps


ROLLOUT_SOURCES = ("fas", "env")
"""Question sources rolled out per split: FAS questions, and the environment's own questions about the split's
documents (``data rollout --questions builtin:N``), which the offline scripted policy can often answer, so HAS
sees both correct and incorrect trajectories."""


def trajectories(ctx: DemoContext, split: str, source: str) -> Path:
    """Trajectory JSONL of one question source."""
    return synth(ctx, split, f"trajectories_{source}.jsonl")


def _synthesis_steps(cfg: DemoConfig, split: str) -> list[Step]:
    corpus = lambda ctx: str(ctx.path("corpus", f"{split}.jsonl"))  # noqa: E731

    def memory(ctx: DemoContext) -> list[str]:
        out = str(synth(ctx, split, "memory.jsonl"))
        return cli(ctx, "data", "memory", "--input", corpus(ctx), "--output", out, *llm_args(ctx, "heuristic"))

    def fas(ctx: DemoContext) -> list[str]:
        return cli(
            ctx,
            "data",
            "fas",
            "--memory",
            str(synth(ctx, split, "memory.jsonl")),
            "--output-dir",
            str(synth(ctx, split, "fas")),
            "--questions-per-memory",
            str(cfg.questions_per_memory),
            "--seed",
            str(cfg.seed),
            *llm_args(ctx, "template"),
        )

    def rollout(source: str):
        def command(ctx: DemoContext) -> list[str]:
            questions = (
                str(synth(ctx, split, "fas", "planning.jsonl"))
                if source == "fas"
                else f"builtin:{cfg.rollout_questions}"
            )
            out = trajectories(ctx, split, source)
            return cli(
                ctx,
                "data",
                "rollout",
                "--questions",
                questions,
                "--corpus",
                corpus(ctx),
                "--output",
                str(out),
                "--limit",
                str(cfg.rollout_questions),
                "--seed",
                str(cfg.seed),
                "--summary",
                str(out.with_suffix(".summary.json")),
                *llm_args(ctx, "scripted"),
            )

        return command

    def has(ctx: DemoContext) -> list[str]:
        inputs: list[str] = []
        for source in ROLLOUT_SOURCES:
            inputs += ["--input", str(trajectories(ctx, split, source))]
        return cli(
            ctx,
            "data",
            "has",
            *inputs,
            "--output",
            str(synth(ctx, split, "has.jsonl")),
            "--candidates",
            str(cfg.has_candidates),
            "--seed",
            str(cfg.seed),
            "--summary",
            str(synth(ctx, split, "has.summary.json")),
            "--corpus",  # related pages of the split give the alternatives more than the question's own words
            corpus(ctx),
            *llm_args(ctx, "template"),
        )

    steps = [
        Step(
            name=f"memory-{split}",
            title=f"knowledge memory ({split} documents)",
            command=memory,
            outputs=lambda ctx: [synth(ctx, split, "memory.jsonl")],
            clean=lambda ctx: [synth(ctx, split, "memory.jsonl"), synth(ctx, split, "memory.jsonl.summary.json")],
            modules=("data_tools.synthesis.memory",),
        ),
        Step(
            name=f"fas-{split}",
            title=f"FAS planning + reasoning actions ({split})",
            command=fas,
            outputs=lambda ctx: [synth(ctx, split, "fas", f) for f in ("planning.jsonl", "reasoning.jsonl")],
            clean=lambda ctx: [synth(ctx, split, "fas")],
            modules=("data_tools.synthesis.fas",),
        ),
    ]
    for source in ROLLOUT_SOURCES:
        what = "FAS questions" if source == "fas" else "environment questions"
        steps.append(
            Step(
                name=f"rollout-{source}-{split}",
                title=f"offline BM25 rollouts of {what} ({split})",
                command=rollout(source),
                outputs=lambda ctx, source=source: [trajectories(ctx, split, source)],
                clean=lambda ctx, source=source: [
                    trajectories(ctx, split, source),
                    trajectories(ctx, split, source).with_suffix(".summary.json"),
                ],
                modules=("data_tools.synthesis.rollout",),
            )
        )
    steps += [
        Step(
            name=f"has-{split}",
            title=f"HAS decision samples ({split})",
            command=has,
            outputs=lambda ctx: [synth(ctx, split, "has.jsonl")],
            clean=lambda ctx: [synth(ctx, split, "has.jsonl"), synth(ctx, split, "has.summary.json")],
            modules=("data_tools.synthesis.has",),
        ),
        Step(
            name=f"general-{split}",
            title=f"general text ({split})",
            func=general_text(split),
            outputs=lambda ctx: [synth(ctx, split, "general.jsonl")],
            modules=("data_tools.synthesis.serialize",),
        ),
    ]
    return steps


def _tokenize_step(cfg: DemoConfig, kind: str, split: str) -> Step:
    def command(ctx: DemoContext) -> list[str]:
        return cli(
            ctx,
            "data",
            "tokenize",
            "--input",
            str(text_input(ctx, kind, split)),
            "--output-prefix",
            str(token_prefix(ctx, kind, split)),
            "--tokenizer",
            "qwen3",
            "--json-keys",
            "text",
            "--append-eod",
            "--workers",
            str(cfg.tokenize_workers),
            "--no-progress",
            "--json-summary",
            str(token_prefix(ctx, kind, split)) + ".summary.json",
        )

    return Step(
        name=f"tokenize-{kind}-{split}",
        title=f"tokenize {kind} ({split}) with the Qwen3 tokenizer",
        command=command,
        outputs=lambda ctx: [Path(dataset_prefix(ctx, kind, split) + ext) for ext in (".bin", ".idx")],
        clean=lambda ctx: [Path(dataset_prefix(ctx, kind, split) + ext) for ext in (".bin", ".idx")],
        resumable=False,
        modules=("data_tools.indexed.tokenize_dataset",),
    )


def stage_tokens(stage: StageConfig) -> int:
    """Tokens a stage trains on: iterations x global batch x sequence length."""
    return stage.iters * stage.global_batch_size * stage.seq_length


def mix_config(ctx: DemoContext, label: str) -> dict:
    """The ``data mix`` stage config of ``label``: the paper's shares scaled to the demo's token budget.

    Stage 1 blends planning, reasoning, HAS and general text; stage 2 blends HAS and general text with a
    replay of the stage-1 blend (``replay_fraction`` of its tokens).
    """
    cfg = ctx.config
    stage: StageConfig = getattr(cfg, label)
    total = float(stage_tokens(stage))
    if label == "stage1":
        kinds = DATA_TYPES
        budgets = {kind: share * total for kind, share in cfg.stage1_shares.items()}
    else:
        kinds = ("has", "general")
        budgets = {"replay": cfg.replay_fraction * total}
    sources: list[dict] = [{"name": kind, "type": kind, "prefix": dataset_prefix(ctx, kind, "train")} for kind in kinds]
    if label == "stage2":
        sources.append({"type": "replay", "blend_file": str(ctx.path("blends", "stage1.json"))})
    return {"stage": label, "total_tokens": total, "budgets": budgets, "sources": sources}


def write_mix_configs(ctx: DemoContext, log: TextIO) -> dict:
    """Write ``blends/stage{1,2}.mix.yaml`` (absolute prefixes) for ``data mix``."""
    out = {}
    for label in ("stage1", "stage2"):
        path = ctx.path("blends", f"{label}.mix.yaml")
        config = mix_config(ctx, label)
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
        log.write(f"{path}:\n{path.read_text(encoding='utf-8')}\n")
        out[label] = config["total_tokens"]
    return {"total_tokens": out}


def _mix_steps(cfg: DemoConfig) -> list[Step]:
    steps = [
        Step(
            name="mix-configs",
            title="stage configs for data mix (paper shares, demo budgets)",
            func=write_mix_configs,
            outputs=lambda ctx: [ctx.path("blends", f"{s}.mix.yaml") for s in ("stage1", "stage2")],
        )
    ]
    for label in ("stage1", "stage2"):
        steps.append(
            Step(
                name=f"mix-{label}",
                title=f"{label} blend from real token counts",
                command=lambda ctx, label=label: cli(
                    ctx,
                    "data",
                    "mix",
                    "--config",
                    str(ctx.path("blends", f"{label}.mix.yaml")),
                    "--output",
                    str(ctx.path("blends", f"{label}.json")),
                    "--global-batch-size",
                    str(getattr(ctx.config, label).global_batch_size),
                    "--seq-length",
                    str(getattr(ctx.config, label).seq_length),
                ),
                outputs=lambda ctx, label=label: [ctx.path("blends", f"{label}.json")],
                clean=lambda ctx, label=label: [ctx.path("blends", f"{label}.json")],
                resumable=False,
                modules=("data_tools.indexed.mix",),
            )
        )
    return steps
