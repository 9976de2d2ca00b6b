"""Every checkpoint the project writes loads into the real Transformer Engine model (structure, on CPU).

The TE model is megatron-core 0.16.1's ``get_gpt_layer_with_transformer_engine_spec`` built from TE 2.10's own
Python modules (``te_harness.py``: the C++ extension is a stand-in, so structure is real and numerics are not)
through the project's ``build_model``, with the settings ``resolve_settings`` gives a CUDA + TE platform.

- its tensor keys and global shapes equal the hand-written golden table, and every ``ShardedObject`` it requests
  is listed there too (``tiny-moe``; ``qwen3-30b-a3b`` cut to 2 layers, on the meta device);
- ``dist_checkpointing.load`` of its *full* sharded state dict, then ``load_state_dict(strict=True)``, succeeds
  and reads back the stored tensors for: ``convert hf-to-mcore`` output (TP=1; TP=2/EP=2), a checkpoint trained
  by ``megatron-agentic train`` on 2 gloo ranks (TP=2), and a stage-2 checkpoint trained with CP=2 from that one
  as ``checkpoint.pretrained``; a legacy checkpoint (pre-TE keys, no norm extra state) loads through the
  project's ``load_checkpoint``, which initialises only missing ``_extra_state`` objects and refuses a missing
  tensor;
- the reverse: a checkpoint saved from the TE model loads into the CPU model and converts back to the original
  HF tensors, bit for bit at the TE model's bf16.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tests.support import zygote
from tests.train import te_harness
from tests.train.launch import train_argv
from tests.train.test_checkpoint_layout import GOLDEN, TRAIN, VOCAB, _tiny_hf_checkpoint, golden

pytestmark = pytest.mark.slow

REPO = te_harness.REPO
WORKER = Path(__file__).parent / "te_worker.py"
LAYOUT_WORKER = Path(__file__).parent / "layout_worker.py"
TINY = ["--preset", "tiny-moe", "--set", "model.num_layers=2", "--set", f"model.vocab_size={VOCAB}"]
# The CPU spec as it was before the TE layout: old keys map and norms without TE's _extra_state.
LEGACY_TRAIN = (
    "import sys\n"
    "import megatron_agentic.models.qwen3_moe.checkpoint_keys as L\n"
    "import megatron_agentic.models.qwen3_moe.spec as S\n"
    "L.LAYER_KEYS_MAP = dict(L.LEGACY_LAYER_KEYS_MAP)\n"
    "S.ExtraStateRMSNorm = S.SequenceParallelRMSNorm\n"
    "from megatron_agentic.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _run(cmd: list[str], timeout: int = 600, *, real: bool = False) -> subprocess.CompletedProcess:
    """A project command (convert, train, the layout worker) from the pre-imported test launcher; ``real``: a
    process of its own (the TE worker: its own ``sys.path`` with TE's packages and the stand-in extension)."""
    run = subprocess.run if real else zygote.subprocess_run
    out = run(cmd, cwd=REPO, env=te_harness.subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd[:8]))} failed:\n{out.stderr[-4000:]}"
    return out


def _worker(te_dir: Path, *args: str) -> dict:
    out = _run([sys.executable, str(WORKER), str(te_dir), *args], real=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def te_dir() -> Path:
    directory, why = te_harness.ensure_installed()
    if directory is None:
        pytest.skip(why)
    return directory


def _golden_objects(preset: str, num_layers: int | None = None) -> dict[str, list[int]]:
    out = {}
    for key, shape in GOLDEN[preset]["objects"].items():
        shape = list(shape)
        if key.startswith("decoder.layers.") and num_layers is not None:
            shape[0] = num_layers
        out[key] = shape
    return out


@pytest.mark.parametrize(("preset", "num_layers"), [("tiny-moe", None), ("qwen3-30b-a3b", 2)])
def test_te_model_keys_and_objects_equal_golden(te_dir, preset, num_layers):
    args = ["--preset", preset, "--meta"] + (["--set", f"model.num_layers={num_layers}"] if num_layers else [])
    result = _worker(te_dir, *args)
    assert result["te_version"] == te_harness.TE_VERSION
    # the modules are Transformer Engine's own (megatron-core's TE spec, TE 2.10's RMSNorm), not stand-ins
    modules = result["modules"]
    assert modules["decoder.layers.0.self_attention.linear_qkv"].endswith(".TELayerNormColumnParallelLinear")
    assert modules["decoder.layers.0.mlp.experts"].endswith(".TEGroupedMLP")
    for norm in ("self_attention.q_layernorm", "self_attention.k_layernorm", "pre_mlp_layernorm"):
        assert modules[f"decoder.layers.0.{norm}"] == "transformer_engine.pytorch.module.rmsnorm.RMSNorm"
    assert modules["decoder.final_layernorm"] == "transformer_engine.pytorch.module.rmsnorm.RMSNorm"
    # settings that build: no Apex gradient-fusion extension here, fused permutation off under auto
    assert result["settings"] == {"gradient_accumulation_fusion": False, "moe_permute_fusion": False}
    assert result["tensors"] == golden(preset, num_layers)
    assert result["objects"] == _golden_objects(preset, num_layers)


@pytest.fixture(scope="module")
def checkpoints(te_dir):
    """Every checkpoint kind, tiny-moe cut to 2 layers and vocab 512 (one of each, shared by the tests below)."""
    root = Path(tempfile.mkdtemp(prefix="megatron_agentic_te_"))
    try:
        hf = root / "hf"
        _tiny_hf_checkpoint(hf)
        convert = [sys.executable, "-m", "megatron_agentic", "convert", "hf-to-mcore", "--hf-dir", str(hf)]
        _run([*convert, "--output", str(root / "conv_tp1"), "--dtype", "fp32"])
        _run([*convert, "--output", str(root / "conv_tp2ep2"), "--dtype", "fp32", "--tp", "2", "--ep", "2"])
        short = [*TRAIN, "--set", "train.iters=2", "--set", "checkpoint.interval=2"]
        _run(train_argv([*short, "--set", "parallel.tensor=2", "--set", f"checkpoint.dir={root}/trained",
                         "--set", f"log.dir={root}/log_trained"], nproc=2))  # fmt: skip
        _run(train_argv([*short, "--set", "parallel.context=2", "--set", f"checkpoint.dir={root}/stage2",
                         "--set", f"checkpoint.pretrained={root}/trained", "--set", f"log.dir={root}/log_stage2"],
                        nproc=2))  # fmt: skip
        legacy = [sys.executable, "-c", LEGACY_TRAIN, "train", *TRAIN, "--set", "train.iters=1"]
        _run([*legacy, "--set", "checkpoint.interval=1", "--set", f"checkpoint.dir={root}/legacy",
              "--set", f"log.dir={root}/log_legacy"])  # fmt: skip
        paths = {
            "conv_tp1": root / "conv_tp1/iter_0000000",
            "conv_tp2ep2": root / "conv_tp2ep2/iter_0000000",
            "trained": root / "trained/iter_0000002",
            "stage2": root / "stage2/iter_0000002",
            "legacy": root / "legacy/iter_0000001",
        }
        plain = [f"--load={name}={paths[name]}" for name in ("conv_tp1", "conv_tp2ep2", "trained", "stage2")]
        result = _worker(
            te_dir, *TINY, *plain, f"--load=legacy_plain={paths['legacy']}", f"--project-load=legacy={paths['legacy']}",
            "--save-from=conv_tp1", f"--save={root}/te_saved",
        )  # fmt: skip
        yield {"root": root, "hf": hf, "paths": paths, "te": result}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _objects(ckpt: Path) -> set[str]:
    """Base keys of the ShardedObjects stored in a checkpoint (from DCP's metadata: ``key/shard_...``)."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(ckpt)).read_metadata()
    return {k.split("/shard_")[0] for k in metadata.state_dict_metadata if "/shard_" in k}


@pytest.mark.parametrize("kind", ["conv_tp1", "conv_tp2ep2", "trained", "stage2"])
def test_every_checkpoint_kind_holds_every_object_the_te_model_requests(checkpoints, kind):
    requested = set(checkpoints["te"]["objects"])
    assert requested == set(GOLDEN["tiny-moe"]["objects"])
    assert requested <= _objects(checkpoints["paths"][kind])


@pytest.mark.parametrize("kind", ["conv_tp1", "conv_tp2ep2", "trained", "stage2"])
def test_full_te_state_dict_loads_every_checkpoint_kind(checkpoints, kind):
    entry = checkpoints["te"]["loads"][kind]
    assert entry == {"load": "ok", "parameters_match": True}


def test_legacy_checkpoint_loads_into_te_model_through_the_project_loader(checkpoints):
    loads = checkpoints["te"]["loads"]
    # a plain load cannot (old key, no norm extra state); the project's loader maps the key, initialises only the
    # missing _extra_state objects and reads every tensor from the checkpoint
    assert loads["legacy_plain"]["load"] != "ok"
    assert loads["legacy"] == {"load": "ok", "parameters_match": True}
    assert not {"decoder.final_layernorm._extra_state"} <= _objects(checkpoints["paths"]["legacy"])


def test_te_saved_checkpoint_loads_into_cpu_model_and_converts_back_to_hf(checkpoints, tmp_path):
    from safetensors.torch import load_file

    saved = checkpoints["root"] / "te_saved"
    assert checkpoints["te"]["saved"].endswith("iter_0000000")
    # the CPU (local-spec) model loads it with the project's loader; its tensors equal the stored ones
    dump = tmp_path / "loaded.pt"
    _run([sys.executable, str(LAYOUT_WORKER), "tiny-moe", "--set", "model.num_layers=2",
          "--set", f"model.vocab_size={VOCAB}", "--load", str(saved / "iter_0000000"), "--dump", str(dump)])  # fmt: skip
    data = torch.load(dump)
    assert data["model"]["decoder.layers.1.self_attention.linear_qkv.weight"].equal(
        data["raw"]["decoder.layers.self_attention.linear_qkv.weight"][1]
    )
    # and mcore-to-hf gives back the HF checkpoint the TE model was loaded from, bit for bit at the TE model's
    # precision (bf16: what resolve_settings gives CUDA; the fp32 HF tensors are rounded once, on load)
    out = tmp_path / "hf_back"
    _run([sys.executable, "-m", "megatron_agentic", "convert", "mcore-to-hf", "--checkpoint", str(saved),
          "--output", str(out), "--dtype", "fp32"])  # fmt: skip
    original = {}
    for f in sorted(checkpoints["hf"].glob("*.safetensors")):
        original.update(load_file(f))
    back = {}
    for f in sorted(out.glob("*.safetensors")):
        back.update(load_file(f))
    assert set(back) == set(original)
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor.to(torch.bfloat16).to(back[name].dtype)), name
