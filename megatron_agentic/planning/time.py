"""FLOPs per token, measured throughput tables and the MFU a plan's step time uses."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from megatron_agentic.models.family import Architecture
from megatron_agentic.models.registry import family_of
from megatron_agentic.recipes import PlanAssumptions


def recompute_flops_per_token(
    arch: Architecture,
    seq_length: int,
    recompute: str,
    recompute_modules: list[str] | None = None,
    layer_fraction: float = 1.0,
    attended_length: float | None = None,
) -> float:
    """Extra FLOPs per token spent re-running forward passes in backward.

    ``full``: one more forward of the recomputed layers (``layer_fraction`` of them): a third of their
    training FLOPs. ``selective``: a forward of the recomputed modules (``core_attn``: the attention
    product; ``moe``: router and routed experts); norms and activations are element-wise (no matmul FLOPs).
    ``attended_length``: per-document attention's attended length (:mod:`megatron_agentic.attention_cost`),
    default ``seq_length`` (the whole sequence).
    """
    if recompute == "none":
        return 0.0
    b = family_of(arch).param_breakdown(arch)
    attended = seq_length if attended_length is None else attended_length
    attention_fwd = 2 * arch.num_layers * attended * arch.num_attention_heads * arch.kv_channels
    if recompute == "full":
        return layer_fraction * (2.0 * arch.num_layers * b.matmul_per_layer_active + attention_fwd)
    extra = 0.0
    modules = set(recompute_modules or ())
    if "core_attn" in modules:
        extra += attention_fwd
    if "moe" in modules:
        extra += 2.0 * arch.num_layers * (b.topk * b.expert + b.router_per_layer)
    if "mlp" in modules:
        extra += 2.0 * arch.num_layers * b.mlp_per_layer
    return extra


def flops_per_token(arch: Architecture, seq_length: int, attended_length: float | None = None) -> float:
    """Model training FLOPs per token (forward + backward, causal attention, no recompute).

    ``attended_length`` replaces ``seq_length`` in the attention term for per-document attention
    (:mod:`megatron_agentic.attention_cost`); default: attention over the whole sequence.
    """
    b = family_of(arch).param_breakdown(arch)
    matmul = b.active - b.embedding - b.final_norm
    attended = seq_length if attended_length is None else attended_length
    attention = 6 * arch.num_layers * attended * arch.num_attention_heads * arch.kv_channels
    return 6.0 * matmul + attention


class ThroughputError(ValueError):
    """A problem with a throughput table, naming the file and field."""


THROUGHPUT_SCHEMA = "megatron-agentic/throughput/1"
"""``schema`` value of the throughput tables ``benchmarks/gpu_acceptance.py`` writes."""


@dataclasses.dataclass
class ThroughputTable:
    """A measured throughput table (``benchmarks/gpu_acceptance.py --out DIR`` writes ``DIR/throughput.json``)."""

    path: str
    """File it was read from."""
    gpu: str
    """GPU name the measurement ran on."""
    entries: list[dict[str, Any]]
    """Rows: ``name``, ``precision`` (``bf16`` or ``fp8:<recipe>``), ``seq_length``, ``num_layers``,
    ``num_experts``, ``tokens_per_s_per_gpu``, ``tflops_per_gpu`` (model FLOPs), ``peak_memory_gib``."""

    def best_for(self, fp8: str | None) -> dict[str, Any] | None:
        """The fastest row of the same precision family (FP8 rows for an FP8 recipe, else bf16 rows)."""
        rows = [e for e in self.entries if e["precision"].startswith("fp8") == (fp8 is not None)]
        return max(rows, key=lambda e: e["tflops_per_gpu"]) if rows else None


def load_throughput(path: str) -> ThroughputTable:
    """Read and check a throughput table; raises ThroughputError naming the file and field."""
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise ThroughputError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ThroughputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("schema") != THROUGHPUT_SCHEMA:
        raise ThroughputError(f"{path}: field 'schema' must be {THROUGHPUT_SCHEMA!r}")
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ThroughputError(f"{path}: field 'entries' must be a non-empty list")
    for i, e in enumerate(entries):
        for key, kind in (("name", str), ("precision", str), ("seq_length", int), ("tflops_per_gpu", (int, float))):
            if not isinstance(e, dict) or not isinstance(e.get(key), kind):
                raise ThroughputError(
                    f"{path}: entries[{i}].{key} missing or not {getattr(kind, '__name__', 'number')}"
                )
        if e["tflops_per_gpu"] <= 0:
            raise ThroughputError(f"{path}: entries[{i}].tflops_per_gpu must be > 0")
    return ThroughputTable(path=str(path), gpu=str(data.get("gpu", "unknown GPU")), entries=entries)


MEASURED_DISCOUNT = 0.7
"""Low end of the MFU range from a measurement, as a fraction of it: the acceptance run measures a cut model
(2-4 layers, 16-32 experts) on one node; the full model on many nodes adds inter-node expert all-to-all and
data-parallel traffic."""


def mfu_for(assume: PlanAssumptions, train: Any, table: ThroughputTable | None) -> tuple[float, float, float, str]:
    """(mfu, low, high, source) from a measured table when it has a matching row, else the recipe's assumption."""
    row = table.best_for(train.fp8) if table is not None else None
    if row is not None:
        mfu = min(float(row["tflops_per_gpu"]) / assume.peak_tflops, 1.0)
        source = (
            f"measured: {table.path} row {row['name']!r} ({table.gpu}, {row['tflops_per_gpu']:.0f} TFLOP/s/GPU "
            f"model FLOPs, seq {row['seq_length']}, {row.get('num_layers', '?')} layers, "
            f"{row.get('num_experts', '?')} experts) / plan.peak_tflops {assume.peak_tflops:g}; low end "
            f"x{MEASURED_DISCOUNT} for the full model across nodes"
        )
        return mfu, mfu * MEASURED_DISCOUNT, mfu, source
    note = f" (no {'FP8' if train.fp8 else 'bf16'} row in {table.path})" if table is not None else ""
    return assume.mfu, assume.mfu_low, assume.mfu_high, f"assumption: {assume.mfu_source}{note}"
