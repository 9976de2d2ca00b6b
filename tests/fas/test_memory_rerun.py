"""``data memory`` reruns: a finished output with the same settings is "already done" (no file changes, the
original figures reported); other settings exit 2 naming each; a replaced output or an old summary is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.synthesis.memory import main as memory_main


def _corpus(path: Path) -> Path:
    docs = [
        {"title": "Alpha", "text": "Alpha is a city in Beta. Alpha was founded in 1901 by settlers from Gamma."},
        {"title": "Beta", "text": "Beta is a country. Beta borders Gamma and its capital is Alpha since 1920."},
        {"title": "Gamma", "text": "Gamma is a country next to Beta. Gamma exports coal to Beta and to Alpha."},
    ]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.parent.iterdir()) if not p.name.endswith(".lock")}


def test_rerun_with_same_settings_changes_nothing_and_reports_original_figures(tmp_path, capsys):
    out = tmp_path / "memory.jsonl"
    assert memory_main(["--builtin-wiki", "--limit", "40", "--output", str(out)]) == 0
    first_line = capsys.readouterr().out.strip()
    before = _files(out)
    summary = json.loads(before["memory.jsonl.summary.json"])
    assert summary["entities"] == len(out.read_text().splitlines()) > 0
    assert summary["settings"]["limit"] == 40 and summary["settings"]["backend"] == "heuristic"
    assert memory_main(["--builtin-wiki", "--limit", "40", "--output", str(out)]) == 0
    again = capsys.readouterr().out.strip()
    assert "already done" in again
    assert again.split("already done (nothing to do): ")[1] == first_line.split("memory: ")[1]  # same figures
    assert _files(out) == before  # the summary keeps its original `seconds`, the output is untouched


@pytest.mark.parametrize(
    "change, message",
    [
        (["--limit", "2"], "limit: null there, 2 now"),
        (["--min-statements", "1"], "min_statements: 2 there, 1 now"),
        (["--text-key", "body"], 'text_key: "text" there, "body" now'),
    ],
)
def test_rerun_with_other_settings_exits_2_naming_them(tmp_path, capsys, change, message):
    corpus = _corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out" / "memory.jsonl"
    out.parent.mkdir()
    assert memory_main(["--input", str(corpus), "--output", str(out)]) == 0
    before = _files(out)
    capsys.readouterr()
    assert memory_main(["--input", str(corpus), "--output", str(out), *change]) == 2
    err = capsys.readouterr().err
    assert message in err and "other settings" in err and str(out) in err
    assert _files(out) == before


def test_changed_input_file_is_another_setting(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out" / "memory.jsonl"
    out.parent.mkdir()
    assert memory_main(["--input", str(corpus), "--output", str(out)]) == 0
    with corpus.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"title": "Delta", "text": "Delta is a river in Gamma that flows into Beta."}) + "\n")
    capsys.readouterr()
    assert memory_main(["--input", str(corpus), "--output", str(out)]) == 2
    assert "input_bytes" in capsys.readouterr().err


def test_replaced_output_or_old_summary_is_rebuilt(tmp_path, capsys):
    out = tmp_path / "memory.jsonl"
    args = ["--builtin-wiki", "--limit", "30", "--output", str(out)]
    assert memory_main(args) == 0
    good = out.read_bytes()
    out.write_text("")  # truncated after the summary was written
    assert memory_main(args) == 0
    assert "already done" not in capsys.readouterr().out and out.read_bytes() == good
    summary_path = tmp_path / "memory.jsonl.summary.json"
    old = json.loads(summary_path.read_text())
    del old["settings"]  # summary of an older version: no settings to compare
    summary_path.write_text(json.dumps(old))
    capsys.readouterr()
    assert memory_main(args) == 0
    assert "already done" not in capsys.readouterr().out
    assert "settings" in json.loads(summary_path.read_text()) and out.read_bytes() == good
