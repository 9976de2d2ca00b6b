"""The ``plan`` tables (rich)."""

from __future__ import annotations

from megatron_agentic.planning.plan import PlanResult


def render_table(result: PlanResult) -> None:
    """Print the plan as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lay = result.layout
    table = Table(title=f"plan: {result.recipe} on {result.nodes} x {result.gpus_per_node} GPUs", show_header=False)
    table.add_column("item")
    table.add_column("value", justify="right")
    rows = [
        (
            "layout",
            f"TP={lay.tensor} PP={lay.pipeline} CP={lay.context} EP={lay.expert} ETP={lay.expert_tensor} "
            f"DP={lay.data} EDP={lay.expert_data} VPP={lay.virtual_pipeline or '-'} SP={lay.sequence_parallel}",
        ),
        ("total / active params", f"{result.total_params / 1e9:.2f}B / {result.active_params / 1e9:.2f}B"),
        ("params per GPU", f"{result.params_per_gpu / 1e9:.3f}B"),
    ]
    rows += [(f"memory: {k}", f"{v:.2f} GiB") for k, v in result.memory.items() if k != "total"]
    rows += [
        ("memory per GPU", f"{result.memory_gib_per_gpu:.2f} GiB ({'fits' if result.fits else 'DOES NOT FIT'})"),
        ("tokens per step", f"{result.tokens_per_step:,}"),
        ("iterations", f"{result.iterations:,} = {result.train_tokens:,} tokens / {result.tokens_per_step:,}"),
        ("model TFLOP per token", f"{result.flops_per_token / 1e12:.4f}"),
        (
            f"attention ({result.attention_mode})",
            f"{result.attention_flops_per_token / 1e12:.4f} TFLOP/token (whole sequence "
            f"{result.attention_flops_per_token_sequence / 1e12:.4f}); attended length {result.attended_length:,.0f}",
        ),
        ("document lengths", result.attention_lengths),
        ("recompute", result.recompute + (f" {result.recompute_modules}" if result.recompute_modules else "")),
        ("precision", result.precision),
        ("MFU assumed", f"{result.mfu_assumed:.3f} (range {result.mfu_range[0]:.3f}-{result.mfu_range[1]:.3f})"),
        ("MFU source", result.mfu_source),
        (
            "step time (est.)",
            f"{result.step_time_s:.2f} s ({result.step_time_range_s[0]:.2f}-{result.step_time_range_s[1]:.2f})",
        ),
        (
            "GPU-hours / wall-clock",
            f"{result.gpu_hours:,.0f} / {result.wall_hours:,.1f} h "
            f"(wall {result.wall_hours_range[0]:,.1f}-{result.wall_hours_range[1]:,.1f} h)",
        ),
    ]
    est = result.sequence_estimate
    if est:
        rows += [
            ("padding (CP)", f"{result.padding_fraction:.2%} extra tokens"),
            (
                "activations seq / doc",
                f"{result.activations_gib['sequence']:.2f} / {result.activations_gib['document']:.2f} GiB",
            ),
            (
                "whole-sequence attention",
                f"{est['flops_per_token'] / 1e12:.4f} TFLOP/token, step {est['step_time_s']:.2f} s, "
                f"{est['gpu_hours']:,.0f} GPU-h",
            ),
        ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    for e in result.errors:
        console.print(f"[red]error:[/] {e}")


def render_search(results: list[PlanResult]) -> None:
    """Print the layouts found by :func:`search_layouts`."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not results:
        console.print("[red]no layout fits[/]: raise the node count or lower train.micro_batch_size")
        return
    first = results[0]
    table = Table(title=f"layouts for {first.recipe} on {first.nodes} x {first.gpus_per_node} GPUs (best first)")
    for col in ("TP", "CP", "PP", "EP", "DP", "recompute", "GiB/GPU", "step s"):
        table.add_column(col, justify="right")
    for r in results:
        lay = r.layout
        recompute = r.recompute if r.recompute != "none" else "-"
        table.add_row(
            str(lay.tensor),
            str(lay.context),
            str(lay.pipeline),
            str(lay.expert),
            str(lay.data),
            recompute,
            f"{r.memory_gib_per_gpu:.1f}",
            f"{r.step_time_s:.2f}",
        )
    console.print(table)
