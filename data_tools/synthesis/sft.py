"""SFT data with per-token loss masks: ReAct trajectories and chat JSONL -> Megatron indexed datasets.

``megatron-agentic data sft --input FILE.jsonl --output-prefix PREFIX`` writes two aligned Megatron indexed
datasets, one document (and one sequence) per conversation:

* ``PREFIX.bin/.idx``: the token ids (Qwen3: int32), exactly the ids of the conversation rendered in the Qwen3
  chat template (:func:`data_tools.synthesis.serialize.render_chat`) followed by the end-of-document id;
* ``PREFIX_loss_mask.bin/.idx``: one ``uint8`` per token, 1 where the token is a *target* the model learns to
  produce, 0 elsewhere. Both are read by megatron-core's ``IndexedDataset``; sequence lengths are equal.

Which tokens are targets follows Megatron-LM's SFT convention (core_v0.16.1,
``megatron/training/tokenizer/sft_tokenizer.py`` ``SFTTokenizer.tokenize_conversation`` and
``megatron/training/datasets/sft_dataset.py`` ``SFTDataset``): system and user turns are ``IGNORE_INDEX``
(no loss), an assistant turn carries loss except its ``assistant_prefix_len`` role-header tokens
(here ``<|im_start|>assistant\\n``), and the end-of-document token appended to each conversation is a target.
Tool responses are user turns in the Qwen3 / DeepResearch format (``<tool_response>`` inside
``<|im_start|>user``), so they carry no loss. Within an assistant turn the thinking, the tool calls, the final
answer and the closing ``<|im_end|>`` carry loss; the newline after ``<|im_end|>`` does not (the model never
generates it: decoding stops at ``<|im_end|>``). Megatron-LM tokenizes JSONL on the fly and packs several
conversations per sequence with ``cu_seqlens``; here the conversations are tokenized once into indexed
datasets (the mask as a parallel dataset) and ``megatron_agentic.training.sft.SFTDataset`` builds the
``labels``/``loss_mask`` shift exactly as ``SFTDataset.__getitem__`` does.

Inputs (``--format auto`` decides per record):

* **react**: trajectories in the DeepResearch JSONL format (``{"question", "answer", "messages", ...}``), e.g.
  ``megatron-agentic data rollout`` output. They are parsed by :func:`data_tools.synthesis.trajectory.parse_trajectory`
  (server-error turns and never-executed calls dropped, the project's canonical rendering) and get the agent
  system turn of every agentic CPT sample (:func:`data_tools.synthesis.serialize.agent_system`). ``--only-correct``
  keeps the trajectories the answer judge accepts (rejection sampling).
* **chat**: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": ...}, ...]}`` with optional
  OpenAI ``tool_calls`` / ``reasoning_content`` on assistant turns (Megatron-LM's SFT JSONL shape).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.common.atomic import atomic_write_json
from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.indexed.indexed_io import IndexedWriter, optimal_dtype
from data_tools.indexed.tokenizers import Tokenizer, load_tokenizer
from data_tools.synthesis.serialize import DEEPRESEARCH_TOOLS, IM_START, ROLES, agent_system, render_chat
from data_tools.synthesis.trajectory import MalformedTrajectory, judge, parse_trajectory

log = logging.getLogger("data_tools.synthesis.sft")

FORMATS = ("auto", "react", "chat")
MASK_SUFFIX = "_loss_mask"
"""The loss-mask dataset of ``PREFIX`` is ``PREFIX + MASK_SUFFIX`` (``.bin``/``.idx``, uint8)."""
IGNORE_INDEX = -100
"""Megatron-LM's ``IGNORE_INDEX`` (``megatron/training/datasets/sft_dataset.py``): a target without loss."""
ASSISTANT_HEADER = f"{IM_START}assistant\n"
"""The assistant role header (Megatron-LM's ``assistant_prefix_len`` tokens): no loss."""


class SFTRecordError(ValueError):
    """A record that cannot become an SFT conversation (message names the problem)."""


@dataclass
class Turn:
    """One rendered chat turn: ``<|im_start|>role\\n...<|im_end|>\\n``."""

    role: str
    """``system``, ``user`` (including tool responses) or ``assistant``."""
    text: str
    """The turn exactly as rendered in the conversation."""


def mask_path(prefix: str | Path) -> str:
    """Prefix of the loss-mask dataset of the SFT dataset ``prefix``."""
    return str(prefix) + MASK_SUFFIX


def detect_format(record: Mapping[str, Any]) -> str:
    """``react`` for DeepResearch trajectories (a ``question`` field), else ``chat``."""
    return "react" if "question" in record else "chat"


def react_messages(
    record: Mapping[str, Any], only_correct: bool = False, source: str = "", tools: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Messages of a DeepResearch trajectory record, canonicalised through :mod:`data_tools.synthesis.trajectory`.

    The system turn is the agentic one of every CPT sample (:func:`~data_tools.synthesis.serialize.agent_system`:
    the record's own system prompt, or the default, with the DeepResearch tool block; ``tools`` limits the block to
    the named tools, as ``data rollout --backend openai`` declares only the environment's). With ``only_correct`` a
    trajectory the answer judge does not accept raises :class:`SFTRecordError`.
    """
    try:
        traj = parse_trajectory(record, source)
    except MalformedTrajectory as exc:
        raise SFTRecordError(f"malformed trajectory ({exc})") from None
    if only_correct and judge(traj) is not True:
        raise SFTRecordError(f"trajectory not judged correct ({traj.outcome or 'not judged'})")
    messages = list(traj.to_record()["messages"])
    declared = tool_specs(tools)
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": agent_system(messages[0]["content"], declared)}
    else:
        messages.insert(0, {"role": "system", "content": agent_system(None, declared)})
    return messages


def tool_specs(names: Sequence[str] | None) -> list[dict[str, Any]] | None:
    """The DeepResearch tool schemas named in ``names`` (None: all, the default block); unknown names raise."""
    if names is None:
        return None
    known = {t["function"]["name"]: t for t in DEEPRESEARCH_TOOLS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]


def chat_messages(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``messages`` of a chat record, checked: roles, string contents, at least one assistant turn."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SFTRecordError("no 'messages' list")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in ROLES:
            raise SFTRecordError(f"message {i}: not an object with role in {ROLES}")
        if not isinstance(msg.get("content") or "", str):
            raise SFTRecordError(f"message {i}: content is not a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTRecordError("no assistant turn (nothing to learn)")
    return [dict(m) for m in messages]


def chat_turns(messages: Sequence[Mapping[str, Any]]) -> list[Turn]:
    """Render messages turn by turn with :func:`~data_tools.synthesis.serialize.render_chat` (consecutive ``tool``
    messages form one user turn, as Qwen3's template groups them); the texts concatenate to
    ``render_chat(messages)``."""
    turns: list[Turn] = []
    i = 0
    while i < len(messages):
        j = i + 1
        if messages[i].get("role") == "tool":
            while j < len(messages) and messages[j].get("role") == "tool":
                j += 1
        try:
            text = render_chat(messages[i:j])
        except ValueError as exc:
            raise SFTRecordError(str(exc)) from None
        role = "user" if messages[i].get("role") == "tool" else str(messages[i]["role"])
        turns.append(Turn(role, text))
        i = j
    return turns


def _header_tokens(tokenizer: Tokenizer, ids: list[int], header: str) -> int:
    """Number of leading ``ids`` that spell ``header`` (a token straddling its end counts as header)."""
    for k in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:k])) >= len(header):
            return k
    return len(ids)


def tokenize_conversation(messages: Sequence[Mapping[str, Any]], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and the 0/1 target mask of one conversation (plus the end-of-document token, a target).

    Each turn is tokenized on its own; turns are delimited by special tokens (``<|im_end|>\\n`` then
    ``<|im_start|>``), so the ids equal ``tokenizer.encode(render_chat(messages))`` (the tests check it).
    """
    ids: list[int] = []
    mask: list[int] = []
    for turn in chat_turns(messages):
        tids = tokenizer.encode(turn.text)
        tmask = [0] * len(tids)
        if turn.role == "assistant":
            head = _header_tokens(tokenizer, tids, ASSISTANT_HEADER)
            # the trailing "\n" after <|im_end|> is never generated: no loss on it
            tail = 1 if turn.text.endswith("\n") and tids and tokenizer.decode(tids[-1:]) == "\n" else 0
            for k in range(head, len(tids) - tail):
                tmask[k] = 1
        ids.extend(tids)
        mask.extend(tmask)
    ids.append(tokenizer.eod_id)
    mask.append(1)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.uint8)


def targets(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Megatron-LM's target array: the id where the mask is 1, :data:`IGNORE_INDEX` elsewhere."""
    return np.where(np.asarray(mask) > 0, np.asarray(ids, dtype=np.int64), IGNORE_INDEX)


@dataclass
class SFTStats:
    """What one ``data sft`` run wrote (``PREFIX.sft.json``)."""

    read: int = 0
    """Non-blank input lines."""
    conversations: int = 0
    """Conversations written."""
    tokens: int = 0
    """Tokens written (with end-of-document tokens)."""
    loss_tokens: int = 0
    """Tokens with loss."""
    max_tokens: int = 0
    """Longest conversation in tokens."""
    formats: Counter = field(default_factory=Counter)
    """Written conversations by input format."""
    skipped: Counter = field(default_factory=Counter)
    """Skipped records by reason."""
    examples: dict[str, str] = field(default_factory=dict)
    """First ``file:line: detail`` per skip reason."""

    def summary(self) -> str:
        """One line for the console."""
        skipped = sum(self.skipped.values())
        share = self.loss_tokens / self.tokens if self.tokens else 0.0
        return (
            f"read {self.read}, wrote {self.conversations} conversations ({self.tokens} tokens, {share:.1%} with "
            f"loss, longest {self.max_tokens}), skipped {skipped}"
            + (f" ({', '.join(f'{k}={v}' for k, v in sorted(self.skipped.items()))})" if skipped else "")
        )


def _reason(detail: str) -> str:
    if detail.startswith("malformed"):
        return "malformed_trajectory"
    if detail.startswith("trajectory not judged"):
        return "not_correct"
    return "bad_record"


def build_sft_dataset(
    inputs: Iterable[str | Path],
    output_prefix: str | Path,
    tokenizer: Tokenizer,
    fmt: str = "auto",
    only_correct: bool = False,
    limit: int | None = None,
    tools: Sequence[str] | None = None,
) -> SFTStats:
    """Tokenize conversations from JSONL files into ``PREFIX`` and ``PREFIX_loss_mask`` (atomic, mask first).

    Bad records are skipped and counted by reason; raises ``ValueError`` when nothing was written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    stats = SFTStats()
    dtype = optimal_dtype(tokenizer.n_vocab)
    tok_writer = IndexedWriter(output_prefix, dtype)
    mask_writer = IndexedWriter(mask_path(output_prefix), np.uint8)
    try:
        for path in inputs:
            name = Path(path).name
            for lineno, rec in iter_jsonl(path):
                if limit is not None and stats.conversations >= limit:
                    break
                stats.read += 1
                where = f"{name}:{lineno}"
                if isinstance(rec, BadLine):
                    stats.skipped["invalid_line"] += 1
                    stats.examples.setdefault("invalid_line", str(rec))
                    continue
                kind = detect_format(rec) if fmt == "auto" else fmt
                try:
                    messages = (
                        react_messages(rec, only_correct, where, tools) if kind == "react" else chat_messages(rec)
                    )
                    ids, mask = tokenize_conversation(messages, tokenizer)
                except SFTRecordError as exc:
                    reason = _reason(str(exc))
                    stats.skipped[reason] += 1
                    stats.examples.setdefault(reason, f"{where}: {exc}")
                    log.debug("skipping %s: %s", where, exc)
                    continue
                if stats.conversations == 0 and ids.tolist()[:-1] != tokenizer.encode(render_chat(messages)):
                    raise ValueError(
                        f"{where}: tokenizer {tokenizer.spec!r} does not tokenize turn by turn like the whole "
                        "conversation (it adds tokens of its own, e.g. a BOS); use a Qwen3-style tokenizer"
                    )
                tok_writer.add_documents(ids, np.asarray([ids.size]))
                mask_writer.add_documents(mask, np.asarray([mask.size]))
                stats.conversations += 1
                stats.tokens += int(ids.size)
                stats.loss_tokens += int(mask.sum())
                stats.max_tokens = max(stats.max_tokens, int(ids.size))
                stats.formats[kind] += 1
        if stats.conversations == 0:
            raise ValueError(f"no usable conversation in the input ({stats.summary()})")
        mask_writer.finalize()  # the token dataset last: a pair whose tokens exist is complete
        tok_writer.finalize()
    except BaseException:
        tok_writer.abort()
        mask_writer.abort()
        raise
    record = {f.name: getattr(stats, f.name) for f in fields(stats)}  # asdict() would miscopy the Counters
    record.update(formats=dict(stats.formats), skipped=dict(stats.skipped), tokenizer=tokenizer.spec)
    atomic_write_json(str(output_prefix) + ".sft.json", record)
    return stats


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``megatron-agentic data sft``."""
    p = argparse.ArgumentParser(
        prog="megatron-agentic data sft",
        description="ReAct trajectories / chat JSONL -> Megatron indexed dataset + per-token loss mask "
        "(loss on assistant turns only; Megatron-LM's SFT convention).",
    )
    p.add_argument("--input", action="append", required=True, help="JSONL file (repeatable)")
    p.add_argument("--output-prefix", required=True, help="writes PREFIX.bin/.idx and PREFIX_loss_mask.bin/.idx")
    p.add_argument("--format", choices=FORMATS, default="auto", help="react (DeepResearch), chat, or auto per record")
    p.add_argument("--tokenizer", default="qwen3", help="qwen3 (built in), a HF tokenizer dir, or a .model file")
    p.add_argument("--only-correct", action="store_true", help="react: keep trajectories judged correct")
    p.add_argument("--limit", type=int, default=None, help="stop after this many conversations")
    p.add_argument(
        "--tools", default=None, help="react: declare only these tools in the system turn (e.g. search,visit)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """``megatron-agentic data sft``; exit 0 on success, 2 on bad arguments or no usable record."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for path in args.input:
        if not Path(path).is_file():
            print(f"data sft: --input {path}: no such file", file=sys.stderr)
            return 2
    try:
        tokenizer = load_tokenizer(args.tokenizer)
        tools = None if args.tools is None else [t.strip() for t in args.tools.split(",") if t.strip()]
        tool_specs(tools)  # unknown names: exit 2 before any file is written
        stats = build_sft_dataset(
            args.input, args.output_prefix, tokenizer, args.format, args.only_correct, args.limit, tools
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"data sft: {exc}", file=sys.stderr)
        return 2
    for reason, example in stats.examples.items():
        log.info("first %s: %s", reason, example)
    print(json.dumps({"output_prefix": str(args.output_prefix), "summary": stats.summary()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
