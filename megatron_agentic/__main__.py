"""``python -m megatron_agentic ...`` is the same as ``megatron-agentic ...``."""

import sys

from megatron_agentic.cli import main

if __name__ == "__main__":
    sys.exit(main())
