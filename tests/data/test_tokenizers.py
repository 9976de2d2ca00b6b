"""The tokenizer loader: Qwen3 special-token ids, identity with the HF export, HF directories and sentencepiece."""

from __future__ import annotations

import json

import pytest

from data_tools.indexed.tokenizers import QWEN3_SPECIAL_TOKENS, load_tokenizer

# Qwen3's documented ids (tokenizer_config.json of the Qwen3 checkpoints).
QWEN3_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|file_sep|>": 151664,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}


@pytest.fixture(scope="module")
def qwen3():
    return load_tokenizer("qwen3")


def test_qwen3_special_token_ids(qwen3):
    for token, expected in QWEN3_IDS.items():
        assert qwen3.special_tokens[token] == expected
        assert qwen3.encode(token) == [expected], token
    assert len(qwen3.special_tokens) == len(QWEN3_SPECIAL_TOKENS) == 26
    assert qwen3.eod_id == 151643
    assert qwen3.n_vocab == 151669
    assert qwen3.vocab_size == 151936


def test_agentic_text_keeps_special_tokens_whole(qwen3, agentic_text):
    ids = qwen3.encode(agentic_text)
    for token in ("<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "<|im_start|>"):
        assert ids.count(QWEN3_IDS[token]) == agentic_text.count(token), token
    assert ids[-1] == qwen3.eod_id
    assert qwen3.decode(ids) == agentic_text
    # "<|im_start|>assistant\n" is the well-known Qwen chat prefix 151644, 77091, 198.
    assert qwen3.encode("<|im_start|>assistant\n") == [151644, 77091, 198]


def test_nfc_normalisation_like_qwen(qwen3):
    assert qwen3.encode("cafe\u0301") == qwen3.encode("caf\u00e9")
    # normalisation happens per segment between special tokens, as in HF added-token splitting
    assert qwen3.encode("e\u0301<think>e\u0301") == qwen3.encode("\u00e9") + [151667] + qwen3.encode("\u00e9")


def test_qwen3_matches_exported_hf_tokenizer(qwen3, qwen3_hf_dir, wiki_docs, tricky_texts):
    from tokenizers import Tokenizer as RustTokenizer

    hf = RustTokenizer.from_file(str(qwen3_hf_dir / "tokenizer.json"))
    texts = tricky_texts + [d["text"] for d in wiki_docs[:150]]
    ours = qwen3.encode_batch(texts)
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
    for text, a, b in zip(texts, ours, theirs):
        assert a == b, text[:80]
    flat, lengths = qwen3.encode_batch_flat(texts)
    assert lengths.tolist() == [len(x) for x in ours]
    assert flat.tolist() == [i for x in ours for i in x]


def test_hf_directory_loader(qwen3, qwen3_hf_dir, agentic_text, tricky_texts):
    tok = load_tokenizer(str(qwen3_hf_dir))
    assert tok.eod_id == 151643
    assert tok.special_tokens["<think>"] == 151667
    assert tok.n_vocab == 151669
    for text in tricky_texts:
        assert tok.encode(text) == qwen3.encode(text)
    assert tok.decode(tok.encode(agentic_text)) == agentic_text


def test_hf_directory_eos_and_bos_like_megatron(tmp_path):
    # A small Llama-style HF tokenizer: BOS added by its post-processor, EOS named in tokenizer_config.json.
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers, processors

    words = ["<unk>", "<s>", "</s>", "hello", "world", "agent"]
    rust = RustTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.add_special_tokens(["<s>", "</s>", "<tool_call>"])
    rust.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    rust.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 128}))
    tok = load_tokenizer(str(tmp_path))
    assert tok.eod_id == 2 and tok.vocab_size == 128 and tok.n_vocab == 7
    assert load_tokenizer(str(tmp_path / "tokenizer.json")).eod_id == 2  # a tokenizer.json path works too
    assert tok.encode("hello<tool_call>world") == [1, 3, 6, 4]
    assert tok.encode_batch(["agent", "hello"]) == [[1, 5], [1, 3]]


def test_sentencepiece_loader(sp_model, wiki_docs):
    import sentencepiece as spm

    ref = spm.SentencePieceProcessor(model_file=str(sp_model))
    tok = load_tokenizer(str(sp_model))
    assert tok.n_vocab == 400 and tok.eod_id == ref.eos_id()
    text = "Hello <tool_call>search</tool_call> " + wiki_docs[0]["text"]
    assert tok.encode(text) == ref.encode(text)
    assert tok.encode("<tool_call>").count(tok.special_tokens["<tool_call>"]) == 1
    assert tok.encode_batch([text, "x"]) == [ref.encode(text), ref.encode("x")]


def test_unknown_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_tokenizer(str(tmp_path / "nope"))
