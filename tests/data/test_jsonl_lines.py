"""One JSONL line parser: iter_jsonl (synthesis inputs) and the data tokenize workers report the same reasons."""

from __future__ import annotations

import json

import pytest

from data_tools.common.jsonl import BadLine, iter_jsonl, parse_object
from data_tools.indexed.readers import JsonlBlock
from data_tools.indexed.tokenize_worker import WorkerOptions, _records

LINES = [
    b'{"text": "fine"}',
    b'\xef\xbb\xbf{"text": "after a byte-order mark"}',
    b'{"text": "unterminated',
    b'"a string"',
    b'{"text": "\xff\xfe"}',
    b"[" * 100_000 + b"]" * 100_000,  # nesting deep enough to exhaust the recursion limit
]
EXPECTED = [None, None, "invalid_json", "not_object", "invalid_utf8", "invalid_json"]


def test_parse_object_reasons():
    got = [parse_object(line) for line in LINES]
    assert got[0] == {"text": "fine"} and got[1] == {"text": "after a byte-order mark"}
    assert [g[0] if isinstance(g, tuple) else None for g in got] == EXPECTED
    assert got[4] == ("invalid_utf8", "byte 10: invalid start byte")
    assert got[3] == ("not_object", "str")
    with pytest.raises(json.JSONDecodeError):  # the reference agrees that the line is not JSON
        json.loads(LINES[2])


def test_iter_jsonl_and_tokenize_workers_agree(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    synthesis = [r.reason if isinstance(r, BadLine) else None for _, r in iter_jsonl(path)]
    bad = []
    opts = WorkerOptions(tokenizer="qwen3", json_keys=("text",), append_eod=True, dtype="int32", max_doc_bytes=1 << 20)
    kept, values, records, blank = _records(JsonlBlock(str(path), 1, path.read_bytes()), opts, bad)
    worker = [None] * len(LINES)
    for item in bad:
        worker[item.index] = item.reason
    assert synthesis == worker == EXPECTED
    assert kept == [0, 1] and values["text"] == ["fine", "after a byte-order mark"] and (records, blank) == (6, 0)
