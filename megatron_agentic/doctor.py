"""``megatron-agentic doctor``: what this machine has and which code paths training will take.

Reports the GPUs, CUDA/NCCL, Transformer Engine, Apex, DALI, Triton (driver or interpreter),
megatron-core, transformers, and the resulting choices: platform (CUDA+NCCL or CPU+gloo with
redirections), attention backend without and with context parallelism, MoE token dispatcher, precision,
batch loader, and the effective performance settings (what megatron-core is given) for a recipe on this machine.
``--json`` for machines; ``--require-gpu`` exits 1 without a usable GPU, printing (on stderr) which requirement failed (container checks).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import sys
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _imports(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]


def gpu_report() -> dict[str, Any]:
    """CUDA devices, CUDA/NCCL versions (empty device list on CPU-only machines)."""
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
        "nccl": None,
        "bf16": False,
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
        info["bf16"] = torch.cuda.is_bf16_supported()
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            info["nccl"] = None
    info["distributed_backends"] = [
        b for b in ("nccl", "gloo") if getattr(torch.distributed, f"is_{b}_available", lambda: False)()
    ]
    return info


def gpu_requirement_failure(gpu: dict[str, Any], env: dict[str, str] | None = None) -> str | None:
    """Why ``--require-gpu`` fails for a :func:`gpu_report` (one line), or None when a CUDA GPU is usable."""
    env = dict(os.environ) if env is None else env
    if not gpu.get("cuda_build"):
        return (
            f"torch {gpu.get('torch')} is a CPU-only build (torch.version.cuda is None); install a CUDA build of "
            f"torch or use the project's Docker image"
        )
    if gpu.get("devices"):
        if env.get("MEGATRON_AGENTIC_FORCE_CPU") == "1":
            return "MEGATRON_AGENTIC_FORCE_CPU=1 is set, so training would run on CPU; unset it"
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    hint = (
        f"CUDA_VISIBLE_DEVICES={visible!r} hides every device"
        if visible is not None and not visible.strip(", ")
        else f"CUDA_VISIBLE_DEVICES={visible!r}; check the driver (nvidia-smi) and the container's GPU access "
        f"(docker --gpus all)"
        if visible is not None
        else "check the driver (nvidia-smi) and the container's GPU access (docker --gpus all)"
    )
    return f"torch {gpu.get('torch')} (CUDA {gpu['cuda_build']}) sees no CUDA device: {hint}"


def library_report() -> dict[str, dict[str, Any]]:
    """Availability and version of the optional and required libraries."""
    libs = {
        "megatron-core": ("megatron.core", "megatron-core"),
        "transformer-engine": ("transformer_engine.pytorch", "transformer-engine"),
        "apex": ("apex", "apex"),
        "apex-gradient-fusion": ("fused_weight_gradient_mlp_cuda", "apex"),
        "nvidia-dali": ("nvidia.dali", "nvidia-dali-cuda120"),
        "triton": ("triton", "triton"),
        "transformers": ("transformers", "transformers"),
    }
    out = {}
    for name, (module, dist) in libs.items():
        ok, error = _imports(module)
        version = _version(dist)
        if name == "transformer-engine" and version is None:
            version = _version("transformer_engine")
        if name == "nvidia-dali" and version is None:
            version = _version("nvidia-dali-cuda110") or _version("nvidia-dali-cuda130")
        out[name] = {"available": ok, "version": version, "error": error or None}
    return out


def effective_settings(recipe: str) -> dict[str, Any]:
    """What megatron-core would be given for ``recipe`` on this machine (``megatron_agentic.perf``)."""
    from megatron_agentic.recipes import RecipeError, load_recipe, training_config

    try:
        cfg = training_config(load_recipe(recipe), source=recipe)
        settings = cfg.effective_settings()
    except (RecipeError, ValueError) as exc:
        return {"recipe": recipe, "error": str(exc)}
    return {"recipe": recipe, "summary": settings.summary_lines(), **settings.as_dict()}


def gradient_fusion_line(cuda: bool, te: bool, apex_extension: bool, error: str | None = None) -> str:
    """Whether ``perf.gradient_accumulation_fusion=auto`` turns on here, and why (``megatron_agentic.perf``)."""
    if not (cuda and te):
        return "off (needs CUDA with Transformer Engine)"
    if not apex_extension:
        return (
            "off: Apex's fused_weight_gradient_mlp_cuda does not import (megatron-core's ColumnParallelLinear output "
            f"layer raises without it){': ' + error if error else ''}"
        )
    return "on (Apex's fused_weight_gradient_mlp_cuda imports)"


def code_paths(gpu: dict[str, Any], libs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The implementation choices ``megatron-agentic train`` makes on this machine."""
    from megatron_agentic.config import TrainingConfig
    from megatron_agentic.perf import resolve_attention_backend
    from megatron_agentic.platform import detect_platform

    platform = detect_platform()
    cuda, te = platform.is_cuda, platform.has_transformer_engine
    defaults = TrainingConfig().effective_settings(platform)
    triton_mode = "none"
    if libs["triton"]["available"]:
        triton_mode = "GPU driver" if cuda else "interpreter (TRITON_INTERPRET=1; tests and demos only)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        triton_mode = "interpreter (TRITON_INTERPRET=1 set)"
    paths = {
        "platform": "CUDA + NCCL" if cuda else "CPU + gloo (megatron-core CPU redirections active)",
        "attention (CP=1)": resolve_attention_backend("auto", 1, te),
        "attention (CP>1, 128K)": resolve_attention_backend("auto", 2, te),
        "attention (data.document_attention, thd)": resolve_attention_backend("auto", 1, te, True),
        "layer spec": "Transformer Engine spec (grouped-GEMM experts)"
        if te
        else "local spec (SequentialMLP experts, SP RMSNorm)",
        "MoE token dispatcher": defaults.moe_token_dispatcher,
        "precision (train.precision=auto)": defaults.precision,
        "fused optimizer / norms": "Apex / TE" if (libs["apex"]["available"] or te) else "torch fallbacks",
        "gradient accumulation fusion (auto)": gradient_fusion_line(
            cuda, te, libs["apex-gradient-fusion"]["available"], libs["apex-gradient-fusion"]["error"]
        ),
        "triton kernels": triton_mode,
        "batch loader": "torch (default); dali available"
        if libs["nvidia-dali"]["available"]
        else "torch (dali not installed)",
        "checkpoint conversion": "available"
        if libs["transformers"]["available"]
        else "safetensors only (no transformers)",
    }
    if os.environ.get("MEGATRON_AGENTIC_FORCE_CPU") == "1":
        paths["platform"] += " [MEGATRON_AGENTIC_FORCE_CPU=1]"
    return paths


def collect(recipe: str = "qwen3-30b-a3b-stage1") -> dict[str, Any]:
    """The whole report as a dict (effective performance settings for ``recipe``)."""
    gpu = gpu_report()
    libs = library_report()
    return {
        "python": sys.version.split()[0],
        "gpu": gpu,
        "libraries": libs,
        "code_paths": code_paths(gpu, libs),
        "effective": effective_settings(recipe),
    }


def _render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    gpu = report["gpu"]
    t = Table(title="megatron-agentic doctor", show_header=False)
    t.add_column("item")
    t.add_column("value")
    t.add_row("python / torch", f"{report['python']} / {gpu['torch']} (CUDA build {gpu['cuda_build']})")
    if gpu["devices"]:
        names = {d["name"] for d in gpu["devices"]}
        t.add_row(
            "GPUs",
            f"{len(gpu['devices'])} x {', '.join(sorted(names))} ({gpu['devices'][0]['memory_gib']} GiB, "
            f"sm_{gpu['devices'][0]['capability'].replace('.', '')})",
        )
        t.add_row("NCCL", str(gpu["nccl"]))
    else:
        t.add_row("GPUs", "none (CPU only)")
    t.add_row("distributed backends", ", ".join(gpu["distributed_backends"]))
    for name, lib in report["libraries"].items():
        status = f"[green]yes[/] {lib['version'] or ''}" if lib["available"] else f"[yellow]no[/] {lib['error'] or ''}"
        t.add_row(name, status)
    for name, value in report["code_paths"].items():
        t.add_row(f"-> {name}", value)
    effective = report["effective"]
    for i, line in enumerate(effective.get("summary") or [f"[red]{effective.get('error')}[/]"]):
        t.add_row(f"-> effective ({effective['recipe']})" if i == 0 else "", line)
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="megatron-agentic doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--require-gpu", action="store_true", help="exit 1, saying why, when no CUDA GPU is usable")
    parser.add_argument(
        "--recipe", default="qwen3-30b-a3b-stage1", help="recipe whose effective performance settings to show"
    )
    args = parser.parse_args(argv)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = collect(args.recipe)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _render(report)
    if args.require_gpu:
        reason = gpu_requirement_failure(report["gpu"])
        if reason is not None:
            print(f"doctor: --require-gpu failed: {reason}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
