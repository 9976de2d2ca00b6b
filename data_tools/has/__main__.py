"""``python -m data_tools.has``."""

import sys

from data_tools.has import main

if __name__ == "__main__":
    sys.exit(main())
