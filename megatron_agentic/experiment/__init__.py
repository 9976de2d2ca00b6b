"""``megatron-agentic experiment``: the paper's data ablation (non-CPT / FAS / FAS+HAS, CPT-token scaling) at small
scale, from a base model through identical SFT to agent metrics, as one resumable command."""

from megatron_agentic.experiment.cli import main

__all__ = ["main"]
