"""Trajectory ingestion: DeepResearch and OpenAI tool-call formats, malformed input by reason, judgment."""

from __future__ import annotations

import copy
import json

import pytest

from data_tools.synthesis.trajectory import (
    LoadReport,
    MalformedTrajectory,
    judge,
    load_trajectories,
    match_answer,
    parse_trajectory,
)

from .conftest import SEARCH_RESULT, SYSTEM, VISIT_RESULT, deepresearch_record, tool_response, write_jsonl


def _qwen3(messages):
    """Messages as Qwen3's chat template normalizes assistant turns: ``</think>`` followed by a blank line."""
    return [
        {**m, "content": m["content"].replace("</think>\n<", "</think>\n\n<")} if m["role"] == "assistant" else m
        for m in messages
    ]


def test_parse_deepresearch_steps():
    t = parse_trajectory(deepresearch_record())
    assert t.id == "t1" and t.system == SYSTEM and t.question.startswith("How tall")
    assert [len(s.tool_calls) for s in t.steps] == [1, 1, 1, 0]
    s1, s2, s3, s4 = t.steps
    assert s1.think == "I should look up the height first."
    assert (s1.tool_calls[0].name, s1.tool_calls[0].arguments) == ("search", {"query": ["Eiffel Tower height"]})
    assert s1.responses == [SEARCH_RESULT] and s2.responses == [VISIT_RESULT]
    assert s3.tool_calls[0].name == "PythonInterpreter" and s3.tool_calls[0].code == "print(330 * 3.28084)"
    assert s3.responses == ["stdout:\n1082.6772"]
    assert s4.answer == "330 metres" and s4.responses == [] and t.prediction == "330 metres"


def test_round_trip_record():
    rec = deepresearch_record()
    t = parse_trajectory(rec)
    back = t.to_record()
    # the re-emitted messages are the original DeepResearch messages, byte for byte up to Qwen3's "</think>\n\n"
    assert back["messages"] == _qwen3(rec["messages"])
    assert parse_trajectory(back).steps == t.steps


def test_openai_tool_calls_format():
    rec = {
        "question": "Where was Gustave Eiffel born?",
        "answer": "Dijon",
        "messages": [
            {"role": "user", "content": "Where was Gustave Eiffel born?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "Search both the person and the birthplace.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"query": ["Gustave Eiffel"]}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"query": ["Eiffel birthplace"]}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"},
            {"role": "assistant", "content": "<think>Both say Dijon.</think><answer>Dijon, France</answer>"},
        ],
    }
    t = parse_trajectory(rec)
    assert t.id.startswith("traj-") and t.id == parse_trajectory(copy.deepcopy(rec)).id  # stable hash id
    assert [c.arguments["query"][0] for c in t.steps[0].tool_calls] == ["Gustave Eiffel", "Eiffel birthplace"]
    assert t.steps[0].responses == ["r1", "r2"] and t.steps[0].think.startswith("Search both")
    assert t.prediction == "Dijon, France"
    assert judge(t, "contains") is True and judge(t, "exact") is False


def _broken(kind: str) -> dict:
    rec = deepresearch_record()
    msgs = rec["messages"]
    if kind == "invalid_tool_call_json":
        msgs[2]["content"] = (
            '<think>\nx\n</think>\n<tool_call>\n{"name": "search", "arguments": {"query": [}\n</tool_call>'
        )
    elif kind == "missing_response":
        del msgs[3]
    elif kind == "unexpected_response":
        msgs.insert(2, tool_response("stray"))
    elif kind == "no_action":
        msgs[4]["content"] = "<think>\nHmm, let me think more.\n</think>"
        del msgs[5]  # DeepResearch appends no tool response after a turn without a call
    elif kind == "empty_steps":
        rec["messages"] = msgs[:2]
    elif kind == "missing_messages":
        del rec["messages"]
    elif kind == "bad_message":
        msgs[3] = {"role": "user", "content": ["not", "text"]}
    elif kind == "missing_question":
        rec["question"] = ""
        rec["messages"] = [m for m in msgs if m["role"] != "user" or "<tool_response>" in m["content"]]
    return rec


REASONS = [
    "unexpected_response",
    "empty_steps",
    "missing_messages",
    "bad_message",
]
KEPT = ["invalid_tool_call_json", "missing_response", "no_action"]  # DeepResearch endings: kept, not malformed


@pytest.mark.parametrize("kind", KEPT)
def test_deepresearch_irregularities_are_kept(kind):
    t = parse_trajectory(_broken(kind))
    assert t.steps and t.steps[-1].answer == "330 metres"


@pytest.mark.parametrize("reason", REASONS)
def test_malformed_reason(reason):
    with pytest.raises(MalformedTrajectory) as info:
        parse_trajectory(_broken(reason))
    assert info.value.reason == reason


def test_load_counts_by_reason(tmp_path):
    lines = [deepresearch_record("ok1")] + [_broken(r) for r in REASONS] + ["{not json", deepresearch_record("ok2")]
    path = write_jsonl(tmp_path / "t.jsonl", lines)
    report = LoadReport()
    got = [t.id for t in load_trajectories(path, report)]
    assert got == ["ok1", "ok2"]
    assert report.read == len(lines) and report.ok == 2
    assert report.malformed == {r: 1 for r in REASONS} | {"invalid_line": 1}
    assert report.examples["bad_message"].startswith("t.jsonl:")
    assert "malformed 5" in report.summary()


def test_judgment_sources():
    assert match_answer("It is 330 metres tall.", "330 metres") is True
    assert match_answer("The Eiffel Tower", "eiffel tower!") is True
    assert match_answer("3300 metres", "330 metres") is False  # whole-word spans only
    assert match_answer("", "x") is False and match_answer("x", None) is None
    wrong = parse_trajectory(deepresearch_record(prediction="300 metres"))
    assert judge(wrong) is False and wrong.judge_reason.startswith("numeric")
    rec = deepresearch_record(prediction="300 metres")
    rec["judgment"] = True  # an explicit verdict (e.g. from the user's own judge) wins in auto mode
    t = parse_trajectory(rec)
    assert judge(t, "auto") is True and judge(t, "contains") is False
    no_gold = parse_trajectory(deepresearch_record(answer=None))
    assert judge(no_gold) is None


def test_llm_judge_against_fake_server():
    from data_tools.synthesis.llm.client import LLMClient, LLMConfig
    from data_tools.synthesis.llm.fake_server import FakeLLMServer
    from data_tools.synthesis.trajectory import judge_with_llm

    def responder(body):
        prompt = body["messages"][-1]["content"]
        ok = "Predicted answer: 330 metres" in prompt
        return {"verdict": "correct" if ok else "incorrect", "reason": "compared"}

    trajs = [parse_trajectory(deepresearch_record(f"t{i}", prediction=p)) for i, p in enumerate(["330 metres", "1 km"])]
    with FakeLLMServer(responder) as url:
        counts = judge_with_llm(trajs, LLMClient(LLMConfig(urls=[url])))
    assert [t.judgment for t in trajs] == [True, False]
    assert counts == {"correct": 1, "incorrect": 1} and trajs[0].judge_reason.startswith("llm (has/judge@v1)")
    assert json.loads(json.dumps(trajs[1].to_record()))["judgment"] is False


def test_user_note_before_a_step_is_kept():
    """DeepResearch's forced-answer instruction (a plain user turn) stays attached to the step that follows."""
    from data_tools.synthesis.has.action import Action
    from data_tools.synthesis.has.expand import HasConfig, make_decisions, render_samples

    rec = deepresearch_record()
    note = "You have now reached the maximum context length you can handle. Provide your answer."
    rec["messages"].insert(8, {"role": "user", "content": note})
    t = parse_trajectory(rec)
    assert [s.note for s in t.steps] == [None, None, None, note]
    assert t.to_record()["messages"] == _qwen3(rec["messages"])
    judge(t)
    alts = [[Action.make(f"alt {k}", answer=f"guess {k}")] for k in range(len(t.steps))]
    (sample,) = render_samples(t, make_decisions(t, alts, 0), len, HasConfig(candidates=1), "test")
    assert (
        f"</tool_response><|im_end|>\n<|im_start|>user\n{note}<|im_end|>\n<|im_start|>assistant\nThere are 2"
        in sample["text"]
    )
