"""Typed training configuration: YAML file + ``--set key=value`` overrides, validated before any process group.

Schema (sections and their fields are the dataclasses below)::

    model:      {preset, attention_backend, moe_token_dispatcher, moe_flex_backend, recompute, recompute_method,
                 recompute_num_layers, recompute_modules, <any field of the preset's dataclass as override>}
    parallel:   {tensor, pipeline, expert, expert_tensor, context, sequence_parallel, virtual_pipeline}  # data derived
    train:      {iters, train_tokens, global_batch_size, micro_batch_size, seq_length, seed, lr, min_lr,
                 lr_schedule, lr_warmup_iters, lr_decay_iters, wsd_decay_fraction, weight_decay, clip_grad,
                 eval_interval, eval_iters, precision, fp8, fp8_param_gather, ...}
    data:       {mock, blend, blend_file, split, eval_sets, reset_position_ids, reset_attention_mask,
                 eod_mask_loss, document_attention, tokenizer, loader, ...}
    checkpoint: {dir, interval, pretrained, load_optimizer, pretrained_load_optimizer, pretrained_load_scheduler}
    log:        {dir, interval, tensorboard}
    perf:       {fusions, DDP overlap, optimizer precision, CUDA graphs, manual GC; ``auto`` resolved by
                 ``megatron_agentic.perf.resolve_settings``}
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from megatron_agentic.errors import ConfigError
from megatron_agentic.models.family import Architecture
from megatron_agentic.models.registry import get_preset
from megatron_agentic.perf import RECOMPUTE_MODULES, EffectiveSettings, PerfConfig, resolve_settings
from megatron_agentic.recipe_files import RecipeError, resolve_mapping

if TYPE_CHECKING:
    from megatron_agentic.platform import Platform


@dataclasses.dataclass
class ModelConfig:
    """Which architecture to train and how its modules are implemented."""

    preset: str = "tiny-moe"
    """Name of a preset of any model family (``megatron_agentic.models.registry.preset_names()``)."""
    attention_backend: str = "auto"
    """``auto`` | ``local`` | ``te`` | ``triton`` (see ``megatron_agentic.perf.resolve_attention_backend``)."""
    moe_token_dispatcher: str = "auto"
    """megatron-core token dispatcher (``moe_token_dispatcher_type``): ``auto`` (alltoall on CUDA, as Megatron-Bridge's
    H100 recipe; allgather on CPU), ``allgather``, ``alltoall`` or ``flex`` (DeepEP / HybridEP, CUDA only)."""
    moe_flex_backend: str = "deepep"
    """Backend of the ``flex`` dispatcher (``moe_flex_dispatcher_backend``): ``deepep`` or ``hybridep``; refused when
    its library (``deep_ep``) does not import."""
    # -- activation recomputation (issue 13) ------------------------------------------------------------------
    recompute: str | bool = "none"
    """Activation recomputation (``recompute_granularity``): ``none``, ``full`` (whole layers; ``true`` is accepted
    as ``full``, ``false`` as ``none``) or ``selective`` (only ``recompute_modules``)."""
    recompute_method: str = "uniform"
    """With ``full``: ``uniform`` (every ``recompute_num_layers`` layers form one checkpoint) or ``block`` (the first
    ``recompute_num_layers`` layers of each stage are recomputed) (``recompute_method``)."""
    recompute_num_layers: int = 1
    """With ``full``: layers per checkpoint (uniform) or recomputed layers per stage (block)
    (``recompute_num_layers``)."""
    recompute_modules: list[str] = dataclasses.field(default_factory=lambda: ["core_attn"])
    """With ``selective``: submodules recomputed in backward (``recompute_modules``): ``core_attn``, ``moe_act``,
    ``layernorm``, ``mlp``, ``moe``, ``shared_experts``."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Preset fields overriding the preset (written flat under ``model:`` in YAML)."""

    def __post_init__(self) -> None:
        if self.attention_backend not in ("auto", "local", "te", "triton"):
            raise ConfigError(
                f"model.attention_backend must be auto, local, te or triton, got {self.attention_backend!r}"
            )
        if self.moe_token_dispatcher not in ("auto", "allgather", "alltoall", "flex"):
            raise ConfigError(
                f"model.moe_token_dispatcher must be auto, allgather, alltoall or flex, got {self.moe_token_dispatcher!r}"
            )
        if self.moe_flex_backend not in ("deepep", "hybridep"):
            raise ConfigError(f"model.moe_flex_backend must be deepep or hybridep, got {self.moe_flex_backend!r}")
        if self.recompute is True or self.recompute is False:
            self.recompute = "full" if self.recompute else "none"
        if self.recompute not in ("none", "full", "selective"):
            raise ConfigError(f"model.recompute must be none, full or selective, got {self.recompute!r}")
        if self.recompute_method not in ("uniform", "block"):
            raise ConfigError(f"model.recompute_method must be uniform or block, got {self.recompute_method!r}")
        if not isinstance(self.recompute_num_layers, int) or self.recompute_num_layers < 1:
            raise ConfigError(f"model.recompute_num_layers must be an integer >= 1, got {self.recompute_num_layers!r}")
        bad = [x for x in self.recompute_modules or [] if x not in RECOMPUTE_MODULES]
        if not isinstance(self.recompute_modules, list) or not self.recompute_modules or bad:
            raise ConfigError(
                f"model.recompute_modules must be a non-empty list of {list(RECOMPUTE_MODULES)}, got "
                f"{self.recompute_modules!r}"
            )
        self.architecture()  # validates preset name and overrides

    def architecture(self) -> Architecture:
        """The preset with overrides applied (validated)."""
        try:
            return get_preset(self.preset).replace(**self.overrides)
        except KeyError as exc:
            raise ConfigError(f"model.preset: {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None


@dataclasses.dataclass
class ParallelConfig:
    """Model-parallel layout; data parallelism is derived as world / (tensor * pipeline * context)."""

    tensor: int = 1
    """Tensor-parallel size."""
    pipeline: int = 1
    """Pipeline-parallel size."""
    expert: int = 1
    """Expert-parallel size (experts are split over EP ranks taken from DP x CP x TP)."""
    context: int = 1
    """Context-parallel size (zigzag ring attention)."""
    sequence_parallel: bool | str = "auto"
    """Sequence parallelism: ``auto`` (on when tensor > 1), true or false."""
    virtual_pipeline: int | None = None
    """Model chunks per pipeline rank (interleaved 1F1B); null for plain 1F1B."""
    expert_tensor: int = 1
    """Expert-tensor-parallel size (``expert_tensor_parallel_size``): each expert's FFN is split over this many
    ranks. 1 (Megatron-Bridge's H100 Qwen3-30B-A3B value) keeps every 768-wide expert GEMM whole."""

    def __post_init__(self) -> None:
        for name in ("tensor", "pipeline", "expert", "context", "expert_tensor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"parallel.{name} must be an integer >= 1, got {value!r}")
        if self.sequence_parallel not in ("auto", True, False):
            raise ConfigError(f"parallel.sequence_parallel must be auto, true or false, got {self.sequence_parallel!r}")
        if self.virtual_pipeline is not None and (
            not isinstance(self.virtual_pipeline, int) or self.virtual_pipeline < 1
        ):
            raise ConfigError(
                f"parallel.virtual_pipeline must be null or an integer >= 1, got {self.virtual_pipeline!r}"
            )

    @property
    def use_sequence_parallel(self) -> bool:
        """Resolved sequence parallelism."""
        return self.tensor > 1 if self.sequence_parallel == "auto" else bool(self.sequence_parallel)

    def model_parallel_size(self) -> int:
        """tensor * pipeline * context."""
        return self.tensor * self.pipeline * self.context

    def data_parallel_size(self, world_size: int) -> int:
        """Data-parallel size for ``world_size`` ranks (raises ConfigError when it does not divide)."""
        mp = self.model_parallel_size()
        if world_size % mp:
            raise ConfigError(
                f"world size {world_size} is not divisible by parallel.tensor*pipeline*context = "
                f"{self.tensor}*{self.pipeline}*{self.context} = {mp}"
            )
        return world_size // mp


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and schedule."""

    iters: int = 30
    """Total training iterations (the run continues to this count when resumed)."""
    train_tokens: int | None = None
    """Token budget; when set, overrides ``iters`` with ceil(train_tokens / (global_batch_size * seq_length))."""
    global_batch_size: int = 8
    """Sequences per optimizer step (over all data-parallel ranks)."""
    micro_batch_size: int = 2
    """Sequences per forward/backward pass on one rank."""
    seq_length: int = 128
    """Training sequence length in tokens."""
    seed: int = 1234
    """Random seed (model init, data shuffling)."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: float = 1e-4
    """Learning rate at the end of decay."""
    lr_schedule: str = "cosine"
    """``cosine`` (warmup + cosine decay) or ``wsd`` (warmup-stable-decay)."""
    lr_warmup_iters: int = 0
    """Linear warmup iterations."""
    lr_decay_iters: int | None = None
    """Iterations over which the LR decays (default: all iterations)."""
    wsd_decay_fraction: float = 0.2
    """For ``wsd``: fraction of ``lr_decay_iters`` spent in the final decay."""
    wsd_decay_style: str = "cosine"
    """For ``wsd``: shape of the final decay (``linear``, ``cosine``, ``exponential``, ``minus_sqrt``)."""
    weight_decay: float = 0.1
    """AdamW weight decay (not applied to norms and biases)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Global gradient-norm clipping threshold (0 disables)."""
    eval_interval: int | None = None
    """Evaluate every N iterations (and always at the end); null: only at the end."""
    eval_iters: int = 2
    """Global batches per evaluation."""
    eval_at_start: bool = False
    """Also evaluate the initial weights (from scratch or ``checkpoint.pretrained``) before the first step, logged as
    step 0 (a held-out baseline without a separate ``train.iters=0`` run); a resumed run does not repeat it."""
    precision: str = "auto"
    """``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16`` or ``fp32``."""
    distributed_optimizer: bool = True
    """Shard optimizer state over data-parallel ranks (megatron-core distributed optimizer)."""
    exit_interval: int | None = None
    """Testing aid: stop abruptly (no final checkpoint, no summary) after this iteration, like a killed job."""
    # -- FP8 (issue 13) ---------------------------------------------------------------------------------------
    fp8: str | None = None
    """FP8 training with Transformer Engine (``fp8="hybrid"`` + ``fp8_recipe``): null (off), ``tensorwise``
    (current scaling), ``delayed`` or ``blockwise``. Needs CUDA + TE and ``precision=bf16``."""
    fp8_param_gather: bool = False
    """Keep parameters in FP8 and all-gather them in FP8 (``fp8_param`` / DDP ``fp8_param_gather``); needs ``fp8``
    and the distributed optimizer."""

    # --- run resilience (issue 16): NaN/spike guard and LR-schedule resume rule ---------------------------------
    spike_factor: float | None = 10.0
    """Skip a step whose loss exceeds ``spike_factor`` x the median of the last ``spike_window`` good steps (the
    optimizer is not stepped; counted as ``skipped`` in metrics). Null disables the spike test (non-finite loss
    or grad norm is always skipped)."""
    spike_window: int = 20
    """Good steps in the running median of the spike test (no spike test before ``min(5, spike_window)``)."""
    max_skipped_in_a_row: int = 5
    """Stop the run with an error after this many consecutive skipped steps (0: never skip, stop at the first)."""
    scheduler_from: str | None = None
    """On resume, which LR schedule wins when the checkpoint's (max/min LR, warmup, decay steps and style) differs
    from this config's: ``checkpoint`` or ``config``. Null: a difference is an error naming this field (Megatron-LM
    asserts the same unless told)."""

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "micro_batch_size", "seq_length", "eval_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"train.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.iters, int) or self.iters < 0:
            raise ConfigError(f"train.iters must be an integer >= 0, got {self.iters!r}")
        if self.train_tokens is not None and (not isinstance(self.train_tokens, int) or self.train_tokens < 0):
            raise ConfigError(f"train.train_tokens must be null or an integer >= 0, got {self.train_tokens!r}")
        if self.lr_schedule not in ("cosine", "wsd"):
            raise ConfigError(f"train.lr_schedule must be cosine or wsd, got {self.lr_schedule!r}")
        if self.wsd_decay_style not in ("linear", "cosine", "exponential", "minus_sqrt"):
            raise ConfigError(
                f"train.wsd_decay_style must be linear, cosine, exponential or minus_sqrt, got {self.wsd_decay_style!r}"
            )
        if not 0.0 <= self.wsd_decay_fraction <= 1.0:
            raise ConfigError(f"train.wsd_decay_fraction must be in [0, 1], got {self.wsd_decay_fraction}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"train.lr must be > 0 and 0 <= train.min_lr <= train.lr (got lr={self.lr}, min_lr={self.min_lr})"
            )
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise ConfigError("train.weight_decay and train.clip_grad must be >= 0")
        if self.lr_warmup_iters < 0:
            raise ConfigError(f"train.lr_warmup_iters must be >= 0, got {self.lr_warmup_iters}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.fp8 not in (None, "tensorwise", "delayed", "blockwise"):
            raise ConfigError(f"train.fp8 must be null, tensorwise, delayed or blockwise, got {self.fp8!r}")
        if self.eval_interval is not None and self.eval_interval < 1:
            raise ConfigError(f"train.eval_interval must be null or >= 1, got {self.eval_interval}")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"train.global_batch_size ({self.global_batch_size}) must be divisible by train.micro_batch_size "
                f"({self.micro_batch_size})"
            )
        if self.spike_factor is not None and not self.spike_factor > 1.0:
            raise ConfigError(f"train.spike_factor must be null or > 1, got {self.spike_factor!r}")
        if not isinstance(self.spike_window, int) or self.spike_window < 1:
            raise ConfigError(f"train.spike_window must be an integer >= 1, got {self.spike_window!r}")
        if not isinstance(self.max_skipped_in_a_row, int) or self.max_skipped_in_a_row < 0:
            raise ConfigError(f"train.max_skipped_in_a_row must be an integer >= 0, got {self.max_skipped_in_a_row!r}")
        if self.scheduler_from not in (None, "checkpoint", "config"):
            raise ConfigError(f"train.scheduler_from must be null, checkpoint or config, got {self.scheduler_from!r}")

    def total_iters(self) -> int:
        """Iterations to train: from ``train_tokens`` when set, else ``iters``."""
        if self.train_tokens is not None:
            return math.ceil(self.train_tokens / (self.global_batch_size * self.seq_length))
        return self.iters


@dataclasses.dataclass
class DataConfig:
    """Training data: megatron-core GPTDataset over weighted ``.bin/.idx`` prefixes, or mock data."""

    mock: bool = True
    """Use megatron-core's MockGPTDataset (no files needed); ignored when ``blend`` or ``blend_file`` is set."""
    blend: list[Any] | None = None
    """``[weight1, prefix1, weight2, prefix2, ...]`` or ``[prefix1, prefix2, ...]`` (equal weights)."""
    blend_file: str | None = None
    """JSON/YAML file with a ``blend`` list (written by ``megatron-agentic data mix``)."""
    split: str = "98,2,0"
    """train,valid,test split of every prefix (percentages or weights)."""
    eval_sets: dict[str, str] = dataclasses.field(default_factory=dict)
    """Extra held-out sets ``{name: prefix}`` evaluated with the validation split."""
    reset_position_ids: bool = False
    """Restart position ids after every end-of-document token."""
    reset_attention_mask: bool = False
    """Block attention across end-of-document tokens."""
    eod_mask_loss: bool = False
    """Exclude end-of-document tokens from the loss."""
    document_attention: bool = False
    """Attend within each document only, without a dense mask: every micro-batch's documents (split at EOD and at
    sample ends, the blocks of ``reset_attention_mask``) are packed as ``thd`` with ``PackedSeqParams``, position
    ids restart per document, and attention costs the sum of squared document lengths instead of the squared
    sequence length (Transformer Engine on CUDA, the Triton/torch ``thd`` path and ring elsewhere)."""
    tokenizer: str = "qwen3"
    """Tokenizer the data was made with: ``qwen3`` (EOD 151643, checks the vocabulary) or ``custom``
    (EOD from ``eod_token_id``)."""
    eod_token_id: int | None = None
    """Override the end-of-document id (default from ``tokenizer``)."""
    loader: str = "torch"
    """``torch`` (DataLoader) or ``dali`` (``megatron_agentic.loaders.dali.build_dali_loader``)."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process). Workers are started once and kept
    (persistent) for the whole run; batches are identical to in-process loading."""
    prefetch_factor: int = 2
    """Micro-batches each DataLoader worker loads ahead (only with ``num_workers > 0``)."""
    cache_dir: str | None = None
    """Where megatron-core caches dataset index files (default: next to the data)."""
    sft: bool = False
    """Supervised fine-tuning data: every ``blend``/``eval_sets`` prefix is a ``megatron-agentic data sft`` dataset
    (``PREFIX`` + ``PREFIX_loss_mask``); one conversation per sequence, padded, loss on assistant tokens only
    (``megatron_agentic.training.sft``)."""
    resume_from: str = "checkpoint"
    """On resume, whose data wins when the blend or its files changed since the checkpoint: ``checkpoint`` (refuse
    the change: the stored sample order continues) or ``config`` (train on the new data from the consumed-sample
    count, in a new order: samples may repeat or be skipped)."""

    def __post_init__(self) -> None:
        if self.loader not in ("torch", "dali"):
            raise ConfigError(f"data.loader must be torch or dali, got {self.loader!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be an integer >= 0, got {self.num_workers!r}")
        if not isinstance(self.prefetch_factor, int) or self.prefetch_factor < 1:
            raise ConfigError(f"data.prefetch_factor must be an integer >= 1, got {self.prefetch_factor!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"data.tokenizer must be one of {sorted(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.tokenizer == "custom" and self.eod_token_id is None:
            raise ConfigError("data.tokenizer=custom needs data.eod_token_id")
        parts = str(self.split).replace(" ", "").split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"data.split must be 'train,valid,test' numbers, got {self.split!r}") from None
        if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
            raise ConfigError(f"data.split must be three non-negative numbers, got {self.split!r}")
        if self.blend is not None:
            if not isinstance(self.blend, list) or not self.blend:
                raise ConfigError("data.blend must be a non-empty list")
        if not isinstance(self.eval_sets, dict):
            raise ConfigError("data.eval_sets must be a mapping {name: prefix}")
        if self.resume_from not in ("checkpoint", "config"):
            raise ConfigError(f"data.resume_from must be checkpoint or config, got {self.resume_from!r}")

    @property
    def eod_id(self) -> int:
        """End-of-document token id."""
        return self.eod_token_id if self.eod_token_id is not None else TOKENIZERS[self.tokenizer]["eod"]

    @property
    def uses_files(self) -> bool:
        """True when training reads indexed datasets rather than mock data."""
        return self.blend is not None or self.blend_file is not None


TOKENIZERS: dict[str, dict[str, int]] = {
    "qwen3": {"eod": 151643, "vocab": 151669},
    "custom": {"eod": -1, "vocab": 0},
}
"""Known tokenizers: end-of-document id and the number of ids they produce."""


@dataclasses.dataclass
class CheckpointConfig:
    """megatron-core dist_checkpointing save/resume."""

    dir: str | None = None
    """Checkpoint directory (``iter_XXXXXXX`` subdirectories + ``latest``); resumed from automatically."""
    interval: int | None = None
    """Save every N iterations (and at the end); null: only at the end when ``dir`` is set."""
    pretrained: str | None = None
    """Checkpoint directory to initialise weights from when ``dir`` holds none (stage 2 from stage 1)."""
    load_optimizer: bool = True
    """Restore optimizer, scheduler, RNG and data position on resume (off: weights only)."""
    pretrained_load_optimizer: bool = False
    """With ``pretrained``: also load its optimizer state (fp32 master weights, Adam moments and step), e.g.
    to carry stage 1's Adam state into stage 2. Off: fresh optimizer state. The iteration (= data position),
    token count and RNG always start fresh for the new run."""
    pretrained_load_scheduler: bool = False
    """With ``pretrained``: also load its LR scheduler, so the LR continues from the scheduler step stage 1
    reached, with stage 1's saved schedule (megatron-core uses the checkpoint's max/min LR, warmup, decay
    steps and style over ``train.lr*``). Off: the LR schedule starts at step 0 from this config. The
    iteration counter still starts at 0 (it counts this run's steps and is its data position)."""
    save_final: bool = True
    """Save at the end of training when ``dir`` is set."""

    # --- checkpoints at scale (issue 16): retention, walltime, async save, optimizer format --------------------
    keep_last: int | None = None
    """Keep only the newest N ``iter_*`` checkpoints (plus ``keep_every`` milestones); null keeps all. The one the
    latest marker names is never deleted."""
    keep_every: int | None = None
    """Also keep every checkpoint whose iteration is a multiple of this (milestones); null: none."""
    save_before_walltime_s: float = 600.0
    """Save and exit (code 3) once this many seconds remain of the Slurm job's time limit (read from
    ``SLURM_JOB_END_TIME`` or ``MEGATRON_AGENTIC_JOB_END_TIME``, epoch seconds); 0 disables."""
    async_save: bool | str = "auto"
    """Save through dist_checkpointing's asynchronous path (training continues while ranks write): ``auto``
    (on with CUDA), true (CUDA only) or false."""
    optimizer_format: str = "dp_reshardable"
    """Distributed-optimizer state format: ``dp_reshardable`` (each rank writes its own shard, no gather; loads
    into the same TP/PP/EP layout) or ``fully_reshardable`` (canonical per-parameter state, any layout).
    ``dp_reshardable`` checkpoints are loaded as ``fully_reshardable`` automatically when the layout changed
    is not possible: such a resume fails with a message; save with ``fully_reshardable`` before re-sharding."""

    def __post_init__(self) -> None:
        if self.interval is not None and (not isinstance(self.interval, int) or self.interval < 1):
            raise ConfigError(f"checkpoint.interval must be null or an integer >= 1, got {self.interval!r}")
        for name in ("keep_last", "keep_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"checkpoint.{name} must be null or an integer >= 1, got {value!r}")
        if not isinstance(self.save_before_walltime_s, (int, float)) or self.save_before_walltime_s < 0:
            raise ConfigError(f"checkpoint.save_before_walltime_s must be >= 0, got {self.save_before_walltime_s!r}")
        if self.async_save not in ("auto", True, False):
            raise ConfigError(f"checkpoint.async_save must be auto, true or false, got {self.async_save!r}")
        if self.optimizer_format not in ("dp_reshardable", "fully_reshardable"):
            raise ConfigError(
                f"checkpoint.optimizer_format must be dp_reshardable or fully_reshardable, got {self.optimizer_format!r}"
            )
        for name in ("pretrained_load_optimizer", "pretrained_load_scheduler"):
            if getattr(self, name) and self.pretrained is None:
                raise ConfigError(f"checkpoint.{name}=true needs checkpoint.pretrained")


@dataclasses.dataclass
class LogConfig:
    """Console, metrics.jsonl and TensorBoard logging."""

    dir: str = "runs/train"
    """Log directory (metrics.jsonl, summary.json, tensorboard/)."""
    interval: int = 1
    """Log every N iterations."""
    tensorboard: bool = True
    """Write TensorBoard event files under ``LOG_DIR/tensorboard``."""

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ConfigError(f"log.interval must be an integer >= 1, got {self.interval!r}")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "checkpoint": CheckpointConfig,
    "log": LogConfig,
    "perf": PerfConfig,
}


@dataclasses.dataclass
class TrainingConfig:
    """The whole training configuration."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """Architecture."""
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    """Parallel layout."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """Optimisation and schedule."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Data."""
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    """Checkpointing."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """Logging."""
    perf: PerfConfig = dataclasses.field(default_factory=PerfConfig)
    """Performance surface (fusions, overlaps, optimizer precision)."""
    source: str = "<dict>"
    """Where the configuration came from (for error messages)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the YAML schema (model overrides flattened under ``model``)."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            if name == "model":
                section.update(section.pop("overrides"))
            out[name] = section
        return out

    def validate(self, world_size: int, platform: Platform | None = None) -> int:
        """Check the layout against ``world_size`` before any process group starts; returns the DP size.

        ``platform``: the :class:`~megatron_agentic.platform.Platform` the performance settings are checked for
        (default: this machine; the planner passes the H100 platform it plans for).

        Raises ConfigError with a one-line message on the first problem.
        """
        p, arch, t = self.parallel, self.model.architecture(), self.train
        dp = p.data_parallel_size(world_size)
        if arch.num_attention_heads % p.tensor:
            raise ConfigError(
                f"model.num_attention_heads ({arch.num_attention_heads}) must be divisible by parallel.tensor ({p.tensor})"
            )
        if arch.num_query_groups % p.tensor:
            raise ConfigError(
                f"model.num_query_groups ({arch.num_query_groups}) must be divisible by parallel.tensor ({p.tensor})"
            )
        chunks = p.pipeline * (p.virtual_pipeline or 1)
        if arch.num_layers % chunks:
            raise ConfigError(
                f"model.num_layers ({arch.num_layers}) must be divisible by parallel.pipeline"
                f"{' * parallel.virtual_pipeline' if p.virtual_pipeline else ''} ({chunks})"
            )
        if p.virtual_pipeline is not None and p.pipeline < 2:
            raise ConfigError("parallel.virtual_pipeline needs parallel.pipeline >= 2")
        if not arch.num_experts and p.expert > 1:
            raise ConfigError(f"parallel.expert ({p.expert}) > 1 needs a MoE model; {arch.name} has no experts")
        if arch.num_experts and arch.num_experts % p.expert:
            raise ConfigError(
                f"model.num_experts ({arch.num_experts}) must be divisible by parallel.expert ({p.expert})"
            )
        if (dp * p.context * p.tensor) % (p.expert * p.tensor):
            raise ConfigError(
                f"parallel.expert ({p.expert}) must divide data*context ({dp}*{p.context}) for world size {world_size}"
            )
        if p.context > 1 and t.seq_length % (2 * p.context):
            raise ConfigError(
                f"train.seq_length ({t.seq_length}) must be divisible by 2*parallel.context ({2 * p.context})"
            )
        if arch.num_experts and p.tensor > 1 and not p.use_sequence_parallel:
            raise ConfigError("parallel.tensor > 1 with MoE needs sequence parallelism (parallel.sequence_parallel)")
        if p.use_sequence_parallel and p.tensor == 1:
            raise ConfigError("parallel.sequence_parallel=true needs parallel.tensor > 1")
        if p.use_sequence_parallel and t.seq_length % p.tensor:
            raise ConfigError(f"train.seq_length ({t.seq_length}) must be divisible by parallel.tensor ({p.tensor})")
        if t.global_batch_size % (t.micro_batch_size * dp):
            raise ConfigError(
                f"train.global_batch_size ({t.global_batch_size}) must be divisible by micro_batch_size*data "
                f"({t.micro_batch_size}*{dp})"
            )
        if arch.vocab_size % p.tensor:
            raise ConfigError(f"model.vocab_size ({arch.vocab_size}) must be divisible by parallel.tensor ({p.tensor})")
        if self.data.uses_files:
            needed = TOKENIZERS[self.data.tokenizer]["vocab"]
            if arch.vocab_size < needed:
                raise ConfigError(
                    f"model.vocab_size ({arch.vocab_size}) is smaller than the {self.data.tokenizer} tokenizer's "
                    f"{needed} ids"
                )
        if self.data.uses_files and not 0 <= self.data.eod_id < arch.vocab_size:
            raise ConfigError(
                f"data.eod_token_id ({self.data.eod_id}) must be in [0, model.vocab_size={arch.vocab_size})"
            )
        if self.model.attention_backend == "local" and p.context > 1:
            raise ConfigError("model.attention_backend=local cannot run parallel.context > 1; use triton or auto")
        if not self.data.mock and not self.data.uses_files:
            raise ConfigError("data.mock is false but neither data.blend nor data.blend_file is set: no training data")
        if t.exit_interval is not None and self.checkpoint.dir is None:
            raise ConfigError("train.exit_interval needs checkpoint.dir")
        etp_group = p.expert_tensor * p.expert * p.pipeline
        if world_size % etp_group:
            raise ConfigError(
                f"parallel.expert_tensor*expert*pipeline ({p.expert_tensor}*{p.expert}*{p.pipeline}) must divide "
                f"world size {world_size}"
            )
        self.effective_settings(platform)  # refuses invalid performance combinations (FP8 without TE, ...)
        return dp

    def effective_settings(self, platform: Platform | None = None) -> EffectiveSettings:
        """What megatron-core will be given on ``platform`` (default: this machine, detected without side effects).

        Raises ConfigError for invalid combinations.
        """
        if platform is None:
            from megatron_agentic.platform import detect_platform  # imports torch: only when the machine is asked

            platform = detect_platform()
        return resolve_settings(platform, self)


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading YAML 1.2 floats without a dot (``1e-3``, ``2E11``) as numbers, not strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text the way configs and ``--set`` values are read (``1e-3`` is a number)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


_SIMPLE_TYPES = (bool, int, float, str, type(None))


def _field_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types a field annotation allows (None when it is not made only of bool/int/float/str/None)."""
    if hint in _SIMPLE_TYPES:
        return (hint,)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        if all(a in _SIMPLE_TYPES for a in args):
            return tuple(args)
    return None


def _check_field_types(cls: type, values: dict[str, Any], section: str, source: str) -> None:
    """Refuse a value of the wrong type naming ``section.field`` (an integral float such as ``2e11`` becomes an int
    for an int field)."""
    hints = typing.get_type_hints(cls)
    for name, value in list(values.items()):
        allowed = _field_types(hints.get(name))
        if allowed is None:
            continue
        if isinstance(value, bool):
            ok = bool in allowed
        elif isinstance(value, int):
            ok = int in allowed or float in allowed
        elif isinstance(value, float):
            ok = float in allowed
            if not ok and int in allowed and value.is_integer():
                values[name], ok = int(value), True
        else:
            ok = isinstance(value, tuple(t for t in allowed if t not in (bool, int, float)))
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{source}: {section}.{name} must be {names}, got {value!r} ({type(value).__name__})")


def _build_section(cls: type, values: dict[str, Any], section: str, source: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    if cls is ModelConfig:
        known = {k: v for k, v in values.items() if k in names and k != "overrides"}
        known["overrides"] = {k: v for k, v in values.items() if k not in names}
        values = known
    else:
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {section}.{', '.join(unknown)}; valid: {sorted(names)}")
    _check_field_types(cls, values, section, source)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{source}: section {section}: {exc}") from None


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainingConfig:
    """Build a validated TrainingConfig from a nested dict in the YAML schema."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections {sorted(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; valid: {sorted(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name} must be a mapping")
        sections[name] = _build_section(cls, dict(values), name, source)
    return TrainingConfig(**sections, source=source)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value as YAML: numbers, booleans, null, lists)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. parallel.tensor=2)")
    key, _, text = item.partition("=")
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise ConfigError(f"--set {item!r}: key must be SECTION.FIELD (e.g. train.iters)")
    if path[0] not in SECTIONS:
        raise ConfigError(f"--set {item!r}: unknown section {path[0]!r}; valid: {sorted(SECTIONS)}")
    try:
        value = yaml_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from None
    return path, value


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainingConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply ``--set`` overrides in order."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not a UTF-8 text file (byte {exc.start}): not a YAML config") from None
        try:
            raw = yaml_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if raw is None or raw == {}:
            raise ConfigError(f"{source}: empty config (no sections); omit --config to train on the defaults")
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections {sorted(SECTIONS)}")
        if "base" in raw:  # derived from a recipe: its train sections, then this file's (the planner's `plan` dropped)
            try:
                raw = {k: v for k, v in resolve_mapping(raw, Path(path), yaml_load).items() if k != "plan"}
            except RecipeError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    for item in overrides or []:
        (section, key), value = parse_override(item)
        current = raw.setdefault(section, {})
        if current is None:
            current = raw[section] = {}
        current[key] = value
    return config_from_dict(raw, source)


def load_blend_file(path: str) -> list[Any]:
    """The ``blend`` list of a JSON/YAML blend file (written by ``megatron-agentic data mix``)."""
    try:
        data = yaml_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"data.blend_file {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data.blend_file {path}: not a UTF-8 text file (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"data.blend_file {path}: invalid JSON/YAML: {exc}") from None
    blend = data.get("blend") if isinstance(data, dict) else None
    if not isinstance(blend, list) or not blend:
        raise ConfigError(f"data.blend_file {path}: needs a non-empty 'blend' list")
    return blend


def parse_blend(blend: list[Any], where: str = "data.blend") -> tuple[list[str], list[float] | None]:
    """Split ``[w1, p1, w2, p2, ...]`` or ``[p1, p2, ...]`` into (prefixes, weights or None)."""
    if all(isinstance(x, str) for x in blend):
        return [str(x) for x in blend], None
    if len(blend) % 2:
        raise ConfigError(f"{where}: expected [weight, prefix, weight, prefix, ...], got an odd-length list")
    weights, prefixes = [], []
    for i in range(0, len(blend), 2):
        w, p = blend[i], blend[i + 1]
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or not isinstance(p, str):
            raise ConfigError(f"{where}: item {i // 2}: expected a weight >= 0 then a prefix, got {w!r}, {p!r}")
        weights.append(float(w))
        prefixes.append(p)
    if sum(weights) <= 0:
        raise ConfigError(f"{where}: weights sum to 0")
    return prefixes, weights
