"""Higher-order action synthesis (HAS): every step of a recorded trajectory becomes a multiple-choice decision.

CLI: ``megatron-agentic data has`` (:func:`data_tools.synthesis.has.cli.main`); also
``python -m data_tools.synthesis.has``. Pieces: :mod:`~data_tools.synthesis.has.action` (the candidate action),
:mod:`~data_tools.synthesis.has.collapse` (the collapse guard), :mod:`~data_tools.synthesis.has.step_context` (what an
agent knew before a step), :mod:`~data_tools.synthesis.has.strategies` and
:mod:`~data_tools.synthesis.has.template_backend` (offline alternatives),
:mod:`~data_tools.synthesis.has.llm_backend` (model-generated alternatives),
:mod:`~data_tools.synthesis.has.expand` (decisions, shuffling, long-context splitting),
:mod:`~data_tools.synthesis.has.probe` (the tell probe, ``data has-probe``).
"""
