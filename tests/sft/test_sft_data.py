"""SFT data with loss masks (``data sft``): exactly which tokens carry loss, for every turn kind, in both input
formats; the indexed datasets megatron-core reads; the dataset's Megatron-LM label/loss-mask shift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_tools.indexed.tokenizers import load_tokenizer
from data_tools.synthesis.serialize import AGENT_SYSTEM_PROMPT, agent_system, render_chat
from data_tools.synthesis.sft import (
    IGNORE_INDEX,
    build_sft_dataset,
    main,
    mask_path,
    react_messages,
    targets,
    tokenize_conversation,
)

NOTE = "Please double-check the unit."
SEARCH = "The Eiffel Tower is 330 metres tall."
PY_OUT = "stdout:\n1082.6772"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("qwen3")


def react_record() -> dict:
    """A DeepResearch trajectory with every turn kind: system, question, tool call + response, a user note, a
    PythonInterpreter call with code + response, and the final answer."""
    return {
        "id": "r1",
        "question": "How tall is the Eiffel Tower in feet?",
        "answer": "1083 ft",
        "messages": [
            {"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": "How tall is the Eiffel Tower in feet?"},
            {
                "role": "assistant",
                "content": '<think>\nSearch first.\n</think>\n<tool_call>\n{"name": "search", "arguments": '
                '{"query": ["Eiffel Tower height"]}}\n</tool_call>',
            },
            {"role": "user", "content": f"<tool_response>\n{SEARCH}\n</tool_response>"},
            {"role": "user", "content": NOTE},
            {
                "role": "assistant",
                "content": '<think>\nConvert.\n</think>\n<tool_call>\n{"name": "PythonInterpreter", "arguments": {}}'
                "\n<code>\nprint(330 * 3.28084)\n</code>\n</tool_call>",
            },
            {"role": "user", "content": f"<tool_response>\n{PY_OUT}\n</tool_response>"},
            {"role": "assistant", "content": "<think>\nAbout 1083 ft.\n</think>\n<answer>1083 ft</answer>"},
        ],
        "prediction": "1083 ft",
        "termination": "answer",
    }


def runs(tok, ids: np.ndarray, mask: np.ndarray, value: int) -> list[str]:
    """Decoded maximal runs of tokens whose mask equals ``value``."""
    out, cur = [], []
    for i, m in zip(ids.tolist(), mask.tolist()):
        if m == value:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    return out


def test_react_loss_tokens_exactly(tok):
    messages = react_messages(react_record())
    ids, mask = tokenize_conversation(messages, tok)
    assert ids.tolist()[:-1] == tok.encode(render_chat(messages))  # per-turn tokenization = whole text
    assert ids[-1] == tok.eod_id == 151643
    system = agent_system("You are a careful agent.")
    assert "# Tools" in system and system.startswith("You are a careful agent.")
    call1 = '<tool_call>\n{"name": "search", "arguments": {"query": ["Eiffel Tower height"]}}\n</tool_call>'
    call2 = '<tool_call>\n{"name": "PythonInterpreter", "arguments": {}}\n<code>\nprint(330 * 3.28084)\n</code>\n</tool_call>'
    assert runs(tok, ids, mask, 1) == [
        f"<think>\nSearch first.\n</think>\n\n{call1}<|im_end|>",
        f"<think>\nConvert.\n</think>\n\n{call2}<|im_end|>",
        "<think>\nAbout 1083 ft.\n</think>\n\n<answer>1083 ft</answer><|im_end|>",
        "<|endoftext|>",
    ]
    assert runs(tok, ids, mask, 0) == [
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHow tall is the Eiffel Tower in feet?<|im_end|>\n"
        "<|im_start|>assistant\n",
        f"\n<|im_start|>user\n<tool_response>\n{SEARCH}\n</tool_response><|im_end|>\n"
        f"<|im_start|>user\n{NOTE}<|im_end|>\n<|im_start|>assistant\n",
        f"\n<|im_start|>user\n<tool_response>\n{PY_OUT}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
        "\n",
    ]
    # special tokens of the loss region are single ids: <think>, </think>, <tool_call>, </tool_call>, <|im_end|>
    lossy = set(ids[mask == 1].tolist())
    assert {151667, 151668, 151657, 151658, 151645, 151643} <= lossy
    assert not lossy & {151644, 151665, 151666}  # <|im_start|>, <tool_response>, </tool_response>: never targets


def test_chat_openai_tool_calls_and_tool_role(tok):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is 2+3 and 4+5?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Use the calculator twice.",
            "tool_calls": [
                {"function": {"name": "calc", "arguments": '{"expr": "2+3"}'}},
                {"function": {"name": "calc", "arguments": {"expr": "4+5"}}},
            ],
        },
        {"role": "tool", "content": "5"},
        {"role": "tool", "content": "9"},
        {"role": "assistant", "content": "5 and 9."},
    ]
    ids, mask = tokenize_conversation(messages, tok)
    assert ids.tolist()[:-1] == tok.encode(render_chat(messages))
    assert runs(tok, ids, mask, 1) == [
        "<think>\nUse the calculator twice.\n</think>\n\n"
        '<tool_call>\n{"name": "calc", "arguments": {"expr": "2+3"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calc", "arguments": {"expr": "4+5"}}\n</tool_call><|im_end|>',
        "5 and 9.<|im_end|>",
        "<|endoftext|>",
    ]
    # both tool results form one user turn without loss
    assert (
        "\n<|im_start|>user\n<tool_response>\n5\n</tool_response>\n<tool_response>\n9\n</tool_response><|im_end|>\n"
        in (runs(tok, ids, mask, 0)[1])
    )
    # Megatron-LM's target array: the id on targets, IGNORE_INDEX elsewhere
    t = targets(ids, mask)
    assert (t[mask == 0] == IGNORE_INDEX).all() and (t[mask == 1] == ids[mask == 1]).all()


def _write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_indexed_pair_read_by_megatron_core(tmp_path, tok):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad_traj = {"question": "q", "messages": []}
    no_assistant = {"messages": [{"role": "user", "content": "only a question"}]}
    src = _write(tmp_path / "in.jsonl", [react_record(), chat, bad_traj, "{not json", no_assistant])
    stats = build_sft_dataset([src], tmp_path / "sft", tok)
    assert stats.conversations == 2 and stats.formats == {"react": 1, "chat": 1}
    assert stats.skipped == {"malformed_trajectory": 1, "invalid_line": 1, "bad_record": 1}
    tokens = IndexedDataset(str(tmp_path / "sft"))
    masks = IndexedDataset(mask_path(tmp_path / "sft"))
    assert tokens.index.dtype == np.int32 and masks.index.dtype == np.uint8
    assert list(tokens.sequence_lengths) == list(masks.sequence_lengths) and len(tokens) == 2
    for i, messages in enumerate([react_messages(react_record()), chat["messages"]]):
        ids, mask = tokenize_conversation(messages, tok)
        assert tokens[i].tolist() == ids.tolist() and masks[i].tolist() == mask.tolist()
    written = json.loads((tmp_path / "sft.sft.json").read_text())
    assert written["loss_tokens"] == int(sum(m.sum() for m in (masks[0], masks[1])))


def test_only_correct_and_cli_errors(tmp_path, capsys):
    wrong = react_record() | {"answer": "2 metres", "id": "r2"}
    src = _write(tmp_path / "t.jsonl", [react_record(), wrong])
    assert main(["--input", str(src), "--output-prefix", str(tmp_path / "ok"), "--only-correct"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "wrote 1 conversations" in out["summary"] and "not_correct=1" in out["summary"]
    assert main(["--input", str(tmp_path / "missing.jsonl"), "--output-prefix", str(tmp_path / "x")]) == 2
    bad = _write(tmp_path / "bad.jsonl", [{"question": "q", "messages": []}])
    assert main(["--input", str(bad), "--output-prefix", str(tmp_path / "none")]) == 2
    assert "no usable conversation" in capsys.readouterr().err
    assert not (tmp_path / "none.bin").exists() and not Path(mask_path(tmp_path / "none") + ".idx").exists()


def test_default_agent_system_when_trajectory_has_none(tok):
    rec = react_record()
    rec["messages"] = rec["messages"][1:]
    messages = react_messages(rec)
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(AGENT_SYSTEM_PROMPT)


def test_tokenizer_adding_its_own_tokens_is_refused(tmp_path, tok):
    class WithBos(type(tok)):
        def encode(self, text: str) -> list[int]:
            return [151644] + super().encode(text)  # a BOS per encode call: per-turn tokenization would repeat it

    bos = WithBos()
    src = _write(
        tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    )
    with pytest.raises(ValueError, match="does not tokenize turn by turn"):
        build_sft_dataset([src], tmp_path / "bos", bos)
    assert not (tmp_path / "bos.bin").exists()
