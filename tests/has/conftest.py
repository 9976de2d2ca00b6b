"""Fixtures for the HAS / trajectory / environment tests: DeepResearch-format trajectories written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SYSTEM = (
    "You are a deep research assistant. Your core function is to conduct thorough, multi-source investigations "
    "into any topic. When you have gathered sufficient information and are ready to provide the definitive "
    "response, you must enclose the entire final answer within <answer></answer> tags.\n\n# Tools\n\n..."
)

SEARCH_RESULT = (
    "A Google search for 'Eiffel Tower height' found 2 results:\n\n## Web Results\n"
    "1. [Eiffel Tower - Wikipedia](https://en.wikipedia.org/wiki/Eiffel_Tower)\n"
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is 330 metres tall.\n\n"
    "2. [Gustave Eiffel](https://en.wikipedia.org/wiki/Gustave_Eiffel)\n"
    "Alexandre Gustave Eiffel was a French civil engineer whose company designed and built the Eiffel Tower."
)
VISIT_RESULT = (
    "The useful information in https://en.wikipedia.org/wiki/Eiffel_Tower for user goal height as follows: \n\n"
    "Evidence in page: \nThe tower is 330 metres (1,083 ft) tall, about the same height as an 81-storey building.\n\n"
    "Summary: \nThe Eiffel Tower is 330 m tall.\n\n"
)


def assistant(think: str, call: dict | None = None, answer: str | None = None, code: str | None = None) -> dict:
    """An assistant turn in the exact DeepResearch text shape."""
    text = f"<think>\n{think}\n</think>\n"
    if call is not None:
        body = json.dumps(call, ensure_ascii=False)
        if code is not None:
            body += f"\n<code>\n{code}\n</code>"
        text += f"<tool_call>\n{body}\n</tool_call>"
    else:
        text += f"<answer>{answer}</answer>"
    return {"role": "assistant", "content": text}


def tool_response(text: str) -> dict:
    return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}


def deepresearch_record(rid: str = "t1", answer: str = "330 metres", prediction: str = "330 metres") -> dict:
    """A realistic four-step DeepResearch trajectory: search, visit, python, answer."""
    q = "How tall is the Eiffel Tower in metres, and how many feet is that?"
    return {
        "id": rid,
        "question": q,
        "answer": answer,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": q},
            assistant(
                "I should look up the height first.",
                {"name": "search", "arguments": {"query": ["Eiffel Tower height"]}},
            ),
            tool_response(SEARCH_RESULT),
            assistant(
                "The Wikipedia page should state the height.",
                {
                    "name": "visit",
                    "arguments": {"url": ["https://en.wikipedia.org/wiki/Eiffel_Tower"], "goal": "height"},
                },
            ),
            tool_response(VISIT_RESULT),
            assistant(
                "Convert 330 m to feet.", {"name": "PythonInterpreter", "arguments": {}}, code="print(330 * 3.28084)"
            ),
            tool_response("stdout:\n1082.6772"),
            assistant("The tower is 330 m, about 1,083 ft.", answer=prediction),
        ],
        "prediction": prediction,
        "termination": "answer",
    }


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture(scope="session")
def small_env():
    from data_tools.synthesis.env.search import SearchEnvironment

    return SearchEnvironment.builtin(limit=600)


@pytest.fixture(scope="session")
def qwen3_tok():
    from data_tools.indexed.tokenizers import load_tokenizer

    return load_tokenizer("qwen3")
