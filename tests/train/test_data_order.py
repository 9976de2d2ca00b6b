"""The same sample order after an allowed resume (issue 25), on a real multi-epoch tokenized set: Wikipedia
summaries tokenized with the project's ``data tokenize`` (a 400-piece sentencepiece model trained here: the sample
order does not depend on the tokenizer, and a small vocabulary keeps the steps cheap; Qwen3-tokenized training is
the demo's, SFT's and the docs' runs), fewer tokens than a 10-step run at 4 x 32 tokens per step reads, so that
run already spans two epochs of megatron-core's shuffle.

Two chains of single-rank runs (one process, one ``train`` call after another):

- reference: ``train.iters=10`` uninterrupted, then extended to 24 (``train.scheduler_from=config``);
- interrupted: ``train.iters=10`` stopped at step 7 (``train.exit_interval``; last checkpoint at 5), then resumed
  with the extended ``train.iters=24``.

megatron-core's dataset order depends on the number of samples it is built for; the resumed run must reuse the
build stored in the checkpoint (``data_build``), so every step of the interrupted chain reads exactly the samples
of the reference chain's step (a hash of each sample's tokens, recorded by ``MEGATRON_AGENTIC_TEST_SAMPLE_LOG``).
Then the data files are re-tokenized in place (same paths, other documents): a resume is refused naming both
fingerprints, and accepted with ``data.resume_from=config``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.zygote import run_command

REPO = Path(__file__).resolve().parents[2]
SEQ, GBS = 32, 4
DOCS = 4  # documents per tokenized set (~760 tokens: fewer than the 1,280 that the 10-step run reads)
VOCAB = 512  # model.vocab_size for the sentencepiece model's 400 ids
EOD = 2  # the model's </s> (data tokenize --append-eod appends it)

DRIVER = r"""
import json, os, sys
from megatron_agentic.config import load_config
from megatron_agentic.training.loop import train
for overrides, sample_log in json.loads(sys.argv[2]):
    os.environ["MEGATRON_AGENTIC_TEST_SAMPLE_LOG"] = sample_log
    train(load_config(sys.argv[1], overrides))
"""


def _sentencepiece(root: Path) -> Path:
    """A 400-piece sentencepiece model trained on the first summaries (written once per chain directory)."""
    import sentencepiece as spm

    from data_tools.synthesis.corpus import wiki_summaries

    path = root / "tiny_sp.model"
    if not path.exists():
        with path.open("wb") as out:
            texts = [d["text"] for d in wiki_summaries("en", limit=60)]
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=out, vocab_size=400, eos_id=EOD, minloglevel=2
            )
    return path


def _tokenize(root: Path, first: int) -> str:
    from data_tools.synthesis.corpus import wiki_summaries
    from megatron_agentic.cli import main

    docs = list(wiki_summaries("en", limit=first + DOCS))[first:]
    src = root / f"docs_{first}.jsonl"
    src.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs))
    argv = ["data", "tokenize", "--input", str(src), "--output-prefix", str(root / "wiki"), "--append-eod"]
    argv += ["--tokenizer", str(_sentencepiece(root))]
    assert main([*argv, "--workers", "1", "--no-progress", *(["--overwrite"] if first else [])]) == 0
    return str(root / "wiki_text_document")


def _overrides(root: Path, prefix: str, name: str, iters: int, *extra: str) -> list[str]:
    return [
        "model.num_layers=1",
        f"model.vocab_size={VOCAB}",
        "data.tokenizer=custom",
        f"data.eod_token_id={EOD}",
        f"train.iters={iters}",
        f"train.seq_length={SEQ}",
        f"train.global_batch_size={GBS}",
        "train.micro_batch_size=2",
        "train.eval_iters=1",
        "log.tensorboard=false",
        f"log.dir={root / name}",
        f"checkpoint.dir={root / name / 'ckpt'}",
        "checkpoint.interval=5",
        f"data.blend=[1.0, {prefix}]",
        "data.mock=false",
        "data.split=100,0,0",
        f"data.cache_dir={root / 'cache'}",
        *extra,
    ]


def _steps(path: Path) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["samples"]  # a step redone after a resume: the later record
    return out


@pytest.fixture(scope="module")
def chains():
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_data_order_"))
    try:
        prefix = _tokenize(root, 0)
        ext = ("train.iters=24", "train.scheduler_from=config")
        plan = [
            (_overrides(root, prefix, "ref", 10), str(root / "ref.samples")),
            (_overrides(root, prefix, "ref", 24, *ext), str(root / "ref.samples")),
            (_overrides(root, prefix, "cut", 10, "train.exit_interval=7"), str(root / "cut.samples")),
            (_overrides(root, prefix, "cut", 24, *ext), str(root / "cut.samples")),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        config = str(REPO / "examples/configs/tiny_moe.yaml")
        out = run_command([sys.executable, "-c", DRIVER, config, json.dumps(plan)], cwd=REPO, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        yield {"root": root, "prefix": prefix, "stderr": out.stderr, "env": env, "config": config}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_extended_resumed_run_reads_the_uninterrupted_runs_samples(chains):
    root = chains["root"]
    ref, cut = _steps(root / "ref.samples"), _steps(root / "cut.samples")
    assert sorted(ref) == list(range(1, 25)) and sorted(cut) == list(range(1, 25))
    assert all(len(v) == GBS for v in ref.values())
    assert [cut[s] for s in range(1, 25)] == [ref[s] for s in range(1, 25)]
    # the data really is multi-epoch: the first run (10 steps) already reads more tokens than the set holds
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(chains["prefix"])  # kept referenced: its arrays are views of its memory map
    tokens = int(dataset.sequence_lengths.sum())
    assert 10 * GBS * SEQ > tokens
    assert len({h for s in range(1, 25) for h in ref[s]}) > len(ref[1])  # and the steps do not all read one batch
    # the interrupted chain stopped after step 7 and resumed from its checkpoint at 5: steps 6 and 7 were read twice
    raw = [json.loads(line)["step"] for line in (root / "cut.samples").read_text().splitlines()]
    assert raw == [*range(1, 8), *range(6, 25)]


@pytest.mark.slow
def test_data_rewritten_in_place_is_refused_unless_resume_from_config(chains):
    root, env = chains["root"], chains["env"]
    _tokenize(root, DOCS)  # other documents, same prefix
    base = [sys.executable, "-m", "megatron_agentic", "train", "--config", chains["config"]]
    for item in _overrides(root, chains["prefix"], "cut", 30, "train.scheduler_from=config"):
        base += ["--set", item]
    refused = run_command([*base, "--validate-only"], cwd=REPO, env=env)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "the training data changed: data blend: checkpoint [" in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1 and "data.resume_from=config" in errors[0]
    accepted = run_command([*base, "--set", "data.resume_from=config", "--validate-only"], cwd=REPO, env=env)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
