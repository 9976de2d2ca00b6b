"""First-order action synthesis (FAS): knowledge memory -> multi-style questions -> planning and reasoning
actions, filtered by a judge. ``megatron-agentic data fas`` / ``python -m data_tools.synthesis.fas``."""

from data_tools.synthesis.fas.cli import main

__all__ = ["main"]
