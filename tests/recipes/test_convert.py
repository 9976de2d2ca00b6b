"""HF <-> megatron conversion: TE keys, loads at TP=2/EP=2/PP=2, logits vs transformers, exact round trips."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_agentic.convert import hf_to_mcore, mcore_to_hf
from megatron_agentic.models.qwen3_moe import hf_mapping as mapping


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
    with pytest.raises(mapping.ConversionError, match=r"num_attention_heads \(4\) % --tp 3"):
        hf_to_mcore.convert(str(tiny_hf["path"]), str(tmp_path / "x"), tp=3)
    assert hf_to_mcore.main(["--hf-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "y")]) == 2
    # a missing HF tensor is found before anything is written
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(cfg))
    save_file(hub, str(broken / "model.safetensors"))
    with pytest.raises(mapping.ConversionError, match=r"missing tensor 'model\.layers\.1\.mlp\.experts\.3\.up_proj"):
        hf_to_mcore.convert(str(broken), str(tmp_path / "z"), progress=False)
    assert not (tmp_path / "z").exists()


def _checkpoint_keys(ckpt) -> dict[str, tuple[int, ...] | None]:
    """Stored keys of a converted checkpoint: tensor key -> global shape, ShardedObject unique key -> None."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = FileSystemReader(str(ckpt / "iter_0000000")).read_metadata()
    return {
        k: tuple(v.size) if isinstance(v, TensorStorageMetadata) else None for k, v in md.state_dict_metadata.items()
    }


@pytest.mark.slow
def test_converted_checkpoint_loads_in_tp2_ep2_pp2_matches_transformers(tiny_hf, tmp_path):
    """hf-to-mcore output (TE keys) loads into real TP=2 / EP=2 / PP=2 models: exact weights, HF's logits.

    The EP=2 model then saves a legacy-layout checkpoint with megatron-core, which mcore-to-hf reads back exactly.
    """
    from safetensors.torch import load_file

    from tests.recipes.convert_testlib import load_in_layouts
    from tests.recipes.recipes_testlib import run_spawned

    ckpt = tmp_path / "ckpt"
    argv = ["--hf-dir", str(tiny_hf["path"]), "--output", str(ckpt), "--tp", "2", "--ep", "2", "--dtype", "fp32"]
    assert hf_to_mcore.main([*argv, "--no-progress"]) == 0
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "0\n"
    stored = _checkpoint_keys(ckpt)
    assert stored["decoder.layers.pre_mlp_layernorm.weight"] == (2, 64)
    assert not any("linear_fc1.layer_norm" in k for k in stored)
    assert stored["decoder.layers.mlp.experts.experts.linear_fc1.weight"] == (2, 4, 64, 64)

    legacy = tmp_path / "legacy"
    results = run_spawned(
        2,
        load_in_layouts,
        str(ckpt),
        str(tiny_hf["path"]),
        tiny_hf["tokens"].tolist(),
        str(legacy),
        out_dir=str(tmp_path),
    )
    diffs = {}
    for layout in results[0]:
        requested = set()
        for rank_result in results:
            r = rank_result[layout]
            assert r["mismatched"] == [] and r["num_tensors"] > 10, layout
            requested.update(r["keys"])
            if r["logits"] is not None:
                diffs[layout] = max(
                    diffs.get(layout, 0.0), (torch.tensor(r["logits"]) - tiny_hf["logits"]).abs().max().item()
                )
        assert requested == set(stored), layout  # the ranks together request exactly what was written
    print(f"max |logits - transformers| per layout: {diffs}")
    assert set(diffs) == {"tensor2", "expert2"} and max(diffs.values()) < 1e-4, diffs

    assert "decoder.layers.mlp.linear_fc1.layer_norm_weight" in _checkpoint_keys(legacy)
    exported = tmp_path / "hf_from_legacy"
    assert mcore_to_hf.main(["--checkpoint", str(legacy), "--output", str(exported), "--dtype", "fp32"]) == 0
    original, back = load_file(tiny_hf["path"] / "model.safetensors"), load_file(exported / "model.safetensors")
    assert sorted(original) == sorted(back) and all(torch.equal(original[k], back[k]) for k in original)


@pytest.mark.slow
def test_roundtrip_fp32_exact(tiny_hf, tmp_path):
    """HF -> mcore -> HF with --dtype fp32 reproduces every tensor and the config; nothing temporary is left."""
    from safetensors.torch import load_file

    ckpt, exported = tmp_path / "ckpt", tmp_path / "hf"
    hf_to_mcore.convert(str(tiny_hf["path"]), str(ckpt), tp=2, etp=1, precision="fp32", progress=False)
    assert mcore_to_hf.main(["--checkpoint", str(ckpt), "--output", str(exported), "--dtype", "fp32"]) == 0
    original, back = load_file(tiny_hf["path"] / "model.safetensors"), load_file(exported / "model.safetensors")
    assert sorted(original) == sorted(back)
    assert all(back[k].dtype == torch.float32 and torch.equal(original[k], back[k]) for k in original)
    config = lambda d: mapping.preset_from_hf_config(json.loads((d / "config.json").read_text()))  # noqa: E731
    assert config(exported) == config(tiny_hf["path"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf"]


def test_tp_pieces_match_megatron_slices():
    """The chunks written for a TP/ETP layout are exactly the pieces megatron's TP ranks hold."""
    from megatron_agentic.convert import keys

    shapes = {
        keys.LAYER_KEYS["linear_qkv"]: ("self_attention.linear_qkv.weight", (24, 8)),
        keys.LAYER_KEYS["linear_proj"]: ("self_attention.linear_proj.weight", (8, 12)),
        keys.EXPERT_KEYS["linear_fc1"]: ("linear_fc1.weight", (16, 8)),
        keys.EXPERT_KEYS["linear_fc2"]: ("linear_fc2.weight", (8, 8)),
        keys.EMBEDDING: ("word_embeddings.weight", (32, 8)),
        keys.LAYER_KEYS["router"]: ("mlp.router.weight", (4, 8)),
    }
    for key, (name, shape) in shapes.items():
        full = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
        for n in (1, 2, 4):
            pieces = hf_to_mcore.tp_pieces(key, shape, n, n)
            chunks = [full[tuple(slice(o, o + s) for o, s in zip(off, size))] for off, size in pieces]
            expected = [mapping._tp_slice(name, full, r, n, r, n) for r in range(n)]
            if key == keys.EXPERT_KEYS["linear_fc1"]:  # gate piece r and up piece r make rank r's slice
                chunks = [torch.cat([chunks[r], chunks[n + r]]) for r in range(n)]
            elif key == keys.LAYER_KEYS["router"]:  # replicated
                expected = expected[:1]
            assert len(chunks) == len(expected) and all(torch.equal(c, e) for c, e in zip(chunks, expected)), (key, n)


def test_legacy_detection_logs_once(caplog):
    from megatron_agentic.convert import keys

    with caplog.at_level("INFO"):
        assert keys.legacy_renames(["decoder.layers.pre_mlp_layernorm.weight"]) == {}
        renames = keys.legacy_renames(["decoder.layers.mlp.linear_fc1.layer_norm_weight", "x"])
    assert renames == {"decoder.layers.pre_mlp_layernorm.weight": "decoder.layers.mlp.linear_fc1.layer_norm_weight"}
    assert [r.message for r in caplog.records if "pre-TE key layout" in r.message] != []
    assert len(caplog.records) == 1


def test_extra_state_keys_match_megatron():
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    from megatron_agentic.convert import keys

    for offsets, shape in (((1,), (2,)), ((1, 3), (2, 4))):
        assert keys.extra_state_key("a.b", offsets, shape) == ShardedObject("a.b", None, shape, offsets, 0).unique_key


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
