"""``data mix``: token counts from .idx headers, budgets, epochs, replay, output."""

from __future__ import annotations

import json

import pytest
import yaml

from data_tools.common.atomic import atomic_write_json
from data_tools.indexed import mix


def test_index_stats_match_megatron_reader(make_indexed):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefix = make_indexed("a", [5, 17, 3, 100, 1])
    stats = mix.read_index_stats(prefix)
    ref = IndexedDataset(prefix)
    assert stats.tokens == int(ref.sequence_lengths.sum()) == 126
    assert stats.sequences == len(ref) == 5
    assert stats.documents == len(ref.document_indices) - 1 == 5


def test_index_stats_small_vocab_uint16(make_indexed):
    prefix = make_indexed("u16", [7, 9], vocab=32000)
    assert mix.read_index_stats(prefix).tokens == 16


def test_index_stats_errors_name_file(make_indexed, tmp_path):
    prefix = make_indexed("b", [10, 10])
    with open(f"{prefix}.bin", "ab") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(mix.MixError, match=r"b\.bin: has trailing bytes: 84 bytes, the index describes 80"):
        mix.read_index_stats(prefix)
    bad = tmp_path / "bad"
    (tmp_path / "bad.idx").write_bytes(b"NOTANIDX" + bytes(40))
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(mix.MixError, match=r"bad\.idx: bad magic"):
        mix.read_index_stats(bad)
    with pytest.raises(mix.MixError, match=r"missing\.idx: missing"):
        mix.read_index_stats(tmp_path / "missing")


def _stage1(make_indexed, total=2000.0, **extra):
    sources = [
        mix.Source(type="planning", prefix=make_indexed("plan_a", [100] * 3), name="plan_a"),  # 300 tokens
        mix.Source(type="planning", prefix=make_indexed("plan_b", [100] * 1), name="plan_b"),  # 100 tokens
        mix.Source(type="reasoning", prefix=make_indexed("reason", [50] * 4), name="reason"),  # 200
        mix.Source(type="has", prefix=make_indexed("has", [80] * 5), name="has"),  # 400
        mix.Source(type="general", prefix=make_indexed("math", [60] * 5), name="math"),  # 300
        mix.Source(type="general", prefix=make_indexed("code", [100] * 1), name="code"),  # 100
    ]
    budgets = {"planning": 1100.0, "reasoning": 300.0, "has": 400.0}
    return mix.StageMix(stage="stage1", sources=sources, total_tokens=total, budgets=budgets, **extra)


def test_budgets_split_by_type_then_size(make_indexed):
    result = mix.compute_mix(_stage1(make_indexed))
    targets = {s["name"]: s["target_tokens"] for s in result["sources"]}
    # planning budget split 3:1 by real size; general shares the 200-token rest 3:1.
    assert targets == {"plan_a": 825, "plan_b": 275, "reason": 300, "has": 400, "math": 150, "code": 50}
    assert result["total_tokens"] == 2000
    epochs = {s["name"]: s["epochs"] for s in result["sources"]}
    assert epochs["plan_a"] == pytest.approx(825 / 300)
    assert epochs["has"] == pytest.approx(1.0)
    weights = result["blend"][0::2]
    assert sum(weights) == pytest.approx(1.0)
    assert result["blend"][1::2] == [s["prefix"] for s in result["sources"]]
    assert weights[0] == pytest.approx(825 / 2000)
    assert result["warnings"] == []


def test_paper_defaults_stage1():
    config = mix.StageMix(stage="stage1", sources=[mix.Source(type="general", prefix="x")])
    assert config.total_tokens == 200e9
    assert config.type_budgets() == {"planning": 110e9, "reasoning": 30e9, "has": 40e9}
    stage2 = mix.StageMix(stage="stage2", sources=[mix.Source(type="has", prefix="x")])
    assert stage2.type_budgets() == {"replay": 20e9}
    # a scaled-down run keeps the paper's shares
    small = mix.StageMix(stage="stage1", sources=[mix.Source(type="general", prefix="x")], total_tokens=2e6)
    assert small.type_budgets() == pytest.approx({"planning": 1.1e6, "reasoning": 0.3e6, "has": 0.4e6})


def test_repeat_warning_and_strict(make_indexed):
    config = _stage1(make_indexed, max_epochs=3.0)
    result = mix.compute_mix(config)
    assert result["warnings"] == []  # planning sources repeat 2.75x, under the threshold of 3
    config = _stage1(make_indexed, max_epochs=2.0)
    result = mix.compute_mix(config)
    repeated = [w for w in result["warnings"] if "repeated" in w]
    assert len(repeated) == 2 and "plan_a" in repeated[0] and "plan_b" in repeated[1]
    with pytest.raises(mix.MixError, match=r"plan_a .* repeated 2\.75 times"):
        mix.compute_mix(_stage1(make_indexed, max_epochs=2.0), strict=True)


def test_overcommitted_budget_rejected(make_indexed):
    with pytest.raises(mix.MixError, match="more than total_tokens"):
        mix.compute_mix(_stage1(make_indexed, total=1000.0))


def test_stage2_replay_mirrors_stage1(make_indexed, tmp_path):
    stage1 = mix.compute_mix(_stage1(make_indexed))
    blend1 = tmp_path / "stage1.json"
    atomic_write_json(blend1, stage1, ensure_ascii=True)
    config = tmp_path / "stage2.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "stage": "stage2",
                "total_tokens": 1000,
                "budgets": {"replay": 200},
                "sources": [
                    {"type": "has", "prefix": make_indexed("long_has", [400] * 2), "name": "long_has"},
                    {"type": "tool_use", "prefix": make_indexed("tools", [200]), "name": "tools"},
                    {"type": "replay", "blend_file": "stage1.json"},
                ],
            }
        )
    )
    result = mix.compute_mix(mix.load_stage_config(config), base_dir=tmp_path)
    targets = {s["name"]: s["target_tokens"] for s in result["sources"]}
    assert sum(v for k, v in targets.items() if k.startswith("replay:")) == pytest.approx(200, abs=1)
    assert targets["replay:plan_a"] == pytest.approx(200 * 825 / 2000, abs=1)
    assert targets["long_has"] == pytest.approx(800 * 800 / 1000, abs=1)
    assert targets["tools"] == pytest.approx(800 * 200 / 1000, abs=1)


def test_stage_config_errors_name_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: stage1\nsources:\n  - {type: planing, prefix: x}\n")
    with pytest.raises(mix.MixError, match=r"bad\.yaml: sources\[0\]: type must be one of"):
        mix.load_stage_config(path)
    path.write_text("stage: stage1\nsources: [{type: general, prefix: x}]\ntotal_tokenz: 5\n")
    with pytest.raises(mix.MixError, match=r"unknown field\(s\) \['total_tokenz'\]"):
        mix.load_stage_config(path)


def test_cli_writes_blend_read_by_training_config(make_indexed, tmp_path, capsys):
    from megatron_agentic.config import load_blend_file, parse_blend

    a, b = make_indexed("ga", [100] * 3), make_indexed("gb", [100])
    out = tmp_path / "blends" / "mix.json"
    rc = mix.main(
        [
            "--source",
            f"general:{a}",
            "--source",
            f"general:{b}",
            "--total-tokens",
            "800",
            "--output",
            str(out),
            "--global-batch-size",
            "2",
            "--seq-length",
            "64",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    prefixes, weights = parse_blend(load_blend_file(str(out)))
    assert prefixes == [a, b]
    assert weights == pytest.approx([0.75, 0.25])
    assert data["iterations"] == 7  # ceil(800 / 128)
    assert "iterations = 800 / (2 x 64) = 7" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["mix.json"]  # no temp files left
    assert mix.main(["--source", "general:" + str(tmp_path / "nope"), "--output", str(out)]) == 2
    assert json.loads(out.read_text()) == data  # failed run left the old blend intact


def test_iterations_for():
    assert mix.iterations_for(200e9, 128, 32768) == 47684
    assert mix.iterations_for(128 * 32768, 128, 32768) == 1


def test_scaled_run_keeps_paper_shares_and_moves_missing_types(make_indexed, tmp_path):
    plan, general = make_indexed("p", [100] * 4), make_indexed("g", [100] * 8)
    out = tmp_path / "b.json"
    rc = mix.main(
        [
            "--source",
            f"planning:{plan}",
            "--source",
            f"general:{general}",
            "--total-tokens",
            "1000",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    targets = {s["type"]: s["target_tokens"] for s in data["sources"]}
    assert targets == {"planning": 550, "general": 450}  # 55% planning; reasoning/HAS shares go to the rest
    assert sum("no reasoning sources" in w or "no has sources" in w for w in data["warnings"]) == 2
