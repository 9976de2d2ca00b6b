"""Fast tests of the experiment's parts: partition + disjointness check, vocabulary map, turn classifier, config,
report schema (on fabricated run outputs; the end-to-end run is in test_experiment_e2e.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from data_tools.indexed.indexed_io import IndexedWriter, read_index
from megatron_agentic.demo.pipeline import DemoContext
from megatron_agentic.experiment.config import ARMS, PRESETS, load_experiment_config
from megatron_agentic.experiment.partition import POOLS, OverlapError, check_disjoint, partition
from megatron_agentic.experiment.policy import AgentMetrics, classify_turn
from megatron_agentic.experiment.vocab import QWEN3_EOD, ExperimentVocab, dataset_ids, remap_dataset


def _docs(n: int) -> list[dict]:
    return [{"id": f"d{i}", "title": f"Title {i}", "url": f"https://en.wikipedia.org/wiki/T{i}"} for i in range(n)]


SHARES = {"base": 0.3, "cpt": 0.4, "sft": 0.2, "heldout_sft": 0.05, "agent": 0.05}


def test_partition_is_disjoint_stable_and_complete():
    docs = _docs(100)
    pools = partition(docs, SHARES, seed=7)
    assert list(pools) == list(POOLS)
    ids = [d["id"] for p in pools.values() for d in p]
    assert len(ids) == len(set(ids)) == 100
    assert {k: len(v) for k, v in pools.items()} == {"base": 30, "cpt": 40, "sft": 20, "heldout_sft": 5, "agent": 5}
    assert partition(list(reversed(docs)), SHARES, seed=7) == pools  # order of the input does not matter
    assert partition(docs, SHARES, seed=8) != pools
    with pytest.raises(ValueError):
        partition(_docs(3), SHARES, seed=1)


def _traj(url: str) -> dict:
    return {"messages": [{"role": "user", "content": f"<tool_response>\n1. [X]({url})\nsnippet\n</tool_response>"}]}


def test_check_disjoint_passes_and_catches_each_overlap():
    pools = partition(_docs(40), SHARES, seed=1)
    sft_url = pools["sft"][0]["url"]
    cpt_url = pools["cpt"][0]["url"]
    questions = {"sft": ["Which subject is A?"], "heldout_sft": ["Which subject is B?"], "agent": ["Which is C?"]}
    counts = check_disjoint(pools, ["some CPT text about D"], questions, {"sft": [_traj(sft_url)]})
    assert counts["documents"] == 40 and counts["questions"] == 3 and counts["tool_response_urls"] == 1
    # a document in two pools
    bad = {k: list(v) for k, v in pools.items()}
    bad["sft"].append(pools["cpt"][1])
    with pytest.raises(OverlapError, match="pool"):
        check_disjoint(bad, [], questions, {})
    # an SFT question inside a CPT sample
    with pytest.raises(OverlapError, match="occurs in the CPT data"):
        check_disjoint(pools, ["<|im_start|>user\nWhich subject is A?<|im_end|>"], questions, {})
    # the same question in the SFT and the held-out set
    with pytest.raises(OverlapError, match="both"):
        check_disjoint(pools, [], {"sft": ["Q?"], "heldout_sft": ["Q?"]}, {})
    # an SFT trajectory quoting a CPT page
    with pytest.raises(OverlapError, match="quotes"):
        check_disjoint(pools, [], questions, {"sft": [_traj(cpt_url)]})


def test_vocab_round_trip_unknown_and_specials():
    vocab = ExperimentVocab.build([np.array([5, 900, 5, 70000]), np.array([12])])
    assert vocab.kept[:4] == (5, 12, 900, 70000)
    assert len(vocab.kept) == 4 + 26  # + every Qwen3 special token
    ids = [12, 900, QWEN3_EOD, 151668, 70000, 5]
    dense = vocab.to_dense(ids)
    assert dense == [1, 2, 4, 4 + 25, 3, 0]
    assert vocab.to_qwen3(dense) == ids
    assert vocab.to_dense([6, 151700]) == [vocab.unk, vocab.unk]
    assert vocab.to_qwen3([0, vocab.unk, 1]) == [5, 12]  # the unknown id decodes to nothing
    assert vocab.eod == 4 and vocab.padded_size() == 128 and vocab.size == 31


def test_vocab_save_load_and_remap_dataset(tmp_path: Path):
    src = tmp_path / "src"
    tokens = np.array([7, 151643, 9, 9, 151645, 151643], dtype=np.int32)
    with IndexedWriter(src, np.int32, fsync=False) as w:
        w.add_documents(tokens, np.array([2, 4]))
    with IndexedWriter(str(src) + "_loss_mask", np.uint8, fsync=False) as w:
        w.add_documents(np.array([0, 0, 1, 1, 1, 0], dtype=np.uint8), np.array([2, 4]))
    vocab = ExperimentVocab.build([dataset_ids(src)])
    vocab.save(tmp_path / "vocab.json")
    assert ExperimentVocab.load(tmp_path / "vocab.json") == vocab
    dst = tmp_path / "dst"
    assert remap_dataset(src, dst, vocab) == 6
    info = read_index(dst)
    assert not info.errors and list(info.sequence_lengths) == [2, 4] and list(info.document_indices) == [0, 1, 2]
    assert vocab.to_qwen3(dataset_ids(dst)) == tokens.tolist()
    assert dataset_ids(str(dst) + "_loss_mask").tolist() == [0, 0, 1, 1, 1, 0]


CALL = "<think>\nx\n</think>\n\n<tool_call>\n{body}\n</tool_call>"


@pytest.mark.parametrize(
    "text,kind",
    [
        (CALL.format(body='{"name": "search", "arguments": {"query": ["alexander nevsky"]}}'), "valid_call"),
        (CALL.format(body='{"name": "visit", "arguments": {"url": ["https://x"], "goal": "g"}}'), "valid_call"),
        (CALL.format(body='{"name": "search", "arguments": {"query": "one string"}}'), "valid_call"),
        (CALL.format(body='{"name": "search", "arguments": {"query": [}}'), "invalid_call"),
        (CALL.format(body='{"name": "browse", "arguments": {"query": ["x"]}}'), "invalid_call"),
        (CALL.format(body='{"name": "visit", "arguments": {"goal": "no url"}}'), "invalid_call"),
        (CALL.format(body='{"name": "search", "arguments": {"query": [""]}}'), "invalid_call"),
        ("<think>\nI know it.\n</think>\n\n<answer>Alexander Nevsky</answer>", "answer"),
        ("<think>\nhmm the the the", "no_action"),
        ("", "no_action"),
    ],
)
def test_classify_turn(text: str, kind: str):
    assert classify_turn(text) == kind


def test_agent_metrics_rates():
    m = AgentMetrics(questions=4, correct=1)
    assert m.tool_call_valid_rate == 0.0 and m.answer_accuracy == 0.25
    m.turns.update(valid_call=3, invalid_call=1, no_action=2, answer=5)
    assert m.tool_call_valid_rate == pytest.approx(0.5)
    assert m.as_dict()["tool_call_valid_rate"] == pytest.approx(0.5)


def test_config_file_overrides_preset_and_names_bad_fields(tmp_path: Path):
    good = tmp_path / "c.yaml"
    good.write_text("preset: full\nsft: {iters: 5}\nseeds: [4, 5, 6]\nmodel: {vocab: qwen3}\n", encoding="utf-8")
    cfg = load_experiment_config(None, str(good))
    assert (
        cfg.name == "full"
        and cfg.sft.iters == 5
        and cfg.sft.seq_length == PRESETS["full"]["sft"]["seq_length"]
        and cfg.seeds == [4, 5, 6]
    )
    assert cfg.model.vocab == "qwen3"
    assert cfg.arm_tokens("fas_has_2x") == 2 * cfg.arm_tokens("fas_has") == 2 * cfg.arm_tokens("non_cpt")
    assert load_experiment_config("small", None).fingerprint() != cfg.fingerprint()
    bad = tmp_path / "b.yaml"
    bad.write_text("sft: {iterations: 5}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="iterations"):
        load_experiment_config("small", str(bad))
    with pytest.raises(ValueError, match="unknown experiment preset"):
        load_experiment_config("huge", None)


def _fake_workdir(root: Path) -> DemoContext:
    """The files the report reads, as the steps write them (numbers made up; only the schema is tested)."""
    cfg = load_experiment_config("small", None)
    ctx = DemoContext(workdir=root, config=cfg)
    rng = np.random.default_rng(0)
    for arm in ARMS:
        for seed in cfg.seeds:
            d = ctx.path("train", "sft", arm, f"seed{seed}")
            d.mkdir(parents=True)
            loss = [8.0 - 0.1 * i + rng.random() * 0.01 for i in range(cfg.sft.iters)]
            lines = [{"step": i + 1, "loss": v} for i, v in enumerate(loss)]
            lines.append({"step": cfg.sft.iters, "eval": {"heldout_sft": loss[-1] + 0.2}})
            (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
            (d / "summary.json").write_text(json.dumps({"eval": {"heldout_sft": loss[-1] + 0.2}}), encoding="utf-8")
            m = AgentMetrics(questions=4, correct=seed % 2)
            m.turns.update(valid_call=seed, no_action=1, answer=2)
            (d / "agent.json").write_text(json.dumps(m.as_dict()), encoding="utf-8")
    ctx.path("checks").mkdir()
    ctx.path("checks", "disjoint.json").write_text(
        json.dumps({"passed": True, "documents": 200, "questions": 60, "tool_response_urls": 90, "cpt_texts": 400})
    )
    ctx.path("tokens", "qwen3").mkdir(parents=True)
    for name in ("sft", "heldout_sft"):
        ctx.path("tokens", "qwen3", f"{name}.sft.json").write_text(
            json.dumps({"conversations": 10, "tokens": 9000, "loss_tokens": 1200})
        )
    ctx.path("state").mkdir()
    ctx.path("state", "vocab.done").write_text(json.dumps({"seconds": 0.1, "info": {"vocab": "compact", "kept": 5000,
                                                                                    "padded": 5120}}))  # fmt: skip
    return ctx


def test_report_schema_and_plot(tmp_path: Path):
    from megatron_agentic.experiment.report import REPORT_KEYS, write_report

    ctx = _fake_workdir(tmp_path / "w")
    with open(tmp_path / "log", "w", encoding="utf-8") as log:
        write_report(ctx, log)
    arms = json.loads(ctx.path("report.json").read_text(encoding="utf-8"))["arms"]
    assert [a["name"] for a in arms] == list(ARMS)
    for arm in arms:
        assert set(REPORT_KEYS) <= set(arm)
        assert math.isfinite(arm["sft_loss_mean"]) and arm["sft_loss_std"] >= 0 and len(arm["seeds"]) == 3
        assert 0 <= arm["tool_call_valid_rate"] <= 1 and 0 <= arm["answer_accuracy"] <= 1
        assert arm["cpt_tokens"] > 0
    assert arms[0]["answer_accuracy"] == pytest.approx((1 / 4 + 0 + 1 / 4) / 3)  # seeds 1, 2, 3: correct 1, 0, 1
    assert ctx.path("plots", "sft_loss_curves.png").stat().st_size > 1000
    md = ctx.path("report.md").read_text(encoding="utf-8")
    assert "experiment vocabulary" in md and "| fas_has |" in md and "Compared with the paper" in md


def test_data_sft_tools_declares_only_the_named_tools():
    from data_tools.synthesis.serialize import agent_system
    from data_tools.synthesis.sft import react_messages, tool_specs

    record = {
        "question": "Which subject is X?",
        "answer": "X",
        "messages": [
            {"role": "user", "content": "Which subject is X?"},
            {"role": "assistant", "content": "<think>\nknown\n</think>\n\n<answer>X</answer>"},
        ],
        "prediction": "X",
        "termination": "answer",
    }
    full = react_messages(record)[0]["content"]
    short = react_messages(record, tools=["search", "visit"])[0]["content"]
    assert full == agent_system(None) and short == agent_system(None, tool_specs(["search", "visit"]))
    assert '"name": "google_scholar"' in full and '"name": "google_scholar"' not in short
    assert '"name": "search"' in short and '"name": "visit"' in short
    with pytest.raises(ValueError, match="unknown tools"):
        tool_specs(["browse"])
