"""Bad input (skipped and counted, or fatal with --strict), kill-and-rerun, and corruption detection by inspect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_tools.indexed.indexed_io import idx_path, read_index
from data_tools.indexed.inspect_dataset import main as inspect_main
from data_tools.indexed.tokenize_dataset import BadInputError, tokenize_to_indexed
from data_tools.indexed.tokenizers import load_tokenizer

REPO = Path(__file__).resolve().parents[2]

GOOD = {"text": "A perfectly good document about agents."}
BAD_LINES = {  # reason -> raw JSONL line
    "invalid_json": b'{"text": "unterminated\n',
    "not_object": b'["a", "list"]\n',
    "missing_key": b'{"title": "no text field"}\n',
    "non_string": b'{"text": 42}\n',
    "empty_text": b'{"text": ""}\n',
    "invalid_utf8": b'{"text": "bad \xff\xfe bytes"}\n',
    "too_long": b'{"text": "' + b"y" * 3000 + b'"}\n',
}


def _bad_file(tmp_path: Path, jsonl_writer) -> tuple[Path, dict[str, int]]:
    lines: list = [b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n"]  # a UTF-8 BOM is tolerated
    where = {}
    for reason, raw in BAD_LINES.items():
        lines.append(raw)
        where[reason] = len(lines)
        lines.append(GOOD)
    lines.append(b"\n")  # blank line: ignored, not an error
    lines.append(b'{"text": "lone surrogate \\ud800 here"}\n')
    where["invalid_utf8_surrogate"] = len(lines)
    lines.append({"text": ["a list of ", "sentences"]})  # Megatron-LM accepts lists of sentences
    return jsonl_writer(tmp_path / "bad.jsonl", lines), where


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_records_are_skipped_and_counted(tmp_path, jsonl_writer, workers):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    path, where = _bad_file(tmp_path, jsonl_writer)
    stats = tokenize_to_indexed(
        path, tmp_path / "o", "qwen3", ["text"], True, workers, max_doc_bytes=2000, block_bytes=64
    )
    expected = {r: 1 for r in BAD_LINES}
    expected["invalid_utf8"] = 2
    assert stats.skipped == expected
    for reason in BAD_LINES:
        assert stats.examples[reason][0].startswith(f"{path}:{where[reason]}: {reason}"), stats.examples[reason]
    assert stats.examples["invalid_utf8"][1].startswith(f"{path}:{where['invalid_utf8_surrogate']}:")
    assert stats.blank_lines == 1
    tok = load_tokenizer("qwen3")
    ds = IndexedDataset(str(tmp_path / "o_text_document"))
    good = tok.encode(GOOD["text"]) + [tok.eod_id]
    assert len(ds) == stats.documents == len(BAD_LINES) + 2
    assert all(ds[i].tolist() == good for i in range(len(ds) - 1))
    assert ds[len(ds) - 1].tolist() == tok.encode("a list of ") + tok.encode("sentences") + [tok.eod_id]


def test_multi_key_records_are_kept_for_all_keys_or_none(tmp_path, jsonl_writer):
    path = jsonl_writer(tmp_path / "k.jsonl", [{"a": "x", "b": "y"}, {"a": "only a"}, {"a": "p", "b": "q"}])
    stats = tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["a", "b"], False, 1)
    assert stats.documents == 2 and stats.skipped == {"missing_key": 1}
    assert stats.examples["missing_key"] == [f"{path}:2: missing_key (key 'b')"]
    assert read_index(tmp_path / "o_a_document").num_documents == read_index(tmp_path / "o_b_document").num_documents


@pytest.mark.slow
def test_strict_mode_names_file_and_line_and_leaves_nothing(tmp_path, jsonl_writer):
    path, where = _bad_file(tmp_path, jsonl_writer)
    with pytest.raises(BadInputError, match=rf"{path}:{where['invalid_json']}: invalid_json"):
        tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["text"], True, 2, strict=True, block_bytes=64)
    assert list(tmp_path.glob("o*")) == []


def test_strict_line_numbers_inside_a_later_shard(tmp_path, jsonl_writer):
    lines = [GOOD] * 40 + [BAD_LINES["non_string"]] + [GOOD] * 5
    path = jsonl_writer(tmp_path / "s.jsonl", lines)
    with pytest.raises(BadInputError, match=rf"{path}:41: non_string"):
        for i in range(3):
            tokenize_to_indexed(
                path, tmp_path / "o", "qwen3", ["text"], True, 1, shard_index=i, num_shards=3, strict=True
            )


def _count_final(prefix: Path) -> list[str]:
    return sorted(p.name for p in prefix.parent.glob(prefix.name + "*") if not p.name.endswith(".tmp"))


@pytest.mark.slow
def test_kill_mid_run_then_rerun_resumes_to_identical_output(tmp_path, wiki_docs):
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(12):  # ~2 MB, a few seconds of work
            for d in wiki_docs:
                f.write(json.dumps({"text": d["text"]}) + "\n")
    cmd = [sys.executable, "-m", "data_tools.indexed.tokenize_dataset", "--input", str(path), "--append-eod", "--workers", "2",
           "--block-bytes", "16384", "--no-progress", "--checkpoint-seconds", "0", "--output-prefix"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    prefix = tmp_path / "run"
    proc = subprocess.Popen([*cmd, str(prefix)], cwd=REPO, env=env, start_new_session=True)
    tmp_bin = Path(f"{prefix}_text_document.bin.tmp")
    ckpt = Path(f"{prefix}.tokenize.ckpt.json")
    deadline = time.time() + 120
    while time.time() < deadline and (not ckpt.exists() or tmp_bin.stat().st_size < 50_000):
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _count_final(prefix) == ["run.tokenize.ckpt.json"]  # temporary files and a resume point, no .bin/.idx
    assert inspect_main([f"{prefix}_text_document", "--no-scan"]) == 2
    # a kill during the resume point's atomic write leaves its temporary file; the rerun removes it (made here:
    # the kill above lands inside that write only by chance)
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    (tmp_path / f".{ckpt.name}.{gone}.0badf00d.tmp").write_text("{")
    subprocess.run([*cmd, str(prefix)], cwd=REPO, env=env, check=True, timeout=300)
    subprocess.run([*cmd, str(tmp_path / "clean")], cwd=REPO, env=env, check=True, timeout=300)
    resumed = json.loads(Path(f"{prefix}.tokenize.json").read_text())["stats"]
    clean = json.loads(Path(f"{tmp_path}/clean.tokenize.json").read_text())["stats"]
    assert resumed["resumed_blocks"] > 0 and clean["resumed_blocks"] == 0
    assert resumed["documents"] == clean["documents"] == 12 * len(wiki_docs)
    assert resumed["tokens"] == clean["tokens"]
    for ext in (".bin", ".idx"):
        assert (
            Path(f"{prefix}_text_document{ext}").read_bytes()
            == Path(f"{tmp_path}/clean_text_document{ext}").read_bytes()
        )
    assert not list(tmp_path.glob("*.tmp")) and not ckpt.exists()
    assert inspect_main([f"{prefix}_text_document"]) == 0


def test_writer_resume_drops_data_written_after_the_checkpoint(tmp_path):
    from data_tools.indexed.indexed_io import IndexedWriter

    a, b = np.arange(10, dtype=np.int64), np.arange(100, 107, dtype=np.int64)
    ref = IndexedWriter(tmp_path / "ref", np.int32)
    ref.add_documents(a, [4, 6])
    ref.add_documents(b, [7])
    ref.finalize()
    w = IndexedWriter(tmp_path / "w", np.int32)
    w.add_documents(a, [4, 6])
    state = w.checkpoint()
    w.add_documents(np.arange(50, dtype=np.int64), [25, 25])  # lost in the "crash"
    w.close()
    w = IndexedWriter(tmp_path / "w", np.int32, resume=state)
    w.add_documents(b, [7])
    w.finalize()
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w{ext}").read_bytes() == (tmp_path / f"ref{ext}").read_bytes()


@pytest.fixture
def dataset(tmp_path, wiki_docs):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in wiki_docs[:40]), encoding="utf-8")
    tokenize_to_indexed(path, tmp_path / "d", "qwen3", ["text"], True, 1)
    return tmp_path / "d_text_document"


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_inspect_accepts_a_good_dataset(dataset, capsys):
    assert inspect_main([str(dataset), "--samples", "2", "--max-chars", "60"]) == 0
    out = capsys.readouterr().out
    assert "40 documents" in out and "OK" in out and "0 is a number" in out


@pytest.mark.parametrize(
    "corruption",
    [
        "truncated_bin",
        "extra_bin",
        "magic",
        "version",
        "dtype_code",
        "count",
        "pointer",
        "doc_index",
        "token_id",
        "no_idx",
    ],
)
def test_inspect_detects_corruption(dataset, corruption, capsys):
    bin_file, idx_file = Path(f"{dataset}.bin"), idx_path(dataset)
    n = read_index(dataset).num_sequences
    if corruption == "truncated_bin":
        os.truncate(bin_file, bin_file.stat().st_size - 6)
    elif corruption == "extra_bin":
        with open(bin_file, "ab") as f:
            f.write(b"\0" * 4)
    elif corruption == "magic":
        _patch(idx_file, 0, b"X")
    elif corruption == "version":
        _patch(idx_file, 9, (2).to_bytes(8, "little"))
    elif corruption == "dtype_code":
        _patch(idx_file, 17, bytes([8]))  # uint16: the .bin size no longer matches
    elif corruption == "count":
        _patch(idx_file, 18, (n + 1).to_bytes(8, "little"))
    elif corruption == "pointer":
        _patch(idx_file, 34 + 4 * n + 8 * 5, np.int64(12345).tobytes())
    elif corruption == "doc_index":
        _patch(idx_file, 34 + 12 * n + 8 * 3, np.int64(1).tobytes())
    elif corruption == "token_id":
        _patch(bin_file, 40, np.int32(200_000).tobytes())
    elif corruption == "no_idx":
        idx_file.unlink()
    assert inspect_main([str(dataset)]) == 2
    assert "CORRUPT" in capsys.readouterr().out


def test_parquet_bad_rows_are_counted_by_row_number(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["good one", None, "", "good two"], "n": [1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "t.parquet")
    stats = tokenize_to_indexed(tmp_path / "t.parquet", tmp_path / "o", "qwen3", ["text"], True, 1)
    assert stats.documents == 2 and stats.skipped == {"missing_key": 1, "empty_text": 1}
    assert stats.examples["missing_key"] == [f"{tmp_path / 't.parquet'}:2: missing_key (key 'text')"]
    stats = tokenize_to_indexed(tmp_path / "t.parquet", tmp_path / "p", "qwen3", ["n"], True, 1)
    assert stats.documents == 0 and stats.skipped == {"non_string": 4}
    with pytest.raises(BadInputError, match=r"t\.parquet:1: missing_key"):
        tokenize_to_indexed(tmp_path / "t.parquet", tmp_path / "q", "qwen3", ["absent"], True, 1, strict=True)
