"""The CPU stand-in recipes mirror the production recipes' parallel layout at 2 ranks: every dimension production
uses (> 1) is used by the stand-in at size 2 (TP with SP, the CP ring, EP), and unused ones stay 1, so the
sbatch ``--dry-run`` exercises the production code paths (the 2-rank training itself runs in the dry-run tests)."""

from __future__ import annotations

import pytest

from megatron_agentic import recipes
from megatron_agentic.config import load_config

STAND_INS = {"tiny-moe-stage1": "qwen3-30b-a3b-stage1", "tiny-moe-stage2": "qwen3-30b-a3b-stage2"}
DIMS = ("tensor", "pipeline", "expert", "context", "expert_tensor")


def _config(name: str, tmp_path):
    out = tmp_path / f"{name}.yaml"
    assert recipes.main(["export", name, "--output", str(out)]) == 0
    return load_config(out)


@pytest.mark.parametrize("tiny, production", sorted(STAND_INS.items()))
def test_stand_in_mirrors_the_production_layout(tiny, production, tmp_path):
    small, big = _config(tiny, tmp_path), _config(production, tmp_path)
    world = 2
    for dim in DIMS:
        want = min(getattr(big.parallel, dim), world)
        assert getattr(small.parallel, dim) == want, f"{tiny}: parallel.{dim} should be {want} ({production} has "
        f"{getattr(big.parallel, dim)})"
    assert (small.model.recompute, small.model.recompute_modules) == (big.model.recompute, big.model.recompute_modules)
    small.validate(world)  # the 2-rank layout is valid (raises otherwise)
    if small.parallel.context > 1:  # the ring needs 2*CP chunks of the sequence
        assert small.train.seq_length % (2 * small.parallel.context) == 0


def test_production_stage2_uses_the_ring(tmp_path):
    """Guard: the test above would pass vacuously if production stopped using CP/EP."""
    big = _config("qwen3-30b-a3b-stage2", tmp_path)
    assert big.parallel.context > 1 and big.parallel.expert > 1
