"""``python -m megatron_agentic.demo`` is the same as ``megatron-agentic demo``."""

import sys

from megatron_agentic.demo import main

if __name__ == "__main__":
    sys.exit(main())
