"""Every ending Alibaba-NLP/DeepResearch ``inference/react_agent.py`` writes is ingested and becomes HAS samples.

The records below are built the way ``react_agent.py`` builds them: it overwrites ``messages[-1]`` (normally the
last tool response) with "Sorry, the number of llm calls exceeds the limit." or with the maximum-context
instruction (then appends one more assistant turn), parses calls with ``json5``, answers an unparseable call with
its "not a valid JSON" error as the tool response, leaves "vllm server error!!!" assistant turns, executes only
the first ``<tool_call>`` of a turn, reads the question from ``messages[1]`` when the item has none, and writes
failed runs as ``{"error": ..., "messages": []}``.
"""

from __future__ import annotations

import json

from data_tools.synthesis.has.cli import main as has_main
from data_tools.synthesis.serialize import DECISION_CORRECT, DECISION_UNFINISHED
from data_tools.synthesis.trajectory import (
    CONTEXT_LIMIT_TEXT,
    LLM_LIMIT_TEXT,
    TOOL_JSON_ERROR,
    LoadReport,
    judge,
    load_trajectories,
    parse_trajectory,
)

from .conftest import SEARCH_RESULT, SYSTEM, VISIT_RESULT, assistant, tool_response, write_jsonl

Q = "How tall is the Eiffel Tower in metres, and how many feet is that?"
SEARCH = {"name": "search", "arguments": {"query": ["Eiffel Tower height"]}}
VISIT = {"name": "visit", "arguments": {"url": ["https://en.wikipedia.org/wiki/Eiffel_Tower"], "goal": "height"}}


def _head() -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": Q},
        assistant("I should look up the height first.", SEARCH),
        tool_response(SEARCH_RESULT),
    ]


def _rec(rid: str, messages: list[dict], prediction: str, termination: str, **extra) -> dict:
    return {"id": rid, "question": Q, "answer": "330 metres", "messages": messages, "prediction": prediction,
            "termination": termination, **extra}  # fmt: skip


def ending_records() -> dict[str, dict]:
    """One record per DeepResearch ending (keys name the ending)."""
    recs: dict[str, dict] = {}
    # llm-call limit: the last tool response is overwritten
    m = _head() + [assistant("Open the page.", VISIT), tool_response(VISIT_RESULT)]
    m[-1]["content"] = LLM_LIMIT_TEXT
    recs["llm_limit"] = _rec("llm_limit", m, "No answer found.", "exceed available llm calls")
    # llm-call limit where the last turn had no tool call: the assistant turn itself is overwritten
    m = _head() + [{"role": "assistant", "content": "<think>\nLet me think.\n</think>"}]
    m[-1]["content"] = LLM_LIMIT_TEXT
    recs["llm_limit_assistant"] = _rec("llm_limit_assistant", m, "No answer found.", "exceed available llm calls")
    # context limit: the last tool response is overwritten, then one more turn answers
    m = _head() + [assistant("Open the page.", VISIT), tool_response(VISIT_RESULT)]
    m[-1]["content"] = CONTEXT_LIMIT_TEXT
    m.append({"role": "assistant", "content": "<think>\nIt is 330 m.\n</think>\n<answer>330 metres</answer>"})
    recs["context_answer"] = _rec("context_answer", m, "330 metres", "generate an answer as token limit reached")
    # context limit, and the forced turn has no <answer>
    m = _head()
    m[-1]["content"] = CONTEXT_LIMIT_TEXT
    m.append({"role": "assistant", "content": "<think>\nNot sure.\n</think>\nProbably about 300 metres."})
    recs["context_format_error"] = _rec(
        "context_format_error", m, m[-1]["content"], "format error: generate an answer as token limit reached"
    )
    # json5 call (trailing commas, single quotes), then an answer
    m = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": Q},
        {
            "role": "assistant",
            "content": "<think>\nSearch.\n</think>\n<tool_call>\n{'name': 'search', 'arguments': "
            "{'query': ['Eiffel Tower height',],},}\n</tool_call>",
        },  # fmt: skip
        tool_response(SEARCH_RESULT),
        assistant("The result says 330 m.", answer="330 metres"),
    ]
    recs["json5"] = _rec("json5", m, "330 metres", "answer")
    # error recovery: an invalid call gets the error text as its response, the agent tries again
    bad_call = '<think>\nSearch.\n</think>\n<tool_call>\n{"name": "search", "arguments": {"query": [}\n</tool_call>'
    m = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": Q},
        {"role": "assistant", "content": bad_call},
        tool_response(TOOL_JSON_ERROR),
        assistant("Fix the call.", SEARCH),
        tool_response(SEARCH_RESULT),
        assistant("The result says 300 m.", answer="300 metres"),
    ]
    recs["error_recovery"] = _rec("error_recovery", m, "300 metres", "answer")
    # a failed server call leaves "vllm server error!!!" (no tool response), then the run goes on
    m = _head() + [
        {"role": "assistant", "content": "vllm server error!!! (unknown error)"},
        assistant("Answer now.", answer="330 metres"),
    ]
    recs["server_error"] = _rec("server_error", m, "330 metres", "answer")
    # several <tool_call> blocks in one turn: only the first is executed
    two = assistant("Search and visit.", SEARCH)["content"] + "\n" + assistant("", VISIT)["content"].split("\n", 3)[3]
    m = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": Q},
        {"role": "assistant", "content": two},
        tool_response(SEARCH_RESULT),
        assistant("Done.", answer="330 metres"),
    ]
    recs["two_calls"] = _rec("two_calls", m, "330 metres", "answer")
    # no question field: the question is messages[1]
    rec = _rec("no_question", _head() + [assistant("Answer.", answer="330 metres")], "330 metres", "answer")
    del rec["question"]
    recs["no_question"] = rec
    # a think-only turn (no call, no answer): DeepResearch adds nothing and asks again
    m = _head() + [
        {"role": "assistant", "content": "<think>\nHmm, the snippet already says 330.\n</think>"},
        assistant("So the answer is 330 m.", answer="330 metres"),
    ]
    recs["think_only"] = _rec("think_only", m, "330 metres", "answer")
    return recs


def test_each_ending_parses_with_its_shape():
    recs = ending_records()
    t = {k: parse_trajectory(r) for k, r in recs.items()}

    s = t["llm_limit"].steps
    assert [c.name for st in s for c in st.tool_calls] == ["search", "visit"] and s[1].responses == []
    assert t["llm_limit"].ending_note == LLM_LIMIT_TEXT and not t["llm_limit"].finished
    assert judge(t["llm_limit"]) is None and t["llm_limit"].outcome == "unfinished"
    assert t["llm_limit_assistant"].dropped_turns == 1 and len(t["llm_limit_assistant"].steps) == 1

    c = t["context_answer"]
    assert c.steps[1].responses == [] and c.steps[2].note == CONTEXT_LIMIT_TEXT and c.steps[2].answer == "330 metres"
    assert judge(c) is True and c.outcome == "correct"
    f = t["context_format_error"]
    assert f.ending_note == CONTEXT_LIMIT_TEXT and f.outcome == "unfinished" and len(f.steps) == 1

    assert t["json5"].steps[0].tool_calls[0].arguments == {"query": ["Eiffel Tower height"]}
    e = t["error_recovery"].steps
    assert e[0].tool_calls[0].raw is not None and e[0].responses == [TOOL_JSON_ERROR]
    assert '"query": [}' in e[0].action_text() and e[1].tool_calls[0].arguments == SEARCH["arguments"]
    assert judge(t["error_recovery"]) is False

    assert t["server_error"].dropped_turns == 1 and [st.answer for st in t["server_error"].steps] == [
        None,
        "330 metres",
    ]
    two = t["two_calls"].steps[0]
    assert [c.name for c in two.tool_calls] == ["search"] and two.responses == [SEARCH_RESULT]
    assert two.text is not None and two.text.count("<tool_call>") == 2  # the message is kept verbatim
    assert t["no_question"].question == Q
    assert t["think_only"].steps[1].think.startswith("Hmm, the snippet already says 330.")


def test_round_trip_of_endings():
    for rec in ending_records().values():
        t = parse_trajectory(rec)
        back = parse_trajectory(t.to_record())
        assert back.steps == t.steps and back.ending_note == t.ending_note and back.termination == t.termination


def test_has_on_every_ending(tmp_path, capsys):
    recs = ending_records()
    lines = list(recs.values()) + [{"question": Q, "error": "Timeout", "messages": []}]
    src = write_jsonl(tmp_path / "dr.jsonl", lines)
    report = LoadReport()
    assert len(list(load_trajectories(src, report))) == len(recs)
    assert report.malformed == {"missing_messages": 1}

    out = tmp_path / "has.jsonl"
    assert has_main(["--input", str(src), "--output", str(out), "--candidates", "3", "--seed", "0"]) == 0
    samples = {json.loads(x)["meta"]["trajectory_id"]: json.loads(x) for x in out.read_text().splitlines()}
    # every trajectory but the message-less one yields a sample, except the one whose first call is unparseable:
    # a malformed step is never offered as the expert's choice, and nothing comes before it
    assert set(samples) == set(recs) - {"error_recovery"}
    summary = json.loads((tmp_path / "has.jsonl.summary.json").read_text())
    assert summary["trajectories_ok"] == len(recs) and summary["malformed"] == {"missing_messages": 1}
    assert summary["terminations"] == {
        "answer": 6,
        "exceed available llm calls": 2,
        "format error: generate an answer as token limit reached": 1,
        "generate an answer as token limit reached": 1,
    }
    assert summary["malformed_steps"] == {"unparseable_call": 1, "call_without_response": 0, "empty_step": 0}
    assert summary["skipped_malformed_step"] == 1
    ends = {k: s["text"].rstrip().rsplit("\n", 1)[-1] for k, s in samples.items()}
    assert ends["llm_limit"] == f"{DECISION_UNFINISHED}<|im_end|>"
    assert ends["context_format_error"] == f"{DECISION_UNFINISHED}<|im_end|>"
    assert ends["context_answer"] == f"{DECISION_CORRECT}<|im_end|>"
    # the overwritten response is what the agent saw: the limit text as a user turn, then the result
    assert (
        f"<|im_start|>user\n{LLM_LIMIT_TEXT}<|im_end|>\n<|im_start|>assistant\n{DECISION_UNFINISHED}"
        in (samples["llm_limit"]["text"])
    )
    assert samples["server_error"]["meta"]["dropped_turns"] == 1
    for s in samples.values():
        for st in s["meta"]["steps"]:
            assert {"options", "sources", "original_index", "chosen_index"} <= set(st)
            assert st["sources"][st["original_index"]] == "original"
    # a rerun of the finished job keeps the summary's counts
    assert has_main(["--input", str(src), "--output", str(out), "--candidates", "3", "--seed", "0"]) == 0
    again = json.loads((tmp_path / "has.jsonl.summary.json").read_text())
    assert again["trajectories_ok"] == summary["trajectories_ok"] and again["already_done"] == len(recs) - 1
    assert again["output_totals"] == summary["output_totals"]
    assert again["output_totals"]["trajectories"] == len(recs) - 1
