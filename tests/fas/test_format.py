"""One format: the rendered FAS / HAS / rollout text equals what ``transformers``' ``apply_chat_template`` renders
with the official Qwen3 chat template (``fixtures/qwen3_chat_template.jinja``) for the same messages and tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.synthesis import serialize as S

TEMPLATE = (Path(__file__).parent / "fixtures" / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
SEARCH = {"name": "search", "arguments": {"query": ["Dijon mustard origin", "Dijon «ville» 東京"]}}
VISIT = {"name": "visit", "arguments": {"url": ["https://en.wikipedia.org/wiki/Dijon"], "goal": "founding year"}}


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A transformers tokenizer carrying the Qwen3 chat template (its vocabulary is irrelevant: we render text)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tok.chat_template = TEMPLATE
    return tok


def _hf(tok, messages, tools=S.DEEPRESEARCH_TOOLS):
    return tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=False)


def _call(c):
    return {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}


def test_planning_tool_call_matches_qwen3_template(hf_tokenizer):
    ours = S.serialize_planning("Where was Dijon mustard first made?", "I should search first.", SEARCH, None)
    msgs = [
        {"role": "system", "content": S.AGENT_SYSTEM_PROMPT},
        {"role": "user", "content": "Where was Dijon mustard first made?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I should search first.",
            "tool_calls": [_call(SEARCH)],
        },
    ]
    assert ours == _hf(hf_tokenizer, msgs)
    assert "</think>\n\n<tool_call>" in ours and ours.count("\n<tools>\n") == 1
    for tool in ("search", "visit", "google_scholar", "PythonInterpreter", "parse_file"):
        assert f'"name": "{tool}"' in ours


def test_planning_direct_answer_and_custom_system_match(hf_tokenizer):
    ours = S.serialize_planning(
        "2 + 2?", "Simple arithmetic.", None, "4", system="Be brief.", tools=S.DEEPRESEARCH_TOOLS[:2]
    )
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "<answer>4</answer>", "reasoning_content": "Simple arithmetic."},
    ]
    assert ours == _hf(hf_tokenizer, msgs, S.DEEPRESEARCH_TOOLS[:2])
    assert S.serialize_record(
        {"type": "planning", "question": "2 + 2?", "think": "Simple arithmetic.", "answer": "4", "system": "Be brief.",
         "tools": S.DEEPRESEARCH_TOOLS[:2]}
    ) == ours  # fmt: skip


def test_reasoning_sample_matches_qwen3_template(hf_tokenizer):
    knowledge = ["Dijon mustard was first made in Dijon in 1856.", "Jean Naigeon replaced vinegar with verjuice."]
    a1 = "From memory: probably Dijon, France, in the 19th century.\nDraft answer: Dijon"
    a2 = "Statement 1 confirms Dijon and adds the year 1856, which my draft lacked.\n<answer>Dijon (1856)</answer>"
    ours = S.serialize_reasoning("Where and when was Dijon mustard first made?", a1, knowledge, a2)
    msgs = [
        {"role": "system", "content": S.AGENT_SYSTEM_PROMPT},
        {"role": "user", "content": "Where and when was Dijon mustard first made?"},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "Relevant knowledge:\n1. " + knowledge[0] + "\n2. " + knowledge[1]},
        {
            "role": "assistant",
            "content": "<answer>Dijon (1856)</answer>",
            "reasoning_content": "Statement 1 confirms Dijon and adds the year 1856, which my draft lacked.",
        },
    ]
    assert ours == _hf(hf_tokenizer, msgs)


def test_multi_step_rollout_matches_qwen3_template(hf_tokenizer):
    msgs = [
        {"role": "system", "content": S.AGENT_SYSTEM_PROMPT},
        {"role": "user", "content": "When was Dijon founded?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Search, then read.",
            "tool_calls": [_call(SEARCH), _call(VISIT)],
        },
        {"role": "tool", "content": "1. Dijon - Wikipedia"},
        {"role": "tool", "content": "Dijon was a Roman settlement."},
        {"role": "assistant", "content": "<answer>Roman times</answer>", "reasoning_content": "The page says so."},
    ]
    ours = S.render_chat([{**msgs[0], "content": S.agent_system()}, *msgs[1:]])
    assert ours == _hf(hf_tokenizer, msgs)
    # the HAS building block renders one action the same way as the template's assistant turn
    assert S.render_turn("assistant", S.render_action("The page says so.", answer="Roman times")) in ours


def test_recorded_system_with_tools_is_kept_and_empty_system_omits_the_turn():
    recorded = "You are DeepResearch.\n<tools>\n{}\n</tools>"
    assert S.agent_system(recorded) == recorded
    text = S.serialize_planning("Q?", "t", SEARCH, None, system="")
    assert text.startswith("<|im_start|>user\nQ?")
    decls = [json.loads(line) for line in S.agent_system().split("<tools>\n")[1].split("\n</tools>")[0].splitlines()]
    assert decls == S.DEEPRESEARCH_TOOLS


def test_python_call_keeps_deepresearch_code_block():
    text = S.render_action("Compute it.", {"name": "PythonInterpreter", "arguments": {}, "code": "print(2026 - 1856)"})
    assert text == (
        '<think>\nCompute it.\n</think>\n\n<tool_call>\n{"name": "PythonInterpreter", "arguments": {}}\n'
        "<code>\nprint(2026 - 1856)\n</code>\n</tool_call>"
    )
