"""``megatron-agentic experiment --preset small`` end to end: report schema and sanity, the plot, a rerun skips
every step. No ordering of the arms is asserted (that would be tuning the experiment to the paper)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_agentic.experiment.config import ARMS
from megatron_agentic.experiment.report import REPORT_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]


def _run(workdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "megatron_agentic", "experiment", "--preset", "small", "--workdir", str(workdir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1100, cwd=REPO)


def test_small_preset_end_to_end_and_rerun_skips_everything(tmp_path: Path):
    workdir = tmp_path / "exp"
    first = _run(workdir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text(encoding="utf-8"))
    arms = {a["name"]: a for a in report["arms"]}
    assert set(arms) == set(ARMS)
    for arm in arms.values():
        assert set(REPORT_KEYS) <= set(arm)
        assert math.isfinite(arm["sft_loss_mean"]) and 0 < arm["sft_loss_mean"] < 20
        assert math.isfinite(arm["sft_loss_std"]) and arm["sft_loss_std"] >= 0
        assert len(arm["seeds"]) >= 3 and len(arm["sft_losses"]) == len(arm["seeds"])
        assert 0.0 <= arm["tool_call_valid_rate"] <= 1.0 and 0.0 <= arm["answer_accuracy"] <= 1.0
        assert sum(arm["turns"].values()) >= arm["agent_questions"] * len(arm["seeds"])  # every question got a turn
        assert len(arm["curves"]) == len(arm["seeds"])
    # same CPT budget for the data-type arms; the scaling arms at 0.5x / 2x
    assert arms["non_cpt"]["cpt_tokens"] == arms["fas"]["cpt_tokens"] == arms["fas_has"]["cpt_tokens"]
    assert arms["fas_has_0.5x"]["cpt_tokens"] < arms["fas_has"]["cpt_tokens"] < arms["fas_has_2x"]["cpt_tokens"]
    assert report["disjoint"]["passed"] is True and report["disjoint"]["questions"] > 0
    assert (workdir / "plots" / "sft_loss_curves.png").stat().st_size > 1000
    md = (workdir / "report.md").read_text(encoding="utf-8")
    assert "Compared with the paper" in md and "experiment vocabulary" in md
    # the seeds really differ (data order), and every SFT run saw the held-out set
    assert any(len(set(a["sft_losses"])) > 1 for a in arms.values())

    before = {p.name: p.stat().st_mtime_ns for p in (workdir / "state").glob("*.done")}
    second = _run(workdir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"({0} run, {len(before)} reused)" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (workdir / "state").glob("*.done")} == before
