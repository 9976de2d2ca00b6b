"""Settings of ``megatron-agentic experiment``: typed dataclasses, the ``small``/``full`` presets and ``--config``.

A preset fixes every size of the ablation (documents per data pool, rollouts, model shape, iterations, seeds,
agent-evaluation limits). ``--config FILE`` (YAML or JSON) overrides any field of the chosen preset, nested
sections included, e.g.::

    preset: full
    model: {config: /path/to/qwen3_30b_a3b.yaml, vocab: qwen3, overrides: {}}
    sft: {iters: 2000, seeds: [1, 2, 3]}

which is how the same command runs at cluster scale (a real base model config, the full Qwen3 vocabulary,
longer runs); the ablation's steps are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "experiment"
"""Folder with the experiment's training YAML (``tiny.yaml``)."""

ARMS = ("non_cpt", "fas", "fas_has", "fas_has_0.5x", "fas_has_2x")
"""Arm names: continued pre-training on general text, FAS only, FAS+HAS, and the CPT-token scaling arms."""


@dataclass
class RunConfig:
    """Sizes of one kind of training run (passed to ``megatron-agentic train`` settings)."""

    iters: int
    """Training iterations."""
    seq_length: int
    """Sequence length in tokens."""
    global_batch_size: int
    """Sequences per optimizer step."""
    micro_batch_size: int
    """Sequences per forward/backward."""
    lr: float
    """Peak learning rate (cosine to lr/10, warmup ``warmup`` iterations)."""
    warmup: int = 2
    """Warm-up iterations."""
    eval_interval: int | None = None
    """Evaluate the held-out set every this many iterations (and at the end); None: only at the end."""

    def __post_init__(self) -> None:
        for name in ("iters", "seq_length", "global_batch_size", "micro_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"global_batch_size {self.global_batch_size} is not a multiple of {self.micro_batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def tokens(self) -> int:
        """Tokens the run trains on: iterations x global batch x sequence length."""
        return self.iters * self.global_batch_size * self.seq_length


@dataclass
class ModelSettings:
    """The model every arm shares."""

    config: str = "tiny.yaml"
    """Training YAML (relative to ``examples/experiment/`` or absolute): model, layout, optimizer."""
    vocab: str = "compact"
    """``compact``: the experiment vocabulary (Qwen3 ids occurring in the data mapped to dense ids, the rest to
    one unknown id; special tokens kept) for speed on CPU; ``qwen3``: the full Qwen3 vocabulary (cluster scale)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Extra ``model.*`` fields (``ModelPreset`` fields, e.g. ``num_layers``)."""

    def __post_init__(self) -> None:
        if self.vocab not in ("compact", "qwen3"):
            raise ValueError(f"model.vocab must be compact or qwen3, got {self.vocab!r}")

    @property
    def config_path(self) -> Path:
        """The training YAML as an absolute path."""
        path = Path(self.config)
        return path if path.is_absolute() else CONFIG_DIR / path


@dataclass
class DataSettings:
    """The disjoint document pools of the built-in Wikipedia corpus and what is synthesized from them."""

    corpus_docs: int
    """Wikipedia summaries taken (``data_tools.synthesis.corpus``, first N by title), then partitioned by a stable hash."""
    pools: dict[str, float] = field(
        default_factory=lambda: {"base": 0.3, "cpt": 0.4, "sft": 0.2, "heldout_sft": 0.05, "agent": 0.05}
    )
    """Share of the documents per pool: base pre-training text, CPT (general text of the non-CPT arm, FAS and
    HAS are all made from these), SFT trajectories, the held-out SFT set and the held-out agent questions."""
    questions_per_memory: int = 2
    """FAS questions (of different styles) per memory item."""
    cpt_rollouts: int = 40
    """Questions rolled out on the CPT pool for HAS (built-in questions plus FAS planning questions)."""
    sft_rollouts: int = 60
    """Built-in questions rolled out on the SFT pool (the correct ones become SFT trajectories)."""
    heldout_rollouts: int = 20
    """Built-in questions rolled out on the held-out SFT pool (the correct ones are the held-out SFT set)."""
    agent_questions: int = 8
    """Held-out agent questions (built-in questions of the agent pool) each SFT model answers."""
    has_candidates: int = 2
    """Alternatives per HAS decision."""
    rollout_args: list[str] = field(
        default_factory=lambda: ["--top-k", "2", "--snippet-chars", "80", "--max-calls", "4"]
    )
    """Extra ``data rollout`` flags (short tool responses keep SFT conversations within ``sft.seq_length``)."""
    sft_tools: list[str] = field(default_factory=lambda: ["search", "visit"])
    """Tools declared in the SFT system turn (``data sft --tools``) and in the agent's prompt: the environment's."""
    seed: int = 1234
    """Seed of the partition and the synthesis."""

    def __post_init__(self) -> None:
        if set(self.pools) != {"base", "cpt", "sft", "heldout_sft", "agent"}:
            raise ValueError("data.pools must give shares for base, cpt, sft, heldout_sft and agent")
        if any(v <= 0 for v in self.pools.values()) or sum(self.pools.values()) > 1.0 + 1e-9:
            raise ValueError("data.pools shares must be positive and sum to at most 1")
        for name in ("corpus_docs", "questions_per_memory", "cpt_rollouts", "sft_rollouts", "heldout_rollouts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class AgentSettings:
    """Limits of the agent evaluation (greedy decoding with the SFT model in the offline environment)."""

    max_calls: int = 3
    """Policy calls per question."""
    max_new_tokens: int = 96
    """New tokens per policy call (stops earlier at ``<|im_end|>``)."""

    def __post_init__(self) -> None:
        if self.max_calls < 1 or self.max_new_tokens < 1:
            raise ValueError("agent.max_calls and agent.max_new_tokens must be >= 1")


@dataclass
class ExperimentConfig:
    """Every setting of one ablation run."""

    name: str
    """Preset name, shown in the report."""
    data: DataSettings
    """Document pools and synthesis sizes."""
    base: RunConfig
    """Base pre-training on general text (from random weights)."""
    cpt: RunConfig
    """Continued pre-training of each arm from the base; ``iters`` is the 1x budget, the scaling arms use
    ``cpt_scales`` times it."""
    sft: RunConfig
    """Identical SFT of every arm on the ReAct trajectories (``data.sft``), held-out loss at the end."""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """SFT seeds: each sets the SFT data order (the arm's weights are loaded; the model has no dropout)."""
    cpt_scales: dict[str, float] = field(default_factory=lambda: {"fas_has_0.5x": 0.5, "fas_has_2x": 2.0})
    """Scaling arms: FAS+HAS at this multiple of the 1x CPT token budget (1x is the ``fas_has`` arm)."""
    fas_has_share: float = 0.5
    """Share of HAS tokens in the FAS+HAS arms' blend (the rest FAS planning + reasoning)."""
    model: ModelSettings = field(default_factory=ModelSettings)
    """Model shared by all arms."""
    agent: AgentSettings = field(default_factory=AgentSettings)
    """Agent-evaluation limits."""
    step_timeout_s: int = 3600
    """The shared step runner's limit for subprocess steps (every experiment step runs in-process: unused)."""

    def __post_init__(self) -> None:
        for name, kind in (("data", DataSettings), ("base", RunConfig), ("cpt", RunConfig), ("sft", RunConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, kind(**getattr(self, name)))
        if isinstance(self.model, dict):
            self.model = ModelSettings(**self.model)
        if isinstance(self.agent, dict):
            self.agent = AgentSettings(**self.agent)
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if set(self.cpt_scales) != {"fas_has_0.5x", "fas_has_2x"} or any(v <= 0 for v in self.cpt_scales.values()):
            raise ValueError("cpt_scales must give positive multiples for fas_has_0.5x and fas_has_2x")
        if not 0.0 < self.fas_has_share < 1.0:
            raise ValueError(f"fas_has_share must be in (0, 1), got {self.fas_has_share}")

    def arm_iters(self, arm: str) -> int:
        """CPT iterations of ``arm`` (same budget for non_cpt, fas, fas_has; scaled for the scaling arms)."""
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}")
        return max(1, round(self.cpt.iters * self.cpt_scales.get(arm, 1.0)))

    def arm_tokens(self, arm: str) -> int:
        """CPT tokens of ``arm``."""
        return self.arm_iters(arm) * self.cpt.global_batch_size * self.cpt.seq_length

    def fingerprint(self) -> str:
        """Stable hash of every setting; a workdir made with another configuration must be started afresh."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """Plain-dict form (written to the workdir and the report)."""
        return dataclasses.asdict(self)


def _run(iters: int, seq: int, gbs: int, mbs: int, lr: float, **kw: Any) -> dict[str, Any]:
    return {"iters": iters, "seq_length": seq, "global_batch_size": gbs, "micro_batch_size": mbs, "lr": lr, **kw}


PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "name": "small",
        "data": {
            "corpus_docs": 200,
            "cpt_rollouts": 24,
            "sft_rollouts": 40,
            "heldout_rollouts": 16,
            "agent_questions": 2,
        },  # fmt: skip
        "base": _run(12, 256, 8, 8, 3e-3),
        "cpt": _run(6, 256, 8, 8, 2e-3),
        "sft": _run(3, 896, 2, 2, 2e-3, eval_interval=None),
        "agent": {"max_calls": 2, "max_new_tokens": 48},
    },
    "full": {
        "name": "full",
        "data": {
            "corpus_docs": 600,
            "cpt_rollouts": 80,
            "sft_rollouts": 120,
            "heldout_rollouts": 40,
            "agent_questions": 6,
        },  # fmt: skip
        "base": _run(60, 256, 8, 8, 3e-3),
        "cpt": _run(30, 256, 8, 8, 2e-3),
        "sft": _run(16, 896, 4, 4, 2e-3, eval_interval=4),
        "agent": {"max_calls": 2, "max_new_tokens": 64},
    },
}
"""The presets as plain dicts (``--config`` overrides are merged into them before the dataclasses are built)."""


def _merge(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("pools", "overrides"):
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_experiment_config(preset: str | None, config_file: str | None = None) -> ExperimentConfig:
    """The preset ``preset`` (default ``small``, or the file's ``preset:``) with ``config_file`` merged over it.

    Raises ``ValueError`` with the file and field on a bad file or an unknown field.
    """
    over: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            over = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"--config {path}: cannot read: {exc}") from None
        if not isinstance(over, dict):
            raise ValueError(f"--config {path}: expected a mapping at the top level")
        file_preset = over.pop("preset", None)
        preset = preset or file_preset
    preset = preset or "small"
    if preset not in PRESETS:
        raise ValueError(f"unknown experiment preset {preset!r}; choose from {sorted(PRESETS)}")
    merged = _merge(PRESETS[preset], over)
    try:
        return ExperimentConfig(**merged)
    except TypeError as exc:  # an unknown field name
        raise ValueError(f"--config {config_file}: {exc}") from None
