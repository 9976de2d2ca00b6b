"""Launch configuration of the Triton attention kernels: tile sizes per (kernel, head dim), the head-dim policy, CUDA
grid limits.

A leaf module (no kernels, no launcher): :mod:`~megatron_agentic.kernels.flash_attention_kernels` (the device
code), :mod:`~megatron_agentic.kernels.autotune` (the Hopper search space), :mod:`~megatron_agentic.kernels.aot`
(the sm_90 compile check) and :mod:`~megatron_agentic.kernels.flash_attention` (the launcher) all read it, and it
reads none of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from megatron_agentic.testing import faults


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch parameters of one kernel (one config per head dim; no autotuning)."""

    block_m: int
    """Query rows per tile."""
    block_n: int
    """Key rows per tile."""
    num_warps: int
    """Warps per program."""
    num_stages: int
    """Software-pipelining stages of the K/V (or Q/dO) loads."""

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 16, got {value}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"KernelConfig.num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")
        if self.num_stages < 1:
            raise ValueError(f"KernelConfig.num_stages must be >= 1, got {self.num_stages}")


# GPU configurations per (kernel, head dim), every one compiled for sm_90 by ``python -m megatron_agentic.kernels.aot`` and chosen from
# that output: each dot on wgmma, no duplicated MMA (warps never cover more rows than a tile has), no spills, shared
# memory within 227 KiB. ``bwd_dkdv`` is the deterministic dK/dV kernel (a program sums its GQA group in registers;
# dQ then runs in ``bwd_dq``); ``bwd_fused`` is the default backward (one query head per program, dQ and the GQA
# dK/dV reduction with fp32 atomics). For the backward kernels BM is the query tile and BN the key tile.
GPU_CONFIGS: dict[tuple[str, int], KernelConfig] = {
    ("fwd", 16): KernelConfig(128, 64, 4, 3),
    ("fwd", 32): KernelConfig(128, 64, 4, 3),
    ("fwd", 64): KernelConfig(128, 64, 4, 3),
    ("fwd", 128): KernelConfig(128, 64, 8, 3),
    ("fwd", 256): KernelConfig(64, 32, 4, 1),
    ("bwd_dkdv", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_dkdv", 128): KernelConfig(64, 128, 8, 2),
    ("bwd_dkdv", 256): KernelConfig(64, 64, 4, 1),
    ("bwd_fused", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_fused", 128): KernelConfig(64, 128, 8, 2),
    ("bwd_fused", 256): KernelConfig(64, 64, 4, 1),
    ("bwd_dq", 16): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 32): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 64): KernelConfig(64, 64, 4, 2),
    ("bwd_dq", 128): KernelConfig(128, 64, 8, 2),
    ("bwd_dq", 256): KernelConfig(64, 64, 4, 1),
}
# Interpreter configuration: small tiles so short test sequences still span several blocks.
INTERPRETER_CONFIG = KernelConfig(32, 32, 4, 1)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)


def check_head_dim(head_dim: int) -> None:
    """The one head-dim policy of these kernels, on every device and block backend (GPU, interpreter, torch).

    Raises ``ValueError`` for a head dim the GPU kernels cannot run, so that a model that would fail at its first
    GPU forward fails the same way on CPU, when its attention module is built.
    """
    if int(head_dim) not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"head dim {head_dim} is not supported by the Triton attention kernels (use one of "
            f"{', '.join(map(str, SUPPORTED_HEAD_DIMS))}; model.kv_channels sets it)"
        )


def is_interpreter() -> bool:
    """Whether the Triton interpreter is on (``TRITON_INTERPRET=1``: kernels run as Python on CPU tensors)."""
    import triton  # only here: the tile table and the head-dim policy are read without Triton (torch block backend)

    return triton.knobs.runtime.interpret


def gpu_config(kind: str, head_dim: int) -> KernelConfig:
    """The H100 tile configuration of kernel ``kind`` (``fwd``, ``bwd_dkdv``, ``bwd_fused``, ``bwd_dq``)."""
    try:
        return GPU_CONFIGS[(kind, head_dim)]
    except KeyError:
        raise ValueError(f"no GPU configuration for kernel {kind!r} at head dim {head_dim}") from None


def kernel_config(kind: str, head_dim: int, device: torch.device) -> KernelConfig:
    """The tile configuration for kernel ``kind`` at ``head_dim`` (GPU table on CUDA, small tiles otherwise)."""
    if device.type != "cuda" and not faults.active(faults.GPU_TILE_CONFIGS):
        return INTERPRETER_CONFIG
    return gpu_config(kind, head_dim)


@contextlib.contextmanager
def gpu_configs_on_cpu() -> Iterator[None]:
    """Run the interpreter with the GPU tile configurations (tests use it to check the H100 tiles' semantics).

    The test fault :data:`megatron_agentic.testing.faults.GPU_TILE_CONFIGS`, switched on for the ``with`` block.
    """
    with faults.forced(faults.GPU_TILE_CONFIGS):
        yield


MAX_GRID_X = 2**31 - 1  # CUDA's gridDim.x limit: segments x heads go there
MAX_GRID_Y = 65535  # CUDA's gridDim.y limit: tiles along the longest segment go there


def launch_grid(num_seqs: int, heads: int, max_seqlen: int, block: int) -> tuple[int, int]:
    """``(segments x heads, tiles of the longest segment)``, checked against CUDA's grid limits."""
    tiles = -(-max(max_seqlen, 1) // block)
    if tiles > MAX_GRID_Y:
        raise ValueError(
            f"a segment of {max_seqlen} tokens needs {tiles} tiles of {block}, over CUDA's grid limit {MAX_GRID_Y}; "
            "split the sequence (context parallelism) or use larger tiles"
        )
    if num_seqs * heads > MAX_GRID_X:
        raise ValueError(f"{num_seqs} segments x {heads} heads exceeds CUDA's grid limit {MAX_GRID_X}")
    return num_seqs * heads, tiles


def seqlen_bucket(max_seqlen: int) -> int:
    """The autotuner's key for ``max_seqlen``: the next power of two (at least 1)."""
    return 1 << (max(int(max_seqlen), 1) - 1).bit_length()
