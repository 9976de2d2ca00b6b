"""``parallel.expert_tensor`` reaches megatron-core's parallel state (2 gloo ranks, TP=2).

megatron-core's ``initialize_model_parallel`` defaults ``expert_tensor_parallel_size`` to the TP size; the config's
value must be passed or experts are silently split like dense layers. Checked on the built model (ETP=1: every
rank holds whole experts; ETP=2: each rank half of each expert's FFN) and in training: ETP=1 and ETP=2 train to
the same losses (the same model and data; only the experts' partitioning differs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.train.launch import train_argv
from tests.train.te_harness import REPO, subprocess_env

CONFIG = REPO / "examples/configs/tiny_moe.yaml"
COMMON = [
    *("--set", "model.num_layers=2", "--set", "model.vocab_size=512", "--set", "train.seq_length=32"),
    *("--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2", "--set", "log.tensorboard=false"),
    *("--set", "parallel.tensor=2", "--set", "train.iters=3"),
]


def expert_shapes(rank: int, world: int, etp: int, out_dir: str) -> None:
    """On each rank: build the model through ``init_distributed`` + ``build_model``; write local expert shapes."""
    from megatron.core import parallel_state

    from megatron_agentic.config import load_config
    from megatron_agentic.models.qwen3_moe.model import build_model
    from megatron_agentic.platform import detect_platform
    from megatron_agentic.training.builders import init_distributed

    overrides = ["model.preset=tiny-moe", "model.num_layers=1", "model.vocab_size=512", "parallel.tensor=2"]
    cfg = load_config(None, [*overrides, f"parallel.expert_tensor={etp}", "train.seq_length=32"])
    init_distributed(cfg, detect_platform())
    model = build_model(cfg)
    shapes = {name: list(p.shape) for name, p in model.named_parameters() if "local_experts.0.linear_fc" in name}
    shapes["etp_world"] = [parallel_state.get_expert_tensor_parallel_world_size()]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(shapes))


@pytest.mark.slow
@pytest.mark.parametrize("etp", [1, 2])
def test_expert_tensor_size_reaches_the_parallel_state(etp, tmp_path):
    from megatron_agentic.convert.runtime import run_on_ranks

    run_on_ranks(2, expert_shapes, etp, str(tmp_path))
    ffn, hidden = 64, 64  # tiny-moe moe_ffn_hidden_size, hidden_size
    for rank in range(2):
        shapes = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert shapes["etp_world"] == [etp]
        assert shapes["decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.weight"] == [2 * ffn // etp, hidden]
        assert shapes["decoder.layers.0.mlp.experts.local_experts.0.linear_fc2.weight"] == [hidden, ffn // etp]


def _losses(etp: int, root: Path) -> list[float]:
    args = ["--config", str(CONFIG), *COMMON, "--set", f"parallel.expert_tensor={etp}", "--set", f"log.dir={root}"]
    out = subprocess.run(
        train_argv(args, nproc=2), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["loss"] for r in records if "loss" in r and "step" in r]


@pytest.mark.slow
def test_etp1_and_etp2_train_to_the_same_losses(tmp_path):
    whole, split = _losses(1, tmp_path / "etp1"), _losses(2, tmp_path / "etp2")
    assert len(whole) == len(split) == 3
    assert whole == pytest.approx(split, rel=1e-4, abs=1e-5)
    assert whole[-1] < whole[0]  # it trains
