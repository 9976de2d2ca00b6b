"""``python -m megatron_agentic.planner``: the ``megatron-agentic plan`` command.

The planner itself is the :mod:`megatron_agentic.planning` package (layout, memory, time, plan, search, report, cli).
"""

from __future__ import annotations

import sys

from megatron_agentic.planning.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
