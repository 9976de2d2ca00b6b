"""CPU + gloo process groups for conversion (``mcore-to-hf`` loads through megatron-core in one rank), and
model chunks of any TP/PP/EP layout for the tests and the build-a-model baseline of the benchmark."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from megatron_agentic.models.qwen3_moe.presets import ModelPreset

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, status_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ["MEGATRON_AGENTIC_FORCE_CPU"] = "1"  # conversion runs on CPU whatever the machine
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    from megatron_agentic.platform import setup_platform

    setup_platform(rank)  # CPU redirections, including the no-op torch.cuda.synchronize dist_checkpointing needs
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    except BaseException:  # noqa: BLE001 - reported to the parent
        Path(status_dir, f"rank{rank}.err").write_text(traceback.format_exc(), encoding="utf-8")
    finally:
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()


def run_on_ranks(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` CPU processes joined by gloo; re-raise a rank's failure."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ma-convert-") as status_dir:
        port = _free_port()
        mp.start_processes(_entry, args=(world, port, fn, args, status_dir), nprocs=world, start_method="spawn")
        errors = sorted(Path(status_dir).glob("rank*.err"))
        if errors:
            raise RuntimeError(f"conversion failed on {errors[0].stem}:\n{errors[0].read_text(encoding='utf-8')}")


def init_layout(tensor: int, pipeline: int, expert: int, expert_tensor: int | None = None) -> None:
    """Initialise megatron-core's parallel state (world = tensor * pipeline * expert; DP = expert).

    ``expert_tensor`` is the expert-tensor-parallel size (default: ``tensor``, megatron-core's default); pass the
    same value to :func:`build_local_model`.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor,
        pipeline_model_parallel_size=pipeline,
        expert_model_parallel_size=expert,
        expert_tensor_parallel_size=expert_tensor if expert_tensor is not None else tensor,
    )
    model_parallel_cuda_manual_seed(1234)


def build_local_model(
    arch: ModelPreset, tensor: int, pipeline: int, expert: int, precision: str, expert_tensor: int | None = None
) -> Any:
    """This rank's ``GPTModel`` chunk with the local layer spec and no random initialisation.

    ``expert_tensor`` (default ``tensor``) must equal the parallel state's expert-tensor-parallel size.
    """
    from megatron.core import parallel_state

    from megatron_agentic.config import ModelConfig, ParallelConfig, TrainConfig, TrainingConfig
    from megatron_agentic.models.qwen3_moe.model import build_model, transformer_config_from
    from megatron_agentic.platform import Platform

    overrides = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch) if f.name != "name"}
    cfg = TrainingConfig(
        model=ModelConfig(preset="qwen3-30b-a3b", attention_backend="local", overrides=overrides),
        parallel=ParallelConfig(tensor=tensor, pipeline=pipeline, expert=expert, expert_tensor=expert_tensor or tensor),
        train=TrainConfig(precision=precision, seq_length=arch.max_position_embeddings),
    )
    settings = cfg.effective_settings(Platform("cpu", "gloo", False, False))
    return build_model(
        cfg,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        transformer_config=transformer_config_from(cfg, settings, perform_initialization=False),
        settings=settings,
    )


def layer_numbers(model: Any) -> dict[int, int]:
    """Local layer index -> global 0-based layer index of a ``GPTModel`` chunk."""
    return {i: layer.layer_number - 1 for i, layer in enumerate(model.decoder.layers)}


def tensor_state(model: Any) -> dict[str, torch.Tensor]:
    """The model's parameter tensors by name (no ``_extra_state`` entries)."""
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and "_extra_state" not in k}
