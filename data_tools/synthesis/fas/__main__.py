"""``python -m data_tools.synthesis.fas``."""

import sys

from data_tools.synthesis.fas.cli import main

if __name__ == "__main__":
    sys.exit(main())
