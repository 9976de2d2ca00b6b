"""The serializer's text tokenizes with the Qwen3 tokenizer into the right special-token ids.

Ids are the literal Qwen3 vocabulary ids (DESIGN.md, Qwen3 ``tokenizer.json``), not read from the serializer.
"""

from __future__ import annotations

import json

import pytest

from data_tools.indexed.tokenizers import load_tokenizer
from data_tools.synthesis import serialize as S

# Qwen3 vocabulary ids, written out independently of data_tools.synthesis.serialize.
IM_START, IM_END = 151644, 151645
TOOL_CALL, TOOL_CALL_END = 151657, 151658
TOOL_RESP, TOOL_RESP_END = 151665, 151666
THINK, THINK_END = 151667, 151668
SPECIAL = {IM_START, IM_END, TOOL_CALL, TOOL_CALL_END, TOOL_RESP, TOOL_RESP_END, THINK, THINK_END, 151643}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("qwen3")


def specials(tok, text: str) -> list[int]:
    return [i for i in tok.encode(text) if i >= 151643]


def segments(tok, ids: list[int]) -> list[list[int]]:
    """Split ids at special tokens: the runs of ordinary ids between them."""
    out, cur = [], []
    for i in ids:
        if i in SPECIAL:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    out.append(cur)
    return out


CALL = {"name": "search", "arguments": {"query": ["Élysée Palace architect", "巴黎 宫殿"]}}


def test_planning_tool_call_ids(tok):
    text = S.serialize_planning("Who designed the Élysée Palace?", "I should search first.", CALL, None, system="")
    ids = tok.encode(text)
    assert [i for i in ids if i in SPECIAL] == [
        IM_START,
        IM_END,
        IM_START,
        THINK,
        THINK_END,
        TOOL_CALL,
        TOOL_CALL_END,
        IM_END,
    ]
    # roles are ordinary tokens right after <|im_start|>, followed by a newline
    starts = [k for k, i in enumerate(ids) if i == IM_START]
    assert tok.decode(ids[starts[0] + 1 : starts[0] + 3]) == "user\n"
    assert tok.decode(ids[starts[1] + 1 : starts[1] + 3]) == "assistant\n"
    # the tool call body between the two special ids is the JSON object, intact
    a, b = ids.index(TOOL_CALL), ids.index(TOOL_CALL_END)
    assert json.loads(tok.decode(ids[a + 1 : b])) == CALL
    assert tok.decode(ids) == text


def test_no_merges_across_markup(tok):
    """Text between special tokens encodes exactly as it would on its own (markup never fuses with text)."""
    text = S.serialize_reasoning(
        "How tall is it?", "Maybe 300 m.", ["It is 330 m tall.", {"statement": "Built 1889."}], "330 m"
    )
    ids = tok.encode(text)
    pieces = split_markup(text)
    assert [tok.encode(p) for p in pieces] == segments(tok, ids)


MARKUP = ["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
          "<think>", "</think>"]  # fmt: skip


def split_markup(text: str) -> list[str]:
    import re

    return re.split("|".join(re.escape(n) for n in MARKUP), text)


def test_planning_answer_and_reasoning(tok):
    text = S.serialize_planning("2+2?", "Trivial arithmetic.", None, "4", system="")
    assert specials(tok, text) == [IM_START, IM_END, IM_START, THINK, THINK_END, IM_END]
    assert text.endswith("</think>\n\n<answer>4</answer><|im_end|>\n")
    # A1 is the visible first attempt; A2's reasoning is the last turn's thinking (Qwen3 template order)
    r = S.serialize_reasoning("Q?", "draft", ["k1", "k2"], "why\n<answer>final</answer>", system="")
    assert specials(tok, r) == [
        IM_START,
        IM_END,
        IM_START,
        IM_END,
        IM_START,
        IM_END,
        IM_START,
        THINK,
        THINK_END,
        IM_END,
    ]
    assert "1. k1\n2. k2" in r and r.endswith("<answer>final</answer><|im_end|>\n")


def test_render_chat_openai_tools(tok):
    msgs = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Find it."},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Two lookups.",
            "tool_calls": [
                {"type": "function", "function": {"name": "search", "arguments": json.dumps({"query": ["a"]})}},
                {"type": "function", "function": {"name": "visit", "arguments": {"url": ["u"], "goal": "g"}}},
            ],
        },
        {"role": "tool", "content": "result a"},
        {"role": "tool", "content": "result u"},
        {"role": "assistant", "content": "<answer>done</answer>"},
    ]
    text = S.render_chat(msgs)
    assert specials(tok, text) == [
        IM_START, IM_END, IM_START, IM_END,
        IM_START, THINK, THINK_END, TOOL_CALL, TOOL_CALL_END, TOOL_CALL, TOOL_CALL_END, IM_END,
        IM_START, TOOL_RESP, TOOL_RESP_END, TOOL_RESP, TOOL_RESP_END, IM_END,
        IM_START, IM_END,
    ]  # fmt: skip
    assert "<|im_start|>user\n<tool_response>\nresult a\n</tool_response>\n<tool_response>\nresult u" in text


def test_has_text_ids_and_decision(tok):
    steps = [
        {"options": [S.render_action("a", CALL), S.render_action("b", None, "x")], "chosen": 0, "response": "R1"},
        {"options": [S.render_action("c", None, "y"), S.render_action("d", None, "z")], "chosen": 1, "response": None},
    ]
    text = S.serialize_has("Q?", steps, judgment=False, system="")
    ids = tok.encode(text)
    assert ids.count(THINK) == 4 and ids.count(TOOL_RESP) == 1 and ids.count(TOOL_CALL) == 1
    # the trajectory's result is its own statement after the last step, never part of a step's choice
    assert text.endswith(f"I will choose option 2<|im_end|>\n<|im_start|>assistant\n{S.DECISION_INCORRECT}<|im_end|>\n")
    assert "I will choose option 1<|im_end|>\n<|im_start|>user\n<tool_response>\nR1\n</tool_response>" in text
    assert "There are 2 candidate actions for step 1:" in text
    # a non-final part carries no result; a final step with a response gets the result in its own turn
    assert "Result of the entire trajectory" not in S.serialize_has("Q?", steps[:1], judgment=None)
    assert S.serialize_has("Q?", steps[:1], judgment=True).endswith(
        f"<|im_start|>assistant\n{S.DECISION_CORRECT}<|im_end|>\n"
    )


def test_has_expert_step_after_choice_and_grammar():
    expert = S.render_action("Because the snippet names him, I open the page.", CALL)
    one = S.render_options([S.render_tool_call(CALL["name"], CALL["arguments"])], 0, 3, expert)
    assert one.startswith("There is 1 candidate action for step 3:")
    assert one.endswith(f"I will choose option 1\n\n{expert}")
    assert S.render_options(["a", "b"], 1).startswith("There are 2 candidate actions:")


def test_python_tool_call_and_general():
    call = S.render_tool_call("PythonInterpreter", {}, code="print(1 + 1)")
    assert (
        call
        == '<tool_call>\n{"name": "PythonInterpreter", "arguments": {}}\n<code>\nprint(1 + 1)\n</code>\n</tool_call>'
    )
    assert S.serialize_general("plain text\n") == "plain text\n"


def test_serialize_record_dispatch_and_errors():
    p = {"type": "planning", "question": "Q", "analysis": "think", "tool_call": CALL}
    assert S.serialize_record(p) == S.serialize_planning("Q", "think", CALL, None)
    r = {"type": "reasoning", "question": "Q", "a1": "d", "knowledge": ["k"], "a2": "A"}
    assert S.serialize_record(r) == S.serialize_reasoning("Q", "d", ["k"], "A")
    assert S.serialize_record({"type": "general", "text": "t"}) == "t"
    assert S.serialize_record({"type": "has", "text": "ready"}) == "ready"
    with pytest.raises(ValueError, match="unknown type"):
        S.serialize_record({"type": "nope"})
    with pytest.raises(ValueError, match="a1"):
        S.serialize_record({"type": "reasoning", "question": "Q", "a2": "x"})
    with pytest.raises(ValueError, match="neither tool_call nor answer"):
        S.serialize_record({"type": "planning", "question": "Q", "think": "t"})
    with pytest.raises(ValueError, match="exactly one"):
        S.render_action("t", CALL, "both")


def test_decode_round_trip_all_kinds(tok):
    texts = [
        S.serialize_planning("Q? «ünïcode» 東京", "think", CALL, None, system="sys"),
        S.serialize_reasoning("Q?", "a1", ["k"], "reasoning then <answer>x</answer>"),
        S.serialize_has("Q?", [{"options": ["a", "b"], "chosen": 1, "response": ["r1", "r2"]}], True),
        S.render_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<answer>yo</answer>"}]),
        S.serialize_general("def f(x):\n    return x  # code\n"),
    ]
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        # every markup string in the text became its single special id (none left as ordinary tokens)
        assert sum(text.count(m) for m in MARKUP) == sum(i in SPECIAL for i in ids)
