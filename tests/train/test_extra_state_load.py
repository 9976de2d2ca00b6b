"""Loading checkpoints that predate TE's norm ``_extra_state``: only missing ``_extra_state`` objects are tolerated.

``checkpoint_keys.load_sharded`` (megatron-core ``StrictHandling.RETURN_UNEXPECTED``) and ``checkpoint_keys.load_module_state`` are what
``training.checkpoint.load_checkpoint`` uses; a missing tensor must raise, never be left at its initial value.
"""

from __future__ import annotations

import pytest
import torch

from megatron_agentic.models.qwen3_moe import checkpoint_keys
from tests.support.lazy import lazy_import

# megatron-core is imported when a test runs, not when the suite is collected
_mapping = lazy_import("megatron.core.dist_checkpointing.mapping")
_dcp_stream = lazy_import("megatron_agentic.convert.dcp_stream")


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """A one-process gloo group (dist_checkpointing needs one)."""
    if torch.distributed.is_initialized():
        yield
        return
    store = tmp_path_factory.mktemp("pg") / "store"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


@pytest.fixture
def ckpt(tmp_path):
    """A checkpoint holding ``a.weight`` (ones) and ``a._extra_state``, but nothing of module ``b``."""
    chunk = _dcp_stream.TensorChunk("a.weight", (4,), (0,), (4,), torch.float32, lambda: torch.ones(4))
    return _dcp_stream.write_torch_dist(
        tmp_path / "iter_0000000", [chunk], [_dcp_stream.BytesObject("a._extra_state/shard_0_1")], {"i": 0}
    )


def _request(*extra):
    state = {
        "a.weight": _mapping.ShardedTensor.from_rank_offsets("a.weight", torch.zeros(4), replica_id=0),
        "a._extra_state": _mapping.ShardedObject("a._extra_state", None, (1,), (0,), replica_id=0),
    }
    for item in extra:
        state[item.key] = item
    return state


def test_missing_extra_state_is_initialised_and_logged(one_rank, ckpt, caplog):
    b_extra = _mapping.ShardedObject("b._extra_state", "initial", (1,), (0,), replica_id=0)
    with caplog.at_level("WARNING"):
        loaded, absent = checkpoint_keys.load_sharded(_request(b_extra), ckpt)
    assert absent == {"b._extra_state"}
    assert torch.equal(loaded["a.weight"], torch.ones(4)) and loaded["a._extra_state"] is None
    assert "b._extra_state" not in loaded
    assert any("checkpoint has no b._extra_state" in r.message for r in caplog.records)


def test_missing_tensor_raises(one_rank, ckpt):
    c = _mapping.ShardedTensor.from_rank_offsets("c.weight", torch.zeros(2), replica_id=0)
    with pytest.raises(checkpoint_keys.CheckpointMismatchError, match=r"lacks 1 requested entry: c\.weight"):
        checkpoint_keys.load_sharded(_request(c), ckpt)


def test_module_state_tolerates_only_missing_extra_state():
    from megatron.core.transformer import TransformerConfig

    from megatron_agentic.models.qwen3_moe.norm import ExtraStateRMSNorm

    config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1, normalization="RMSNorm",
                               use_cpu_initialization=True)  # fmt: skip
    norm = ExtraStateRMSNorm(config, 8)
    checkpoint_keys.load_module_state(norm, {"weight": torch.full((8,), 2.0)})  # no _extra_state: initial (None) kept
    assert torch.equal(norm.weight.detach(), torch.full((8,), 2.0))
    with pytest.raises(checkpoint_keys.CheckpointMismatchError, match="missing \\['weight'\\]"):
        checkpoint_keys.load_module_state(norm, {"_extra_state": None})
    with pytest.raises(checkpoint_keys.CheckpointMismatchError, match="unexpected \\['bias'\\]"):
        checkpoint_keys.load_module_state(norm, {"weight": torch.ones(8), "bias": torch.ones(8)})
