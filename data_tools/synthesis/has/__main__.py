"""``python -m data_tools.synthesis.has``."""

import sys

from data_tools.synthesis.has.cli import main

if __name__ == "__main__":
    sys.exit(main())
