"""SFT training data path and masked-loss evaluation: ``SFTDataset`` samples against the written mask (Megatron-LM's
label / loss-mask shift), training with ``data.sft`` from a checkpoint, resume equal to an uninterrupted run, and
``sft-eval`` counting every conversation exactly once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from data_tools.indexed.tokenizers import load_tokenizer
from data_tools.synthesis.sft import build_sft_dataset, tokenize_conversation
from megatron_agentic.config import ConfigError, load_config
from tests.recipes.recipes_testlib import free_port
from tests.support.zygote import run_command

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "examples" / "configs" / "tiny_moe.yaml")


def conversation(i: int) -> dict:
    think = " ".join(["reason"] * (i % 5 + 1))
    return {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"<think>\n{think}\n</think>\n\n{2 * i}"},
            {"role": "user", "content": "Thanks, and times two?"},
            {"role": "assistant", "content": f"{4 * i}"},
        ]
    }


def make_set(tmp: Path, name: str, ids: range) -> str:
    src = tmp / f"{name}.jsonl"
    src.write_text("".join(json.dumps(conversation(i)) + "\n" for i in ids), encoding="utf-8")
    prefix = tmp / name
    build_sft_dataset([src], prefix, load_tokenizer("qwen3"))
    return str(prefix)


def cfg_for(prefix: str, seq: int, **extra: str):
    sets = [f"data.blend=[{json.dumps(prefix)}]", "data.sft=true", "data.split=100,0,0", f"train.seq_length={seq}"]
    return load_config(TINY, sets + [f"{k}={v}" for k, v in extra.items()])


def test_samples_carry_the_written_mask_shifted(tmp_path):
    from megatron_agentic.training.sft import build_sft_datasets

    prefix = make_set(tmp_path, "a", range(6))
    tok = load_tokenizer("qwen3")
    seq = 96
    cfg = cfg_for(prefix, seq, **{"data.eval_sets": json.dumps({"held": prefix})})
    ds = build_sft_datasets(cfg, train_samples=14, eval_samples=8)
    assert len(ds.train) == 14 and len(ds.eval_sets["held"]) == 8
    refs = [tokenize_conversation(conversation(i)["messages"], tok) for i in range(6)]
    assert max(r.size for r, _ in refs) <= seq  # all fit: padding follows every conversation
    seen = set()
    for k in range(14):  # training: shuffled epochs, every conversation once per epoch
        s = ds.train[k]
        ids = s["tokens"].tolist()
        assert s["labels"].tolist()[:-1] == ids[1:]
        conv = next(i for i, (r, _) in enumerate(refs) if r.tolist() == ids[: r.size])
        if k < 6:
            seen.add(conv)
        ref_ids, ref_mask = refs[conv]
        n = ref_ids.size
        # Megatron-LM SFTDataset: labels = seq[1:], loss on a label iff it is a target; padding: EOD id, no loss
        assert s["labels"][: n - 1].tolist() == ref_ids[1:].tolist()
        assert s["loss_mask"][: n - 1].tolist() == ref_mask[1:].astype(float).tolist()
        assert s["loss_mask"][n - 1 :].sum() == 0 and set(s["tokens"][n:].tolist()) <= {tok.eod_id}
        assert s["position_ids"].tolist() == list(range(seq))
    assert seen == set(range(6))
    held = ds.eval_sets["held"]
    assert [held[i]["loss_mask"].sum().item() > 0 for i in range(8)] == [True] * 6 + [False] * 2  # then padding


def test_truncation_keeps_the_prefix_mask(tmp_path):
    from megatron_agentic.training.sft import build_sft_datasets

    prefix = make_set(tmp_path, "t", range(3))
    tok = load_tokenizer("qwen3")
    ds = build_sft_datasets(cfg_for(prefix, 16), 3, 0)
    s = ds.train[0]
    ids = s["tokens"].tolist() + [s["labels"][-1].item()]
    conv = next(i for i in range(3) if tokenize_conversation(conversation(i)["messages"], tok)[0].tolist()[:17] == ids)
    ref_mask = tokenize_conversation(conversation(conv)["messages"], tok)[1]
    assert s["loss_mask"].tolist() == ref_mask[1:17].astype(float).tolist()


def test_config_errors(tmp_path):
    from megatron_agentic.training.sft import build_sft_datasets

    prefix = make_set(tmp_path, "e", range(2))
    with pytest.raises(ConfigError, match="data.sft=true needs data.blend"):
        build_sft_datasets(load_config(TINY, ["data.sft=true"]), 1, 0)
    with pytest.raises(ConfigError, match=r"data.split '99,1,0' leaves the valid split of .*e \(2 conversations\)"):
        build_sft_datasets(cfg_for(prefix, 32, **{"data.split": "99,1,0"}), 1, 1)
    os.remove(prefix + "_loss_mask.idx")
    with pytest.raises(ConfigError, match=r"e_loss_mask\.idx does not exist \(make it with"):
        build_sft_datasets(cfg_for(prefix, 32), 1, 0)


def _run(args: list[str], log: Path, nproc: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    launcher = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}"]
    argv = [sys.executable, *(launcher if nproc > 1 else []), "-m", "megatron_agentic", *args]
    proc = run_command(argv, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((log / "summary.json").read_text()) if (log / "summary.json").is_file() else {}


SMALL = [
    "model.num_layers=2",
    "model.vocab_size=151936",
    "train.global_batch_size=4",
    "train.micro_batch_size=2",
    "train.lr_warmup_iters=0",
    "train.eval_iters=1",
    "log.tensorboard=false",
]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.slow
def test_sft_train_resume_and_eval(tmp_path):
    train_set = make_set(tmp_path, "train", range(12))
    a = make_set(tmp_path, "a", range(100, 105))
    b = make_set(tmp_path, "b", range(200, 203))
    ab = make_set(tmp_path, "ab", [*range(100, 105), *range(200, 203)])
    data = [f"data.blend=[{json.dumps(train_set)}]", "data.sft=true", "data.split=100,0,0", "train.seq_length=64"]
    base = ["train", "--config", TINY, *_sets(SMALL + data + ["train.iters=6"])]
    # CPT-style base checkpoint to start SFT from (checkpoint.pretrained)
    pre = tmp_path / "pre"
    _run([*base, *_sets(["train.iters=3", f"checkpoint.dir={pre}", f"log.dir={tmp_path / 'prelog'}"])],
         tmp_path / "prelog")  # fmt: skip
    start = ["checkpoint.pretrained=" + str(pre)]
    in_run_eval = [f"data.eval_sets={json.dumps({'ab': ab})}", "train.eval_iters=2"]  # 2 x 4 = all 8, once each
    full = _run([*base, *_sets(start + in_run_eval + [f"log.dir={tmp_path / 'full'}"])], tmp_path / "full")
    killed = (
        start
        + in_run_eval
        + [f"checkpoint.dir={tmp_path / 'ck'}", "checkpoint.interval=2", f"log.dir={tmp_path / 'res'}"]
    )
    _run([*base, *_sets(killed + ["train.exit_interval=3"])], tmp_path / "res")
    resumed = _run([*base, *_sets(killed)], tmp_path / "res")
    assert resumed["final_step"] == full["final_step"] == 6
    assert resumed["losses"]["last"] == pytest.approx(full["losses"]["last"], rel=1e-5)
    # masked-loss evaluation: each conversation counted once, token-weighted (A u B = weighted mean of A and B)
    out = tmp_path / "eval.json"
    sets = ["--data", f"a={a}", "--data", f"b={b}", "--data", f"ab={ab}"]
    ev = ["sft-eval", "--config", TINY, "--checkpoint", str(tmp_path / "ck"), *sets]
    ev += _sets(SMALL[:-2] + ["train.seq_length=64", f"log.dir={tmp_path / 'evlog'}"])
    _run([*ev, "--output", str(out)], tmp_path / "evlog")
    res = json.loads(out.read_text())["sets"]
    assert (res["a"]["conversations"], res["b"]["conversations"], res["ab"]["conversations"]) == (5, 3, 8)
    tok = load_tokenizer("qwen3")

    def targets(ids):
        return sum(int(tokenize_conversation(conversation(i)["messages"], tok)[1][1:65].sum()) for i in ids)

    na, nb = targets(range(100, 105)), targets(range(200, 203))
    mixed = (res["a"]["loss"] * na + res["b"]["loss"] * nb) / (na + nb)
    assert res["ab"]["loss"] == pytest.approx(mixed, rel=1e-4)
    # the eval-only run of the resumed checkpoint reproduces the uninterrupted run's own final evaluation
    assert res["ab"]["loss"] == pytest.approx(full["eval"]["ab"], rel=1e-5)
    # another layout (2 ranks, context parallel 2: the zigzag split carries the loss mask) gives the same losses
    out2 = tmp_path / "eval_cp2.json"
    _run([*ev, "--output", str(out2), "--set", "parallel.context=2"], tmp_path / "evlog", nproc=2)
    cp2 = json.loads(out2.read_text())["sets"]
    for name in ("a", "b", "ab"):
        assert cp2[name]["loss"] == pytest.approx(res[name]["loss"], rel=1e-4)
