"""Child process of tests/train/test_save_procs.py: starts the shielded checkpoint helpers, reports them, waits.

Prints one JSON line ``{"manager": PID, "writer": PID, "writer_pgid": PGID, "pgid": PGID}`` and then sleeps until
killed: the manager serves megatron-core's write-results queue; the writer is a process forked inside
``guarded_forks`` (as megatron-core's checkpoint writers are) that sleeps.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time


def _writer(queue) -> None:
    queue.put(("writer", os.getpid()))
    time.sleep(600)


def main() -> None:
    from megatron_agentic.training import save_procs

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # like the trainer: records them and carries on
        signal.signal(sig, lambda *_: None)
    queue = save_procs.start_results_queue()
    with save_procs.guarded_forks():
        proc = mp.get_context("fork").Process(target=_writer, args=(queue,))
        proc.start()
    _, writer = queue.get(timeout=60)
    info = {
        "manager": save_procs.helper_pids()[0],
        "writer": writer,
        "writer_pgid": os.getpgid(writer),
        "pgid": os.getpgid(0),
        "pid": os.getpid(),
    }
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    if len(sys.argv) > 1 and sys.argv[1] == "exit":
        sys.stdin.readline()  # the test signals the helpers, then lets this process end normally
        queue.put("still served")
        sys.stdout.write(json.dumps({"got": queue.get(timeout=30)}) + "\n")
        sys.stdout.flush()
        proc.kill()
        save_procs.shutdown()
        return
    time.sleep(600)


if __name__ == "__main__":
    main()
