"""``data fas`` output directories: a settings fingerprint (resume only with the same settings), "already done",
``llm.usage`` and ``--extra-body`` on the openai backend, and a non-zero exit when no memory item is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.common.jsonl import read_jsonl
from data_tools.synthesis.common.settings import SettingsMismatch, claim_settings
from data_tools.synthesis.fas.cli import main as fas_main
from data_tools.synthesis.fas.scripted import FasResponder
from data_tools.synthesis.llm.fake_server import FakeLLMServer


def _fas(memory, out, *extra):
    return fas_main(["--memory", memory, "--output-dir", str(out), "--max-items", "6", *extra])


@pytest.mark.parametrize(
    "change, name",
    [(["-k", "1"], "questions_per_memory"), (["--seed", "5"], "seed"), (["--dedup-threshold", "0.5"], "dedup")],
)
def test_resume_with_other_settings_exits_2_naming_them(wiki_memory, tmp_path, capsys, change, name):
    assert _fas(wiki_memory, tmp_path, "-k", "3") == 0
    before = {n: (tmp_path / n).read_bytes() for n in ("planning.jsonl", "summary.json", "settings.json")}
    capsys.readouterr()
    assert _fas(wiki_memory, tmp_path, "-k", "3", *change) == 2
    err = capsys.readouterr().err
    assert name in err and "other settings" in err
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # nothing touched


def test_both_differences_are_named(wiki_memory, tmp_path, capsys):
    assert _fas(wiki_memory, tmp_path, "-k", "1") == 0
    capsys.readouterr()
    assert _fas(wiki_memory, tmp_path, "-k", "3", "--seed", "5") == 2
    err = capsys.readouterr().err
    assert "questions_per_memory: 1 there, 3 now" in err and "seed: 0 there, 5 now" in err


def test_same_settings_finished_is_already_done_with_original_counts(wiki_memory, tmp_path, capsys):
    assert _fas(wiki_memory, tmp_path, "-k", "2") == 0
    first = json.loads((tmp_path / "summary.json").read_text())
    capsys.readouterr()
    assert _fas(wiki_memory, tmp_path, "-k", "2") == 0
    assert "already done" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text()) == first
    assert len(read_jsonl(tmp_path / "runs.jsonl")) == 1
    # a larger item limit is more work with the same settings: it resumes
    assert fas_main(["--memory", wiki_memory, "--output-dir", str(tmp_path), "-k", "2", "--max-items", "9"]) == 0
    after = json.loads((tmp_path / "summary.json").read_text())
    assert after["counts"]["memory_items"] == 9 and after["this_run"]["resumed_items"] == 6


def test_claim_settings_round_trip(tmp_path):
    assert claim_settings(tmp_path, {"a": (1, 2), "b": None}) is False
    assert claim_settings(tmp_path, {"a": [1, 2], "b": None}) is True
    with pytest.raises(SettingsMismatch) as exc:
        claim_settings(tmp_path, {"a": [1, 2], "c": 3})
    assert set(exc.value.diffs) == {"c"}


def test_no_valid_memory_item_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "memory.jsonl"
    bad.write_text('{"id": 1}\nnot json\n', encoding="utf-8")
    assert fas_main(["--memory", str(bad), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no valid memory item" in err and "missing_field 1" in err and "invalid_json 1" in err


def test_openai_summary_has_usage_and_extra_body_reaches_every_request(wiki_memory, tmp_path):
    server = FakeLLMServer(FasResponder())
    extra = '{"chat_template_kwargs": {"enable_thinking": false}, "top_k": 20}'
    with server as url:
        rc = _fas(wiki_memory, tmp_path, "-k", "2", "--backend", "openai", "--llm-url", url, "--extra-body", extra)
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    usage = summary["llm"]["usage"]
    assert len(server.requests) == summary["llm"]["http_requests"] > 0
    assert usage["prompt_tokens"] == sum(
        sum(len(str(m["content"]).split()) for m in b["messages"]) for b in server.requests
    )
    assert usage["completion_tokens"] > 0 and summary["llm_all_runs"]["usage"] == usage
    for body in server.requests:
        assert body["chat_template_kwargs"] == {"enable_thinking": False} and body["top_k"] == 20
    assert json.loads((tmp_path / "settings.json").read_text())["extra_body"]["top_k"] == 20


def test_bad_extra_body_is_a_usage_error(wiki_memory, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _fas(wiki_memory, tmp_path, "--extra-body", "[1, 2]")
    assert exc.value.code == 2 and "JSON object" in capsys.readouterr().err
    assert not Path(tmp_path / "settings.json").exists()
