"""The training loop: megatron-core pipeline schedules, DDP + distributed optimizer, evaluation,
token budget, metrics and dist_checkpointing resume.

Call :func:`train` with a validated :class:`~megatron_agentic.config.TrainingConfig` inside each rank
(``torchrun``); it validates the layout before any process group exists, trains to ``train.iters`` (or
``train.train_tokens``), evaluates the validation split and ``data.eval_sets``, and writes
``LOG_DIR/metrics.jsonl`` and ``LOG_DIR/summary.json``.

Resilience (see docs/training.md, "Runs that survive a cluster"): a SIGTERM/SIGUSR1, the Slurm walltime or a
stop file makes every rank finish the current step, save, and return ``{"exited": True, "exit_code": 3}``
(:mod:`~megatron_agentic.training.stop`); non-finite or spiking steps are skipped
(:mod:`~megatron_agentic.training.guard`); resume rules are enforced by :mod:`~megatron_agentic.training.resume`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.moe import moe_utils
from megatron.core.transformer.moe.router import TopKRouter

from data_tools.common.atomic import atomic_write_json
from data_tools.common.lock import LOCK_NAME, LockedError, OutputLock
from megatron_agentic.config import TrainingConfig
from megatron_agentic.loaders.torch_loader import MicroBatchLoader, build_loader
from megatron_agentic.platform import Platform, setup_platform
from megatron_agentic.testing import faults
from megatron_agentic.training import checkpoint as ckpt
from megatron_agentic.training import data_order, resume, save_procs
from megatron_agentic.training.builders import (
    ManualGC,
    build_model_chunks,
    build_optimizer,
    build_scheduler,
    init_distributed,
    sync_params,
    teardown_distributed,
    world_size_from_env,
)
from megatron_agentic.training.data import build_datasets, dataset_eod, split_for_context_parallel
from megatron_agentic.training.data_order import SampleLog
from megatron_agentic.training.guard import StepDecision, StepGuard
from megatron_agentic.training.metrics import MetricsLogger, read_metrics
from megatron_agentic.training.packing import prepare_document_batches
from megatron_agentic.training.stop import EXIT_STOPPED, StopRequest

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainState:
    """Progress of a run (saved in checkpoints)."""

    iteration: int = 0
    """Completed training iterations (applied or skipped steps)."""
    tokens: int = 0
    """Tokens consumed by completed steps."""
    consumed_samples: int = 0
    """Training samples consumed (the data position; survives a change of global batch size)."""
    skipped: int = 0
    """Steps skipped by the NaN/spike guard."""


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed masked token loss, token count, and ``[sum, count]`` for reporting (per-token loss mode)."""
    losses = output_tensor.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss.detach(), mask.sum().detach()])
    return loss, num_tokens, {"lm loss": report}


def _to_device(batch: dict[str, torch.Tensor | None], device: torch.device) -> dict[str, torch.Tensor | None]:
    if device.type == "cpu":
        return batch
    return {k: (None if v is None else v.to(device, non_blocking=True)) for k, v in batch.items()}


def forward_step(data_iterator: Any, model: torch.nn.Module, nan_grad: bool = False) -> tuple[torch.Tensor, Any]:
    """megatron-core forward step: one micro-batch through a model chunk; loss on the last stage.

    ``nan_grad`` (test hook, :func:`megatron_agentic.testing.faults.nan_grad`) makes this micro-batch's
    gradients NaN while its loss stays finite.
    """
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch.get("attention_mask"),
        labels=batch["labels"],
        packed_seq_params=batch.get("packed_seq_params"),  # data.document_attention (training/packing.py)
    )
    if nan_grad and output.requires_grad:
        output.register_hook(lambda grad: grad * float("nan"))
    return output, partial(loss_func, batch["loss_mask"])


class ExpertLoadTracker:
    """Counts router assignments per expert via forward hooks on megatron-core's ``TopKRouter``."""

    def __init__(self, chunks: list[torch.nn.Module], num_experts: int) -> None:
        self.num_experts = num_experts
        self.counts: torch.Tensor | None = None  # kept on the compute device: no host sync per layer
        self.active = True
        self._handles = []
        for chunk in chunks:
            for module in chunk.modules():
                if isinstance(module, TopKRouter):
                    self._handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if self.active and module.training:
            counts = output[1].detach().sum(dim=0, dtype=torch.float32)
            self.counts = counts if self.counts is None else self.counts + counts

    def reduce_and_reset(self, device: torch.device) -> list[float]:
        """Global per-expert load (1.0 = perfectly balanced), summed over layers and ranks; resets counts."""
        counts = torch.zeros(self.num_experts, dtype=torch.float32, device=device)
        if self.counts is not None:
            counts += self.counts.to(device)
        torch.distributed.all_reduce(counts)
        self.counts = None
        total = counts.sum().item()
        if total <= 0:
            return []
        return [round(float(c) * len(counts) / total, 4) for c in counts.cpu()]


class Trainer:
    """One rank's training job (process groups must not exist yet)."""

    def __init__(self, cfg: TrainingConfig) -> None:
        self.cfg = cfg
        self.world_size = world_size_from_env()
        self.dp_size = cfg.validate(self.world_size)  # before any process group
        self.platform: Platform = setup_platform()
        self._lock: OutputLock | None = None
        self.metrics: MetricsLogger | None = None
        self.stopper: StopRequest | None = None
        try:
            init_distributed(cfg, self.platform)
            self._build()
        except BaseException:
            self.close(failed=True)  # every exit path tears the process groups down (issue 26)
            raise

    def _build(self) -> None:
        """Everything of :meth:`__init__` that runs inside the process groups."""
        cfg = self.cfg
        self.device = self.platform.device(torch.cuda.current_device() if self.platform.is_cuda else 0)
        self.rank = torch.distributed.get_rank()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.cp_rank = parallel_state.get_context_parallel_rank()
        self.cp_size = parallel_state.get_context_parallel_world_size()
        self._lock_checkpoint_dir()  # before anything is written (metrics, tensorboard): a loser leaves no trace
        t = cfg.train
        self.total_iters = t.total_iters()
        self.arch = cfg.model.architecture()
        self.chunks, self.tconfig = build_model_chunks(cfg, self.platform)
        self.optimizer = build_optimizer(cfg, self.chunks, self.platform)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.total_iters)
        self.state = TrainState()
        self.metrics = MetricsLogger(cfg.log.dir, enabled=self.rank == 0, tensorboard=cfg.log.tensorboard)
        self.expert_load = ExpertLoadTracker(self.chunks, self.arch.num_experts)
        self.num_microbatches = cfg.train.global_batch_size // (cfg.train.micro_batch_size * self.dp_size)
        self._forward_backward = get_forward_backward_func()
        self.eod = dataset_eod(cfg)  # documents end after it (data.document_attention)
        self._shape = (t.seq_length, t.micro_batch_size)
        self._last_saved: int | None = None
        self.manual_gc = ManualGC.for_run(cfg, self.platform)  # perf.manual_gc (issue 13)
        self._train_time = 0.0
        self._train_tokens_this_run = 0
        self._data_start_iteration = 0
        self._saved_data_build: dict[str, Any] | None = None
        self._data_build: dict[str, Any] | None = None
        self.stopper = StopRequest(cfg.checkpoint.save_before_walltime_s)
        self.guard = StepGuard(t.spike_factor, t.spike_window, t.max_skipped_in_a_row)
        self.async_queue = self._async_queue()

    def _async_queue(self) -> Any:
        """megatron-core's ``AsyncCallsQueue`` when checkpoints are saved asynchronously (CUDA only), else None."""
        wanted = self.cfg.checkpoint.async_save
        if self.cfg.checkpoint.dir is None or wanted is False:
            return None
        if not self.platform.is_cuda:
            if wanted is True and self.rank == 0:
                logger.warning(
                    "checkpoint.async_save=true needs CUDA; saving synchronously on %s", self.platform.device_type
                )
            return None
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        return AsyncCallsQueue()

    def finish_saves(self) -> None:
        """Wait for background checkpoint writes and move the latest marker (a collective call)."""
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=True)

    def abort_saves(self) -> None:
        """Kill background checkpoint writers of a run that failed (their checkpoint never becomes the latest)."""
        if self.async_queue is None:
            return
        for call in list(getattr(self.async_queue, "async_calls", [])):
            caller = getattr(call, "async_caller", None)
            if caller is not None:
                try:
                    caller.close(abort=True)
                except Exception as exc:  # noqa: BLE001 - best effort on a failing exit path
                    logger.debug("aborting a background save: %s", exc)

    def close(self, failed: bool = False) -> None:
        """Release what the run holds, the process groups last, whatever fails on the way.

        ``failed``: abort background checkpoint writes first (their checkpoint never becomes the latest). Order:
        checkpoint helper processes (issue 25), signal handlers, the ``checkpoint.dir`` lock, then megatron-core's
        groups and the default process group, which are destroyed even when an earlier step raises.
        """
        try:
            if failed and getattr(self, "async_queue", None) is not None:
                self.abort_saves()
            save_procs.shutdown()  # the checkpoint helpers never outlive the run
            if self.stopper is not None:
                self.stopper.restore_handlers()
            if self._lock is not None:
                self._lock.release()
            if failed and self.metrics is not None:
                self.metrics.close()
        finally:
            teardown_distributed()

    def _lock_checkpoint_dir(self) -> None:
        """Rank 0 locks ``checkpoint.dir``; every rank raises LockedError when another live job holds it."""
        root = self.cfg.checkpoint.dir
        if root is None:
            return
        message = ""
        if self.rank == 0:
            self._lock = OutputLock(Path(root) / LOCK_NAME)
            try:
                self._lock.acquire()
            except LockedError as exc:
                message = str(exc)
        flag = torch.tensor([1 if message else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            raise LockedError(message or f"checkpoint.dir {root} is locked (see rank 0)")

    # ------------------------------------------------------------------------------------------ state
    def restore(self) -> dict[str, Any] | None:
        """Resume from ``checkpoint.dir`` or initialise weights from ``checkpoint.pretrained``.

        Returns the summary of a run that is already finished at the latest checkpoint (a rerun of a finished job),
        decided from the checkpoint's common state and ``summary.json`` before any tensor is read; else None.
        """
        c = self.cfg.checkpoint
        if c.dir is not None:
            if self.rank == 0:
                ckpt.clean_partial_checkpoints(c.dir)
            torch.distributed.barrier()
        latest = ckpt.latest_iteration(c.dir)
        if latest is not None:
            path = ckpt.checkpoint_path(c.dir, latest)
            saved = ckpt.read_common(path)
            resume.check_config_compatible(saved.get("config"), self.cfg.to_dict(), str(path))
            self._saved_data_build = saved.get("data_build")
            data_order.resolve_build(self._saved_data_build, self.cfg, 1, str(path))  # refuse changed data early
            if c.load_optimizer:
                self._choose_scheduler(saved.get("scheduler") or {}, str(path))
            iteration = int(saved["iteration"])
            consumed = int(saved.get("consumed_samples", iteration * self.cfg.train.global_batch_size))
            self.state = TrainState(
                iteration=iteration,
                tokens=int(saved.get("tokens", 0)),
                consumed_samples=consumed,
                skipped=int(saved.get("skipped", 0)),
            )
            self._last_saved = self.state.iteration
            finished = self._finished_summary()
            if finished is not None:
                return finished  # nothing to train: the (possibly huge) checkpoint is not loaded
            ckpt.load_checkpoint(
                path,
                self.chunks,
                optimizer=self.optimizer if c.load_optimizer else None,
                scheduler=self.scheduler if c.load_optimizer else None,
            )
            if not c.load_optimizer:
                self.optimizer.reload_model_params()  # fp32 master weights from the loaded (bf16) weights
            self.guard.recent.extend(saved.get("guard_recent") or [])
            self._data_start_iteration = resume.data_start_iteration(
                consumed, self.cfg.train.global_batch_size, str(path)
            )
            # the metrics of steps after the resume point go first: whoever sees "resumed from" (a watcher of the
            # log, a test) sees metrics that end at the resume point
            self.metrics.truncate_after(self.state.iteration)
            if self.rank == 0:
                logger.info(
                    "resumed from %s at iteration %d (%d samples consumed)", c.dir, self.state.iteration, consumed
                )
        else:
            if c.pretrained is not None:
                ckpt.load_checkpoint(
                    ckpt.resolve_checkpoint_dir(c.pretrained),
                    self.chunks,
                    optimizer=self.optimizer if c.pretrained_load_optimizer else None,
                    scheduler=self.scheduler if c.pretrained_load_scheduler else None,
                    load_rng=False,
                )
                if not c.pretrained_load_optimizer:
                    self.optimizer.reload_model_params()  # fp32 master weights from the loaded (bf16) weights
                if self.rank == 0:
                    logger.info(
                        "initialised weights from %s (optimizer state: %s, LR scheduler: %s)",
                        c.pretrained,
                        "loaded" if c.pretrained_load_optimizer else "fresh",
                        "loaded" if c.pretrained_load_scheduler else "fresh",
                    )
            if self.rank == 0 and self.metrics.path.is_file() and self.total_iters > 0:
                self.metrics.path.unlink()

    def _choose_scheduler(self, saved: dict[str, Any], where: str) -> None:
        """Apply ``train.scheduler_from`` to megatron-core's scheduler before it loads the saved state."""
        source = resume.resolve_scheduler_source(
            saved, self.scheduler.state_dict(), self.cfg.train.scheduler_from, where
        )
        # OptimizerParamScheduler._check_and_set: override -> the config's values, else the checkpoint's.
        self.scheduler.override_opt_param_scheduler = source == "config"
        self.scheduler.use_checkpoint_opt_param_scheduler = source == "checkpoint"
        if self.rank == 0 and resume.scheduler_differences(saved, self.scheduler.state_dict()):
            logger.warning("LR schedule differs from %s; following the %s's (train.scheduler_from)", where, source)

    def save(self) -> None:
        """Save a checkpoint at the current iteration (in the background with ``checkpoint.async_save`` on CUDA)."""
        self.finish_saves()  # one background save at a time
        sync_params(self.chunks)  # perf.overlap_param_gather leaves the last gather to the next forward
        c = self.cfg.checkpoint
        ckpt.save_checkpoint(
            self.cfg.checkpoint.dir,
            self.state.iteration,
            self.chunks,
            self.optimizer,
            self.scheduler,
            {
                "tokens": self.state.tokens,
                "consumed_samples": self.state.consumed_samples,
                "skipped": self.state.skipped,
                "guard_recent": list(self.guard.recent),
                "config": self.cfg.to_dict(),
                "data_build": self._data_build,
            },
            optimizer_format=c.optimizer_format,
            async_queue=self.async_queue,
            on_complete=partial(ckpt.prune_checkpoints, c.dir, c.keep_last, c.keep_every),
        )
        self._last_saved = self.state.iteration

    # ------------------------------------------------------------------------------------------ steps
    def _prepare(self, batches: list[dict[str, Any]]) -> Any:
        t = self.cfg.train
        self._shape = (t.seq_length, t.micro_batch_size)  # what the schedule is told (p2p shapes)
        if self.cfg.data.document_attention:
            tp = parallel_state.get_tensor_model_parallel_world_size()
            batches, total = prepare_document_batches(batches, self.eod, self.cp_rank, self.cp_size, tp, self.device)
            self._shape = (total, 1)
        else:
            batches = [
                _to_device(split_for_context_parallel(b, self.cp_rank, self.cp_size), self.device) for b in batches
            ]
        if len(self.chunks) > 1:
            return [iter(batches) for _ in self.chunks]
        return iter(batches)

    def _reduce_loss(self, losses: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
        stats = torch.zeros(2, dtype=torch.float64, device=self.device)
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            for item in losses:
                stats += item["lm loss"].to(torch.float64)
            torch.distributed.all_reduce(
                stats, group=parallel_state.get_data_parallel_group(with_context_parallel=True)
            )
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            torch.distributed.broadcast(
                stats,
                src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group(),
            )
        loss_sum, tokens = stats.tolist()
        return loss_sum, tokens

    def _aux_loss(self) -> float | None:
        tracker = moe_utils.get_moe_layer_wise_logging_tracker()
        if "load_balancing_loss" not in tracker:
            return None
        moe_utils.reduce_aux_losses_tracker_across_ranks(["load_balancing_loss"])
        value = tracker["load_balancing_loss"]["values"].sum().item() / self.arch.num_layers / self.num_microbatches
        moe_utils.clear_aux_losses_tracker()
        return value

    def train_step(self, loader: Any) -> dict[str, Any]:
        """One optimizer step; returns the step's metrics (identical on every rank)."""
        start = time.perf_counter()
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        t = self.cfg.train
        data_iter = self._prepare(list(loader.next_iteration()))
        nan_grad = faults.nan_grad(self.rank, self.state.iteration + 1)
        losses = self._forward_backward(
            forward_step_func=partial(forward_step, nan_grad=nan_grad) if nan_grad else forward_step,
            data_iterator=data_iter,
            model=self.chunks,
            num_microbatches=self.num_microbatches,
            seq_length=self._shape[0],
            micro_batch_size=self._shape[1],
            decoder_seq_length=self._shape[0],
            forward_only=False,
        )
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss_sum, tokens = self._reduce_loss(losses)
        loss = loss_sum / max(tokens, 1.0)
        verdict, grad_norm = self._guarded_optimizer_step(loss)
        if verdict.apply:
            self.scheduler.step(increment=1)
        elapsed = time.perf_counter() - start
        step_tokens = t.global_batch_size * t.seq_length
        self.state.iteration += 1
        self.manual_gc.step(self.state.iteration)
        self.state.tokens += step_tokens
        self.state.consumed_samples += t.global_batch_size
        self._train_time += elapsed
        self._train_tokens_this_run += step_tokens
        if not verdict.apply:
            self.state.skipped += 1
            if self.rank == 0:
                logger.warning("step %d skipped: %s", self.state.iteration, verdict.reason)
        self.guard.record(self.state.iteration, loss, verdict)
        record = {
            "step": self.state.iteration,
            "loss": loss,
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "tokens": self.state.tokens,
            "tokens_per_s": step_tokens / elapsed,
            "step_time_s": elapsed,
            "skipped": not verdict.apply,
        }
        if not verdict.apply:
            record["skip_reason"] = verdict.reason
            record["skipped_total"] = self.state.skipped
        return record

    def _guarded_optimizer_step(self, loss: float) -> tuple[StepDecision, float | None]:
        """megatron-core's optimizer step with the NaN/spike guard between the grad norm and the update.

        The same calls as ``ChainedOptimizer.step`` (prepare grads, global grad norm, clip by that norm, step
        with ready grads), so an applied step is identical to ``optimizer.step()``; a rejected one leaves
        parameters and optimizer state untouched.
        """
        verdict = self.guard.check_loss(loss)
        if not verdict.apply:
            return verdict, None
        if self.optimizer.prepare_grads():  # a loss scaler found inf/NaN gradients
            return StepDecision(False, "non-finite gradients (loss scaler)"), None
        grad_norm = float(self.optimizer.get_grad_norm())
        verdict = self.guard.check_grad_norm(grad_norm)
        if not verdict.apply:
            return verdict, grad_norm
        from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

        for sub in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            if getattr(sub, "is_stub_optimizer", False):
                continue
            params = sub.get_parameters()
            if params and sub.config.clip_grad > 0.0:
                clip_grad_by_total_norm_fp32(
                    params,
                    max_norm=sub.config.clip_grad,
                    total_norm=grad_norm,
                    use_decoupled_grad=sub.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8,
                )
        if not self.optimizer.step_with_ready_grads():
            return StepDecision(False, "optimizer reported an unsuccessful update"), grad_norm
        return verdict, grad_norm

    @torch.no_grad()
    def evaluate(self, datasets: Any) -> dict[str, float]:
        """Mean token loss on the first ``eval_iters`` global batches of the validation split and eval sets."""
        results: dict[str, float] = {}
        sync_params(self.chunks)
        sets = ([("valid", datasets.valid)] if datasets.valid is not None else []) + list(datasets.eval_sets.items())
        if not sets:
            return results
        t = self.cfg.train
        for chunk in self.chunks:
            chunk.eval()
        self.expert_load.active = False
        try:
            for name, dataset in sets:
                loader = MicroBatchLoader(dataset, t.micro_batch_size, t.global_batch_size, self.dp_rank, self.dp_size)
                total_loss, total_tokens = 0.0, 0.0
                for i in range(t.eval_iters):
                    data_iter = self._prepare(list(loader.iteration_batches(i)))
                    losses = self._forward_backward(
                        forward_step_func=forward_step,
                        data_iterator=data_iter,
                        model=self.chunks,
                        num_microbatches=self.num_microbatches,
                        seq_length=self._shape[0],
                        micro_batch_size=self._shape[1],
                        decoder_seq_length=self._shape[0],
                        forward_only=True,
                    )
                    loss_sum, tokens = self._reduce_loss(losses)
                    total_loss += loss_sum
                    total_tokens += tokens
                results[name] = total_loss / max(total_tokens, 1.0)
        finally:
            for chunk in self.chunks:
                chunk.train()
            self.expert_load.active = True
            moe_utils.clear_aux_losses_tracker()
        self.metrics.log_eval(self.state.iteration, results)
        return results

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Train to the configured length; returns the summary (also written to ``summary.json``).

        Returns ``{"exited": True, "exit_code": 3, ...}`` instead when a stop was requested (signal, walltime,
        stop file): every rank saved a checkpoint at the same step.
        """
        cfg, t = self.cfg, self.cfg.train
        finished = self.restore()
        if finished is not None:
            return finished
        remaining = max(self.total_iters - self.state.iteration, 0)
        train_samples = max(
            max(self.total_iters, 1) * t.global_batch_size,
            self.state.consumed_samples + remaining * t.global_batch_size,
        )
        # the sample order is fixed at the run's first start and reused on every resume (training/data_order.py)
        where = str(ckpt.checkpoint_path(cfg.checkpoint.dir, self._last_saved)) if self._saved_data_build else ""
        self._data_build = data_order.resolve_build(self._saved_data_build, cfg, train_samples, where)
        datasets, train_data = data_order.build_train_stream(
            cfg, self._data_build, train_samples, t.eval_iters * t.global_batch_size, build_datasets
        )
        loader = build_loader(train_data, cfg, self.dp_rank, self.dp_size, start_iteration=self._data_start_iteration)
        sample_log = SampleLog.from_env(self.rank, self.dp_size)
        last_eval: dict[str, float] = {}
        evaluated_at: int | None = None
        if t.eval_at_start and self.state.iteration == 0 and self.total_iters > 0:
            self.evaluate(datasets)  # the initial weights (a resume from a checkpoint never repeats it)
        try:
            while self.state.iteration < self.total_iters:
                record = self.train_step(loader if sample_log is None else sample_log.wrap(loader, self.state))
                aux = self._aux_loss()
                step = self.state.iteration
                if step % cfg.log.interval == 0 or step == self.total_iters:
                    if aux is not None:
                        record["aux_loss"] = aux
                    record["expert_load"] = self.expert_load.reduce_and_reset(self.device)
                    self.metrics.log_step(record)
                if t.eval_interval and step % t.eval_interval == 0 and step < self.total_iters:
                    last_eval = self.evaluate(datasets)
                    evaluated_at = step
                if cfg.checkpoint.dir and cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0:
                    self.save()
                if self.async_queue is not None:
                    self.async_queue.maybe_finalize_async_calls(blocking=False)
                reason = self.stopper.agreed(self.device) if step < self.total_iters else ""
                if reason:
                    self.metrics.close()
                    return self._stop_for(reason)
                if t.exit_interval is not None and step >= t.exit_interval and step < self.total_iters:
                    logger.warning("train.exit_interval=%d reached: stopping without final checkpoint", t.exit_interval)
                    self.finish_saves()
                    self.metrics.close()
                    return {"final_step": step, "exited": True}
        finally:
            close = getattr(loader, "close", None)
            if close is not None:
                close()  # stop DataLoader workers
        if evaluated_at != self.state.iteration:
            last_eval = self.evaluate(datasets)
        if cfg.checkpoint.dir and cfg.checkpoint.save_final and self._last_saved != self.state.iteration:
            self.save()
        self.finish_saves()
        summary = self._summary(last_eval)
        if self.rank == 0:
            atomic_write_json(Path(cfg.log.dir) / "summary.json", summary, sort_keys=True, ensure_ascii=True)
        self.metrics.close()
        return summary

    def _stop_for(self, reason: str) -> dict[str, Any]:
        """Save at the current step (all ranks agreed to stop) and report exit code 3."""
        step = self.state.iteration
        if self.cfg.checkpoint.dir:
            if self._last_saved != step:
                self.save()
            self.finish_saves()
            logger.warning(
                "rank %d: saved checkpoint at iteration %d for %s; exiting with code %d (rerun to continue)",
                self.rank,
                step,
                reason,
                EXIT_STOPPED,
            )
        else:
            logger.warning(
                "rank %d: stopping at iteration %d for %s without a checkpoint (no checkpoint.dir); exit code %d",
                self.rank,
                step,
                reason,
                EXIT_STOPPED,
            )
        return {"final_step": step, "exited": True, "exit_code": EXIT_STOPPED, "reason": reason}

    def _finished_summary(self) -> dict[str, Any] | None:
        """The summary of a run already complete at this iteration (rerun of a finished job), else None.

        Nothing is evaluated or appended: metrics.jsonl keeps one eval record for the last step and
        summary.json keeps its throughput.
        """
        if self.total_iters == 0 or self.state.iteration < self.total_iters:
            return None
        path = Path(self.cfg.log.dir) / "summary.json"
        summary = None
        if path.is_file():
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                summary = None
        flag = torch.tensor(
            [1 if isinstance(summary, dict) and summary.get("final_step") == self.state.iteration else 0],
            dtype=torch.int32,
            device=self.device,
        )
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)  # every rank decides alike
        if not flag.item():
            return None
        if self.rank == 0:
            logger.info("%s already finished at iteration %d: nothing to do", self.cfg.log.dir, self.state.iteration)
        self.metrics.close()
        return summary

    def _throughput(self, records: list[dict[str, Any]]) -> float:
        """Tokens/s of this process's steps, or of the logged steps when it trained none (a resumed finish)."""
        if self._train_time > 0:
            return self._train_tokens_this_run / self._train_time
        times = [float(r["step_time_s"]) for r in records if "step_time_s" in r]
        steps_tokens = self.cfg.train.global_batch_size * self.cfg.train.seq_length * len(times)
        return steps_tokens / sum(times) if times and sum(times) > 0 else 0.0

    def _summary(self, eval_losses: dict[str, float]) -> dict[str, Any]:
        records = [r for r in read_metrics(self.metrics.path) if "loss" in r] if self.rank == 0 else []
        losses = [float(r["loss"]) for r in records]
        summary: dict[str, Any] = {
            "final_step": self.state.iteration,
            "tokens": self.state.tokens,
            "tokens_per_s": self._throughput(records),
            "eval": eval_losses,
            "losses": {},
            "model": self.arch.name,
            "parallel": dataclasses.asdict(self.cfg.parallel) | {"data": self.dp_size},
            "platform": self.platform.device_type,
        }
        if losses:
            tail = losses[-10:]
            summary["losses"] = {
                "first": losses[0],
                "last": losses[-1],
                "min": min(losses),
                "mean_last_10": sum(tail) / len(tail),
                "count": len(losses),
            }
        return summary


def train(cfg: TrainingConfig, on_finish: Callable[[Trainer, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run training for this rank (validates, starts process groups, trains, tears down).

    ``on_finish(trainer, summary)`` runs after a run that reached its last iteration, while the model and the
    process groups still exist (e.g. to generate with the trained model before teardown). ``train`` can be called
    again in the same process: every call starts and destroys its own process groups.
    """
    trainer = Trainer(cfg)  # tears down itself when it fails
    failed = True
    try:
        summary = trainer.run()
        if on_finish is not None and not summary.get("exited"):
            on_finish(trainer, summary)
        failed = False
        return summary
    finally:
        trainer.close(failed=failed)
