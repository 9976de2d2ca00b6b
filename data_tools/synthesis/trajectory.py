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
R_k. Every ending DeepResearch writes is kept (see :func:`parse_trajectory`); only unusable records (no messages,
not JSON, no question, no action at all) raise :class:`MalformedTrajectory` with one of :data:`MALFORMED_REASONS`,
and :func:`load_trajectories` counts them by reason and the parsed ones by termination. The judgment (did the
trajectory answer correctly?) comes from an explicit field, the answer judge (:mod:`data_tools.synthesis.answers`), or
an LLM judge (:func:`judge_with_llm`); a trajectory without a final answer is ``unfinished``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5

from data_tools.common.jsonl import BadLine, iter_jsonl
from data_tools.synthesis.answers import AnswerJudgement, judge_answer, llm_judge, normalize_answer
from data_tools.synthesis.serialize import (
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
    render_think,
    render_tool_call,
    render_tool_response,
)

log = logging.getLogger(__name__)

MALFORMED_REASONS = (
    "invalid_line",  # not UTF-8 / not JSON / not an object (the JSONL reader's reasons)
    "missing_question",
    "missing_messages",  # no messages (DeepResearch writes failed runs as {"error": ..., "messages": []})
    "bad_message",  # a message that is not {role, content:str} or has an unknown role
    "unexpected_response",  # a tool response with no tool call before it
    "empty_steps",  # messages, but not one assistant action
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
_NAME = re.compile(r"""["']?name["']?\s*:\s*["']([^"']+)["']""")

# Texts Alibaba-NLP/DeepResearch inference/react_agent.py writes (it overwrites messages[-1] with the first two).
LLM_LIMIT_TEXT = "Sorry, the number of llm calls exceeds the limit."
CONTEXT_LIMIT_TEXT = (
    "You have now reached the maximum context length you can handle. You should stop making tool calls and, "
    "based on all the information above, think again and provide what you consider the most likely answer in "
    "the following format:<think>your final thinking</think>\n<answer>your answer</answer>"
)
TOOL_JSON_ERROR = 'Error: Tool call is not a valid JSON. Tool call must contain a valid "name" and "arguments" field.'
SERVER_ERROR_PREFIX = "vllm server error!!!"
_OVERWRITES = (LLM_LIMIT_TEXT, CONTEXT_LIMIT_TEXT[:60])

# DeepResearch terminations (react_agent.py) and the outcome each implies when the record has no judgment.
TERMINATIONS = (
    "answer",
    "generate an answer as token limit reached",
    "format error: generate an answer as token limit reached",
    "exceed available llm calls",
    "answer not found",
    "No answer found after 2h30mins",
)
OUTCOMES = ("correct", "incorrect", "unfinished")


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
    raw: str | None = None
    """The call's text when it is not valid JSON/JSON5 (the agent got DeepResearch's "not a valid JSON" error
    back); rendered verbatim. ``None`` for a valid call."""

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "arguments"[, "code"]}`` as accepted by :func:`data_tools.synthesis.serialize.render_action`."""
        d: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.code is not None:
            d["code"] = self.code
        return d

    def render(self) -> str:
        """``<tool_call>`` block: canonical JSON, or the raw text of an invalid call."""
        if self.raw is not None:
            return f"{TOOL_CALL_START}\n{self.raw}\n{TOOL_CALL_END}"
        return render_tool_call(self.name, self.arguments, self.code)


@dataclass
class Step:
    """One agent step S_k and its environment responses R_k."""

    think: str
    """The step's reasoning (``<think>`` content), possibly empty."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Tool calls of the step (DeepResearch executes one; OpenAI-style agents may make several)."""
    answer: str | None = None
    """Final answer when this is the answering step (then ``tool_calls`` is empty)."""
    responses: list[str] = field(default_factory=list)
    """Tool responses R_k, one per tool call (empty for the answering step, and for a call whose response
    DeepResearch overwrote with its llm-call / context limit text)."""
    note: str | None = None
    """A user turn (not a tool response) that came right before this step, e.g. DeepResearch's forced-answer
    instruction; kept so the step's context is faithful."""
    text: str | None = None
    """The assistant message verbatim when it differs from the canonical rendering (extra ``<tool_call>`` blocks
    DeepResearch never executed, action-less turns merged in); used by :meth:`Trajectory.to_record`."""
    raw: str | None = field(default=None, compare=False)
    """The assistant text exactly as the agent wrote it (DeepResearch text turns; think-only turns merged into
    this step come first, joined by a blank line); ``None`` for OpenAI tool-call messages. HAS shows the expert's
    step in this form (:meth:`verbatim`)."""

    def __post_init__(self) -> None:
        if bool(self.tool_calls) == (self.answer is not None):
            raise ValueError("a step has tool calls or an answer, not both and not neither")

    def action_text(self) -> str:
        """The step rendered as assistant text (thinking, then tool call(s) or answer)."""
        if self.answer is not None:
            return render_action(self.think, answer=self.answer)
        head = render_think(self.think) + "\n\n" if self.think.strip() else ""  # Qwen3: "</think>\n\n", as answers
        return head + "\n".join(c.render() for c in self.tool_calls)

    def verbatim(self) -> str:
        """The step as the agent wrote it: :attr:`raw` when known, else the canonical rendering."""
        return self.raw if self.raw is not None else self.action_text()

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
    """The agent's final answer (the answering step's answer, else the record field)."""
    termination: str | None = None
    """Why the rollout stopped (DeepResearch: one of :data:`TERMINATIONS`; inferred when the field is missing)."""
    system: str | None = None
    """System prompt of the rollout, if any."""
    judgment: bool | None = None
    """True if the trajectory is judged correct, False if not, None if not judged (or unfinished)."""
    judge_reason: str = ""
    """How the judgment was made (``field``, ``exact: ...``, ``rubric: ...``, ``llm (...): reason``)."""
    source: str = ""
    """``file:line`` the trajectory was read from."""
    ending_note: str | None = None
    """A user turn after the last step (DeepResearch's "Sorry, the number of llm calls exceeds the limit.")."""
    dropped_turns: int = 0
    """Assistant turns that were not agent output ("vllm server error!!!", a limit text written over an
    assistant turn) and were left out of the steps."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other fields of the input record (kept for provenance)."""

    @property
    def finished(self) -> bool:
        """Whether the trajectory ends with a final answer."""
        return bool(self.steps) and self.steps[-1].answer is not None

    @property
    def outcome(self) -> str | None:
        """``correct`` / ``incorrect`` (judged), ``unfinished`` (no final answer, not judged), or None."""
        if self.judgment is not None:
            return "correct" if self.judgment else "incorrect"
        return None if self.finished else "unfinished"

    def to_record(self) -> dict[str, Any]:
        """The trajectory in DeepResearch JSONL form (what :func:`parse_trajectory` reads back)."""
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.question})
        for step in self.steps:
            if step.note:
                messages.append({"role": "user", "content": step.note})
            messages.append({"role": "assistant", "content": step.text or step.action_text()})
            if step.responses:
                messages.append({"role": "user", "content": step.response_text() or ""})
        if self.ending_note:
            messages.append({"role": "user", "content": self.ending_note})
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


def _loads(body: str) -> Any:
    """JSON, else JSON5 (trailing commas, single quotes, comments: what DeepResearch's ``json5.loads`` accepts)."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return json5.loads(body)


def _parse_tool_call(raw: str) -> ToolCall:
    """Parse a ``<tool_call>`` body; an invalid one becomes a :class:`ToolCall` with ``raw`` set (never raises)."""
    body = raw.strip()
    code_m = _TAG["code"].search(body)
    code = None
    if code_m:
        code = code_m.group(1).strip()
        body = (body[: code_m.start()] + body[code_m.end() :]).strip()
    try:
        obj = _loads(body)
        args = obj.get("arguments", {}) if isinstance(obj, dict) else None
        if isinstance(args, str):
            args = _loads(args) if args.strip() else {}
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
            raise ValueError("tool call without a string 'name'")
        if not isinstance(args, dict):
            raise ValueError("arguments must be an object")
    except ValueError:  # json.JSONDecodeError and json5's errors are ValueErrors
        if code is not None and "python" in body.lower():  # DeepResearch runs the code whatever the JSON says
            return ToolCall("PythonInterpreter", {}, code)
        m = _NAME.search(body)
        return ToolCall(m.group(1) if m else "invalid", {}, code, raw=raw.strip())
    return ToolCall(obj["name"], args, code)


def parse_action_text(content: str, idx: int = 0) -> tuple[str, list[ToolCall], str | None]:
    """Split DeepResearch assistant text into ``(think, tool calls, answer)``.

    Every ``<tool_call>`` block is returned (DeepResearch executes only the first); an invalid call comes back
    with ``raw`` set. A turn with neither a call nor an answer returns ``(think, [], None)``. ``idx`` is kept
    for the callers' messages.
    """
    think_m = _TAG["think"].search(content)
    calls = [_parse_tool_call(m.group(1)) for m in _TAG["tool_call"].finditer(content)]
    answer_m = _TAG["answer"].search(content)
    if think_m:
        think = think_m.group(1).strip()
    else:  # no <think>: the text before the first action tag is the reasoning
        cut = min([p for p in (content.find(TOOL_CALL_START), content.find(ANSWER_START)) if p >= 0] or [len(content)])
        think = content[:cut].replace(THINK_END, "").strip()
    if calls:
        return think, calls, None
    if answer_m:
        return think, [], answer_m.group(1).strip()
    return think, [], None


def _openai_calls(msg: Mapping[str, Any]) -> list[ToolCall]:
    calls = []
    for c in msg.get("tool_calls") or []:
        fn = c.get("function", c) if isinstance(c, Mapping) else {}
        fn = fn if isinstance(fn, Mapping) else {}
        args = fn.get("arguments", {})
        body = json.dumps({"name": fn.get("name"), "arguments": args}) if not isinstance(args, str) else None
        if body is None:
            body = '{"name": ' + json.dumps(fn.get("name")) + ', "arguments": ' + (args.strip() or "{}") + "}"
        calls.append(_parse_tool_call(body))
    return calls


def _stable_id(record: Mapping[str, Any]) -> str:
    payload = json.dumps([record.get("question"), record.get("messages")], sort_keys=True, ensure_ascii=False)
    return "traj-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def _infer_termination(steps: list[Step], ending_note: str | None, last_note: str | None) -> str:
    if steps and steps[-1].answer is not None:
        forced = steps[-1].note is not None and steps[-1].note.startswith(CONTEXT_LIMIT_TEXT[:60])
        return TERMINATIONS[1] if forced else TERMINATIONS[0]
    if (ending_note or "").startswith(CONTEXT_LIMIT_TEXT[:60]) or (last_note or "").startswith(CONTEXT_LIMIT_TEXT[:60]):
        return TERMINATIONS[2]
    return TERMINATIONS[3] if ending_note == LLM_LIMIT_TEXT else TERMINATIONS[4]


def parse_trajectory(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """Parse one trajectory record; raises :class:`MalformedTrajectory` (with a reason) if it is unusable.

    Every ending Alibaba-NLP/DeepResearch writes is kept: a tool response overwritten with the llm-call or
    context-limit text (the call keeps no response; the text becomes the next step's ``note`` or the
    trajectory's ``ending_note``), JSON5 calls, invalid calls answered with the "not a valid JSON" error (kept as
    the step's raw call and its response), several ``<tool_call>`` blocks in one message (only the first was
    executed), "vllm server error!!!" turns (dropped, counted), action-less turns (their thinking is carried into
    the next step), and a missing ``question`` field (the first user turn is the question).
    """
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedTrajectory("missing_messages", "no 'messages' list" + (" (error record)" if "error" in record
                                                                               else ""))  # fmt: skip
    system = None
    question = record.get("question")
    steps: list[Step] = []
    pending: Step | None = None  # a tool-calling step collecting its responses
    text_format = False  # the pending step came from DeepResearch text (only its first call ran)
    seen_user = False
    note: str | None = None
    carry: list[str] = []  # thinking of action-less assistant turns, prepended to the next step's
    carry_raw: list[str] = []  # their text as written
    dropped = 0

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            if text_format and len(pending.tool_calls) > max(1, len(pending.responses)):
                pending.tool_calls = pending.tool_calls[: max(1, len(pending.responses))]  # never executed
            steps.append(pending)
        pending = None

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
            pending.responses.extend(found or [content])
        elif role == "user":
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
            if content.strip().startswith(SERVER_ERROR_PREFIX) or content.strip() in _OVERWRITES:
                dropped += 1
                continue
            if msg.get("tool_calls"):
                m = _TAG["think"].search(content)
                think = (msg.get("reasoning_content") or (m.group(1) if m else content)).strip()
                calls, answer, text_format = _openai_calls(msg), None, False
            else:
                think, calls, answer = parse_action_text(content, i)
                think = (msg.get("reasoning_content") or "").strip() or think
                text_format = True
            if not calls and answer is None:  # think-only turn: DeepResearch just asks again
                if think:
                    carry.append(think)
                    carry_raw.append(content.strip())
                continue
            if carry:
                think = "\n\n".join([*carry, think]).strip()
            verbatim = content if text_format and len(calls) > 1 and not carry else None
            written = content.strip()
            if text_format and (msg.get("reasoning_content") or "").strip() and THINK_START not in written:
                written = render_think(msg["reasoning_content"].strip()) + "\n\n" + written
            raw = "\n\n".join([*carry_raw, written]) if text_format else None
            step = Step(think, calls, answer, [], note, verbatim, raw)
            note, carry, carry_raw = None, [], []
            if calls:
                pending = step
            else:
                steps.append(step)
    flush()
    if not isinstance(question, str) or not question.strip():
        raise MalformedTrajectory("missing_question", "no question field and no user turn")
    if not steps:
        raise MalformedTrajectory("empty_steps", "no assistant action (tool call or answer)")
    ending_note = note
    prediction = steps[-1].answer
    if prediction is None and steps[-1].answer is None:
        rec_pred = record.get("prediction")
        prediction = rec_pred if isinstance(rec_pred, str) and rec_pred.strip() else None
    termination = record.get("termination")
    if not isinstance(termination, str) or not termination.strip():
        termination = _infer_termination(steps, ending_note, steps[-1].note)
    answer = record.get("answer")
    known = {"id", "question", "answer", "messages", "prediction", "termination", *_JUDGMENT_FIELDS}
    traj = Trajectory(
        id=str(record.get("id") or _stable_id(record)),
        question=question.strip(),
        steps=steps,
        answer=None if answer is None else str(answer),
        prediction=prediction,
        termination=termination,
        system=system,
        source=source,
        ending_note=ending_note,
        dropped_turns=dropped,
        extra={k: v for k, v in record.items() if k not in known},
    )
    for key in _JUDGMENT_FIELDS:
        if isinstance(record.get(key), bool):
            traj.judgment, traj.judge_reason = record[key], "field"
            break
    return traj


# ----------------------------------------------------------------------------------------------- judgment


def match_answer(prediction: str | None, gold: str | None, mode: str = "contains") -> bool | None:
    """Compare a prediction with the ground truth with :func:`data_tools.synthesis.answers.judge_answer`.

    ``contains``: every rule (exact, numeric tolerance, whole-word span, rubric for long gold answers);
    ``exact``: only normalised equality. Returns None when there is no gold answer; an empty prediction is
    incorrect.
    """
    v = judge_answer(prediction, gold)
    if mode == "exact" and v.correct:
        return normalize_answer(prediction) == normalize_answer(gold)
    return v.correct


def judge(traj: Trajectory, mode: str = "auto") -> bool | None:
    """Set and return ``traj.judgment`` for ``mode`` in :data:`JUDGE_MODES` (except ``llm``, see below).

    ``auto`` keeps an explicit judgment field and otherwise uses the answer judge (:mod:`data_tools.synthesis.answers`,
    with the record's ``style``, ``aliases`` and ``required_facts`` when present); ``field`` only uses the field.
    An unfinished trajectory (no final answer) is not judged: its outcome is ``unfinished``.
    """
    if mode not in JUDGE_MODES or mode == "llm":
        raise ValueError(f"judge mode must be one of {JUDGE_MODES[:-1]} here (llm: judge_with_llm), got {mode!r}")
    if mode in ("auto", "field") and traj.judge_reason == "field":
        return traj.judgment
    traj.judgment, traj.judge_reason = None, ""
    if mode == "field":
        return None
    if not traj.finished:
        traj.judge_reason = f"unfinished: {traj.termination}"
        return None
    aliases = traj.extra.get("aliases") if isinstance(traj.extra.get("aliases"), list) else ()
    facts = traj.extra.get("required_facts") if isinstance(traj.extra.get("required_facts"), list) else ()
    style = traj.extra.get("style") if isinstance(traj.extra.get("style"), str) else None
    v = judge_answer(traj.prediction, traj.answer, style=style, aliases=aliases, required_facts=facts)
    if mode == "exact" and v.correct and normalize_answer(traj.prediction) != normalize_answer(traj.answer):
        v = AnswerJudgement(False, "exact", f"not equal (would pass by {v.method})")
    traj.judgment = v.correct
    traj.judge_reason = f"{v.method}: {v.reason}" if v.correct is not None else ""
    return traj.judgment


def judge_with_llm(trajs: list[Trajectory], client: Any, keep_field: bool = False) -> Counter:
    """Judge finished trajectories with an LLM (:func:`data_tools.synthesis.answers.llm_judge`, the ``has/judge``
    template).

    Trajectories without a ground truth or without a final answer are left alone, and so are those with an
    explicit judgment field when ``keep_field``; a failed request leaves ``judgment`` None. The model's reason
    is kept in ``judge_reason``. Returns counts by outcome.
    """
    counts: Counter = Counter()
    todo = [t for t in trajs if not (keep_field and t.judge_reason == "field") and t.answer is not None and t.finished]
    for t in todo:
        t.judgment, t.judge_reason = None, ""
    verdicts = llm_judge([(t.question, t.answer or "", t.prediction or "") for t in todo], client) if todo else []
    for t, v in zip(todo, verdicts):
        if v is None:
            counts["judge_failed"] += 1
            continue
        t.judgment, t.judge_reason = v.correct, v.reason if v.method == "llm" else f"{v.method}: {v.reason}"
        counts["correct" if v.correct else "incorrect"] += 1
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
    terminations: Counter = field(default_factory=Counter)
    """Parsed trajectories by termination (DeepResearch's ``termination`` field, inferred when missing)."""

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
                report.terminations[traj.termination or "unknown"] += 1
                yield traj
                continue
        report.malformed[reason] += 1
        report.examples.setdefault(reason, f"{where}: {detail}")
        log.warning("skipping malformed trajectory %s: %s (%s)", where, reason, detail)
