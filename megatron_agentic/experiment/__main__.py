"""``python -m megatron_agentic.experiment`` is ``megatron-agentic experiment``."""

import sys

from megatron_agentic.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
