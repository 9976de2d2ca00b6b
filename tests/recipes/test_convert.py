"""HF <-> megatron conversion: logits vs transformers, exact round trips, EP=2 and PP=2 layouts."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_agentic.convert import hf_to_mcore, mapping, mcore_to_hf


def _tiny_hf_config():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        max_position_embeddings=512,
    )


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A random tiny Qwen3MoeForCausalLM saved in the Hub format, plus its fp32 logits on fixed tokens."""
    from transformers import Qwen3MoeForCausalLM

    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(_tiny_hf_config()).eval()
    with torch.no_grad():  # random (not constant) norms so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(path)
    tokens = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    return {"path": path, "model": model, "tokens": tokens, "logits": logits}


def test_mapping_inverse_and_fused_layout(tiny_hf):
    from safetensors.torch import load_file

    arch = mapping.preset_from_hf_config(json.loads((tiny_hf["path"] / "config.json").read_text()))
    assert (arch.num_experts, arch.moe_router_topk, arch.kv_channels, arch.num_query_groups) == (4, 2, 16, 2)
    hub = load_file(tiny_hf["path"] / "model.safetensors")
    fused = {k: v for k, v in tiny_hf["model"].state_dict().items()}  # transformers-5 fused expert layout
    from_fused = mapping.hf_to_megatron(fused, arch)
    from_hub = mapping.hf_to_megatron(hub, arch)
    assert all(torch.equal(from_fused[k], from_hub[k]) for k in from_hub)
    back = mapping.megatron_to_hf(from_hub, arch)
    assert sorted(back) == sorted(hub) and all(torch.equal(back[k], hub[k]) for k in hub)
    # qkv interleave: group 0 = query heads 0,1 then key head 0 then value head 0
    qkv = from_hub["decoder.layers.0.self_attention.linear_qkv.weight"]
    assert torch.equal(qkv[32:48], hub["model.layers.0.self_attn.k_proj.weight"][:16])
    assert torch.equal(qkv[64:96], hub["model.layers.0.self_attn.q_proj.weight"][32:64])


def test_bad_inputs_rejected(tiny_hf, tmp_path):
    cfg = json.loads((tiny_hf["path"] / "config.json").read_text())
    with pytest.raises(mapping.ConversionError, match="norm_topk_prob"):
        mapping.preset_from_hf_config({**cfg, "norm_topk_prob": False})
    with pytest.raises(mapping.ConversionError, match="mlp_only_layers"):
        mapping.preset_from_hf_config({**cfg, "mlp_only_layers": [0]})
    arch = mapping.preset_from_hf_config(cfg)
    from safetensors.torch import load_file

    hub = load_file(tiny_hf["path"] / "model.safetensors")
    del hub["model.layers.1.mlp.experts.3.up_proj.weight"]
    with pytest.raises(mapping.ConversionError, match=r"missing tensor 'model\.layers\.1\.mlp\.experts\.3\.up_proj"):
        mapping.hf_to_megatron(hub, arch)
    with pytest.raises(mapping.ConversionError, match=r"num_experts \(4\) % --ep 3"):
        hf_to_mcore.convert(str(tiny_hf["path"]), str(tmp_path / "x"), ep=3)
    assert hf_to_mcore.main(["--hf-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "y")]) == 2


def test_convert_ep2_logits_roundtrip_tp2_pp2(tiny_hf, tmp_path):
    """HF -> megatron (saved EP=2) gives HF's logits; -> HF is exact; -> megatron (saved TP=2 x PP=2) is exact."""
    from recipes_testlib import load_converted, run_spawned
    from safetensors.torch import load_file

    ckpt_ep2 = tmp_path / "ckpt_ep2"
    assert (
        hf_to_mcore.main(["--hf-dir", str(tiny_hf["path"]), "--output", str(ckpt_ep2), "--ep", "2", "--dtype", "fp32"])
        == 0
    )
    exported = tmp_path / "hf_export"
    assert mcore_to_hf.main(["--checkpoint", str(ckpt_ep2), "--output", str(exported), "--dtype", "fp32"]) == 0
    original, back = load_file(tiny_hf["path"] / "model.safetensors"), load_file(exported / "model.safetensors")
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)
    assert mapping.preset_from_hf_config(
        json.loads((exported / "config.json").read_text())
    ) == mapping.preset_from_hf_config(json.loads((tiny_hf["path"] / "config.json").read_text()))
    ckpt_tp2pp2 = tmp_path / "ckpt_tp2pp2"
    hf_to_mcore.convert(str(exported), str(ckpt_tp2pp2), tp=2, pp=2, precision="fp32")
    (result,) = run_spawned(
        1, load_converted, [str(ckpt_ep2), str(ckpt_tp2pp2)], tiny_hf["tokens"].tolist(), out_dir=str(tmp_path)
    )
    assert result["mismatched"] == [] and result["num_tensors"] > 20
    logits = torch.tensor(result["logits"])
    torch.testing.assert_close(logits, tiny_hf["logits"], rtol=1e-4, atol=1e-4)


def test_sharded_safetensors_roundtrip(tmp_path):
    from megatron_agentic.convert.hf_io import HFCheckpoint, write_hf_checkpoint

    state = {f"model.layers.{i}.w": torch.randn(64, 32) for i in range(5)}
    out = write_hf_checkpoint(tmp_path / "hf", state, {"model_type": "qwen3_moe"}, max_shard_bytes=64 * 32 * 4 * 2)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    reader = HFCheckpoint(out)
    assert reader.keys() == sorted(state)
    assert all(torch.equal(reader.get(k), v) for k, v in state.items())
    with pytest.raises(mapping.ConversionError, match="missing tensor 'nope'"):
        reader.get("nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp directories left
