"""Higher-order action synthesis (HAS): every step of a recorded trajectory becomes a multiple-choice decision.

CLI: ``megatron-agentic data has`` (:func:`main`, implemented in :mod:`data_tools.synthesis.has.cli`); also
``python -m data_tools.synthesis.has``. Pieces: :mod:`~data_tools.synthesis.has.candidates` (alternatives + collapse guard),
:mod:`~data_tools.synthesis.has.llm_backend` (model-generated alternatives), :mod:`~data_tools.synthesis.has.expand` (decisions,
shuffling, long-context splitting), :mod:`~data_tools.synthesis.has.probe` (the tell probe, ``data has-probe``).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``megatron-agentic data has`` (see :mod:`data_tools.synthesis.has.cli`)."""
    from data_tools.synthesis.has.cli import main as _main

    return _main(argv)
