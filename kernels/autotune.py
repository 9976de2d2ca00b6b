"""Hopper autotuning of the attention kernels: a pruned configuration space, used on CUDA only, cached per shape.

The space is the Triton tutorial's (``BLOCK_M`` 64/128, ``BLOCK_N`` 32/64/128, 4/8 warps, 2-4 stages), pruned
like the tutorial prunes it on Hopper (no 8-warp tile smaller than 128 x 128), plus two rules from
``python -m megatron_agentic.kernels.aot``: the tile that carries the MMA rows (``BLOCK_M`` for forward/dQ, ``BLOCK_N`` for dK/dV)
must have at least 16 rows per warp (otherwise two warpgroups compute the same wgmma), and the estimated shared
memory must fit H100's 227 KiB. The AOT-checked configuration of :data:`megatron_agentic.kernels.attention_config.GPU_CONFIGS` is
always a candidate (first). ``triton.autotune`` benchmarks the candidates the first time a
(power-of-two longest segment, heads, GQA group, causal, head dim, dtype) key appears and caches the winner;
buffers the kernels accumulate into (fp32 dQ/dK/dV) are snapshot once before the first trial and restored after
the tuning, outside the timed calls (:class:`RestoreOutsideTiming`). ``MEGATRON_AGENTIC_ATTN_AUTOTUNE=0`` turns it
off (fixed configurations), and so does ``torch.use_deterministic_algorithms(True)`` (timing-dependent tiles would
change the fp32 summation order between runs). The configuration each kernel runs with is logged once. The
interpreter never autotunes (it cannot benchmark).
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import triton

from megatron_agentic.kernels import attention_config as ac
from megatron_agentic.kernels import flash_attention_kernels as fk

logger = logging.getLogger(__name__)
ENV = "MEGATRON_AGENTIC_ATTN_AUTOTUNE"
H100_MAX_SHARED_BYTES = 227 * 1024
_KEYS = {
    "fwd": ["tune_seqlen", "num_heads", "GROUP", "CAUSAL", "HEAD_DIM", "PREC"],
    "bwd_dkdv": ["tune_seqlen", "num_head_progs", "GROUP", "HEADS", "CAUSAL", "HEAD_DIM", "PREC"],
    "bwd_fused": ["tune_seqlen", "num_head_progs", "GROUP", "HEADS", "CAUSAL", "HEAD_DIM", "PREC"],
    "bwd_dq": ["tune_seqlen", "num_heads", "GROUP", "CAUSAL", "HEAD_DIM", "PREC"],
}


def smem_estimate(kind: str, head_dim: int, cfg: ac.KernelConfig, elem_bytes: int = 2) -> int:
    """Shared memory (bytes) of a configuration: resident tiles plus ``num_stages`` buffers of the streamed ones.

    Matches the AOT compile metadata of the checked configurations to within 1 KiB (e.g. forward d=128 128 x 64,
    3 stages: 128 KiB; fused backward d=128 64 x 128, 2 stages: 160 KiB).
    """
    d = head_dim
    if kind == "fwd":  # Q resident, K and V streamed
        return elem_bytes * (cfg.block_m * d + cfg.num_stages * 2 * cfg.block_n * d)
    if kind in ("bwd_dkdv", "bwd_fused"):  # K, V resident, Q and dO streamed (+ dS^T staged for the dQ matmul)
        total = elem_bytes * (2 * cfg.block_n * d + cfg.num_stages * 2 * cfg.block_m * d)
        return total + (2 * elem_bytes * cfg.block_m * cfg.block_n if kind == "bwd_fused" else 0)
    if kind == "bwd_dq":  # Q, dO resident, K and V streamed
        return elem_bytes * (2 * cfg.block_m * d + cfg.num_stages * 2 * cfg.block_n * d)
    raise ValueError(f"unknown kernel {kind!r}")


def keep_config(kind: str, head_dim: int, cfg: ac.KernelConfig) -> bool:
    """Whether ``cfg`` stays in the Hopper space of ``kind`` at ``head_dim``."""
    if cfg.num_warps == 8 and cfg.block_m * cfg.block_n < 128 * 128:
        return False  # the tutorial's Hopper prune
    mma_rows = cfg.block_n if kind in ("bwd_dkdv", "bwd_fused") else cfg.block_m
    if mma_rows < 16 * cfg.num_warps:
        return False  # warps would cover more rows than the tile has: duplicated wgmma
    return smem_estimate(kind, head_dim, cfg) <= H100_MAX_SHARED_BYTES


def hopper_configs(kind: str, head_dim: int) -> list[ac.KernelConfig]:
    """The pruned candidates, the AOT-checked configuration first."""
    base = ac.gpu_config(kind, head_dim)
    out = [base]
    for bm in (64, 128):
        for bn in (32, 64, 128):
            for warps in (4, 8):
                for stages in (2, 3, 4):
                    cfg = ac.KernelConfig(bm, bn, warps, stages)
                    if cfg != base and keep_config(kind, head_dim, cfg):
                        out.append(cfg)
    return out


def enabled(device: torch.device) -> bool:
    """Autotune on CUDA unless ``MEGATRON_AGENTIC_ATTN_AUTOTUNE=0`` or deterministic algorithms are requested.

    Under ``torch.use_deterministic_algorithms(True)`` the tiles must not depend on per-process timings (the tile
    sizes set the fp32 summation order), so the fixed AOT-checked configurations are used. Never under the
    interpreter (it cannot benchmark).
    """
    if device.type != "cuda" or ac.is_interpreter() or os.environ.get(ENV, "1") == "0":
        return False
    return not torch.are_deterministic_algorithms_enabled()


class RestoreOutsideTiming:
    """Autotune hooks that keep the buffers a kernel accumulates into intact without timing a copy per trial.

    ``triton.autotune(restore_value=...)`` clones the buffers before and copies them back after *every* trial,
    inside the timed call (the fused backward's fp32 dQ/dK/dV: ~1.5 GiB per trial at 32K tokens x 32 heads x 128).
    Here the first trial of a tuning snapshots them once (in the benchmark's untimed warm-up call), later trials
    accumulate into them freely (values do not change a kernel's speed), and the autotuner's end-of-tuning
    ``pre_hook(reset_only=True)`` call, or a failing trial, restores the snapshot.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.saved: dict[str, torch.Tensor] | None = None
        self.snapshots = 0
        """Number of snapshots taken (one per tuning)."""

    def pre_hook(self, nargs: dict, reset_only: bool = False) -> None:
        """Snapshot before the first trial; restore when the autotuner signals the end of the tuning."""
        if reset_only:
            self._restore(nargs)
        elif self.saved is None:
            self.saved = {n: nargs[n].clone() for n in self.names if nargs.get(n) is not None}
            self.snapshots += 1

    def post_hook(self, nargs: dict, exception: BaseException | None) -> None:
        """Nothing per trial; a failed trial restores at once (the next trial snapshots again)."""
        if exception is not None:
            self._restore(nargs)

    def _restore(self, nargs: dict) -> None:
        for name, value in (self.saved or {}).items():
            nargs[name].copy_(value)
        self.saved = None


_LOGGED: set[tuple] = set()


def log_choice_once(kind: str, head_dim: int, cfg: ac.KernelConfig, how: str, key: tuple = ()) -> None:
    """Log the tile configuration a kernel runs with, once per (kernel, head dim, key, configuration)."""
    entry = (kind, head_dim, key, cfg, how)
    if entry in _LOGGED:
        return
    _LOGGED.add(entry)
    logger.info(
        "attention kernel %s (head dim %d%s): BLOCK_M=%d BLOCK_N=%d num_warps=%d num_stages=%d (%s)",
        kind, head_dim, f", key {key}" if key else "", cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages, how,
    )  # fmt: skip


def config_of(best: triton.Config) -> ac.KernelConfig:
    """The :class:`~megatron_agentic.kernels.attention_config.KernelConfig` of an autotuner's ``triton.Config``."""
    return ac.KernelConfig(best.kwargs["BLOCK_M"], best.kwargs["BLOCK_N"], best.num_warps, best.num_stages)


@functools.cache
def autotuned_kernel(kind: str, head_dim: int) -> triton.runtime.Autotuner:
    """``triton.autotune`` over :func:`hopper_configs` for one (kernel, head dim); results cached per key."""
    configs = [
        triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, num_warps=c.num_warps, num_stages=c.num_stages)
        for c in hopper_configs(kind, head_dim)
    ]
    # Kernels that add into their outputs (the fused backward's atomics, dQ into the ring's running buffer) get those
    # buffers restored after the tuning; zeroing them instead would wipe a running dQ passed as ``dq_accum``.
    restore = {"bwd_fused": ["DQ", "DK", "DV"], "bwd_dq": ["DQ"]}.get(kind)
    hooks = {}
    if restore:
        keeper = RestoreOutsideTiming(restore)
        hooks = {"pre_hook": keeper.pre_hook, "post_hook": keeper.post_hook}
    return triton.autotune(configs=configs, key=_KEYS[kind], **hooks)(fk.AOT_KERNELS[kind][0])
