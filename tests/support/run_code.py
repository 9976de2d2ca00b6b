"""``python -m tests.support.run_code CODE``: run ``CODE`` (a ``-c`` that launchers taking only ``-m`` accept)."""

import sys

if __name__ == "__main__":
    exec(compile(sys.argv[1], "<run_code>", "exec"), {"__name__": "__main__"})
