"""Paper analysis of zigzag ring attention at long context: FLOPs, bytes and overlap per ring step, memory per rank.

``python -m megatron_agentic.kernels.ring_analysis`` prints the tables kept in ``kernels/README.md`` (Qwen3-30B-A3B attention
shapes, 128K tokens, CP = 4, 8, 16). The throughput and bandwidth figures are stated assumptions, not
measurements; change them with the flags.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class AttentionShape:
    """Attention shape of one transformer layer."""

    heads: int = 32
    """Query heads (Qwen3-30B-A3B: 32)."""
    kv_heads: int = 4
    """Key/value heads (GQA; Qwen3-30B-A3B: 4)."""
    head_dim: int = 128
    """Head dimension."""
    layers: int = 48
    """Transformer layers."""
    bytes_per_elem: int = 2
    """bf16 activations."""

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if min(self.heads, self.kv_heads, self.head_dim, self.layers, self.bytes_per_elem) <= 0:
            raise ValueError("all AttentionShape fields must be positive")


@dataclass(frozen=True)
class RingStep:
    """Per-rank, per-layer cost of one ring step (every step costs the same under zigzag sharding)."""

    world_size: int
    """Context-parallel size."""
    chunk: int
    """Tokens per zigzag chunk (``seqlen / 2W``); a rank holds two."""
    fwd_flops: float
    """Forward FLOPs of the block computed at one step (QK^T and PV)."""
    bwd_flops: float
    """Backward FLOPs of one step (2.5x forward: recomputed QK^T, dV, dP, dQ, dK)."""
    fwd_bytes: float
    """Bytes each rank sends per forward step (its visiting K and V, bf16)."""
    bwd_bytes: float
    """Bytes each rank sends per backward step (K, V in bf16 plus dK, dV in fp32)."""


def ring_step(seqlen: int, world_size: int, shape: AttentionShape) -> RingStep:
    """Cost of one step. Step 0 is a causal 2C x 2C block (~2C^2 pairs); later steps are full 2C x C or C x 2C."""
    if seqlen % (2 * world_size):
        raise ValueError(f"seqlen {seqlen} must be divisible by 2 * world_size = {2 * world_size}")
    chunk = seqlen // (2 * world_size)
    pairs = 2 * chunk * chunk
    fwd = 4.0 * pairs * shape.head_dim * shape.heads  # 2 matmuls x 2 FLOPs per multiply-add
    local_kv = 2 * (2 * chunk) * shape.kv_heads * shape.head_dim
    return RingStep(
        world_size=world_size,
        chunk=chunk,
        fwd_flops=fwd,
        bwd_flops=2.5 * fwd,
        fwd_bytes=local_kv * shape.bytes_per_elem,
        bwd_bytes=local_kv * (shape.bytes_per_elem + 4),
    )


def saved_activation_bytes(seqlen: int, world_size: int, shape: AttentionShape) -> dict[str, float]:
    """Bytes per rank per layer that attention saves for backward, and the transient ring buffers."""
    tokens = seqlen // world_size
    q_or_out = tokens * shape.heads * shape.head_dim * shape.bytes_per_elem
    kv = 2 * tokens * shape.kv_heads * shape.head_dim * shape.bytes_per_elem
    lse = tokens * shape.heads * 4
    return {
        "saved_per_layer": 2 * q_or_out + kv + lse,  # q, out, k, v, lse
        "transient_fwd": tokens * shape.heads * shape.head_dim * 4 + 2 * kv,  # fp32 out accumulator + 2 K/V buffers
        # fp32 dQ accumulator, current + next K/V, fp32 dK/dV: travelling, received and this step's contribution
        "transient_bwd": tokens * shape.heads * shape.head_dim * 4 + 2 * kv + 3 * 2 * kv,
    }


def tables(
    seqlen: int, worlds: list[int], fwd_tflops: float, bwd_tflops: float, nvlink_gbs: float, ib_gbs: float
) -> str:
    """Markdown tables of per-step cost, overlap and memory."""
    shape = AttentionShape()
    out = [
        f"Per rank, per layer, one ring step, {seqlen // 1024}K tokens, {shape.heads} query / {shape.kv_heads} KV "
        f"heads, d={shape.head_dim}. Assumed: forward {fwd_tflops:.0f} TFLOP/s, backward {bwd_tflops:.0f} TFLOP/s, "
        f"NVLink P2P {nvlink_gbs:.0f} GB/s, 400 Gb/s IB {ib_gbs:.0f} GB/s per GPU.",
        "",
        "| CP | chunk | fwd GFLOP | fwd MB sent | fwd compute ms | NVLink ms | IB ms | bwd GFLOP | bwd MB sent "
        "| bwd compute ms | NVLink ms | IB ms | hidden on IB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in worlds:
        st = ring_step(seqlen, w, shape)
        tf, tb = st.fwd_flops / (fwd_tflops * 1e12) * 1e3, st.bwd_flops / (bwd_tflops * 1e12) * 1e3
        nf, nb = st.fwd_bytes / (nvlink_gbs * 1e9) * 1e3, st.bwd_bytes / (nvlink_gbs * 1e9) * 1e3
        inf_, inb = st.fwd_bytes / (ib_gbs * 1e9) * 1e3, st.bwd_bytes / (ib_gbs * 1e9) * 1e3
        hidden = "yes" if inf_ < tf and inb < tb else "no"
        out.append(
            f"| {w} | {st.chunk} | {st.fwd_flops / 1e9:.0f} | {st.fwd_bytes / 1e6:.1f} | {tf:.2f} | {nf:.3f} "
            f"| {inf_:.3f} | {st.bwd_flops / 1e9:.0f} | {st.bwd_bytes / 1e6:.1f} | {tb:.2f} | {nb:.3f} | {inb:.3f} "
            f"| {hidden} ({tf / inf_:.0f}x / {tb / inb:.0f}x) |"
        )
    min_chunk = fwd_tflops * 1e12 * shape.kv_heads / (ib_gbs * 1e9 * shape.heads)
    out += [
        "",
        f"Forward compute/comm = chunk x (heads / kv_heads) x (bandwidth / throughput) (bf16): the transfer "
        f"hides once a chunk exceeds ~{min_chunk:.0f} tokens on IB (~"
        f"{min_chunk * ib_gbs / nvlink_gbs:.0f} on NVLink).",
        "",
        "| CP | tokens/rank | saved per layer MB | saved x 48 layers GB | transient fwd MB | transient bwd MB |",
        "|---|---|---|---|---|---|",
    ]
    for w in worlds:
        m = saved_activation_bytes(seqlen, w, shape)
        out.append(
            f"| {w} | {seqlen // w} | {m['saved_per_layer'] / 1e6:.0f} | {m['saved_per_layer'] * shape.layers / 1e9:.1f} "
            f"| {m['transient_fwd'] / 1e6:.0f} | {m['transient_bwd'] / 1e6:.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the analysis tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqlen", type=int, default=131072)
    parser.add_argument("--cp", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--fwd-tflops", type=float, default=400.0, help="assumed attention forward throughput")
    parser.add_argument("--bwd-tflops", type=float, default=300.0, help="assumed attention backward throughput")
    parser.add_argument("--nvlink-gbs", type=float, default=370.0, help="assumed NVLink P2P bandwidth per direction")
    parser.add_argument("--ib-gbs", type=float, default=45.0, help="assumed usable 400 Gb/s InfiniBand bandwidth")
    args = parser.parse_args(argv)
    print(tables(args.seqlen, args.cp, args.fwd_tflops, args.bwd_tflops, args.nvlink_gbs, args.ib_gbs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
