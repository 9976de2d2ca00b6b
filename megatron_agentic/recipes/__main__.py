"""``python -m megatron_agentic.recipes``."""

import sys

from megatron_agentic.recipes import main

if __name__ == "__main__":
    sys.exit(main())
