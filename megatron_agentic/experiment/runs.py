"""The experiment's training runs, all in this process at world size 1 (megatron-core is imported once).

``base`` pre-trains the shared model on general text from random weights. Each arm continues from the base
checkpoint (same optimizer settings, the arm's blend): ``non_cpt`` on general text of the CPT pool, ``fas`` on
FAS planning + reasoning, ``fas_has`` on FAS + HAS, and the scaling arms on FAS + HAS for 0.5x / 2x the tokens.
Every arm is then fine-tuned identically for each seed on the ReAct SFT set (``data.sft``: loss on assistant
tokens only) and evaluated on the held-out SFT set the way ``megatron-agentic sft-eval`` does (every held-out
conversation exactly once, the mean loss over its target tokens); right after, the fine-tuned model is the policy
of the offline environment on the held-out agent questions (:mod:`megatron_agentic.experiment.policy`). Each run is
one step with its own done-marker; a base/CPT run killed half-way resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any, TextIO

from megatron_agentic.demo.pipeline import DemoContext, Step
from megatron_agentic.experiment.config import ARMS, ExperimentConfig, RunConfig
from megatron_agentic.experiment.data import exp_prefix, read_jsonl, synth


def run_dir(ctx: DemoContext, *parts: str) -> Path:
    """Log directory (``metrics.jsonl``, ``summary.json``, ``agent.json``) of a run."""
    return ctx.path("train", *parts)


def ckpt_dir(ctx: DemoContext, name: str) -> Path:
    """Checkpoint of the base model or of an arm."""
    return ctx.path("checkpoints", name)


def sft_run(arm: str, seed: int) -> tuple[str, str]:
    """Log-dir parts of the SFT run of ``arm`` with ``seed``."""
    return ("sft", arm, f"seed{seed}")


def _vocab_sets(ctx: DemoContext) -> list[str]:
    vocab = ctx.path("tokens", "vocab.json")
    if ctx.config.model.vocab == "qwen3":
        return ["data.tokenizer=qwen3", "data.eod_token_id=null"]
    from megatron_agentic.experiment.vocab import ExperimentVocab

    v = ExperimentVocab.load(vocab)
    return [f"model.vocab_size={v.padded_size()}", f"data.eod_token_id={v.eod}"]


def _run_sets(run: RunConfig, iters: int) -> list[str]:
    return [
        f"train.iters={iters}",
        f"train.seq_length={run.seq_length}",
        f"train.global_batch_size={run.global_batch_size}",
        f"train.micro_batch_size={run.micro_batch_size}",
        f"train.lr={run.lr}",
        f"train.min_lr={run.lr / 10}",
        f"train.lr_warmup_iters={min(run.warmup, max(iters - 1, 0))}",
    ]


def _tokens(prefix: Path) -> int:
    from data_tools.indexed.indexed_io import read_index

    return read_index(prefix).num_tokens


def arm_blend(ctx: DemoContext, arm: str) -> list[Any]:
    """``data.blend`` of ``arm``: ``[weight, prefix, ...]``; FAS parts weighted by their token counts."""
    cfg: ExperimentConfig = ctx.config
    if arm == "non_cpt":
        return [1.0, str(exp_prefix(ctx, "general_cpt"))]
    fas = {k: _tokens(exp_prefix(ctx, k)) for k in ("planning", "reasoning")}
    total = sum(fas.values())
    has_share = 0.0 if arm == "fas" else cfg.fas_has_share
    blend: list[Any] = []
    for kind, n in fas.items():
        blend += [round((1.0 - has_share) * n / total, 6), str(exp_prefix(ctx, kind))]
    if has_share:
        blend += [has_share, str(exp_prefix(ctx, "has"))]
    return blend


def training_config(ctx: DemoContext, overrides: list[str]):
    """The :class:`~megatron_agentic.config.TrainingConfig` of the model YAML with the experiment's overrides."""
    from megatron_agentic.config import load_config

    cfg: ExperimentConfig = ctx.config
    model = [f"model.{k}={json.dumps(v)}" for k, v in cfg.model.overrides.items()]
    tcfg = load_config(cfg.model.config_path, [*_vocab_sets(ctx), *model, *overrides])
    tcfg.validate(1)
    return tcfg


@contextlib.contextmanager
def _logs_to(log: TextIO):
    """Send this process's logging, stdout and stderr to a step's log while a run is in progress."""
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        handler.flush()
        root.handlers, root.level = saved


def _train(tcfg, log: TextIO, on_finish=None) -> dict[str, Any]:
    from megatron_agentic.training.loop import train

    with _logs_to(log):
        summary = train(tcfg, on_finish=on_finish)
    if summary.get("exited"):
        raise RuntimeError(f"training stopped early: {summary}")
    return summary


def pretrain_step(cfg: ExperimentConfig, name: str) -> Step:
    """``base`` (general text from random weights) or a CPT arm (from the base checkpoint)."""
    run = cfg.base if name == "base" else cfg.cpt
    iters = run.iters if name == "base" else cfg.arm_iters(name)

    def func(ctx: DemoContext, log: TextIO) -> dict:
        blend = [1.0, str(exp_prefix(ctx, "general_base"))] if name == "base" else arm_blend(ctx, name)
        sets = _run_sets(run, iters) + [
            f"train.seed={cfg.data.seed}",
            f"data.blend={json.dumps(blend)}",
            f"checkpoint.dir={ckpt_dir(ctx, name)}",
            f"checkpoint.interval={iters}",
            f"log.dir={run_dir(ctx, name)}",
        ]
        if name != "base":
            sets.append(f"checkpoint.pretrained={ckpt_dir(ctx, 'base')}")
        summary = _train(training_config(ctx, sets), log)
        return {"tokens": summary.get("tokens"), "loss": summary.get("losses"), "blend": blend}

    func.__doc__ = f"pre-train {name}"
    title = "base model: general text (base pool)" if name == "base" else f"CPT arm {name} ({iters} iterations)"
    return Step(
        name=f"pretrain-{name}",
        title=title,
        func=func,
        outputs=lambda ctx: [run_dir(ctx, name) / "summary.json"],
        clean=lambda ctx: [ckpt_dir(ctx, name), run_dir(ctx, name)],
    )


def _rollout_env_settings(cfg: ExperimentConfig) -> tuple[int, int, bool]:
    from data_tools.synthesis.rollout import build_parser

    args = build_parser().parse_args(["--questions", "x", "--output", "x", *cfg.data.rollout_args])
    return args.top_k, args.snippet_chars, args.full_pages


def agent_eval(ctx: DemoContext, trainer: Any, out_dir: Path) -> dict[str, Any]:
    """Roll out the held-out agent questions with ``trainer``'s model; writes ``agent.json`` and trajectories."""
    from data_tools.common.atomic import atomic_open, atomic_write_json
    from data_tools.synthesis.env.questions import read_questions
    from data_tools.synthesis.env.search import EnvConfig, load_environment
    from megatron_agentic.experiment.policy import GreedyGenerator, evaluate_agent
    from megatron_agentic.experiment.vocab import ExperimentVocab

    cfg: ExperimentConfig = ctx.config
    top_k, snippet, full = _rollout_env_settings(cfg)
    env_cfg = EnvConfig(top_k=top_k, snippet_chars=snippet, full_pages=full)
    env = load_environment(str(ctx.path("corpus", "agent.jsonl")), "text", env_cfg)
    questions = list(read_questions(synth(ctx, "agent", "questions.jsonl")))
    vocab = ExperimentVocab.load(ctx.path("tokens", "vocab.json")) if cfg.model.vocab == "compact" else None
    model = trainer.chunks[0]
    model.eval()
    generator = GreedyGenerator(model, vocab, cfg.sft.seq_length, trainer.device)
    metrics, records = evaluate_agent(
        generator, questions, env, cfg.agent.max_calls, cfg.agent.max_new_tokens, cfg.data.sft_tools
    )
    with atomic_open(out_dir / "agent_trajectories.jsonl") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    result = metrics.as_dict()
    atomic_write_json(out_dir / "agent.json", result)
    return result


def heldout_conversations(ctx: DemoContext) -> int:
    """Conversations in the held-out SFT set."""
    from megatron_agentic.training.sft import conversations_in

    return conversations_in(str(exp_prefix(ctx, "heldout_sft")))


def sft_step(cfg: ExperimentConfig, arm: str, seed: int) -> Step:
    """Identical SFT of ``arm`` with ``seed``, the held-out masked loss, then the agent evaluation."""
    parts = sft_run(arm, seed)
    run = cfg.sft

    def func(ctx: DemoContext, log: TextIO) -> dict:
        out = run_dir(ctx, *parts)
        eval_iters = max(1, math.ceil(heldout_conversations(ctx) / run.global_batch_size))
        sets = _run_sets(run, run.iters) + [
            f"train.seed={seed}",
            f"train.eval_iters={eval_iters}",  # each held-out conversation once, as in `sft-eval`
            f"train.eval_interval={run.eval_interval or 'null'}",
            "data.sft=true",
            f"data.blend={json.dumps([str(exp_prefix(ctx, 'sft'))])}",
            "data.eval_sets=" + json.dumps({"heldout_sft": str(exp_prefix(ctx, "heldout_sft"))}),
            "checkpoint.dir=null",
            f"checkpoint.pretrained={ckpt_dir(ctx, arm)}",
            f"log.dir={out}",
        ]
        agent: dict[str, Any] = {}

        def after(trainer: Any, summary: dict[str, Any]) -> None:
            agent.update(agent_eval(ctx, trainer, out))

        summary = _train(training_config(ctx, sets), log, on_finish=after)
        return {"heldout_loss": summary["eval"].get("heldout_sft"), "agent": agent}

    func.__doc__ = f"SFT of {arm}, seed {seed}"
    return Step(
        name=f"sft-{arm}-seed{seed}",
        title=f"SFT {arm} seed {seed} + held-out loss + agent rollouts",
        func=func,
        outputs=lambda ctx: [run_dir(ctx, *parts) / "summary.json", run_dir(ctx, *parts) / "agent.json"],
        clean=lambda ctx: [run_dir(ctx, *parts)],
        resumable=False,
    )


def run_steps(cfg: ExperimentConfig) -> list[Step]:
    """Base, the five CPT arms, then SFT of every arm for every seed."""
    steps = [pretrain_step(cfg, "base")] + [pretrain_step(cfg, arm) for arm in ARMS]
    for arm in ARMS:
        steps += [sft_step(cfg, arm, seed) for seed in cfg.seeds]
    return steps


def sft_summaries(ctx: DemoContext, arm: str, seeds: list[int]) -> list[dict[str, Any]]:
    """Per seed: the held-out loss, the training curve, the eval curve and the agent metrics of ``arm``."""
    out = []
    for seed in seeds:
        d = run_dir(ctx, *sft_run(arm, seed))
        metrics = read_jsonl(d / "metrics.jsonl")
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
        out.append(
            {
                "seed": seed,
                "heldout_loss": summary["eval"].get("heldout_sft"),
                "curve": sorted({int(m["step"]): float(m["loss"]) for m in metrics if "loss" in m}.items()),
                "eval_curve": [
                    (int(m["step"]), float(m["eval"]["heldout_sft"]))
                    for m in metrics
                    if isinstance(m.get("eval"), dict) and "heldout_sft" in m["eval"]
                ],  # fmt: skip
                "agent": json.loads((d / "agent.json").read_text(encoding="utf-8")),
            }
        )
    return out
