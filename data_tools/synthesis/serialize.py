"""The one serializer for all training text: FAS planning, FAS reasoning, HAS decisions and general text.

Every synthesized sample becomes plain text in the Qwen3 chat-template conventions, with the ReAct markup used
by Alibaba-NLP/DeepResearch agents, so the tokenizer maps the markup onto Qwen3's *special* token ids
(``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ``<tool_call>`` 151657, ``</tool_call>`` 151658,
``<tool_response>`` 151665, ``</tool_response>`` 151666, ``<think>`` 151667, ``</think>`` 151668) when it
encodes with special tokens allowed. ``<answer>`` is ordinary text (it is not a Qwen3 special token).

Format (``FORMAT_VERSION`` = ``"qwen3-react-v2"``), exactly what Qwen3's chat template renders for the same
messages and tools (``tests/fas/test_format.py`` checks it against the official template with ``transformers``)::

    <|im_start|>system\\n{system}\\n\\n# Tools\\n...<tools>\\n{tool JSON per line}\\n</tools>...<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call><|im_end|>\\n
    <|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response><|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n...\\n</think>\\n\\n<answer>{final answer}</answer><|im_end|>\\n

* Every agentic sample opens with the same system turn: :data:`AGENT_SYSTEM_PROMPT` followed by Qwen3's tool
  block declaring the DeepResearch tool set (:data:`DEEPRESEARCH_TOOLS`: ``search``, ``visit``,
  ``google_scholar``, ``PythonInterpreter``, ``parse_file``). A sample's own ``system`` text (e.g. a recorded
  trajectory's) replaces the prompt; ``system=""`` leaves the system turn out.

* Tool results come back as a *user* turn wrapping ``<tool_response>`` (DeepResearch; Qwen3's template renders
  OpenAI ``role: tool`` messages the same way, grouping consecutive ones into one user turn).
* A tool call is one JSON object ``{"name", "arguments"}`` on its own line (``json.dumps``, non-ASCII kept);
  DeepResearch's ``PythonInterpreter`` puts its code in ``<code>...</code>`` after the JSON, inside the call.
* Planning samples: question, then one assistant turn with the analysis and either the first tool call or a
  direct answer. Reasoning samples: question, draft A1 as the assistant's thinking, the mapped knowledge as a
  numbered user turn, then the refined A2 ending in ``<answer>``.
* HAS samples (higher-order action synthesis): question, then for every step an assistant turn that lists the
  candidate actions ``Option 1:`` ... ``Option N+1:``, says ``I will choose option n`` and then gives the expert's
  step verbatim (its reasoning and its call or answer, as the agent wrote them), followed by the real tool
  response as a user turn. After the last step (and DeepResearch's limit text, if any) a separate assistant turn
  states the result of the entire trajectory (:data:`DECISION_CORRECT`, :data:`DECISION_INCORRECT`, or
  :data:`DECISION_UNFINISHED` when it stopped without a final answer). A long trajectory split into several
  samples replays earlier steps without options (``history``) and only its last part carries the result.
* General text is returned unchanged (no chat markup).

Bump ``FORMAT_VERSION`` whenever the rendered text changes; synthesis records store it in their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMAT_VERSION = "qwen3-react-v2"

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_START, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
CODE_START, CODE_END = "<code>", "</code>"

#: The Qwen3 special tokens this format emits, with their ids in the Qwen3 vocabulary.
SPECIAL_TOKEN_IDS: dict[str, int] = {
    IM_START: 151644,
    IM_END: 151645,
    TOOL_CALL_START: 151657,
    TOOL_CALL_END: 151658,
    TOOL_RESPONSE_START: 151665,
    TOOL_RESPONSE_END: 151666,
    THINK_START: 151667,
    THINK_END: 151668,
}

# The trajectory verdict of a HAS sample: its own statement after the last step (the paper's "final success/failure
# result of the entire path"), worded so that it cannot be read as a judgement of the last step.
DECISION_CORRECT = "Result of the entire trajectory: Correct (its final answer is right)"
DECISION_INCORRECT = "Result of the entire trajectory: Incorrect (its final answer is wrong)"
DECISION_UNFINISHED = "Result of the entire trajectory: Unfinished (it stopped without a final answer)"
ROLES = ("system", "user", "assistant", "tool")
RECORD_TYPES = ("planning", "reasoning", "has", "general")


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    params = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


_QUERIES = {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "One or more queries."}

#: The DeepResearch tool set (names and argument shapes of Alibaba-NLP/DeepResearch's agent) as OpenAI function
#: declarations, the ``tools`` of every agentic sample. ``PythonInterpreter`` takes empty arguments; its code
#: follows the JSON inside the call as ``<code>...</code>``.
DEEPRESEARCH_TOOLS: list[dict[str, Any]] = [
    _fn("search", "Web search; returns the top results for each query.", {"query": _QUERIES}, ["query"]),
    _fn(
        "visit",
        "Read web page(s) and return the parts relevant to a goal.",
        {
            "url": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "Page URL(s)."},
            "goal": {"type": "string", "description": "What information is needed from the page(s)."},
        },
        ["url", "goal"],
    ),
    _fn(
        "google_scholar",
        "Search academic publications; returns the top results per query.",
        {"query": _QUERIES},
        ["query"],
    ),
    _fn(
        "PythonInterpreter",
        "Run Python code in a sandbox and return its printed output. The arguments are an empty object; the code "
        "follows the JSON inside the call, enclosed in <code></code>.",
        {},
        [],
    ),
    _fn(
        "parse_file",
        "Parse user-provided files (PDF, DOCX, XLSX, CSV, TXT, ...) and return their content.",
        {"files": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "File names."}},
        ["files"],
    ),
]

#: System prompt of every agentic sample (FAS planning/reasoning, HAS, rollouts) before the tool block. It names
#: no special token (a literal ``<think>`` here would become special id 151667 in every sample).
AGENT_SYSTEM_PROMPT = (
    "You are a deep research assistant. Investigate the user's question with the tools below, thinking before "
    "every action, and give the definitive final answer enclosed in <answer></answer> tags."
)

_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


def render_system(system: str | None, tools: Sequence[Mapping[str, Any]] | None) -> str:
    """System turn content as Qwen3's chat template writes it: the prompt, then the ``# Tools`` block."""
    if not tools:
        return system or ""
    head = f"{system}\n\n" if system else ""
    decls = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return head + _TOOLS_HEAD + decls + _TOOLS_TAIL


def agent_system(system: str | None = None, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The system text of an agentic sample: ``system`` (default :data:`AGENT_SYSTEM_PROMPT`) with the tool
    block for ``tools`` (default :data:`DEEPRESEARCH_TOOLS`); a ``system`` that already declares ``<tools>`` (a
    recorded DeepResearch trajectory's) is kept as it is."""
    system = AGENT_SYSTEM_PROMPT if system is None else system
    if "<tools>" in system:
        return system
    return render_system(system, DEEPRESEARCH_TOOLS if tools is None else tools)


def render_think(text: str) -> str:
    """Wrap reasoning in ``<think>\\n...\\n</think>`` (surrounding whitespace stripped)."""
    return f"{THINK_START}\n{text.strip()}\n{THINK_END}"


def render_tool_call(name: str, arguments: Mapping[str, Any] | None = None, code: str | None = None) -> str:
    """Render one tool call: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``.

    ``code`` (DeepResearch's ``PythonInterpreter``) is appended inside the call as ``<code>\\n...\\n</code>``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"tool call needs a non-empty name, got {name!r}")
    if arguments is not None and not isinstance(arguments, Mapping):
        raise ValueError(f"tool call {name!r}: arguments must be a JSON object, got {type(arguments).__name__}")
    body = json.dumps({"name": name, "arguments": dict(arguments or {})}, ensure_ascii=False)
    if code is not None:
        body += f"\n{CODE_START}\n{code.strip()}\n{CODE_END}"
    return f"{TOOL_CALL_START}\n{body}\n{TOOL_CALL_END}"


def render_tool_response(text: str) -> str:
    """Wrap a tool result in ``<tool_response>\\n...\\n</tool_response>`` (kept verbatim, as DeepResearch does)."""
    return f"{TOOL_RESPONSE_START}\n{text}\n{TOOL_RESPONSE_END}"


def render_answer(text: str) -> str:
    """Wrap a final answer in ``<answer>...</answer>``."""
    return f"{ANSWER_START}{text.strip()}{ANSWER_END}"


def render_turn(role: str, content: str) -> str:
    """One chat turn: ``<|im_start|>role\\ncontent<|im_end|>\\n``."""
    if role not in ("system", "user", "assistant"):
        raise ValueError(f"unknown chat role {role!r}")
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def _tool_call_from_dict(call: Mapping[str, Any]) -> str:
    """Render a tool call given as ``{"name", "arguments"[, "code"]}`` or OpenAI ``{"function": {...}}``."""
    fn = call.get("function", call)
    args = fn.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call {fn.get('name')!r}: arguments are not valid JSON ({exc})") from exc
    return render_tool_call(fn.get("name", ""), args, fn.get("code"))


def render_action(think: str | None, tool_call: Mapping[str, Any] | None = None, answer: str | None = None) -> str:
    """Render one agent action S_k: optional thinking, then exactly one of a tool call or a final answer."""
    if (tool_call is None) == (answer is None):
        raise ValueError("an action has exactly one of tool_call or answer")
    head = render_think(think) + "\n\n" if think and think.strip() else ""
    return head + (_tool_call_from_dict(tool_call) if tool_call is not None else render_answer(answer or ""))


def render_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """Render chat messages in the Qwen3 template (no trailing generation prompt).

    Each message has ``role`` (system, user, assistant or tool) and ``content``. Assistant messages may also
    carry OpenAI-style ``reasoning_content`` (rendered as ``<think>``) and ``tool_calls``; ``tool`` messages
    become ``<tool_response>`` blocks, consecutive ones grouped into one user turn as Qwen3 does.

    The text equals Qwen3's chat template output for the same messages with two deliberate differences for
    training text: thinking is kept on *every* assistant turn (the template drops it before the last user
    query), and an assistant turn without thinking gets no empty ``<think>\\n\\n</think>`` block.
    """
    out: list[str] = []
    pending_tool: list[str] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i}: unknown role {role!r}")
        content = msg.get("content") or ""
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        if role == "tool":
            pending_tool.append(render_tool_response(content))
            continue
        if pending_tool:
            out.append(render_turn("user", "\n".join(pending_tool)))
            pending_tool = []
        if role == "assistant":
            head = render_think(msg["reasoning_content"]) + "\n\n" if msg.get("reasoning_content") else ""
            body = content.strip()
            for call in msg.get("tool_calls") or []:
                body += ("\n" if body else "") + _tool_call_from_dict(call)
            content = head + body
        out.append(render_turn(role, content))
    if pending_tool:
        out.append(render_turn("user", "\n".join(pending_tool)))
    return "".join(out)


def _prefix(question: str, system: str | None, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("a sample needs a non-empty question")
    sys_text = "" if system == "" else agent_system(system.strip() if system else None, tools)
    return (render_turn("system", sys_text) if sys_text else "") + render_turn("user", question.strip())


def serialize_planning(
    question: str,
    think: str,
    tool_call: Mapping[str, Any] | None,
    answer: str | None,
    system: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """FAS planning action: the agent system turn, the question, then the analysis and either the first tool
    call or a direct answer (``system``/``tools``: see :func:`agent_system`; ``system=""``: no system turn)."""
    return _prefix(question, system, tools) + render_turn("assistant", render_action(think, tool_call, answer))


def _knowledge_text(item: Any) -> str:
    if isinstance(item, str):
        return item.strip()
    if isinstance(item, Mapping):
        for key in ("statement", "text", "content"):
            if isinstance(item.get(key), str):
                return item[key].strip()
    raise ValueError(f"knowledge item must be a string or have a 'statement'/'text' field, got {item!r}")


def serialize_reasoning(
    question: str,
    a1: str,
    knowledge: Iterable[Any],
    a2: str,
    system: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """FAS reasoning action: draft A1 from internal knowledge, the mapped knowledge, then the refined A2.

    A1 is the assistant's first visible attempt; the knowledge comes back as a user turn; A2's reasoning (the
    text before ``<answer>``) is its thinking, followed by ``<answer>`` (a bare A2 is all answer). This is what
    Qwen3's chat template renders for ``[user, assistant(A1), user(knowledge), assistant(reasoning_content,
    answer)]``. ``knowledge`` items are strings or dicts with a ``statement``/``text`` field.
    """
    items = [_knowledge_text(k) for k in knowledge]
    listing = "\n".join(f"{i}. {k}" for i, k in enumerate(items, 1)) or "(none)"
    if ANSWER_START in a2:
        why, _, rest = a2.partition(ANSWER_START)
        final = render_action(why, answer=rest.rsplit(ANSWER_END, 1)[0])
    else:
        final = render_answer(a2)
    return (
        _prefix(question, system, tools)
        + render_turn("assistant", a1.strip())
        + render_turn("user", f"Relevant knowledge:\n{listing}")
        + render_turn("assistant", final)
    )


def render_options(options: Sequence[str], chosen: int, step: int | None = None, expert: str | None = None) -> str:
    """List candidate actions ``Option 1:`` ... and the choice ``I will choose option n`` (``chosen`` 0-based);
    ``expert``: the chosen step as the agent wrote it (reasoning + call or answer), given verbatim after the choice.
    """
    if not options:
        raise ValueError("a decision needs at least one option")
    if not 0 <= chosen < len(options):
        raise ValueError(f"chosen index {chosen} out of range for {len(options)} options")
    where = f" for step {step}" if step is not None else ""
    n = len(options)
    head = f"There {'is' if n == 1 else 'are'} {n} candidate action{'' if n == 1 else 's'}{where}:"
    body = "\n\n".join(f"Option {i}:\n{opt.strip()}" for i, opt in enumerate(options, 1))
    tail = f"\n\n{expert}" if expert else ""
    return f"{head}\n\n{body}\n\nI will choose option {chosen + 1}{tail}"


def _response_turn(response: str | Sequence[str]) -> str:
    blocks = [response] if isinstance(response, str) else list(response)
    return render_turn("user", "\n".join(render_tool_response(r) for r in blocks))


def has_history_turns(action: str, response: str | Sequence[str] | None, note: str | None = None) -> str:
    """An earlier step replayed without options: (the user ``note`` before it,) its action and response turns."""
    out = (render_turn("user", note) if note else "") + render_turn("assistant", action.strip())
    return out + (_response_turn(response) if response else "")


def has_step_turns(step: Mapping[str, Any], step_no: int | None, decision: str | None = None) -> str:
    """One HAS decision step: the options turn and its response turn, then ``decision`` in its own turn if given.

    ``step``: ``{"options": [...], "chosen": 0-based index, "response": str, list of str, or None}``, an optional
    ``expert`` (the chosen step verbatim, shown after the choice) and an optional ``note``: a user turn that
    preceded the step (e.g. DeepResearch's "you have reached the maximum context length" instruction).
    """
    body = render_options(step["options"], int(step["chosen"]), step_no, step.get("expert"))
    response = step.get("response")
    note = render_turn("user", step["note"]) if step.get("note") else ""
    out = note + render_turn("assistant", body) + (_response_turn(response) if response else "")
    return out + (render_turn("assistant", decision) if decision is not None else "")


def decision_text(outcome: bool | str) -> str:
    """The closing line of a HAS sample for an outcome.

    ``True``/``"correct"`` -> :data:`DECISION_CORRECT`; ``False``/``"incorrect"`` -> :data:`DECISION_INCORRECT`;
    ``"unfinished"`` (the trajectory stopped without a final answer: llm-call limit, context limit without an
    answer, or a sample cut before a malformed step) -> :data:`DECISION_UNFINISHED`.
    """
    if outcome is True or outcome == "correct":
        return DECISION_CORRECT
    if outcome is False or outcome == "incorrect":
        return DECISION_INCORRECT
    if outcome == "unfinished":
        return DECISION_UNFINISHED
    raise ValueError(f"unknown HAS outcome {outcome!r} (expected True/False or correct/incorrect/unfinished)")


def serialize_has(
    question: str,
    steps: Sequence[Mapping[str, Any]],
    judgment: bool | str | None,
    history: Sequence[Mapping[str, Any]] = (),
    system: str | None = None,
    first_step: int = 1,
    ending_note: str | None = None,
) -> str:
    """HAS decision text for one trajectory (or one part of a split trajectory).

    ``steps``: ``{"options": [rendered action, ...], "chosen": 0-based index, "response": R_k}`` where R_k is a
    string, a list of strings (several tool calls) or None (the answering step).
    ``history``: earlier steps replayed without options, ``{"action": rendered S_k, "response": R_k}``.
    Either may carry a ``note`` (a user turn that preceded the step).
    ``judgment``: the outcome (see :func:`decision_text`), stated in its own assistant turn after the last step;
    None (a non-final part) states nothing. ``first_step`` numbers the steps in the option headers.
    ``ending_note``: a user turn after the last step (DeepResearch's "Sorry, the number of llm calls exceeds the
    limit."), rendered before the result.
    """
    out = [_prefix(question, system)]
    out.extend(has_history_turns(h["action"], h.get("response"), h.get("note")) for h in history)
    out.extend(has_step_turns(step, first_step + i) for i, step in enumerate(steps))
    if judgment is not None:
        out.append(has_closing(judgment, ending_note))
    return "".join(out)


def has_closing(judgment: bool | str, ending_note: str | None = None) -> str:
    """The end of a HAS sample: the ``ending_note`` user turn (if any), then the trajectory's result turn."""
    return (render_turn("user", ending_note) if ending_note else "") + render_turn("assistant", decision_text(judgment))


def serialize_prefix(question: str, system: str | None = None) -> str:
    """The opening of every agentic sample: the system turn (see :func:`agent_system`) and the question turn."""
    return _prefix(question, system)


def serialize_general(text: str) -> str:
    """General text (math, code, web) is kept as is: no chat markup."""
    if not isinstance(text, str):
        raise ValueError(f"general text must be a string, got {type(text).__name__}")
    return text


def _require(record: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{record.get('type')} record {record.get('id', '?')!r} lacks field(s) {missing}")


def serialize_record(record: Mapping[str, Any]) -> str:
    """Serialize one synthesis record, dispatching on ``record["type"]``.

    * ``planning``: ``question``, ``think`` (or ``analysis``), and ``tool_call`` (``{"name", "arguments"}``)
      or ``answer``.
    * ``reasoning``: ``question``, ``a1``, ``knowledge`` (list of strings or ``{"statement": ...}``), ``a2``.
    * ``has``: ``question`` + ``steps`` (+ ``judgment``, ``history``) as in :func:`serialize_has`, or a
      ready ``text``.
    * ``general``: ``text``.
    Optional ``system`` replaces :data:`AGENT_SYSTEM_PROMPT` (``""``: no system turn) and ``tools`` the
    declared tools. Raises ``ValueError`` naming the missing field.
    """
    kind = record.get("type")
    system = record.get("system")
    tools = record.get("tools")
    if kind == "planning":
        _require(record, "question")
        think = record.get("think", record.get("analysis", ""))
        if record.get("tool_call") is None and record.get("answer") is None:
            raise ValueError(f"planning record {record.get('id', '?')!r} has neither tool_call nor answer")
        tool_call = record.get("tool_call")
        return serialize_planning(
            record["question"], think, tool_call, None if tool_call is not None else record["answer"], system, tools
        )
    if kind == "reasoning":
        _require(record, "question", "a1", "a2")
        return serialize_reasoning(
            record["question"], record["a1"], record.get("knowledge") or [], record["a2"], system, tools
        )
    if kind == "has":
        if "steps" in record:
            _require(record, "question")
            return serialize_has(
                record["question"], record["steps"], record.get("judgment"), record.get("history", ()), system
            )
        _require(record, "text")
        return str(record["text"])
    if kind == "general":
        _require(record, "text")
        return serialize_general(record["text"])
    raise ValueError(f"record {record.get('id', '?')!r}: unknown type {kind!r} (expected one of {RECORD_TYPES})")
