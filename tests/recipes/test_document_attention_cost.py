"""Attention priced from the data: ``data mix`` length histograms, the packing model against a simulation of
megatron-core's sample cutting, and the planner's per-document vs full-sequence figures (``attention_mode``,
``attention_flops_per_token``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.indexed import mix
from data_tools.indexed.doc_lengths import dataset_histogram, length_histogram
from megatron_agentic.attention_cost import blend_profile, histogram_profile, padding_fraction, piece_statistics
from megatron_agentic.planning import cli
from megatron_agentic.planning import plan as planning


def _simulate(lengths: np.ndarray, seq: int, seed: int = 0) -> tuple[float, float]:
    """sum(piece^2)/tokens and pieces/tokens of documents laid end to end in random order, cut every ``seq`` tokens
    (megatron-core's GPTDataset samples), by brute force."""
    order = np.random.default_rng(seed).permutation(lengths)
    ends = np.cumsum(order)
    cuts = np.arange(seq, ends[-1], seq)
    bounds = np.unique(np.concatenate([[0], ends, cuts]))
    pieces = np.diff(bounds).astype(np.float64)
    return float((pieces**2).sum() / lengths.sum()), float(pieces.size / lengths.sum())


@pytest.mark.parametrize("seq", [256, 4096])
def test_packing_model_matches_a_simulation_of_sample_cutting(seq):
    rng = np.random.default_rng(1)
    lengths = np.concatenate([rng.integers(1, seq // 2, 3000), rng.integers(seq, 5 * seq, 200)]).astype(np.int32)
    want_sq, want_pieces = _simulate(lengths, seq)
    prof = histogram_profile(length_histogram([lengths]), seq)
    assert prof.attended_length == pytest.approx(want_sq, rel=0.02)
    assert prof.pieces_per_token == pytest.approx(want_pieces, rel=0.02)
    assert prof.attended_length < seq


def test_piece_statistics_limits():
    sq, pieces = piece_statistics(np.array([1.0, 10.0, 4096.0]), 4096)
    assert sq[0] == pytest.approx(1.0) and pieces[0] == pytest.approx(1.0)
    assert sq[1] == pytest.approx(100 * (1 - 10 / (3 * 4096)), rel=1e-3)  # cut with probability n/s
    assert sq[2] == pytest.approx(4096**2 * 2 / 3, rel=1e-3)  # a full-sequence document is cut in two halves


def test_histogram_is_exact_per_bucket(make_indexed):
    lengths = [5, 17, 3, 100, 1, 100, 2048]
    hist = dataset_histogram(make_indexed("h", lengths))
    assert hist["documents"] == 7 and hist["tokens"] == sum(lengths) and hist["max_length"] == 2048
    assert sum(hist["square_sums"]) == pytest.approx(sum(n * n for n in lengths))
    for (lo, hi), c, t in zip(hist["edges"], hist["counts"], hist["token_sums"]):
        inside = [n for n in lengths if lo <= n < hi]
        assert c == len(inside) and t == sum(inside)


def _mix(make_indexed, tmp_path, doc_len: int, name: str) -> str:
    sources = [
        mix.Source(type="planning", prefix=make_indexed(f"{name}_p", [doc_len] * 40), name="planning"),
        mix.Source(type="general", prefix=make_indexed(f"{name}_g", [doc_len // 2] * 40), name="general"),
    ]
    result = mix.compute_mix(mix.StageMix(stage="stage1", total_tokens=1e6, sources=sources))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return str(path)


def test_mix_records_histograms_and_blend_profile(make_indexed, tmp_path):
    path = _mix(make_indexed, tmp_path, 1000, "m")
    data = json.loads(open(path).read())
    for source in data["sources"]:
        assert source["doc_length_histogram"]["tokens"] == source["tokens"]
    from megatron_agentic.attention_cost import load_blend_histograms

    prof = blend_profile(load_blend_histograms(path), 32768)
    weights = {s["name"]: s["weight"] for s in data["sources"]}
    want = weights["planning"] * 1000 * (1 - 1000 / (3 * 32768)) + weights["general"] * 500 * (1 - 500 / (3 * 32768))
    assert prof.attended_length == pytest.approx(want, rel=1e-3)
    assert padding_fraction(prof, 1) == 0.0 and 0 < padding_fraction(prof, 4) < 0.01


@pytest.mark.parametrize("recipe, seq", [("qwen3-30b-a3b-stage1", 32768), ("qwen3-30b-a3b-stage2", 131072)])
def test_plan_prices_per_document_attention_from_the_histograms(make_indexed, tmp_path, recipe, seq):
    lengths = _mix(make_indexed, tmp_path, 1024, "p")
    doc = planning.make_plan(recipe, lengths=lengths)
    seq_plan = planning.make_plan(recipe, overrides=["data.document_attention=false"])
    assert (doc.attention_mode, seq_plan.attention_mode) == ("document", "sequence")
    assert seq_plan.attention_flops_per_token == pytest.approx(6 * 48 * seq * 32 * 128)
    assert doc.attention_flops_per_token_sequence == seq_plan.attention_flops_per_token
    ratio = doc.attention_flops_per_token / seq_plan.attention_flops_per_token
    assert ratio == pytest.approx(doc.attended_length / seq) and ratio < 0.04  # ~1K documents: ~3% (32K), <1% (128K)
    saved = seq_plan.attention_flops_per_token - doc.attention_flops_per_token
    assert doc.flops_per_token == pytest.approx(seq_plan.flops_per_token - saved)
    # the before figures are the sequence-mode plan's
    assert doc.sequence_estimate["step_time_s"] == pytest.approx(seq_plan.step_time_s)
    assert doc.sequence_estimate["gpu_hours"] == pytest.approx(seq_plan.gpu_hours)
    assert doc.gpu_hours < 0.75 * seq_plan.gpu_hours
    assert doc.padding_fraction > 0 and doc.activations_gib["document"] >= doc.activations_gib["sequence"]
    assert not doc.errors


def test_plan_without_histogram_warns_and_assumes_the_whole_sequence(tmp_path):
    doc = planning.make_plan("qwen3-30b-a3b-stage1", lengths=str(tmp_path / "missing.json"))
    assert doc.attention_mode == "document"
    assert doc.attention_flops_per_token == doc.attention_flops_per_token_sequence
    assert any("no document-length histogram" in w for w in doc.warnings)


def test_plan_json_interface(capsys):
    """Contract: ``plan --recipe qwen3-30b-a3b-stage1 --json`` includes attention_mode and attention_flops_per_token."""
    rc = cli.main(["--recipe", "qwen3-30b-a3b-stage1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["attention_mode"] == "document"
    assert data["attention_flops_per_token"] > 0
