"""Fixtures for the tokenization tests: a small real corpus, agentic text, and a HF export of the qwen3 tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

AGENTIC_TEXT = (
    "<|im_start|>user\nWho won the 1998 World Cup?<|im_end|>\n<|im_start|>assistant\n<think>\nI should search."
    '\n</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["1998 World Cup winner"]}}\n'
    "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nFrance beat Brazil 3-0.\n</tool_response>"
    "<|im_end|>\n<|im_start|>assistant\n<answer>France</answer><|im_end|><|endoftext|>"
)

TRICKY_TEXTS = [
    AGENTIC_TEXT,
    "Caf\u0065\u0301 cr\u00e8me, na\u0308ive \u212b and \uff21\uff22 (NFD / compatibility forms)",
    "numbers 1234567890 3.14159 -42 1e10 and    many   spaces\n\n\n\ttabs\r\nCRLF",
    "日本語のテキストと中文文本, emoji 👩‍👩‍👧‍👦 🇫🇷, Ελληνικά, русский, العربية",
    "def f(x):\n    return x ** 2  # code\n\n\nclass A:\n\tpass\n",
    "I'm sure they'll say it's 'quoted' -- THEY'RE, WE'VE, I'D",
    "<tool_call><think></think><|fim_prefix|>a<|fim_suffix|>b<|fim_middle|><|im_start|><|im_start|>",
    "almost special: <tool_call <|im_start| <think >think> <|endoftext| |>",
    " leading space and trailing space ",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
]


@pytest.fixture(scope="session")
def wiki_docs() -> list[dict]:
    """300 real Wikipedia summaries from the installed corpus package, as ``{"id", "title", "text"}`` records."""
    from data_tools.synthesis.corpus import wiki_summaries

    return [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in wiki_summaries("en", limit=300)]


@pytest.fixture(scope="session")
def qwen3_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in qwen3 tokenizer exported as a HF tokenizer directory (tokenizer.json + tokenizer_config.json)."""
    from data_tools.indexed.tokenizers import export_qwen3_hf

    return export_qwen3_hf(tmp_path_factory.mktemp("qwen3_hf"))


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw ``bytes`` lines written verbatim) as JSONL."""
    with open(path, "wb") as f:
        for r in records:
            f.write(r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() + b"\n")
    return path


@pytest.fixture
def jsonl_writer():
    """The :func:`write_jsonl` helper."""
    return write_jsonl


@pytest.fixture(scope="session")
def agentic_text() -> str:
    """A Qwen3 chat transcript with tool calls, thinking and a tool response."""
    return AGENTIC_TEXT


@pytest.fixture(scope="session")
def tricky_texts() -> list[str]:
    """Texts exercising normalisation, digits, whitespace, scripts, emoji, code and special tokens."""
    return list(TRICKY_TEXTS)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory, wiki_docs) -> Path:
    """A tiny sentencepiece model (400 pieces, <tool_call> as a user-defined symbol) trained on the corpus."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([d["text"] for d in wiki_docs]),
        model_writer=buf,
        vocab_size=400,
        user_defined_symbols=["<tool_call>", "</tool_call>"],
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("sp") / "tiny.model"
    path.write_bytes(buf.getvalue())
    return path
