"""Checkpoint key layout: every checkpoint the project writes has megatron-core 0.16.1's TE-spec keys.

The golden table ``golden_te_keys.json`` was written by hand from megatron-core 0.16.1's
``megatron/core/models/gpt/gpt_layer_specs.py::get_gpt_layer_with_transformer_engine_spec`` (module structure
of a MoE layer: ``TELayerNormColumnParallelLinear`` for ``linear_qkv``, ``TENorm`` for the q/k norms and
``pre_mlp_layernorm``, ``TopKRouter``, ``TEGroupedMLP``) and ``transformer/moe/experts.py::TEGroupedMLP.
sharded_state_dict`` (expert keys), not dumped from the project's model. Checked against it:

- the CPU model's sharded state dict (``tiny-moe``; ``qwen3-30b-a3b`` at 2 layers on the meta device);
- the TE-spec model itself, when Transformer Engine and CUDA are present (skipped otherwise);
- a checkpoint written by a short training run (model and optimizer keys);
- a checkpoint written by ``megatron-agentic convert hf-to-mcore`` (the CLI, EP=2 save layout).

And a checkpoint in the legacy layout (``mlp.linear_fc1.layer_norm_weight`` in MoE layers, written by the
training CLI with the old keys map) is detected, loaded with exactly its stored weights, resumed exactly like
an uninterrupted run, and saved again in the TE layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from megatron_agentic.models.qwen3_moe import checkpoint_keys
from megatron_agentic.models.qwen3_moe.presets import get_preset
from tests.support.zygote import run_command

REPO = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).parent / "golden_te_keys.json").read_text())["presets"]
WORKER = Path(__file__).parent / "layout_worker.py"
VOCAB = 512
TRAIN = [
    "--config",
    str(REPO / "examples/configs/tiny_moe.yaml"),
    *("--set", "model.num_layers=2", "--set", f"model.vocab_size={VOCAB}", "--set", "train.seq_length=32"),
    *("--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2", "--set", "log.tensorboard=false"),
    *("--set", "train.iters=4", "--set", "checkpoint.interval=2"),
    # the per-key optimizer format, whose state keys follow the model keys (the dp_reshardable default stores flat
    # per-rank buffers instead)
    *("--set", "checkpoint.optimizer_format=fully_reshardable"),
]
LEGACY_TRAIN = (
    "import sys\n"
    "import megatron_agentic.models.qwen3_moe.checkpoint_keys as L\n"
    "L.LAYER_KEYS_MAP = dict(L.LEGACY_LAYER_KEYS_MAP)  # the keys map the CPU spec had before the TE layout\n"
    "from megatron_agentic.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def golden(preset: str, num_layers: int | None = None, vocab_size: int | None = None) -> dict[str, list[int]]:
    """The golden table of ``preset`` for a model cut to ``num_layers`` layers / ``vocab_size`` tokens."""
    table = GOLDEN[preset]
    out = {}
    for key, shape in table["tensors"].items():
        shape = list(shape)
        if key.startswith("decoder.layers.") and num_layers is not None:
            shape[0] = num_layers
        if key in ("embedding.word_embeddings.weight", "output_layer.weight") and vocab_size is not None:
            shape[0] = vocab_size
        out[key] = shape
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _run(cmd: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    out = run_command(cmd, cwd=REPO, env=_env(), timeout=timeout)
    assert out.returncode == 0, f"{cmd[:6]} failed:\n{out.stderr[-4000:]}"
    return out


def _worker_shapes(preset: str, *args: str) -> dict[str, list[int]]:
    out = _run([sys.executable, str(WORKER), preset, *args])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stored_shapes(ckpt_dir: Path) -> dict[str, list[int]]:
    from megatron.core import dist_checkpointing

    return {k: list(v.global_shape) for k, v in dist_checkpointing.load_tensors_metadata(str(ckpt_dir)).items()}


def _losses(log_dir: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.parametrize("preset", sorted(GOLDEN))
def test_golden_table_counts_every_parameter(preset):
    # The table's shapes add up to the preset's parameter count (an independent, hand-written formula).
    arch = get_preset(preset)
    table = golden(preset)
    assert GOLDEN[preset]["num_layers"] == arch.num_layers and GOLDEN[preset]["vocab_size"] == arch.vocab_size
    assert sum(torch.Size(s).numel() for s in table.values()) == arch.num_parameters()["total"]


@pytest.mark.parametrize(
    ("preset", "num_layers"),
    [("tiny-moe", None), ("qwen3-30b-a3b", 2)],
)
@pytest.mark.slow
def test_cpu_model_sharded_state_dict_matches_golden(preset, num_layers):
    args = ["--meta"] + (["--set", f"model.num_layers={num_layers}"] if num_layers else [])
    assert _worker_shapes(preset, *args) == golden(preset, num_layers)


def _te_usable() -> bool:
    from megatron_agentic.platform import has_transformer_engine

    return torch.cuda.is_available() and has_transformer_engine()


@pytest.mark.skipif(not _te_usable(), reason="needs Transformer Engine and a CUDA GPU")
@pytest.mark.parametrize(("preset", "num_layers"), [("tiny-moe", None), ("qwen3-30b-a3b", 2)])
def test_te_spec_model_matches_golden(preset, num_layers):
    args = ["--te"] + (["--set", f"model.num_layers={num_layers}"] if num_layers else [])
    assert _worker_shapes(preset, *args) == golden(preset, num_layers)


def test_legacy_key_map_helpers():
    old, new = "decoder.layers.mlp.linear_fc1.layer_norm_weight", "decoder.layers.pre_mlp_layernorm.weight"
    assert checkpoint_keys.te_key(old) == new
    assert checkpoint_keys.te_key("optimizer.state.exp_avg." + old) == "optimizer.state.exp_avg." + new
    assert checkpoint_keys.te_key("decoder.layers.self_attention.linear_qkv.layer_norm_weight").endswith(
        "qkv.layer_norm_weight"
    )
    te_keys = set(golden("tiny-moe"))
    assert not checkpoint_keys.is_legacy_keys(te_keys)
    assert checkpoint_keys.is_legacy_keys({checkpoint_keys.te_key(k) if k != new else old for k in te_keys})


@pytest.fixture(scope="module")
def runs():
    """Short training runs (1 rank, tiny-moe cut to 2 layers, vocab 512, mock data, checkpoints every 2 steps).

    ``ref``: 4 steps in the TE layout. ``legacy``: 2 steps with the pre-change keys map (legacy layout).
    ``resumed``: the new code resumes ``legacy`` at step 2 and trains steps 3-4.
    """
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_layout_"))
    try:
        ref, legacy = root / "ref", root / "legacy"
        base = [sys.executable, "-m", "megatron_agentic", "train", *TRAIN]
        _run([*base, "--set", f"checkpoint.dir={ref}/ckpt", "--set", f"log.dir={ref}/log"])
        # the legacy run stops at step 2 of the same 4-step run (train.exit_interval): a run's sample order is fixed at
        # its first start (training/data_order.py), so it must start with the length the resumed run finishes
        legacy_cmd = [sys.executable, "-c", LEGACY_TRAIN, "train", *TRAIN, "--set", "train.exit_interval=2"]
        _run([*legacy_cmd, "--set", f"checkpoint.dir={legacy}/ckpt", "--set", f"log.dir={legacy}/log"])
        shutil.copytree(legacy / "ckpt", root / "resumed" / "ckpt")
        resumed = _run([*base, "--set", f"checkpoint.dir={root}/resumed/ckpt", "--set", f"log.dir={root}/resumed/log"])
        yield {"root": root, "resumed_stderr": resumed.stderr}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_trained_checkpoint_matches_golden(runs):
    stored = _stored_shapes(runs["root"] / "ref/ckpt/iter_0000004")
    expected = golden("tiny-moe", num_layers=2, vocab_size=VOCAB)
    assert {k: v for k, v in stored.items() if not k.startswith("optimizer.")} == expected
    # the distributed optimizer's state follows the model keys (fully_reshardable: param, exp_avg, exp_avg_sq)
    for state in ("param", "exp_avg", "exp_avg_sq"):
        prefix = f"optimizer.state.{state}."
        assert {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)} == expected


@pytest.mark.slow
def test_legacy_checkpoint_is_detected_and_loads_its_weights(runs, tmp_path):
    ckpt = runs["root"] / "legacy/ckpt/iter_0000002"
    stored = _stored_shapes(ckpt)
    assert "decoder.layers.mlp.linear_fc1.layer_norm_weight" in stored
    assert "decoder.layers.pre_mlp_layernorm.weight" not in stored
    assert checkpoint_keys.detect_legacy_layout(ckpt)
    assert not checkpoint_keys.detect_legacy_layout(runs["root"] / "ref/ckpt/iter_0000002")

    dump = tmp_path / "loaded.pt"
    _run([sys.executable, str(WORKER), "tiny-moe", "--set", "model.num_layers=2", "--set", f"model.vocab_size={VOCAB}",
          "--load", str(ckpt), "--dump", str(dump)])  # fmt: skip
    data = torch.load(dump)
    model, raw = data["model"], data["raw"]
    # Each module parameter against the tensor stored under its legacy checkpoint key (layer / expert slice).
    legacy_names = {"input_layernorm.": "self_attention.linear_qkv.layer_norm_", "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}  # fmt: skip
    checked = 0
    for name, tensor in model.items():
        m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", name)
        if m is None:
            expected = raw[name]
        else:
            layer, rest = int(m.group(1)), m.group(2)
            for old, new in legacy_names.items():
                rest = rest.replace(old, new) if rest.startswith(old) else rest
            e = re.fullmatch(r"mlp\.experts\.local_experts\.(\d+)\.(.+)", rest)
            if e is None:
                expected = raw[f"decoder.layers.{rest}"][layer]
            else:
                expected = raw[f"decoder.layers.mlp.experts.experts.{e.group(2)}"][layer, int(e.group(1))]
        assert torch.equal(tensor, expected), name
        checked += 1
    assert checked == len(model) == 2 * (7 + 2 * 4) + 3


@pytest.mark.slow
def test_legacy_checkpoint_resumes_exactly_and_is_saved_in_te_layout(runs):
    root = runs["root"]
    lines = [x for x in runs["resumed_stderr"].splitlines() if "legacy checkpoint layout" in x]
    assert len(lines) == 1, runs["resumed_stderr"][-3000:]
    ref, legacy, resumed = (_losses(root / name / "log") for name in ("ref", "legacy", "resumed"))
    assert sorted(ref) == [1, 2, 3, 4] and sorted(legacy) == [1, 2]
    assert [legacy[s] for s in (1, 2)] == [ref[s] for s in (1, 2)]
    # steps 3-4 after loading the legacy checkpoint (model + optimizer + scheduler) equal the uninterrupted run
    assert [resumed[s] for s in (3, 4)] == [ref[s] for s in (3, 4)]
    new = root / "resumed/ckpt/iter_0000004"
    assert not checkpoint_keys.detect_legacy_layout(new)
    assert {k: v for k, v in _stored_shapes(new).items() if not k.startswith("optimizer.")} == golden(
        "tiny-moe", 2, VOCAB
    )


def _tiny_hf_checkpoint(path: Path) -> None:
    """A random Qwen3MoeForCausalLM with tiny-moe's shapes (2 layers, vocab 512) in the Hub format."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    arch = get_preset("tiny-moe")
    config = Qwen3MoeConfig(
        vocab_size=VOCAB,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        moe_intermediate_size=arch.moe_ffn_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.kv_channels,
        num_experts=arch.num_experts,
        num_experts_per_tok=arch.moe_router_topk,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        tie_word_embeddings=False,
        rms_norm_eps=arch.norm_epsilon,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(config).save_pretrained(path)


@pytest.mark.slow
def test_converted_checkpoint_matches_golden(tmp_path):
    _tiny_hf_checkpoint(tmp_path / "hf")
    out = tmp_path / "mcore"
    cmd = [sys.executable, "-m", "megatron_agentic", "convert", "hf-to-mcore", "--hf-dir", str(tmp_path / "hf")]
    _run([*cmd, "--output", str(out), "--ep", "2", "--dtype", "fp32"])
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    stored = _stored_shapes(out / "iter_0000000")
    assert stored == golden("tiny-moe", num_layers=2, vocab_size=VOCAB)
    assert not any("linear_fc1.layer_norm" in k for k in stored)
