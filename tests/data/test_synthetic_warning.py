"""Template-backend synthesis (``synthetic_template: true``) is flagged by ``data tokenize`` and ``data mix``."""

from __future__ import annotations

import json
import logging

from data_tools.indexed import mix
from data_tools.indexed.provenance import synthetic_template_records, tokenized_synthetic_inputs
from data_tools.indexed.tokenize_dataset import tokenize_to_indexed


def _write(path, flag: bool, n: int = 6):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {"id": f"r{i}", "text": f"sample number {i} " * 5, "provenance": {"synthetic_template": flag}}
            f.write(json.dumps(rec) + "\n")
    return path


def test_tokenize_and_mix_warn_about_template_data(tmp_path, caplog):
    tmpl = _write(tmp_path / "planning.jsonl", True)
    real = _write(tmp_path / "real.jsonl", False)
    assert synthetic_template_records(tmpl) == 6 and synthetic_template_records(real) == 0
    with caplog.at_level(logging.WARNING, logger="data_tools.indexed.tokenize_dataset"):
        tokenize_to_indexed(tmpl, tmp_path / "fas", "qwen3", ["text"], append_eod=True, workers=1)
    assert any("template-backend" in r.getMessage() and "planning.jsonl" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp_path / "fas.tokenize.json").read_text())
    assert summary["synthetic_template_inputs"] == [str(tmpl)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data_tools.indexed.tokenize_dataset"):
        tokenize_to_indexed(real, tmp_path / "gen", "qwen3", ["text"], append_eod=True, workers=1)
    assert not [r for r in caplog.records if "template-backend" in r.getMessage()]
    assert tokenized_synthetic_inputs(str(tmp_path / "gen_text_document")) == []

    config = mix.StageMix(
        stage="stage1",
        total_tokens=1e6,
        sources=[
            mix.Source(type="planning", prefix=str(tmp_path / "fas_text_document")),
            mix.Source(type="general", prefix=str(tmp_path / "gen_text_document")),
        ],
    )
    warnings = mix.compute_mix(config)["warnings"]
    flagged = [w for w in warnings if "template-backend" in w]
    assert len(flagged) == 1 and "fas_text_document" in flagged[0] and "gen_text_document" not in flagged[0]
