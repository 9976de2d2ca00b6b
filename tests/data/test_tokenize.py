"""``data tokenize``/``data merge`` against megatron-core's reader and builder, Megatron-LM's method, and itself."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from data_tools.indexed.merge import merge_datasets
from data_tools.indexed.readers import FileRange, JsonlBlock, iter_jsonl_blocks, plan_shard
from data_tools.indexed.tokenize_dataset import tokenize_to_indexed
from data_tools.indexed.tokenizers import load_tokenizer


def _bytes(prefix) -> tuple[bytes, bytes]:
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wiki_docs, agentic_text):
    """Real summaries plus agentic transcripts, with a second field, as plain JSONL."""
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    records = []
    for i, d in enumerate(wiki_docs):
        records.append({"text": d["text"], "title": d["title"]})
        if i % 50 == 0:
            records.append({"text": agentic_text, "title": "agent"})
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path, records


def test_round_trip_with_megatron_reader(tmp_path, corpus):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    path, records = corpus
    stats = tokenize_to_indexed(path, tmp_path / "out", "qwen3", ["text"], append_eod=True, workers=1)
    tok = load_tokenizer("qwen3")
    ds = IndexedDataset(str(tmp_path / "out_text_document"))
    assert len(ds) == len(records) == stats.documents
    assert ds.index.dtype == np.int32
    assert ds.document_indices.tolist() == list(range(len(records) + 1))
    for i, r in enumerate(records):
        assert ds[i].tolist() == tok.encode(r["text"]) + [tok.eod_id]
    assert stats.tokens["text"] == int(ds.sequence_lengths.sum())
    assert not stats.skipped


@pytest.mark.slow
def test_identical_to_megatron_lm_preprocess_method(tmp_path, corpus, qwen3_hf_dir):
    """Byte-identical to preprocess_data.py's method: AutoTokenizer per document + EOD into IndexedDatasetBuilder."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from transformers import AutoTokenizer

    path, records = corpus
    hf = AutoTokenizer.from_pretrained(str(qwen3_hf_dir))
    keys = ["text", "title"]
    for key in keys:
        prefix = tmp_path / f"ref_{key}_document"
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(len(hf)))
        for r in records:
            ids = hf(r[key]).input_ids + [hf.eos_token_id]  # Encoder.encode with --append-eod
            builder.add_document(ids, [len(ids)])
        builder.finalize(f"{prefix}.idx")
    tokenize_to_indexed(path, tmp_path / "ours", "qwen3", keys, append_eod=True, workers=2, block_bytes=20_000)
    for key in keys:
        assert _bytes(tmp_path / f"ours_{key}_document") == _bytes(tmp_path / f"ref_{key}_document"), key


@pytest.mark.slow
def test_deterministic_across_worker_counts(tmp_path, corpus):
    path, _ = corpus
    outs = []
    for workers in (1, 2):
        prefix = tmp_path / f"w{workers}"
        tokenize_to_indexed(path, prefix, "qwen3", ["text"], append_eod=True, workers=workers, block_bytes=7_000)
        outs.append(_bytes(f"{prefix}_text_document"))
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_input_formats_give_the_same_tokens(tmp_path, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    path, records = corpus
    raw = path.read_bytes()
    half = len(records) // 2
    cut = sum(len(line) + 1 for line in raw.split(b"\n")[:half])
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl.gz").write_bytes(gzip.compress(raw[:cut]))
    (d / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw[cut:]))
    (d / "config.json").write_text('{"not": "input"}')  # plain .json in a directory is not taken as input
    tokenize_to_indexed(path, tmp_path / "plain", "qwen3", ["text"], append_eod=True, workers=1)
    expected = _bytes(tmp_path / "plain_text_document")
    tokenize_to_indexed(d, tmp_path / "dir", "qwen3", ["text"], append_eod=True, workers=2, block_bytes=5_000)
    assert _bytes(tmp_path / "dir_text_document") == expected
    tokenize_to_indexed(str(d / "*.jsonl.*"), tmp_path / "glob", "qwen3", ["text"], append_eod=True, workers=1)
    assert _bytes(tmp_path / "glob_text_document") == expected
    pq.write_table(pa.table({"text": [r["text"] for r in records]}), tmp_path / "t.parquet", row_group_size=64)
    tokenize_to_indexed(
        tmp_path / "t.parquet", tmp_path / "pq", "qwen3", ["text"], append_eod=True, workers=2, parquet_batch_rows=50
    )
    assert _bytes(tmp_path / "pq_text_document") == expected


def test_shard_ranges_cover_every_line_once(tmp_path):
    rng = random.Random(0)
    files = []
    lines = []
    for f_i in range(3):
        p = tmp_path / f"f{f_i}.jsonl"
        body = [b"x" * rng.randint(0, 40) + b"%d" % len(lines) for _ in range(rng.randint(0, 60))]
        lines.extend(body)
        p.write_bytes(b"".join(line + b"\n" for line in body) + (b"tail%d" % f_i if f_i == 1 else b""))
        if f_i == 1:
            lines.append(b"tail1")
        files.append(p)
    for n in (1, 2, 3, 7, 50):
        got = []
        for i in range(n):
            for r in plan_shard(files, i, n):
                for b in iter_jsonl_blocks(r, block_bytes=rng.randint(1, 64), max_line_bytes=1 << 20):
                    assert isinstance(b, JsonlBlock)
                    got.extend(b.data.split(b"\n")[: b.data.count(b"\n") + (0 if b.data.endswith(b"\n") else 1)])
        assert got == lines, n


@pytest.mark.slow
def test_shard_then_merge_equals_single_run(tmp_path, corpus):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    path, records = corpus
    gz = tmp_path / "z.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()[:30_000].rsplit(b"\n", 1)[0] + b"\n"))
    inputs = [str(path), str(gz)]
    single = tokenize_to_indexed(inputs, tmp_path / "single", "qwen3", ["text", "title"], append_eod=True, workers=1)
    n = 4
    docs = 0
    for i in range(n):
        st = tokenize_to_indexed(
            inputs, tmp_path / "sh", "qwen3", ["text", "title"], append_eod=True, workers=2, shard_index=i, num_shards=n
        )
        docs += st.documents
        assert (tmp_path / f"sh-{i:05d}-of-{n:05d}_text_document.idx").is_file()
    assert docs == single.documents
    for key in ("text", "title"):
        res = merge_datasets([str(tmp_path / f"sh-*-of-{n:05d}_{key}_document")], tmp_path / f"merged_{key}")
        assert res["inputs"] == n and res["documents"] == single.documents
        assert _bytes(tmp_path / f"merged_{key}") == _bytes(tmp_path / f"single_{key}_document")
    assert len(IndexedDataset(str(tmp_path / "merged_text"))) == single.documents


def test_merge_matches_megatron_add_index_and_keeps_multi_sequence_documents(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(1)
    prefixes = []
    for j in range(3):  # datasets with several sequences per document, as preprocess_data --split-sentences writes
        p = tmp_path / f"part{j}"
        b = IndexedDatasetBuilder(f"{p}.bin", dtype=np.uint16)
        for _ in range(20 + j):
            lens = rng.integers(1, 9, size=rng.integers(1, 4)).tolist()
            b.add_document(rng.integers(0, 60000, size=sum(lens)).tolist(), lens)
        b.finalize(f"{p}.idx")
        prefixes.append(str(p))
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for p in prefixes:
        ref.add_index(p)
    ref.finalize(str(tmp_path / "ref.idx"))
    merge_datasets(prefixes, tmp_path / "ours")
    assert _bytes(tmp_path / "ours") == _bytes(tmp_path / "ref")
    # inspect's document lengths (from pointers) agree with megatron-core's reader on multi-sequence documents
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from data_tools.indexed.indexed_io import read_index
    from data_tools.indexed.inspect_dataset import length_stats

    ds = IndexedDataset(str(tmp_path / "ours"))
    d = ds.document_indices
    doc_lengths = [int(ds.sequence_lengths[d[i] : d[i + 1]].sum()) for i in range(len(d) - 1)]
    stats, _ = length_stats(read_index(tmp_path / "ours"))
    assert (stats["doc_length_min"], stats["doc_length_max"]) == (min(doc_lengths), max(doc_lengths))
    assert stats["doc_length_mean"] == pytest.approx(sum(doc_lengths) / len(doc_lengths))
    with pytest.raises(FileExistsError):
        merge_datasets(prefixes, tmp_path / "ours")


def test_finished_run_is_skipped_and_settings_change_is_refused(tmp_path, corpus):
    path, _ = corpus
    first = tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["text"], append_eod=True, workers=1)
    mtime = (tmp_path / "o_text_document.bin").stat().st_mtime_ns
    again = tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["text"], append_eod=True, workers=1)
    assert again.reused and again.documents == first.documents and again.tokens == first.tokens
    assert (tmp_path / "o_text_document.bin").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="overwrite"):
        tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["text"], append_eod=False, workers=1)
    redo = tokenize_to_indexed(path, tmp_path / "o", "qwen3", ["text"], append_eod=False, workers=1, overwrite=True)
    assert not redo.reused and redo.tokens["text"] == first.tokens["text"] - first.documents


def test_reader_bounds_blocks_and_skips_giant_lines(tmp_path):
    import zstandard

    body = b'{"text": "a"}\n' * 50 + b'{"text": "' + b"x" * 5000 + b'"}\n' + b'{"text": "b"}\n'
    for name, data in (("p.jsonl", body), ("c.jsonl.zst", zstandard.ZstdCompressor().compress(body))):
        p = tmp_path / name
        p.write_bytes(data)
        out = list(iter_jsonl_blocks(FileRange(p, 0, p.stat().st_size), block_bytes=64, max_line_bytes=1000))
        blocks = [b for b in out if isinstance(b, JsonlBlock)]
        giant = [b for b in out if not isinstance(b, JsonlBlock)]
        assert max(len(b.data) for b in blocks) <= 64 + 1000
        assert [(g.line, g.nbytes) for g in giant] == [(51, 5000 + 13)]
        assert sum(b.data.count(b"\n") for b in blocks) == 51


def test_cli_entry_point(tmp_path, corpus):
    from megatron_agentic.cli import main

    path, records = corpus
    rc = main(["data", "tokenize", "--input", str(path), "--output-prefix", str(tmp_path / "c"), "--append-eod",
               "--workers", "1", "--no-progress", "--json-summary", str(tmp_path / "s.json")])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "s.json").read_text())["documents"] == len(records)
    assert main(["data", "inspect", str(tmp_path / "c_text_document"), "--samples", "1"]) == 0


@pytest.mark.slow
def test_slurm_array_script_shards_and_merges(tmp_path, corpus):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = repo / "examples" / "slurm" / "tokenize_array.sbatch"
    path, _ = corpus
    env = dict(os.environ, INPUT=str(path), OUTPUT_PREFIX=str(tmp_path / "arr"), NUM_SHARDS="2", PYTHON=sys.executable,
               WORKERS="1")  # fmt: skip
    for task in ("0", "1"):
        subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": task}, cwd=repo, check=True)
    subprocess.run(["bash", str(script)], env={**env, "MODE": "merge"}, cwd=repo, check=True)
    tokenize_to_indexed(path, tmp_path / "single", "qwen3", ["text"], append_eod=True, workers=1)
    assert _bytes(tmp_path / "arr_text_document") == _bytes(tmp_path / "single_text_document")


def test_gpt_dataset_reads_the_output(tmp_path, corpus):
    """megatron-core's GPTDataset (via BlendedMegatronDatasetBuilder) samples windows of our documents."""
    from types import SimpleNamespace

    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    path, records = corpus
    tokenize_to_indexed(path, tmp_path / "g", "qwen3", ["text"], append_eod=True, workers=1)
    tok = load_tokenizer("qwen3")
    docs = [tok.encode(r["text"]) + [tok.eod_id] for r in records]
    mtok = SimpleNamespace(vocab_size=tok.vocab_size, eod=tok.eod_id, pad=tok.eod_id, unique_identifiers={"t": "qwen3"})
    seq = 96
    cfg = GPTDatasetConfig(
        random_seed=1, sequence_length=seq, blend=([str(tmp_path / "g_text_document")], None), split="100,0,0",
        tokenizer=mtok, reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
    )  # fmt: skip
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [8, None, None], lambda: True, cfg).build()
    for i in range(8):
        j = int(train.shuffle_index[i])
        (d0, o0), (d1, o1) = train.sample_index[j], train.sample_index[j + 1]
        window = list(docs[train.document_index[d0]][o0:])
        for d in range(d0 + 1, d1 + 1):
            window += docs[train.document_index[d]]
        expected = window[: seq + 1] if d1 > d0 else docs[train.document_index[d0]][o0 : o1 + 1]
        sample = train[i]
        assert sample["tokens"].tolist() == expected[:-1]
        assert sample["labels"].tolist() == expected[1:]


@pytest.mark.slow
def test_sentencepiece_pipeline_writes_uint16(tmp_path, corpus, sp_model):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    path, records = corpus
    tokenize_to_indexed(path, tmp_path / "sp", str(sp_model), ["text"], append_eod=True, workers=2, block_bytes=30_000)
    tok = load_tokenizer(str(sp_model))
    ds = IndexedDataset(str(tmp_path / "sp_text_document"))
    assert ds.index.dtype == np.uint16 and len(ds) == len(records)
    for i in (0, 1, len(records) - 1):
        assert ds[i].tolist() == tok.encode(records[i]["text"]) + [tok.eod_id]


@pytest.mark.slow
def test_parquet_row_groups_are_sharded(tmp_path, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, records = corpus
    pq.write_table(pa.table({"text": [r["text"] for r in records]}), tmp_path / "t.parquet", row_group_size=40)
    single = tokenize_to_indexed(tmp_path / "t.parquet", tmp_path / "single", "qwen3", ["text"], True, 1)
    n, docs = 3, []
    for i in range(n):
        st = tokenize_to_indexed(
            tmp_path / "t.parquet", tmp_path / "sh", "qwen3", ["text"], True, 2, shard_index=i, num_shards=n
        )
        docs.append(st.documents)
    assert sum(docs) == single.documents == len(records) and min(docs) > 0  # every shard got row groups
    merge_datasets([str(tmp_path / f"sh-*-of-{n:05d}_text_document")], tmp_path / "merged")
    assert _bytes(tmp_path / "merged") == _bytes(tmp_path / "single_text_document")
