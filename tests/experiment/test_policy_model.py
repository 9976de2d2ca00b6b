"""The experiment's in-process training and generation: ``train`` twice in one process, and the KV-cached greedy
policy against a full forward per token (the independent reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "configs" / "tiny_moe.yaml"
PROMPT = "<|im_start|>user\nWhich subject is described as a number?<|im_end|>\n<|im_start|>assistant\n<think>\n"


def _cfg(tmp_path: Path, name: str, vocab_size: int):
    from megatron_agentic.config import load_config

    return load_config(
        CONFIG,
        [
            "train.iters=2",
            "train.seq_length=64",
            "train.global_batch_size=2",
            "train.micro_batch_size=2",
            f"model.vocab_size={vocab_size}",
            "model.num_layers=2",
            f"log.dir={tmp_path / name}",
        ],
    )


def test_train_twice_in_one_process_and_kv_cached_greedy_equals_full_forward(tmp_path: Path):
    import torch

    from data_tools.indexed.tokenizers import load_tokenizer
    from megatron_agentic.experiment.policy import GreedyGenerator
    from megatron_agentic.experiment.vocab import ExperimentVocab
    from megatron_agentic.training.loop import train

    tok = load_tokenizer("qwen3")
    ids = tok.encode(PROMPT)
    vocab = ExperimentVocab.build([ids, list(range(200, 600))])
    size = vocab.padded_size()
    seen: dict[str, object] = {}

    def check(trainer, summary) -> None:
        model = trainer.chunks[0]
        model.eval()
        gen = GreedyGenerator(model, vocab, max_length=256)
        seen["text"] = gen.generate(PROMPT, 12)
        # reference: a full forward of the whole sequence for every new token, same stop rule and id range
        dense = vocab.to_dense(ids)
        stop = set(vocab.to_dense(sorted(gen.stop)))
        out: list[int] = []
        with torch.no_grad():
            for _ in range(12):
                x = torch.tensor([dense + out])
                logits = model(x, torch.arange(x.shape[1]).unsqueeze(0), None)
                nxt = int(torch.argmax(logits[0, -1, : len(vocab.kept)]))
                if nxt in stop:
                    break
                out.append(nxt)
        seen["reference"] = tok.decode(vocab.to_qwen3(out))
        seen["reference_ids"] = out

    first = train(_cfg(tmp_path, "a", size), on_finish=check)
    second = train(_cfg(tmp_path, "b", size))  # a second run in the same process, same seed: the same losses
    assert first["losses"]["count"] == second["losses"]["count"] == 2
    assert first["losses"]["first"] == pytest.approx(second["losses"]["first"], rel=1e-6)
    assert first["losses"]["last"] == pytest.approx(second["losses"]["last"], rel=1e-6)
    assert seen["reference_ids"], "the reference produced no token"
    assert seen["text"] == seen["reference"]
