"""``python -m tests.support.zygote_call FILE.pkl``: call ``fn(RANK, *args)`` from a pickled ``(module, name, args)``
(the per-rank entry of :func:`tests.support.zygote.spawn`)."""

from __future__ import annotations

import importlib
import os
import pickle
import sys


def main() -> None:
    """Load the call, run it for this rank."""
    with open(sys.argv[1], "rb") as f:
        module, qualname, args = pickle.load(f)
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    fn(int(os.environ["RANK"]), *args)


if __name__ == "__main__":
    main()
