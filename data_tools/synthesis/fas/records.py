"""FAS output records: planning, reasoning and rejected samples with stable ids, provenance and training text.

Records contain nothing that depends on how a run went (no timings, cache flags or attempt counts), so a
resumed run writes exactly the records of an uninterrupted one. ``text`` is the training text rendered by
:mod:`data_tools.synthesis.serialize` (the one serializer shared with HAS and the tokenizer).
"""

from __future__ import annotations

from typing import Any

from data_tools.synthesis import serialize
from data_tools.synthesis.fas.actions import render_a1, render_a2
from data_tools.synthesis.fas.judge import SampleVerdict

FAS_VERSION = "fas-v1"
TEMPLATE_GENERATOR = "template-v1"


def knowledge_entry(k: dict[str, Any]) -> str:
    """One knowledge item of a reasoning sample, in the format of the offline search tool's results
    (:mod:`data_tools.synthesis.env.search`): ``[Title](url)`` on one line, the statement below it."""
    src = k.get("source") or {}
    title = src.get("title") or k.get("subject") or k.get("entity") or "source"
    url = src.get("url") or ""
    return (f"[{title}]({url})" if url else f"[{title}]") + "\n" + k["text"]


def public_knowledge(knowledge: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The knowledge fields kept in records: id, entity, text, time, source."""
    return [
        {
            "id": k["id"],
            "entity": k.get("entity", ""),
            "subject": k.get("subject") or (k.get("source") or {}).get("title") or k.get("entity", ""),
            "text": k["text"],
            "time": k.get("time"),
            "source": k.get("source", {}),
        }
        for k in knowledge
    ]


QUESTION_EXTRAS = ("required_facts", "entities", "attribute", "kind", "unit", "ask", "clues", "description", "site")
"""Style-specific question fields copied into every record: a report's rubric, a comparison's two entities and
the compared attribute."""


def _base(kind: str, rid: str, item: dict[str, Any], q: dict[str, Any], knowledge, provenance) -> dict[str, Any]:
    return {
        "id": rid,
        "type": kind,
        "question_id": q["id"],
        "memory_id": item["id"],
        "entity": item["entity"],
        "style": q["style"],
        "question": q["question"],
        "ground_truth": q["answer"],
        "statement_ids": q["statement_ids"],
        **{k: q[k] for k in QUESTION_EXTRAS if k in q},
        "knowledge": public_knowledge(knowledge),
        "provenance": provenance,
    }


def _render(rec: dict[str, Any], system: tuple[str, list[dict[str, Any]]] | None) -> str:
    """The training text; ``system``: ``(prompt, tool declarations)`` of this sample (stored in the record as
    ``system`` and ``tool_names``), ``None`` for the default agent system turn."""
    payload = dict(rec)
    if rec["type"] == "reasoning":  # knowledge reads like search results (one format for tool output)
        payload["knowledge"] = [knowledge_entry(k) for k in rec["knowledge"]]
    if system is not None:
        rec["system"], decls = system
        rec["tool_names"] = [t["function"]["name"] for t in decls]
        payload.update(system=rec["system"], tools=decls)
    return serialize.serialize_record(payload)


def planning_record(
    item, q, knowledge, plan: dict[str, Any], verdict: SampleVerdict, provenance, system=None
) -> dict[str, Any]:
    """A planning sample (question -> analysis + first tool call or direct answer)."""
    rec = _base("planning", "plan-" + q["id"][2:], item, q, knowledge, provenance)
    act = plan["action"]
    rec["think"] = plan["think"]
    rec["tool_call"] = {"name": act["name"], "arguments": act["arguments"]} if act["type"] == "tool_call" else None
    if rec["tool_call"] is not None and act.get("code"):
        rec["tool_call"]["code"] = act["code"]  # DeepResearch's PythonInterpreter: code after the JSON
    rec["answer"] = act.get("answer") if act["type"] == "answer" else None
    rec["verdict"] = verdict.as_dict()
    try:
        rec["text"] = _render(rec, system)
    except ValueError as exc:  # an invalid tool call cannot be rendered; it is rejected anyway
        rec["text"] = None
        rec["render_error"] = str(exc)
    return rec


def reasoning_record(
    item, q, knowledge, a1: dict[str, Any], a2: dict[str, Any], verdict: SampleVerdict, provenance, system=None
):
    """A reasoning sample (question -> draft A1 -> knowledge -> refined A2)."""
    rec = _base("reasoning", "reas-" + q["id"][2:], item, q, knowledge, provenance)
    rec["sub_questions"] = a1["sub_questions"]
    rec["draft_answer"] = a1["draft_answer"]
    rec["a1"] = render_a1(a1)
    rec["a2"] = render_a2(a2)
    rec["final_answer"] = a2["answer"]
    rec["verdict"] = verdict.as_dict()
    rec["text"] = _render(rec, system)
    return rec


def rejected(record: dict[str, Any], stage: str, kind: str, reason: str, detail: str = "") -> dict[str, Any]:
    """Wrap a sample (or a stub for a failed request) as a rejected record with its reason."""
    out = dict(record)
    out["id"] = "rej-" + record["id"]
    out["rejection"] = {"stage": stage, "kind": kind, "reason": reason, "detail": detail}
    return out


def stub(kind: str, rid: str, item: dict[str, Any], q: dict[str, Any] | None, provenance) -> dict[str, Any]:
    """Minimal record for work that produced no sample (failed request, invalid question)."""
    rec = {"id": rid, "type": kind, "memory_id": item["id"], "entity": item["entity"], "provenance": provenance}
    if q is not None:
        rec.update(
            {
                "question_id": q.get("id"),
                "style": q.get("style"),
                "question": q.get("question"),
                "ground_truth": q.get("answer"),
                "statement_ids": q.get("statement_ids"),
            }
        )
    return rec


def provenance(
    item: dict[str, Any],
    backend: str,
    model: str | None,
    seed: int,
    templates: dict[str, str],
    knowledge: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Provenance block: generator, model, versions, seed, memory origin and sources."""
    sources = []
    for k in knowledge or []:
        s = k.get("source") or {}
        if s and s not in sources:
            sources.append(s)
    return {
        "backend": backend,
        "synthetic_template": backend == "template",
        "model": TEMPLATE_GENERATOR if backend == "template" else model,
        "fas_version": FAS_VERSION,
        "templates": templates,
        "format_version": serialize.FORMAT_VERSION,
        "seed": seed,
        "memory_backend": item.get("backend"),
        "memory_version": item.get("version"),
        "sources": sources,
    }
