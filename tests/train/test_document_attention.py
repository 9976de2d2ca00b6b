"""Per-document (packed ``thd``) attention: batch building against megatron-core's ``reset_attention_mask``, the
settings function on both platforms, and loss/gradient equality of the packed path with the dense document mask
(CP=1 and CP=2) on real ``GPTDataset`` samples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_agentic.config import ConfigError, load_config
from megatron_agentic.kernels.ring_attention import zigzag_merge
from megatron_agentic.perf import resolve_settings
from megatron_agentic.platform import Platform
from tests.support.lazy import lazy_import
from tests.support.zygote import run_command

# megatron-core is imported when a test runs, not when the suite is collected
_gpt_dataset = lazy_import("megatron.core.datasets.gpt_dataset")
_packing = lazy_import("megatron_agentic.training.packing")

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "train" / "document_attention_worker.py"
EOD = 7
CPU = Platform("cpu", "gloo", False, False)
H100_TE = Platform("cuda", "nccl", True, False)


def _tokens(b: int, s: int, eods: list[list[int]], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(8, 100, (b, s), generator=g)
    for row, positions in enumerate(eods):
        tokens[row, positions] = EOD
    return tokens


def _batch(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    labels = torch.roll(tokens, -1, dims=1) + 1000
    loss_mask = torch.ones(tokens.shape, dtype=torch.float)
    loss_mask[0, 3] = 0.0  # a masked token (e.g. an SFT prompt) must stay masked after packing
    return {"tokens": tokens, "labels": labels, "loss_mask": loss_mask}


def _blocks(lengths: list[int]) -> torch.Tensor:
    """Dense causal block-diagonal mask (True = attend) of documents laid end to end."""
    s = sum(lengths)
    keep = torch.zeros(s, s, dtype=torch.bool)
    start = 0
    for n in lengths:
        keep[start : start + n, start : start + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        start += n
    return keep


@pytest.mark.parametrize("eods", [[], [0], [5, 6, 20], [31], [3, 17, 30, 31]])
def test_documents_are_megatron_cores_reset_blocks(eods):
    """Our document split gives exactly megatron-core's ``reset_attention_mask`` mask and reset position ids."""
    tokens = _tokens(1, 32, [eods])[0]
    mask, _, positions = _gpt_dataset._get_ltor_masks_and_position_ids(tokens, EOD, True, True, False, True)
    lengths = _packing.document_lengths(tokens, EOD)
    assert sum(lengths) == 32
    assert torch.equal(_blocks(lengths), ~mask[0])  # megatron: True = masked out
    packed = _packing.pack_documents(_batch(tokens.unsqueeze(0)), EOD)
    assert torch.equal(packed["position_ids"][0], positions)
    assert packed["attention_mask"] is None


def test_micro_batch_packing_cp1():
    """Samples are laid end to end (a sample end is a document end), values unchanged, ``cu_seqlens`` exact."""
    tokens = _tokens(3, 16, [[2, 9], [], [15]])
    batch = _batch(tokens)
    out = _packing.pack_documents(batch, EOD)
    assert out["tokens"].shape == (1, 48)
    for key in ("tokens", "labels", "loss_mask"):
        assert torch.equal(out[key][0], batch[key].reshape(-1))
    params = out["packed_seq_params"]
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == [0, 3, 10, 16, 32, 48]
    assert params.cu_seqlens_q.dtype == torch.int32
    assert params.cu_seqlens_q_padded is None and params.max_seqlen_q == 16
    assert out["position_ids"][0].tolist() == [*range(3), *range(7), *range(6), *range(16), *range(16)]


@pytest.mark.parametrize("cp", [2, 3])
def test_cp_padding_and_zigzag_shards(cp):
    """CP > 1: each document padded to a multiple of 2*CP at its end (loss 0), every rank's zigzag share of each
    document; the shards of all ranks reassemble the padded packed sequence, real tokens in order."""
    tokens = _tokens(2, 24, [[4, 5, 13], [22]])
    batch = _batch(tokens)
    lengths = [n for row in tokens for n in _packing.document_lengths(row, EOD)]
    padded = _packing.padded_lengths(lengths, cp)
    total = _packing.step_packed_length([batch], EOD, cp, tp_size=2) + 4 * cp  # extra tail padding, as a step max gives
    shards = [_packing.pack_documents(batch, EOD, r, cp, total_length=total) for r in range(cp)]
    params = shards[0]["packed_seq_params"]
    assert params.cu_seqlens_q[-1] == 48 and params.cu_seqlens_q_padded[-1] == total
    assert all(s["tokens"].shape[1] == total // cp for s in shards)
    full = {k: zigzag_merge([s[k] for s in shards], 1, params.cu_seqlens_q_padded)[0] for k in shards[0] if k in (
        "tokens", "labels", "loss_mask", "position_ids")}  # fmt: skip
    real = torch.zeros(total, dtype=torch.bool)
    cu_pad = params.cu_seqlens_q_padded.tolist()
    for i, n in enumerate(lengths):
        real[cu_pad[i] : cu_pad[i] + n] = True
        assert full["position_ids"][cu_pad[i] : cu_pad[i + 1]].tolist() == list(range(cu_pad[i + 1] - cu_pad[i]))
    assert padded == [int(cu_pad[i + 1] - cu_pad[i]) for i in range(len(lengths) - 1)] + [padded[-1]]
    for key in ("tokens", "labels", "loss_mask"):
        assert torch.equal(full[key][real], batch[key].reshape(-1))
    assert full["loss_mask"][~real].abs().sum() == 0
    assert params.max_seqlen_q == max(cu_pad[i + 1] - cu_pad[i] for i in range(len(lengths)))


def test_packed_seq_params_builder_and_errors():
    p = _packing.packed_seq_params([3, 5], [4, 8])
    assert p.cu_seqlens_q.tolist() == [0, 3, 8] and p.cu_seqlens_q_padded.tolist() == [0, 4, 12]
    assert p.cu_seqlens_kv is p.cu_seqlens_q and p.max_seqlen_kv == 8
    with pytest.raises(ValueError, match="shorter"):
        _packing.packed_seq_params([3, 5], [2, 8])
    with pytest.raises(ValueError, match="multiple of 4"):
        _packing.padded_lengths([3, 5], cp_size=2, total_length=14)
    with pytest.raises(ValueError, match=">="):
        _packing.padded_lengths([3, 5], cp_size=2, total_length=8)


def test_prepare_without_cp_keeps_the_micro_batch_length():
    batches = [_batch(_tokens(2, 16, [[1], [3, 4]], seed=i)) for i in range(3)]
    packed, total = _packing.prepare_document_batches(batches, EOD, cp_rank=0, cp_size=1)
    assert total == 32 and all(b["tokens"].shape == (1, 32) for b in packed)


def _cfg(*extra: str):
    return load_config(None, ["model.preset=tiny-moe", "train.seq_length=64", *extra])


def test_settings_choose_the_thd_attention_on_both_platforms():
    """The one settings function: document attention -> TE's thd attention on H100, the Triton/torch thd path (and
    ring) on CPU; megatron-core's local attention (no thd) is refused; off -> unchanged choices."""
    on = _cfg("data.document_attention=true")
    cpu, gpu = resolve_settings(CPU, on), resolve_settings(H100_TE, on)
    assert (cpu.attention_backend, cpu.attention_mode) == ("triton", "document")
    assert (gpu.attention_backend, gpu.attention_mode) == ("te", "document")
    ring = resolve_settings(CPU, _cfg("data.document_attention=true", "parallel.context=2"))
    assert ring.attention_backend == "triton"
    off = resolve_settings(CPU, _cfg())
    assert (off.attention_backend, off.attention_mode) == ("local", "sequence")
    assert resolve_settings(H100_TE, _cfg()).attention_mode == "sequence"
    assert "attention_mode=document" in cpu.summary_lines()[0]
    with pytest.raises(ConfigError, match="document_attention"):
        resolve_settings(CPU, _cfg("data.document_attention=true", "model.attention_backend=local"))


def test_document_attention_never_builds_a_dense_mask():
    from megatron_agentic.training.splits import create_attention_mask

    assert create_attention_mask(_cfg("data.reset_attention_mask=true"))
    assert not create_attention_mask(_cfg("data.reset_attention_mask=true", "data.document_attention=true"))


# ------------------------------------------------------------------------------------------ model-level equality
def _write_documents(prefix: Path) -> list[int]:
    """An indexed dataset (megatron-core's builder) of documents shorter and longer than the 64-token sequence."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    lengths = [5, 37, 150, 3, 1, 64, 20, 9, 90, 12, 30, 7, 2, 45, 70, 11]
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for n in lengths:
        doc = [*rng.integers(2, 512, size=n - 1).tolist(), 1]  # EOD = 1 (the worker's custom tokenizer)
        builder.add_document(torch.tensor(doc, dtype=torch.int32), [n])
    builder.finalize(f"{prefix}.idx")
    return lengths


def _run_worker(tmp_path: Path, mode: str, cp: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / f"{mode}-cp{cp}.pt"
    args = [str(WORKER), "--prefix", str(tmp_path / "docs"), "--cache", str(tmp_path / "cache"), "--out", str(out),
            "--state", str(tmp_path / "state.pt"), "--mode", mode, "--cp", str(cp)]  # fmt: skip
    if cp > 1:
        from tests.train.launch import free_port

        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cp}", f"--master-port={free_port()}"]
        cmd += args
    else:
        cmd = [sys.executable, *args]
    proc = run_command(cmd, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, f"worker {mode} CP={cp} failed:\n{proc.stderr[-4000:]}"
    return torch.load(out, weights_only=False)


def _assert_same(ref: dict, got: dict, what: str) -> None:
    assert got["tokens"] == ref["tokens"]
    assert got["loss_sum"] == pytest.approx(ref["loss_sum"], rel=2e-6), what
    assert ref["grads"].keys() == got["grads"].keys() and len(ref["grads"]) > 10
    for name, g in ref["grads"].items():
        scale = g.abs().max().item()
        err = (got["grads"][name] - g).abs().max().item()
        assert err <= 2e-5 * scale + 1e-9, f"{what}: gradient of {name} differs by {err:.3g} (max {scale:.3g})"


@pytest.mark.slow
def test_packed_equals_dense_document_mask_cp1_and_cp2(tmp_path):
    """Loss and every parameter gradient of tiny-moe over one global batch (2 micro-batches of 2 x 64 tokens):
    packed thd (CP=1; CP=2 per-document ring, gradients summed over the CP ranks) == megatron-core's dense
    ``reset_attention_mask`` path (local attention, CP=1), from the same weights and the same GPTDataset samples."""
    _write_documents(tmp_path / "docs")
    cp1 = _run_worker(tmp_path, "both", 1)
    dense, packed, causal = cp1["dense"], cp1["packed"], cp1["causal"]
    assert dense["attention_backend"] == "local" and packed["attention_backend"] == "triton"
    assert packed["attention_mode"] == "document"
    docs = dense["documents"]
    assert docs == packed["documents"] and len(docs) == 2
    assert any(len(mb) > 2 for mb in docs)  # several documents share a sample
    assert any(64 in mb for mb in docs)  # a document longer than the sequence fills a whole sample
    assert not all(dense["ends_with_eod"])  # a document cut by a sample end continues in another sample
    _assert_same(dense, packed, "packed CP=1 vs dense mask")
    # the check has teeth: without document separation loss and gradients are far outside the tolerance
    assert abs(causal["loss_sum"] - dense["loss_sum"]) > 50 * 2e-6 * abs(dense["loss_sum"])
    worst = max((causal["grads"][n] - g).abs().max().item() / g.abs().max().item() for n, g in dense["grads"].items())
    assert worst > 100 * 2e-5
    cp2 = _run_worker(tmp_path, "packed", 2)["packed"]
    assert cp2["documents"] == docs
    _assert_same(dense, cp2, "packed CP=2 vs dense mask")


@pytest.mark.slow
def test_cpu_benchmark_packed_vs_dense_mask_runs_and_agrees():
    """``benchmarks/bench_document_attention_cpu.py``: both paths give the same output and gradients; it prints
    the ratio (timings are printed, never asserted)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_document_attention_cpu.py"), "--seq", "256", "--batch",
           "2", "--doc-length", "48", "--reps", "1"]  # fmt: skip
    proc = run_command(cmd, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if "ratio dense / packed" in x)
    assert float(line.rsplit(":", 1)[1]) < 1e-4


def test_resume_refuses_switching_document_attention():
    from megatron_agentic.training.resume import config_differences

    saved = _cfg().to_dict()
    assert config_differences(saved, _cfg("data.document_attention=true").to_dict()) == [
        "data.document_attention: checkpoint False -> now True"
    ]


@pytest.mark.slow
def test_stage1_stand_in_trains_with_document_attention(tmp_path):
    """``tiny-moe-stage1`` (the CPU stand-in of stage 1: CP=2 ring, EP=2 on 2 ranks) trains with per-document
    attention from its recipe: the run says so, and the loss is finite and identical on every rank's report."""
    import json

    from megatron_agentic import recipes
    from tests.train.launch import train_argv

    config = tmp_path / "stage1.yaml"
    assert recipes.main(["export", "tiny-moe-stage1", "--output", str(config)]) == 0
    args = ["--config", str(config), "--set", "train.train_tokens=null", "--set", "train.iters=2",
            "--set", f"log.dir={tmp_path / 'log'}", "--set", "checkpoint.dir=null", "--set", "log.tensorboard=false",
            "--set", "train.eval_interval=null", "--set", "train.eval_iters=1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    proc = run_command(train_argv(args, nproc=2), cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "attention=triton" in proc.stderr and "attention_mode=document" in proc.stderr
    records = [json.loads(x) for x in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in records if "step" in r and "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses)) and 5 < losses[0] < 20
