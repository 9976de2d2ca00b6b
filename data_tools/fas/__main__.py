"""``python -m data_tools.fas``."""

import sys

from data_tools.fas.cli import main

if __name__ == "__main__":
    sys.exit(main())
