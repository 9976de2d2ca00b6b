"""Agent-trajectory ingestion: parse, validate and judge recorded ReAct trajectories.

Two message conventions are understood, also mixed within one file:

* **DeepResearch** (Alibaba-NLP/DeepResearch ``react_agent.py``): JSONL lines
  ``{"question", "answer", "messages", "prediction", "termination"}``; assistant turns are
  ``<think>...</think>\\n<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (``PythonInterpreter``
  puts its code in ``<code>`` inside the call) or end in ``<answer>...</answer>``; tool results come back as a
  *user* turn ``<tool_response>\\n...\\n</tool_response>``.
* **OpenAI tool calling**: assistant messages with ``tool_calls`` (``function.arguments`` a JSON string) and
  optional ``reasoning_content``; results as ``role: tool`` messages.

A trajectory becomes a question plus steps S_k (thinking + tool calls, or a final answer) with their responses
R_k. Malformed trajectories are never fatal: :func:`parse_trajectory` raises :class:`MalformedTrajectory` with
one of :data:`MALFORMED_REASONS`, and :func:`load_trajectories` counts them by reason. The judgment (did the
trajectory answer correctly?) comes from an explicit field, a normalized match against the ground truth, or an
LLM judge (:func:`judge_with_llm`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.serialize import (
    ANSWER_END,
    ANSWER_START,
    CODE_END,
    CODE_START,
    THINK_END,
    THINK_START,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_RESPONSE_END,
    TOOL_RESPONSE_START,
    render_action,
    render_tool_response,
)

log = logging.getLogger(__name__)

MALFORMED_REASONS = (
    "invalid_line",  # not UTF-8 / not JSON / not an object (the JSONL reader's reasons)
    "missing_question",
    "missing_messages",
    "bad_message",  # a message that is not {role, content:str} or has an unknown role
    "invalid_tool_call_json",
    "missing_response",  # a tool call with no tool response after it
    "unexpected_response",  # a tool response with no tool call before it
    "no_action",  # an assistant turn with neither a tool call nor an answer
    "empty_steps",
)
JUDGE_MODES = ("auto", "field", "exact", "contains", "llm")
_JUDGMENT_FIELDS = ("judgment", "correct", "is_correct")
_TAG = {
    "think": re.compile(re.escape(THINK_START) + r"(.*?)" + re.escape(THINK_END), re.S),
    "tool_call": re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.S),
    "answer": re.compile(re.escape(ANSWER_START) + r"(.*?)" + re.escape(ANSWER_END), re.S),
    "response": re.compile(re.escape(TOOL_RESPONSE_START) + r"\n?(.*?)\n?" + re.escape(TOOL_RESPONSE_END), re.S),
    "code": re.compile(re.escape(CODE_START) + r"(.*?)" + re.escape(CODE_END), re.S),
}


class MalformedTrajectory(ValueError):
    """A trajectory that cannot be used; ``reason`` is one of :data:`MALFORMED_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ToolCall:
    """One tool invocation."""

    name: str
    """Tool name (``search``, ``visit``, ``google_scholar``, ``PythonInterpreter``, ``parse_file``, ...)."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """JSON arguments."""
    code: str | None = None
    """Code of a DeepResearch ``PythonInterpreter`` call (sent in ``<code>``), else ``None``."""

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "arguments"[, "code"]}`` as accepted by :func:`data_tools.serialize.render_action`."""
        d: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.code is not None:
            d["code"] = self.code
        return d


@dataclass
class Step:
    """One agent step S_k and its environment responses R_k."""

    think: str
    """The step's reasoning (``<think>`` content), possibly empty."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Tool calls of the step (DeepResearch makes one; OpenAI-style agents may make several)."""
    answer: str | None = None
    """Final answer when this is the answering step (then ``tool_calls`` is empty)."""
    responses: list[str] = field(default_factory=list)
    """Tool responses R_k, one per tool call (empty for the answering step)."""
    note: str | None = None
    """A user turn (not a tool response) that came right before this step, e.g. DeepResearch's forced-answer
    instruction; kept so the step's context is faithful."""

    def __post_init__(self) -> None:
        if bool(self.tool_calls) == (self.answer is not None):
            raise ValueError("a step has tool calls or an answer, not both and not neither")

    def action_text(self) -> str:
        """The step rendered as assistant text (thinking, then tool call(s) or answer)."""
        if self.answer is not None:
            return render_action(self.think, answer=self.answer)
        parts = [render_action(self.think if i == 0 else None, c.to_dict()) for i, c in enumerate(self.tool_calls)]
        return "\n".join(parts)

    def response_text(self) -> str | None:
        """The responses rendered as ``<tool_response>`` blocks (one user turn), or ``None``."""
        if not self.responses:
            return None
        return "\n".join(render_tool_response(r) for r in self.responses)


@dataclass
class Trajectory:
    """A parsed agent trajectory."""

    id: str
    """Stable id (the record's ``id``, else a hash of question and messages)."""
    question: str
    """The user question Q."""
    steps: list[Step]
    """Steps S_1..S_K with their responses."""
    answer: str | None = None
    """Ground-truth answer, if known."""
    prediction: str | None = None
    """The agent's final answer (record field, else the answering step's answer)."""
    termination: str | None = None
    """Why the rollout stopped (DeepResearch: ``answer``, ``exceed available llm calls``, ...)."""
    system: str | None = None
    """System prompt of the rollout, if any."""
    judgment: bool | None = None
    """True if the trajectory is judged correct, False if not, None if not judged yet."""
    judge_reason: str = ""
    """How the judgment was made (``field``, ``exact``, ``contains``, ``llm: ...``)."""
    source: str = ""
    """``file:line`` the trajectory was read from."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other fields of the input record (kept for provenance)."""

    def to_record(self) -> dict[str, Any]:
        """The trajectory in DeepResearch JSONL form (what :func:`parse_trajectory` reads back)."""
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.question})
        for step in self.steps:
            if step.note:
                messages.append({"role": "user", "content": step.note})
            messages.append({"role": "assistant", "content": step.action_text()})
            if step.responses:
                messages.append({"role": "user", "content": step.response_text() or ""})
        rec: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "messages": messages,
            "prediction": self.prediction,
            "termination": self.termination,
        }
        if self.judgment is not None:
            rec["judgment"] = self.judgment
        rec.update({k: v for k, v in self.extra.items() if k not in rec})
        return rec


def _parse_tool_call(raw: str) -> ToolCall:
    body = raw.strip()
    code_m = _TAG["code"].search(body)
    code = None
    if code_m:
        code = code_m.group(1).strip()
        body = (body[: code_m.start()] + body[code_m.end() :]).strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedTrajectory("invalid_tool_call_json", f"{exc.msg} at char {exc.pos}: {body[:80]!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        raise MalformedTrajectory("invalid_tool_call_json", f"tool call without a string 'name': {body[:80]!r}")
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise MalformedTrajectory("invalid_tool_call_json", f"arguments string is not JSON: {exc.msg}") from None
    if not isinstance(args, dict):
        raise MalformedTrajectory("invalid_tool_call_json", f"arguments must be an object, got {type(args).__name__}")
    return ToolCall(obj["name"], args, code)


def parse_action_text(content: str, idx: int = 0) -> tuple[str, list[ToolCall], str | None]:
    """Split DeepResearch assistant text into ``(think, tool calls, answer)``.

    Raises :class:`MalformedTrajectory` (``invalid_tool_call_json`` or ``no_action``); ``idx`` names the message.
    """
    think_m = _TAG["think"].search(content)
    calls = [_parse_tool_call(m.group(1)) for m in _TAG["tool_call"].finditer(content)]
    answer_m = _TAG["answer"].search(content)
    if think_m:
        think = think_m.group(1).strip()
    else:  # no <think>: the text before the first action tag is the reasoning
        cut = min([p for p in (content.find(TOOL_CALL_START), content.find(ANSWER_START)) if p >= 0] or [len(content)])
        think = content[:cut].replace(THINK_END, "").strip()
    if TOOL_CALL_START in content and not calls:
        raise MalformedTrajectory("invalid_tool_call_json", f"message {idx}: unterminated <tool_call>")
    if calls:
        return think, calls, None
    if answer_m:
        return think, [], answer_m.group(1).strip()
    raise MalformedTrajectory("no_action", f"message {idx}: assistant turn has neither a tool call nor an answer")


def _openai_calls(msg: Mapping[str, Any], idx: int) -> list[ToolCall]:
    calls = []
    for c in msg.get("tool_calls") or []:
        fn = c.get("function", c) if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping):
            raise MalformedTrajectory("invalid_tool_call_json", f"message {idx}: tool_calls entry is not an object")
        calls.append(_parse_tool_call(json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments", {})})))
    return calls


def _stable_id(record: Mapping[str, Any]) -> str:
    payload = json.dumps([record.get("question"), record.get("messages")], sort_keys=True, ensure_ascii=False)
    return "traj-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def parse_trajectory(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """Parse one trajectory record; raises :class:`MalformedTrajectory` (with a reason) if it is unusable."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedTrajectory("missing_messages", "no 'messages' list")
    system = None
    question = record.get("question")
    steps: list[Step] = []
    pending: tuple[str, list[ToolCall], str | None] | None = None  # a tool-calling step awaiting its responses
    responses: list[str] = []
    seen_user = False
    note: str | None = None

    def flush() -> None:
        nonlocal pending, responses
        if pending is not None:
            if len(responses) < len(pending[1]):
                raise MalformedTrajectory("missing_response", f"step {len(steps) + 1}: tool call without a response")
            steps.append(Step(pending[0], pending[1], None, responses, pending[2]))
        pending, responses = None, []

    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in ("system", "user", "assistant", "tool"):
            raise MalformedTrajectory("bad_message", f"message {i}: not an object with a known role")
        role, content = msg["role"], msg.get("content") or ""
        if not isinstance(content, str):
            raise MalformedTrajectory("bad_message", f"message {i}: content is {type(content).__name__}, not text")
        if role == "system":
            system = content
        elif role == "tool" or (role == "user" and TOOL_RESPONSE_START in content):
            if pending is None:
                raise MalformedTrajectory("unexpected_response", f"message {i}: tool response without a tool call")
            found = [m.group(1) for m in _TAG["response"].finditer(content)] if role == "user" else [content]
            responses.extend(found or [content])
        elif role == "user":
            if pending is not None and len(responses) < len(pending[1]):
                raise MalformedTrajectory("missing_response", f"message {i}: user turn where a tool response was due")
            flush()
            if not seen_user:  # the first user turn is the question as the agent saw it
                seen_user = True
                if content.strip() or not isinstance(question, str):
                    question = content
            elif content.strip():
                note = content if note is None else f"{note}\n\n{content}"
        else:  # assistant
            flush()
            if steps and steps[-1].answer is not None:
                log.debug("%s: ignoring assistant turns after the final answer", source)
                break
            step_note, note = note, None
            if msg.get("tool_calls"):
                m = _TAG["think"].search(content)
                think = (msg.get("reasoning_content") or (m.group(1) if m else content)).strip()
                pending = (think, _openai_calls(msg, i), step_note)
            else:
                think, calls, answer = parse_action_text(content, i)
                think = (msg.get("reasoning_content") or "").strip() or think
                if calls:
                    pending = (think, calls, step_note)
                else:
                    steps.append(Step(think, [], answer, [], step_note))
    if pending is not None:
        flush()
    if not isinstance(question, str) or not question.strip():
        raise MalformedTrajectory("missing_question", "no question field and no user turn")
    if not steps:
        raise MalformedTrajectory("empty_steps", "no assistant steps")
    prediction = record.get("prediction")
    if not isinstance(prediction, str) or not prediction.strip():
        prediction = steps[-1].answer
    answer = record.get("answer")
    known = {"id", "question", "answer", "messages", "prediction", "termination", *_JUDGMENT_FIELDS}
    traj = Trajectory(
        id=str(record.get("id") or _stable_id(record)),
        question=question.strip(),
        steps=steps,
        answer=None if answer is None else str(answer),
        prediction=prediction,
        termination=record.get("termination"),
        system=system,
        source=source,
        extra={k: v for k, v in record.items() if k not in known},
    )
    for key in _JUDGMENT_FIELDS:
        if isinstance(record.get(key), bool):
            traj.judgment, traj.judge_reason = record[key], "field"
            break
    return traj


# ----------------------------------------------------------------------------------------------- judgment


def normalize_answer(text: str) -> str:
    """Lowercase, NFKC, drop punctuation and English articles, collapse whitespace (SQuAD-style)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def match_answer(prediction: str | None, gold: str | None, mode: str = "contains") -> bool | None:
    """Compare a prediction with the ground truth after :func:`normalize_answer`.

    ``exact``: equal; ``contains``: equal, or the gold answer occurs as a whole-word span of the prediction.
    Returns None when there is no gold answer; an empty prediction is incorrect.
    """
    if gold is None or not normalize_answer(gold):
        return None
    if not prediction:
        return False
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if p == g:
        return True
    return mode == "contains" and f" {g} " in f" {p} "


def judge(traj: Trajectory, mode: str = "auto") -> bool | None:
    """Set and return ``traj.judgment`` for ``mode`` in :data:`JUDGE_MODES` (except ``llm``, see below).

    ``auto`` keeps an explicit judgment field and otherwise uses ``contains``; ``field`` only uses the field.
    """
    if mode not in JUDGE_MODES or mode == "llm":
        raise ValueError(f"judge mode must be one of {JUDGE_MODES[:-1]} here (llm: judge_with_llm), got {mode!r}")
    if mode in ("auto", "field") and traj.judge_reason == "field":
        return traj.judgment
    if mode == "field":
        traj.judgment, traj.judge_reason = None, ""
        return None
    m = "contains" if mode == "auto" else mode
    traj.judgment = match_answer(traj.prediction, traj.answer, m)
    traj.judge_reason = m if traj.judgment is not None else ""
    return traj.judgment


def judge_with_llm(trajs: list[Trajectory], client: Any, keep_field: bool = False) -> Counter:
    """Judge trajectories with an LLM (``data_tools.llm.client.LLMClient``) using the ``has/judge`` template.

    The reply is a structured ``{"verdict": "correct"|"incorrect", "reason"}``. Trajectories without a ground
    truth are left alone, and so are those with an explicit judgment field when ``keep_field``; an empty
    prediction is Incorrect without asking; a failed request leaves ``judgment`` None. Returns counts by outcome.
    """
    from data_tools.llm.prompts import load_prompt

    tpl = load_prompt("has", "judge")
    counts: Counter = Counter()
    asks = []
    for t in trajs:
        if (keep_field and t.judge_reason == "field") or t.answer is None:
            continue
        t.judgment, t.judge_reason = None, ""
        if not t.prediction:
            t.judgment, t.judge_reason = False, "empty prediction"
            counts["incorrect"] += 1
            continue
        msgs = tpl.render(question=t.question, answer=t.answer, prediction=t.prediction)
        asks.append((t, {"messages": msgs, "schema": tpl.schema, "seed": 0, "temperature": 0.0}))
    results = client.run_batch([req for _, req in asks]) if asks else []
    for (t, _), res in zip(asks, results):
        if res.error or not isinstance(res.parsed, dict):
            counts["judge_failed"] += 1
            continue
        t.judgment = res.parsed["verdict"] == "correct"
        t.judge_reason = f"llm ({tpl.tag}): " + str(res.parsed.get("reason", ""))[:200]
        counts["correct" if t.judgment else "incorrect"] += 1
    return counts


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """Counts of an ingestion pass."""

    read: int = 0
    """Non-blank lines read."""
    ok: int = 0
    """Trajectories parsed."""
    malformed: Counter = field(default_factory=Counter)
    """Malformed trajectories by reason (:data:`MALFORMED_REASONS`)."""
    examples: dict[str, str] = field(default_factory=dict)
    """First ``file:line: detail`` per malformed reason."""

    def summary(self) -> str:
        """``read N, ok M, malformed K (reason=n, ...)``."""
        bad = sum(self.malformed.values())
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.malformed.items()))
        return f"read {self.read}, ok {self.ok}, malformed {bad}" + (f" ({detail})" if detail else "")


def load_trajectories(path: str | os.PathLike, report: LoadReport | None = None) -> Iterator[Trajectory]:
    """Yield parsed trajectories from a JSONL file, counting malformed ones by reason in ``report``."""
    report = report if report is not None else LoadReport()
    name = Path(path).name
    for lineno, rec in iter_jsonl(path):
        report.read += 1
        where = f"{name}:{lineno}"
        if isinstance(rec, BadLine):
            reason, detail = "invalid_line", f"{rec.reason} {rec.detail}"
        else:
            try:
                traj = parse_trajectory(rec, where)
            except MalformedTrajectory as exc:
                reason, detail = exc.reason, exc.detail
            else:
                report.ok += 1
                yield traj
                continue
        report.malformed[reason] += 1
        report.examples.setdefault(reason, f"{where}: {detail}")
        log.warning("skipping malformed trajectory %s: %s (%s)", where, reason, detail)
