"""``megatron-agentic demo``: the whole Agentic CPT pipeline end to end on CPU, with a report.

Corpus -> knowledge memory -> FAS planning/reasoning -> offline rollouts -> HAS -> Qwen3 tokenization ->
stage blends -> tiny-moe stage 1 (expert parallel) -> stage 2 (4x context, ring attention, replay), with the
held-out loss per data type before and after each stage. See ``docs/demo.md``.
"""

from megatron_agentic.demo.cli import main

__all__ = ["main"]
