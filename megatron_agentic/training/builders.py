"""Build the pieces of a training job: process groups, model chunks (DDP), optimizer and LR schedule.

Everything here is megatron-core: ``parallel_state``, ``GPTModel`` chunks per (virtual) pipeline stage,
``DistributedDataParallel``, ``get_megatron_optimizer`` (distributed optimizer) and
``OptimizerParamScheduler`` (warmup + cosine, or warmup-stable-decay).
"""

from __future__ import annotations

import gc
import logging
import os
import random
import socket
from typing import Any

import numpy as np
import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer import TransformerConfig

from megatron_agentic.config import TrainingConfig
from megatron_agentic.models.registry import build_model, transformer_config_from
from megatron_agentic.perf import EffectiveSettings, resolve_settings
from megatron_agentic.platform import Platform

logger = logging.getLogger(__name__)


def resolve_precision(cfg: TrainingConfig, platform: Platform) -> str:
    """``bf16`` on CUDA and ``fp32`` on CPU for ``train.precision=auto`` (from :func:`resolve_settings`)."""
    return resolve_settings(platform, cfg).precision


def log_effective_settings(settings: EffectiveSettings) -> None:
    """Log what megatron-core is given (first lines of a run)."""
    for line in settings.summary_lines():
        logger.info("effective: %s", line)


class ManualGC:
    """Python garbage collection at fixed steps (``perf.manual_gc``), as Megatron-LM's ``--manual-gc``.

    Disables the automatic collector (whose pauses stall all ranks at random times) and collects every
    ``interval`` steps on every rank at once. ``step(iteration)`` is called once per iteration.
    """

    def __init__(self, enabled: bool, interval: int) -> None:
        self.enabled, self.interval = enabled, interval
        if enabled:
            gc.disable()
            gc.collect()

    @classmethod
    def for_run(cls, cfg: TrainingConfig, platform: Platform) -> ManualGC:
        """The collector the effective settings ask for (``perf.manual_gc``, ``perf.manual_gc_interval``)."""
        settings = resolve_settings(platform, cfg)
        return cls(settings.manual_gc, settings.manual_gc_interval)

    def step(self, iteration: int) -> None:
        """Collect when ``iteration`` is a multiple of the interval."""
        if self.enabled and iteration % self.interval == 0:
            gc.collect()

    def close(self) -> None:
        """Re-enable automatic collection."""
        if self.enabled:
            gc.enable()


def sync_params(chunks: list[Any]) -> None:
    """Finish the parameter all-gather of the last optimizer step now (before a checkpoint save or evaluation).

    With ``perf.overlap_param_gather`` the distributed optimizer leaves the gather of updated parameters to the
    next training forward's pre-hooks; until then other ranks' shards are stale in each chunk. Megatron-LM's
    training loop syncs them before saving and evaluating (``disable_forward_pre_hook(param_sync=True)``); this
    forces the same synchronous gather. No-op without the overlap.
    """
    for chunk in chunks:
        if getattr(chunk, "ddp_config", None) is not None and chunk.ddp_config.overlap_param_gather:
            chunk.start_param_sync(force_sync=True)


def _init_tp_comm_overlap(cfg: TrainingConfig, tconfig: TransformerConfig) -> None:
    """Initialise Transformer Engine userbuffers for ``tp_comm_overlap`` (Megatron-LM ``_initialize_tp_communicators``)."""
    from transformer_engine.pytorch import module as te_module

    shape = [cfg.train.seq_length * cfg.train.micro_batch_size // cfg.parallel.context, tconfig.hidden_size]
    te_module.base.initialize_ub(
        shape=shape,
        tp_size=cfg.parallel.tensor,
        use_fp8=tconfig.fp8 is not None,
        bootstrap_backend="nccl",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world_size_from_env() -> int:
    """World size of this launch (``WORLD_SIZE`` from torchrun, else 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(cfg: TrainingConfig, platform: Platform) -> None:
    """Start ``torch.distributed`` (torchrun env, or a single local process) and megatron-core's groups."""
    if not torch.distributed.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            torch.distributed.init_process_group(backend=platform.backend)
        else:
            torch.distributed.init_process_group(
                backend=platform.backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
            )
    p = cfg.parallel
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=p.tensor,
        pipeline_model_parallel_size=p.pipeline,
        virtual_pipeline_model_parallel_size=p.virtual_pipeline,
        context_parallel_size=p.context,
        expert_model_parallel_size=p.expert,
        # megatron-core's default (None) makes expert TP follow TP; the config's value must decide (ETP groups).
        expert_tensor_parallel_size=p.expert_tensor,
    )
    seed_everything(cfg.train.seed)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and megatron-core's model-parallel RNG tracker.

    Every rank uses the same base seed so that CPU-side weight initialisation
    (``use_cpu_initialization``) is identical whatever the tensor-parallel size.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def teardown_distributed() -> None:
    """Destroy megatron-core groups and the default process group (the latter even when the former raises)."""
    try:
        parallel_state.destroy_model_parallel()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def build_model_chunks(
    cfg: TrainingConfig, platform: Platform
) -> tuple[list[DistributedDataParallel], TransformerConfig]:
    """Model chunks for this rank (one per virtual pipeline stage), wrapped in megatron-core DDP."""
    settings = resolve_settings(platform, cfg)
    if torch.distributed.get_rank() == 0:
        log_effective_settings(settings)
    tconfig = transformer_config_from(cfg, settings)
    if tconfig.tp_comm_overlap:
        _init_tp_comm_overlap(cfg, tconfig)
    vpp = cfg.parallel.virtual_pipeline
    chunks = []
    for vp_stage in range(vpp or 1):
        stage = vp_stage if vpp else None
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage)
        model = build_model(
            cfg, pre_process=pre, post_process=post, transformer_config=tconfig, settings=settings, vp_stage=stage
        )
        if platform.is_cuda:
            model.cuda(torch.cuda.current_device())
        chunks.append(model)
    # perf.check_for_nan_in_grad is honoured by the loop's guard, not by DDP: megatron-core's check raises on the rank
    # whose local gradients are NaN, before the data-parallel reduce the other ranks are waiting in. The NaN/Inf
    # reaches the global gradient norm after the reduce, identical on every rank, where all ranks skip the step.
    ddp_config = DistributedDataParallelConfig(**ddp_settings(settings.ddp))
    wrapped = [
        DistributedDataParallel(config=tconfig, ddp_config=ddp_config, module=chunk, disable_bucketing=(i > 0))
        for i, chunk in enumerate(chunks)
    ]
    for chunk in wrapped:
        chunk.broadcast_params()
    tconfig.finalize_model_grads_func = finalize_model_grads
    tconfig.no_sync_func = [c.no_sync for c in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    # As Megatron-LM's training.setup_model_and_optimizer (align_grad_reduce / align_param_gather): with
    # overlapped reduce / gather the schedule starts each chunk's bucket sync itself.
    if settings.ddp["overlap_grad_reduce"]:
        funcs = [c.start_grad_sync for c in wrapped]
        tconfig.grad_sync_func = funcs if len(funcs) > 1 else funcs[0]
    if settings.ddp["overlap_param_gather"]:
        funcs = [c.start_param_sync for c in wrapped]
        tconfig.param_sync_func = funcs if len(funcs) > 1 else funcs[0]
    return wrapped, tconfig


def build_optimizer(cfg: TrainingConfig, chunks: list[Any], platform: Platform) -> Any:
    """megatron-core Adam (AdamW-style decoupled weight decay) with the distributed optimizer."""
    return get_megatron_optimizer(optimizer_config(cfg, platform), chunks)


def optimizer_config(cfg: TrainingConfig, platform: Platform) -> OptimizerConfig:
    """megatron-core ``OptimizerConfig`` of ``cfg`` on ``platform`` (FP8 recipe and overlaps from the settings)."""
    return OptimizerConfig(**optimizer_config_kwargs(cfg, platform))


def optimizer_config_kwargs(cfg: TrainingConfig, platform: Platform) -> dict[str, Any]:
    """The ``OptimizerConfig`` arguments (constructing it with the precision-aware optimizer needs TE's FusedAdam)."""
    t = cfg.train
    settings = resolve_settings(platform, cfg)
    bf16 = settings.precision == "bf16"
    return dict(
        optimizer="adam",
        lr=t.lr,
        min_lr=t.min_lr,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_eps=t.adam_eps,
        clip_grad=t.clip_grad,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        # Megatron-LM's default (--no-barrier-with-level-1-timing unset), as TransformerConfig's; used with timers only
        barrier_with_L1_time=True,
        **settings.optimizer,
    )


def build_scheduler(cfg: TrainingConfig, optimizer: Any, total_iters: int) -> OptimizerParamScheduler:
    """Warmup + cosine decay, or warmup-stable-decay (``train.lr_schedule``), stepped once per iteration."""
    t = cfg.train
    decay_iters = t.lr_decay_iters if t.lr_decay_iters is not None else max(total_iters, 1)
    decay_iters = max(decay_iters, t.lr_warmup_iters + 1)
    kwargs: dict[str, Any] = {}
    style = "cosine"
    if t.lr_schedule == "wsd":
        style = "WSD"
        kwargs = dict(
            wsd_decay_steps=max(1, round(t.wsd_decay_fraction * decay_iters)),
            lr_wsd_decay_style=t.wsd_decay_style,
        )
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if t.lr_warmup_iters > 0 else t.lr,
        max_lr=t.lr,
        min_lr=t.min_lr,
        lr_warmup_steps=t.lr_warmup_iters,
        lr_decay_steps=decay_iters,
        lr_decay_style=style,
        start_wd=t.weight_decay,
        end_wd=t.weight_decay,
        wd_incr_steps=decay_iters,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
        override_opt_param_scheduler=False,
        **kwargs,
    )


def ddp_settings(resolved: dict[str, Any]) -> dict[str, Any]:
    """The ``DistributedDataParallelConfig`` arguments from the resolved perf settings.

    ``check_for_nan_in_grad`` is turned off in DDP: the training loop's step guard checks the global gradient norm
    for NaN/Inf instead (a skipped step on every rank rather than an exception on one rank mid-reduce).
    """
    return {**resolved, "check_for_nan_in_grad": False}
