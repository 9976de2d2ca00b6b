"""Recipe registry, export to the train schema, the Slurm launcher's dry-run validation, and doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from megatron_agentic import recipes

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_recipes_resolve_and_validate():
    names = recipes.list_recipes()
    assert {"qwen3-30b-a3b-stage1", "qwen3-30b-a3b-stage2", "tiny-moe-stage1", "tiny-moe-stage2"} <= set(names)
    for name in names:
        recipes.load_recipe(name)  # raises on schema errors


def test_stage2_derives_from_stage1():
    s1, s2 = recipes.load_recipe("qwen3-30b-a3b-stage1"), recipes.load_recipe("qwen3-30b-a3b-stage2")
    assert (s1["train"]["seq_length"], s2["train"]["seq_length"]) == (32768, 131072)
    assert s2["parallel"]["context"] > 1 and s2["model"]["rotary_base"] > 1e6
    assert s2["checkpoint"]["pretrained"] == s1["checkpoint"]["dir"]
    assert s2["checkpoint"]["load_optimizer"] is True  # resume after a failure restores Adam state
    assert s2["model"]["preset"] == s1["model"]["preset"] == "qwen3-30b-a3b"  # inherited
    assert s2["train"]["lr"] == s1["train"]["lr"]  # inherited from stage 1, not re-declared
    assert s1["train"]["train_tokens"] == 200_000_000_000 and s2["train"]["train_tokens"] == 100_000_000_000


def test_overrides_and_errors(tmp_path):
    r = recipes.load_recipe("tiny-moe-stage1", ["parallel.expert=4", "train.lr=0.01", "plan.nodes=2"])
    assert (r["parallel"]["expert"], r["train"]["lr"], r["plan"]["nodes"]) == (4, 0.01, 2)
    with pytest.raises(recipes.RecipeError, match="unknown section 'bogus'"):
        recipes.load_recipe("tiny-moe-stage1", ["bogus.x=1"])
    with pytest.raises(recipes.RecipeError, match="unknown recipe 'nope'"):
        recipes.load_recipe("nope")
    with pytest.raises(recipes.RecipeError, match=r"train\.lr_schedule must be cosine or wsd"):
        recipes.load_recipe("tiny-moe-stage1", ["train.lr_schedule=linear"])
    with pytest.raises(recipes.RecipeError, match=r"plan\.mfu must be in"):
        recipes.load_recipe("tiny-moe-stage1", ["plan.mfu=2"])
    custom = tmp_path / "mine.yaml"
    custom.write_text("base: tiny-moe-stage1\ntrain:\n  seq_length: 512\n")
    assert recipes.load_recipe(str(custom))["train"]["seq_length"] == 512
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(recipes.RecipeError, match="circular"):
        recipes.load_recipe(str(loop))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(recipes.RecipeError, match=r"bad\.yaml:\d+: invalid YAML"):
        recipes.load_recipe(str(bad))


def test_export_is_a_train_config(tmp_path):
    from megatron_agentic.config import load_config

    out = tmp_path / "cfg" / "stage2.yaml"
    assert recipes.main(["export", "qwen3-30b-a3b-stage2", "--set", "log.dir=/x", "--output", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert "plan" not in data and data["log"]["dir"] == "/x"
    cfg = load_config(out)
    assert cfg.model.architecture().rotary_base == 5e6 and cfg.model.recompute == "selective"
    assert cfg.validate(256) == 256 // (2 * 8)
    assert cfg.train.total_iters() == -(-100_000_000_000 // (32 * 131072))


def _launcher_env(tmp_path, **extra):
    env = dict(
        os.environ,
        RUN_ROOT=str(tmp_path / "runs"),
        PYTHON=sys.executable,
        DRY_RUN_TRAIN="0",
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


@pytest.mark.slow
def test_sbatch_dry_run_validates_layout(tmp_path):
    script = ROOT / "examples" / "slurm" / "stage2_128k.sbatch"
    proc = subprocess.run(
        ["bash", str(script), "--dry-run"],
        cwd=ROOT,
        env=_launcher_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "config OK for world size 256" in proc.stdout
    assert "--rdzv-backend c10d" in proc.stdout and "torchrun --nnodes 32 --nproc-per-node 8" in proc.stdout
    job_dir = next((tmp_path / "runs" / "qwen3-30b-a3b-stage2" / "jobs").iterdir())
    plan = json.loads((job_dir / "plan.json").read_text())
    assert plan["fits"] and plan["iterations"] == 23842
    assert yaml.safe_load((job_dir / "config.yaml").read_text())["data"]["blend_file"] == "data/blends/stage2.json"
    # a layout that cannot fit stops the launch before anything starts
    env = _launcher_env(tmp_path, EXTRA_SETS="--set model.recompute=false")
    proc = subprocess.run(
        ["bash", str(script), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode != 0 and "DOES NOT FIT" in proc.stdout


def test_doctor_json(capsys):
    from megatron_agentic import doctor

    assert doctor.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["libraries"]["megatron-core"]["version"] == "0.16.1"
    import torch

    assert report["gpu"]["cuda_available"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert report["code_paths"]["platform"].startswith("CPU + gloo")
        assert report["code_paths"]["attention (CP>1, 128K)"] == "triton"
        assert report["code_paths"]["attention (data.document_attention, thd)"] == "triton"
        # effective settings of the stage-1 recipe on this machine: the CPU decisions of megatron_agentic.perf
        effective = report["effective"]
        assert effective["recipe"] == "qwen3-30b-a3b-stage1" and effective["platform"] == "cpu"
        assert effective["layer_spec"] == "local" and effective["moe_token_dispatcher"] == "allgather"
        assert effective["transformer"]["expert_tensor_parallel_size"] == 1
        assert effective["transformer"]["recompute_granularity"] == "selective"
        assert not effective["ddp"]["overlap_grad_reduce"] and len(effective["summary"]) == 3
        assert doctor.main(["--require-gpu", "--json"]) == 1
