"""Planning actions (analysis + first tool call or answer) and reasoning actions (draft A1, refined A2).

Tool calls use the Alibaba-NLP/DeepResearch tool set and argument shapes (:data:`TOOL_SCHEMAS`). The offline
(template) actions live in :mod:`data_tools.synthesis.fas.template_actions`; the ``llm_*_request`` functions here
build the prompts for a server.
"""

from __future__ import annotations

from typing import Any

from data_tools.synthesis.llm.prompts import load_prompt
from data_tools.synthesis.llm.schema import validator_for

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "search": {
        "type": "object",
        "properties": {"query": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["query"],
        "additionalProperties": False,
    },
    "google_scholar": {
        "type": "object",
        "properties": {"query": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["query"],
        "additionalProperties": False,
    },
    "visit": {
        "type": "object",
        "properties": {
            "url": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            "goal": {"type": "string", "minLength": 1},
        },
        "required": ["url", "goal"],
        "additionalProperties": False,
    },
    "PythonInterpreter": {  # DeepResearch: empty arguments, the code in <code>...</code> after the JSON
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    },
    "parse_file": {
        "type": "object",
        "properties": {"files": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["files"],
        "additionalProperties": False,
    },
}


def tool_call_problem(name: Any, arguments: Any) -> str | None:
    """Why a tool call is invalid (unknown tool, arguments not matching its schema), or ``None``."""
    if name not in TOOL_SCHEMAS:
        return f"unknown tool {name!r}"
    if not isinstance(arguments, dict):
        return "arguments are not a JSON object"
    errors = list(validator_for(TOOL_SCHEMAS[name]).iter_errors(arguments))
    if errors:
        return f"{name}: {errors[0].message}"
    return None


def render_a1(a1: dict[str, Any]) -> str:
    """A1 as the assistant's visible draft (``labels``: optional ``(sub-questions header, draft label)``)."""
    subs = "\n".join(f"{i}. {s}" for i, s in enumerate(a1["sub_questions"], 1))
    head, draft = a1.get("labels") or ("Sub-questions:", "Draft answer:")
    return f"{head}\n{subs}\n{a1['reasoning'].strip()}\n{draft} {a1['draft_answer'].strip()}"


def render_a2(a2: dict[str, Any]) -> str:
    """A2 as reasoning followed by ``<answer>``."""
    return f"{a2['reasoning'].strip()}\n<answer>{a2['answer'].strip()}</answer>"


def knowledge_lines(knowledge: list[dict[str, Any]]) -> str:
    """Numbered knowledge for prompts."""
    return "\n".join(f"{i}. {k['text']}" for i, k in enumerate(knowledge, 1)) or "(none)"


def llm_plan_request(question: dict[str, Any]) -> dict[str, Any]:
    """Chat request for a planning action."""
    p = load_prompt("fas", "planning", "v1")
    return {"messages": p.render(question=question["question"]), "schema": p.schema, "template": p}


def llm_a1_request(question: dict[str, Any]) -> dict[str, Any]:
    """Chat request for the draft A1."""
    p = load_prompt("fas", "reasoning_a1", "v1")
    return {"messages": p.render(question=question["question"]), "schema": p.schema, "template": p}


def llm_a2_request(question: dict[str, Any], a1: dict[str, Any], knowledge: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat request for the refined A2."""
    p = load_prompt("fas", "reasoning_a2", "v1")
    messages = p.render(question=question["question"], draft=render_a1(a1), knowledge=knowledge_lines(knowledge))
    return {"messages": messages, "schema": p.schema, "template": p}


def normalize_plan(parsed: dict[str, Any]) -> dict[str, Any]:
    """An LLM planning reply in the record shape (``tool_call`` actions keep name and arguments only)."""
    act = parsed["action"]
    if act.get("type") == "answer":
        return {"think": parsed["think"], "action": {"type": "answer", "answer": str(act.get("answer", ""))}}
    return {
        "think": parsed["think"],
        "action": {"type": "tool_call", "name": act.get("name"), "arguments": act.get("arguments")},
    }
