"""``megatron-agentic data rollout``: ReAct rollouts in the offline search environment.

Each question is rolled out as a DeepResearch-style ReAct loop: the policy writes ``<think>`` + ``<tool_call>``
(or ``<answer>``), the environment (``search``/``visit`` over a BM25-indexed corpus, :mod:`data_tools.synthesis.env`)
answers with a ``<tool_response>`` user turn, until an answer, ``--max-calls`` policy calls, or
``--max-context-tokens``. Policies: ``scripted`` (offline, deterministic, :mod:`data_tools.synthesis.env.policy`) or
``openai`` (an OpenAI-compatible server through the shared LLM client, with its request cache; many questions
run concurrently). Trajectories are written as the JSONL that :mod:`data_tools.synthesis.trajectory` ingests
(``{"id", "question", "answer", "messages", "prediction", "termination", "judgment"}``), append-only and
resumable after a kill; the run ends with a one-line summary.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.common.argtypes import non_negative_int, positive_int, probability
from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import BadLine, ResumableJsonlWriter, iter_jsonl
from data_tools.common.lock import lock_output_file
from data_tools.synthesis.answers import judge_answer
from data_tools.synthesis.common.cli_args import add_llm_args, llm_config_from_args
from data_tools.synthesis.common.command import CommandError, failure_exit_status, require_file, run_command
from data_tools.synthesis.common.failure_rate import add_failure_rate_arg
from data_tools.synthesis.common.progress import SynthesisProgress
from data_tools.synthesis.common.sharding import add_shard_args, shard_from_args, shard_of
from data_tools.synthesis.env.policy import ScriptedPolicy
from data_tools.synthesis.env.questions import Question, builtin_questions, read_questions
from data_tools.synthesis.env.search import EnvConfig, SearchEnvironment, load_environment
from data_tools.synthesis.serialize import TOOL_RESPONSE_START, render_chat, render_tool_response
from data_tools.synthesis.trajectory import (
    CONTEXT_LIMIT_TEXT,
    LLM_LIMIT_TEXT,
    SERVER_ERROR_PREFIX,
    TOOL_JSON_ERROR,
    parse_action_text,
)

log = logging.getLogger("data_tools.synthesis.rollout")

FORCE_ANSWER = CONTEXT_LIMIT_TEXT
"""Alias of :data:`data_tools.synthesis.trajectory.CONTEXT_LIMIT_TEXT` (DeepResearch's forced-answer instruction)."""
STOP = ["\n<tool_response>", "<tool_response>"]


@dataclass
class RolloutConfig:
    """Limits of one rollout."""

    max_calls: int = 16
    """Most policy calls per question (DeepResearch: ``MAX_LLM_CALL_PER_RUN``)."""
    max_context_tokens: int = 32768
    """Context budget; past it the policy is asked once for a final answer."""
    seed: int = 0
    """Base seed (scripted policy RNG; per-request seeds of the openai policy)."""

    def __post_init__(self) -> None:
        if self.max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {self.max_calls}")
        if self.max_context_tokens < 256:
            raise ValueError(f"max_context_tokens must be >= 256, got {self.max_context_tokens}")


Act = Callable[[list[dict[str, str]], int], Awaitable[str | None]]
"""A policy: ``(messages, call index) -> assistant text`` (None when the backend failed)."""


async def rollout(
    q: Question,
    act: Act,
    env: SearchEnvironment,
    cfg: RolloutConfig,
    count_tokens: Callable[[str], int],
    system: str | None = None,
) -> dict[str, Any]:
    """Roll out one question the way Alibaba-NLP/DeepResearch ``react_agent.py`` does; returns its record.

    The loop and the record are DeepResearch's: the first ``<tool_call>`` of a turn is executed (an invalid one
    gets the "not a valid JSON" error as its response), a failed model call leaves a "vllm server error!!!"
    turn, a turn without a call or an answer gets no response, the last message is overwritten with the
    llm-call limit text when the calls run out, and past the context budget with the forced-answer instruction,
    after which one more turn gives the answer (termination ``generate an answer as token limit reached``, or
    ``format error: ...`` without one). :mod:`data_tools.synthesis.trajectory` ingests every such record.
    """
    messages: list[dict[str, str]] = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q.question}
    ]
    prediction: str | None = None
    termination: str | None = None

    async def turn(call: int) -> str:
        content = await act(messages, call)
        if content is None:
            return SERVER_ERROR_PREFIX + " (request failed)"
        pos = content.find(TOOL_RESPONSE_START)
        return (content[:pos] if pos >= 0 else content).strip()

    calls_left = cfg.max_calls
    while calls_left > 0:
        calls_left -= 1
        content = await turn(cfg.max_calls - calls_left - 1)
        messages.append({"role": "assistant", "content": content})
        _, calls, answer = parse_action_text(content, len(messages) - 1)
        if calls:
            first = calls[0]
            result = TOOL_JSON_ERROR if first.raw is not None else env.call(first.name, first.arguments)
            messages.append({"role": "user", "content": render_tool_response(result)})
        elif answer is not None:
            prediction, termination = answer, "answer"
            break
        if calls_left <= 0:
            messages[-1]["content"] = LLM_LIMIT_TEXT
        if count_tokens(render_chat(messages)) > cfg.max_context_tokens:
            messages[-1]["content"] = CONTEXT_LIMIT_TEXT
            content = await turn(cfg.max_calls - calls_left)
            messages.append({"role": "assistant", "content": content})
            _, _, answer = parse_action_text(content)
            if answer is not None:
                prediction, termination = answer, "generate an answer as token limit reached"
            else:
                prediction, termination = content, "format error: generate an answer as token limit reached"
            break
    if termination is None:
        prediction, termination = "No answer found.", "exceed available llm calls"
    rec = {
        "id": q.id,
        "question": q.question,
        "answer": q.answer,
        "messages": messages,
        "prediction": prediction,
        "termination": termination,
    }
    if termination in ("answer", "generate an answer as token limit reached"):
        verdict = judge_answer(prediction, q.answer, style=q.style)
        if verdict.correct is not None:
            rec["judgment"], rec["judge"] = verdict.correct, f"{verdict.method}: {verdict.reason}"
    if q.style:
        rec["style"] = q.style
    return rec


def scripted_act(env: SearchEnvironment, q: Question, seed: int, **policy: Any) -> Act:
    """The scripted offline policy for one question, as an :data:`Act`; ``policy``: :class:`ScriptedPolicy`
    settings (mistake rates, ``min_pages``)."""
    policy = ScriptedPolicy(env, q.question, random.Random(f"{seed}:{q.id}"), **policy)

    async def act(messages: list[dict[str, str]], call: int) -> str | None:
        if messages[-1]["content"] == CONTEXT_LIMIT_TEXT:
            return policy.answer()
        return policy.act()

    return act


def openai_act(client: Any, q: Question, seed: int, temperature: float) -> Act:
    """An OpenAI-compatible model as the policy (stops before a hallucinated ``<tool_response>``)."""

    async def act(messages: list[dict[str, str]], call: int) -> str | None:
        req_seed = int(hashlib.sha1(f"{seed}:{q.id}:{call}".encode()).hexdigest()[:8], 16)
        res = await client.chat(messages, seed=req_seed, stop=STOP, temperature=temperature)
        if res.error:
            log.warning("question %s call %d failed: %s", q.id, call, res.error)
            return None
        return res.content

    return act


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``data rollout``."""
    p = argparse.ArgumentParser(prog="megatron-agentic data rollout", description=__doc__.splitlines()[0])
    p.add_argument("--questions", required=True,
                   help="questions JSONL ({question, answer?, id?}; FAS question files work), or builtin:N for N "
                   "questions generated from the corpus")  # fmt: skip
    p.add_argument("--corpus", default="builtin",
                   help="corpus JSONL ({text, title?, url?, id?}) or 'builtin' / 'builtin:N' for the Wikipedia "
                   "summaries (default builtin)")  # fmt: skip
    p.add_argument("--text-key", default="text", help="text field of the corpus (default text)")
    p.add_argument("--output", required=True, help="trajectory JSONL (appended to / resumed)")
    p.add_argument("--max-calls", type=int, default=16, help="policy calls per question (default 16)")
    p.add_argument("--max-context-tokens", type=int, default=32768, help="context token budget (default 32768)")
    p.add_argument("--top-k", type=int, default=5, help="search results per query (default 5)")
    p.add_argument(
        "--wrong-pick-rate",
        type=probability,
        default=0.2,
        help="scripted policy: probability of opening the second result first (default 0.2)",
    )
    p.add_argument(
        "--misleading-query-rate",
        type=probability,
        default=0.15,
        help="scripted policy: probability of a misleading first query (default 0.15)",
    )
    p.add_argument(
        "--premature-answer-rate",
        type=probability,
        default=0.15,
        help="scripted policy: probability of answering from a search result without reading it (default 0.15)",
    )
    p.add_argument(
        "--min-pages",
        type=non_negative_int,
        default=0,
        help="scripted policy: pages to read before answering (long rollouts; default 0)",
    )
    p.add_argument(
        "--full-pages",
        action="store_true",
        help="visit quotes whole pages as evidence (long rollouts for the 128K stage)",
    )
    p.add_argument("--snippet-chars", type=positive_int, default=240, help="page text per search result (default 240)")
    p.add_argument("--limit", type=positive_int, default=None, help="roll out at most this many questions")
    p.add_argument("--tokenizer", default="qwen3", help="tokenizer spec for the context budget (default qwen3)")
    p.add_argument("--summary", default=None, help="summary JSON path (default: OUTPUT.summary.json)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_llm_args(p, default_backend="scripted", backends=("openai", "scripted"))
    p.set_defaults(temperature=0.85)
    add_shard_args(p)
    add_failure_rate_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``data rollout``; returns 0 on success, 1 when too many requests failed, 2 on bad arguments or input."""
    return run_command("data rollout", build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = RolloutConfig(args.max_calls, args.max_context_tokens, args.seed)
        env_cfg = EnvConfig(top_k=args.top_k, snippet_chars=args.snippet_chars, full_pages=args.full_pages)
        env = load_environment(args.corpus, args.text_key, env_cfg)
        for name in ("wrong_pick_rate", "misleading_query_rate", "premature_answer_rate"):
            if not 0.0 <= getattr(args, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
        policy_cfg = {
            "wrong_pick_prob": args.wrong_pick_rate,
            "misleading_query_prob": args.misleading_query_rate,
            "premature_answer_prob": args.premature_answer_rate,
            "min_pages": args.min_pages,
        }
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    bad: list[BadLine] = []
    if args.questions.startswith("builtin:"):
        questions = builtin_questions(env.docs, int(args.questions.split(":", 1)[1]))
    else:
        questions = list(read_questions(require_file(args.questions, "questions file"), bad))
    shard, num_shards = shard_from_args(args)
    questions = [q for q in questions if num_shards == 1 or shard_of(q.id, num_shards) == shard][: args.limit]

    from data_tools.indexed.tokenizers import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    out = Path(args.output)
    lock_output_file(out, "data rollout", shard, num_shards)  # one writer per output (issue 16)
    client, system = None, None
    if args.backend == "openai":
        from data_tools.synthesis.llm.client import LLMClient
        from data_tools.synthesis.serialize import DEEPRESEARCH_TOOLS, agent_system

        client = LLMClient(llm_config_from_args(args, default_cache=str(out.with_name(out.name + ".llm_cache.sqlite"))))
        # the one agent format (data_tools.synthesis.serialize), declaring the tools this offline environment serves
        system = agent_system(tools=[t for t in DEEPRESEARCH_TOOLS if t["function"]["name"] in ("search", "visit")])

    counts: Counter = Counter()
    steps_total = 0
    t0 = time.time()
    with ResumableJsonlWriter(out, key="id") as writer:
        todo = [q for q in questions if q.id not in writer]
        counts["already_done"] = len(questions) - len(todo)
        bar = SynthesisProgress(
            "rollout",
            len(questions),
            unit="trajectory",
            initial=counts["already_done"],
            stats=client.stats if client is not None else None,
        )

        def finish(rec: dict[str, Any]) -> None:
            nonlocal steps_total
            writer.write(rec)
            bar.advance(1)
            counts["written"] += 1
            counts[f"termination: {rec['termination']}"] += 1
            j = rec.get("judgment")
            counts["unjudged" if j is None else ("correct" if j else "incorrect")] += 1
            steps_total += sum(m["role"] == "assistant" for m in rec["messages"])

        def count_tokens(text: str) -> int:
            return len(tok.encode(text))

        async def run_all() -> None:
            if client is None:
                for q in todo:  # sequential: deterministic write order
                    finish(await rollout(q, scripted_act(env, q, cfg.seed, **policy_cfg), env, cfg, count_tokens))
                return
            # at most 2x the client's concurrency rollouts alive at once (each waits on one request at a time)
            window = asyncio.Semaphore(2 * args.concurrency)

            async def one(q: Question) -> dict[str, Any]:
                async with window:
                    act = openai_act(client, q, cfg.seed, args.temperature)
                    return await rollout(q, act, env, cfg, count_tokens, system)

            try:
                for fut in asyncio.as_completed([one(q) for q in todo]):
                    finish(await fut)
            finally:
                await client.aclose()

        try:
            asyncio.run(run_all())
        finally:
            bar.close()
    if client is not None:
        client.close()
    totals: Counter = Counter()
    for _, rec in iter_jsonl(out):
        if isinstance(rec, dict):
            totals["trajectories"] += 1
            totals[f"termination: {rec.get('termination')}"] += 1
            failed = any(str(m.get("content", "")).startswith(SERVER_ERROR_PREFIX) for m in rec.get("messages") or [])
            totals["failed"] += failed  # a trajectory with a failed model call
    summary = {
        "command": "data rollout",
        "trajectories_ok": totals["trajectories"],
        "terminations": {k.split(": ", 1)[1]: v for k, v in sorted(totals.items()) if k.startswith("termination: ")},
        "backend": args.backend,
        "questions": len(questions),
        "bad_question_lines": len(bad),
        "bad_question_examples": [str(b) for b in bad[:5]],
        "corpus_documents": len(env.docs),
        "trajectories_with_failed_calls": totals["failed"],
        **dict(sorted(counts.items())),
        "mean_steps": round(steps_total / counts["written"], 2) if counts["written"] else None,
        "llm": client.stats.as_dict() if client is not None else None,
        "seconds": round(time.time() - t0, 2),
    }
    summary_path = Path(args.summary) if args.summary else out.with_name(out.name + ".summary.json")
    atomic_write_json(summary_path, summary)
    terms = ", ".join(f"{k.split(': ', 1)[1]}={v}" for k, v in sorted(counts.items()) if k.startswith("termination: "))
    print(
        f"data rollout: {len(questions)} questions ({len(bad)} bad lines), written {counts['written']}, "
        f"already done {counts['already_done']}, correct {counts['correct']}, incorrect {counts['incorrect']}, "
        f"unjudged {counts['unjudged']}" + (f", termination: {terms}" if terms else "") + f"; summary {summary_path}"
    )
    return failure_exit_status(
        "data rollout",
        failed=totals["failed"],
        total=totals["trajectories"],
        max_rate=args.max_failure_rate,
        listed_in=f"{out} (assistant turns starting {SERVER_ERROR_PREFIX!r})",
    )


if __name__ == "__main__":
    sys.exit(main())
