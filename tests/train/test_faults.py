"""The test-fault module: every switch is off by default, each query parses its switch, unknown names fail."""

from __future__ import annotations

import pytest

from megatron_agentic.testing import faults


def test_everything_off_by_default(monkeypatch):
    for name in faults.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert not any(faults.active(name) for name in [*faults.ENVIRONMENT, *faults.FORCED])
    assert faults.save_pause_seconds(8) is None and faults.sample_log_path() is None and not faults.nan_grad(0, 1)


def test_save_pause_and_sample_log(monkeypatch, tmp_path):
    monkeypatch.setenv(faults.SAVE_PAUSE, "sleep:120@8")
    assert faults.save_pause_seconds(8) == 120.0 and faults.save_pause_seconds(4) is None
    monkeypatch.setenv(faults.SAVE_PAUSE, "sleep:0.5")
    assert faults.save_pause_seconds(3) == 0.5 and faults.active(faults.SAVE_PAUSE)
    monkeypatch.setenv(faults.SAMPLE_LOG, str(tmp_path / "s.jsonl"))
    assert faults.sample_log_path() == tmp_path / "s.jsonl"


def test_in_process_switch_is_scoped():
    assert not faults.active(faults.GPU_TILE_CONFIGS)
    with faults.forced(faults.GPU_TILE_CONFIGS):
        assert faults.active(faults.GPU_TILE_CONFIGS)
    assert not faults.active(faults.GPU_TILE_CONFIGS)
    with pytest.raises(KeyError, match="unknown test fault 'nope'"):
        faults.active("nope")
    with pytest.raises(KeyError, match="not an in-process test fault"):
        with faults.forced(faults.NAN_GRAD):
            pass
