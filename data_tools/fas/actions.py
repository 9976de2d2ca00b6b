"""Planning actions (analysis + first tool call or answer) and reasoning actions (draft A1, refined A2).

Tool calls use the Alibaba-NLP/DeepResearch tool set and argument shapes (:data:`TOOL_SCHEMAS`). The template
functions are deterministic rule-based generators that look only at the question text (and, for A2, at the
mapped knowledge), never at the ground truth; the ``llm_*_request`` functions build the prompts for a server.
"""

from __future__ import annotations

import re
from typing import Any

from data_tools.fas.knowledge import content_words, find_dates
from data_tools.llm.prompts import load_prompt
from data_tools.llm.schema import validator_for

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

_QUOTED = re.compile(r'(?:: |\) |in |by |completes )"(.*?___.*?)"(?=\s*(?:and is also|and then|and \(2\)|\?|$))', re.S)
_PAGE = re.compile(r'page "(.+?)" on (\S+?) and')


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


def quoted_clues(question: str) -> list[str]:
    """The quoted, blanked statements of a template question (in order)."""
    return [m.group(1) for m in _QUOTED.finditer(question)]


def _subject(question: str) -> str:
    m = re.search(r"sources on (.+?), (?:what|which)", question) or re.search(r"report on (.+?) covering", question)
    if m:
        return m.group(1)
    m = _PAGE.search(question)
    return m.group(1) if m else ""


def _query(text: str, subject: str, limit: int = 6) -> str:
    words = [w for w in content_words(text.replace("___", " ")) if w not in content_words(subject)][:limit]
    return " ".join(([subject] if subject else []) + words).strip()


def template_plan(question: dict[str, Any]) -> dict[str, Any]:
    """Rule-based analysis + first action for a question, from its text and style only."""
    text, style = question["question"], question["style"]
    subject = _subject(text)
    clues = quoted_clues(text)
    about = f" about {subject}" if subject else ""
    if style == "web_navigation" and (m := _PAGE.search(text)):
        page, site = m.group(1), m.group(2)
        url = f"https://{site}/wiki/{page.replace(' ', '_')}" if "wikipedia" in site else f"https://{site}/"
        think = (
            f'The question points to a specific page, "{page}" on {site}, and asks for a missing detail in one of '
            f"its sentences. I should not guess the detail from memory; the most direct step is to visit that page "
            f"with the goal of finding the sentence and reading the missing detail."
        )
        return {
            "think": think,
            "action": {"type": "tool_call", "name": "visit", "arguments": {"url": [url], "goal": text}},
        }
    if style == "report_synthesis":
        aspects = [a.strip(' ."') for a in text.split("covering:", 1)[-1].split(";") if a.strip(" .")]
        queries = [_query(a, subject, 5) or subject for a in aspects][:3] or [subject]
        think = (
            f"I need to write a report{about} that covers {len(aspects)} aspects. Each aspect needs sourced facts, "
            f"so I will search for them first, one query per aspect, and then combine the results."
        )
        return {"think": think, "action": {"type": "tool_call", "name": "search", "arguments": {"query": queries}}}
    queries = [_query(c, subject) for c in clues] or [_query(text, subject)]
    queries = [q for q in queries if q] or [text[:100]]
    if style == "numerical_computation":
        goal = "the dates of the events described, and then compute the difference in years"
    elif style == "multi_hop":
        goal = "the entity that links both descriptions: each description narrows the candidates, so I search both"
    else:
        goal = "the missing detail in the quoted statement"
    think = (
        f"The question asks for {goal}{about}. This is a specific fact that I should verify rather than recall, "
        f"so my first step is a web search built from the key terms of the question."
    )
    return {"think": think, "action": {"type": "tool_call", "name": "search", "arguments": {"query": queries}}}


def template_a1(question: dict[str, Any]) -> dict[str, Any]:
    """Rule-based draft A1: sub-questions from the question's clues; no claim of knowing the answer."""
    text, style = question["question"], question["style"]
    subject = _subject(text) or "the subject"
    clues = quoted_clues(text)
    if style == "numerical_computation":
        subs = [f'When did this happen: "{c}"?' for c in clues] + ["What is the difference between the years?"]
    elif style == "multi_hop":
        subs = [f'Which entity fits the blank in "{c}"?' for c in clues] + ["Which candidate satisfies both?"]
    elif style == "report_synthesis":
        aspects = [a.strip(' ."') for a in text.split("covering:", 1)[-1].split(";") if a.strip(" .")]
        subs = [
            f'What do sources say about {subject} regarding "{a}"?'
            if " " in a and not a.startswith("what happened")
            else f"What do sources say about {subject} regarding {a}?"
            for a in aspects
        ]
    else:
        subs = [f'What detail completes "{c}"?' for c in clues] or [text]
    reasoning = (
        f"To answer I need {len(subs)} facts: "
        + " ".join(f"({i}) {s}" for i, s in enumerate(subs, 1))
        + " From internal knowledge alone I cannot state these details with confidence, so the draft stays open."
    )
    return {"sub_questions": subs, "reasoning": reasoning, "draft_answer": "unknown without checking sources"}


def _fill_blank(clue: str, statements: list[str]) -> str | None:
    before, _, after = clue.partition("___")
    pattern = re.escape(before.strip()) + r"\s*(.+?)\s*" + re.escape(after.strip()) + "$"
    pattern = pattern.replace(r"\ ", r"\s+")
    for st in statements:
        m = re.search(pattern, st.strip(), re.I | re.S)
        if m:
            return m.group(1).strip()
    return None


def template_a2(question: dict[str, Any], knowledge: list[dict[str, Any]]) -> dict[str, Any]:
    """Rule-based refined A2 that derives the answer from the mapped knowledge (blank filling, year arithmetic)."""
    text, style = question["question"], question["style"]
    sts = [k["text"] for k in knowledge]
    cites = " ".join(f"[{i}] {s}" for i, s in enumerate(sts, 1))
    clues = quoted_clues(text)
    if style == "report_synthesis":
        body = " ".join(sts)
        return {"reasoning": f"The knowledge covers each requested aspect: {cites}", "answer": body}
    fills = [_fill_blank(c, sts) for c in clues]
    if style == "numerical_computation":
        years = []
        for f in fills:
            d = find_dates(f or "")
            years.append(d[0].year if d else None)
        ref = re.search(r"years before (\d{4})", text)
        if ref and len(years) == 1 and years[0] is not None:
            ans = str(int(ref.group(1)) - years[0])
            why = f"Knowledge [1] dates the event to {fills[0]}; {ref.group(1)} - {years[0]} = {ans}."
        elif len(years) == 2 and None not in years:
            ans = str(abs(years[0] - years[1]))
            why = f"The first event is dated {fills[0]} and the second {fills[1]}; |{years[0]} - {years[1]}| = {ans}."
        else:
            return {"reasoning": f"The knowledge does not date both events. {cites}", "answer": "unknown"}
        return {"reasoning": f"{cites} {why}", "answer": ans}
    if "from that entity's own sources" in text and len(clues) == 2:  # two hops: the bridge, then the detail
        bridge = fills[0]
        named = [f"the {bridge}", bridge] if bridge else []
        fills = [
            next((f for n in named if (f := _fill_blank(re.sub("the entity", n, clues[1], flags=re.I), sts))), None)
        ]
        if bridge and fills[0]:
            why = f"The first statement's blank is {bridge}; its own statement then gives {fills[0]}."
            return {"reasoning": f"{cites} {why}", "answer": fills[0]}
    found = [f for f in fills if f]
    if not found:
        return {"reasoning": f"None of the knowledge matches the quoted statement. {cites}", "answer": "unknown"}
    if style == "multi_hop" and len(set(f.casefold() for f in found)) > 1:
        why = f"The two statements point to different candidates ({', '.join(found)}); I take the first."
    else:
        why = f"Matching the quoted statement against the knowledge gives the missing part: {found[0]}."
    return {"reasoning": f"{cites} {why}", "answer": found[0]}


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
