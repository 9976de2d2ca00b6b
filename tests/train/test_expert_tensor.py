"""``parallel.expert_tensor`` reaches megatron-core's parallel state (2 gloo ranks, TP=2).

megatron-core's ``initialize_model_parallel`` defaults ``expert_tensor_parallel_size`` to the TP size; the config's
value must be passed or experts are silently split like dense layers. Checked on the built model (ETP=1: every
rank holds whole experts; ETP=2: each rank half of each expert's FFN) and in training: ETP=1 and ETP=2 train to
the same losses (the same model and data; only the experts' partitioning differs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import zygote
from tests.support.zygote import run_command
from tests.train.launch import train_argv
from tests.train.te_harness import REPO, subprocess_env

CONFIG = REPO / "examples/configs/tiny_moe.yaml"
COMMON = [
    *("--set", "model.num_layers=2", "--set", "model.vocab_size=512", "--set", "train.seq_length=32"),
    *("--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2", "--set", "log.tensorboard=false"),
    *("--set", "parallel.tensor=2", "--set", "train.iters=3"),
]


EXPERT_SHAPES = """
import json, os, sys
from pathlib import Path

from megatron.core import parallel_state

from megatron_agentic.config import load_config
from megatron_agentic.models.qwen3_moe.model import build_model
from megatron_agentic.platform import detect_platform, setup_platform
from megatron_agentic.training.builders import init_distributed, teardown_distributed

etp, out_dir = int(sys.argv[1]), sys.argv[2]
overrides = ["model.preset=tiny-moe", "model.num_layers=1", "model.vocab_size=512", "parallel.tensor=2"]
cfg = load_config(None, [*overrides, f"parallel.expert_tensor={etp}", "train.seq_length=32"])
setup_platform(int(os.environ["RANK"]))  # the CPU redirections (inactive on CUDA)
init_distributed(cfg, detect_platform())
model = build_model(cfg)
shapes = {name: list(p.shape) for name, p in model.named_parameters() if "local_experts.0.linear_fc" in name}
shapes["etp_world"] = [parallel_state.get_expert_tensor_parallel_world_size()]
Path(out_dir, f"rank{os.environ['RANK']}.json").write_text(json.dumps(shapes))
teardown_distributed()
"""
"""On each of 2 ranks: build the model through ``init_distributed`` + ``build_model``; write local expert shapes."""


@pytest.mark.slow
@pytest.mark.parametrize("etp", [1, 2])
def test_expert_tensor_size_reaches_the_parallel_state(etp, tmp_path):
    out = zygote.run([EXPERT_SHAPES, str(etp), str(tmp_path)], module="-c", nproc=2, env=subprocess_env())
    assert out.returncode == 0, out.stderr[-4000:]
    ffn, hidden = 64, 64  # tiny-moe moe_ffn_hidden_size, hidden_size
    for rank in range(2):
        shapes = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert shapes["etp_world"] == [etp]
        assert shapes["decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.weight"] == [2 * ffn // etp, hidden]
        assert shapes["decoder.layers.0.mlp.experts.local_experts.0.linear_fc2.weight"] == [hidden, ffn // etp]


def _losses(etp: int, root: Path) -> list[float]:
    args = ["--config", str(CONFIG), *COMMON, "--set", f"parallel.expert_tensor={etp}", "--set", f"log.dir={root}"]
    out = run_command(train_argv(args, nproc=2), cwd=REPO, env=subprocess_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["loss"] for r in records if "loss" in r and "step" in r]


@pytest.mark.slow
def test_etp1_and_etp2_train_to_the_same_losses(tmp_path):
    whole, split = _losses(1, tmp_path / "etp1"), _losses(2, tmp_path / "etp2")
    assert len(whole) == len(split) == 3
    assert whole == pytest.approx(split, rel=1e-4, abs=1e-5)
    assert whole[-1] < whole[0]  # it trains
