"""First-order action synthesis (FAS): knowledge memory -> multi-style questions -> planning and reasoning
actions, filtered by a judge. ``megatron-agentic data fas`` / ``python -m data_tools.synthesis.fas`` (the command is
:func:`data_tools.synthesis.fas.cli.main`).

Nothing is imported here, so importing any piece (``fas.judge``, ``fas.questions``, ...) loads only what that piece
needs: the command line and the LLM client come in with :mod:`~data_tools.synthesis.fas.cli` and
:mod:`~data_tools.synthesis.fas.pipeline` alone.
"""
