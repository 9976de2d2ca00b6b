"""Training log routing: the console shows the project's own lines; everything else goes to a per-rank log file.

megatron-core and torch are chatty on every start (Apex/TE fallback ``UserWarning`` s, dataset-index INFO lines, the
gradient-bucket parameter dump, deprecation ``FutureWarning`` s from ``torch.distributed``). They are kept, at full
detail, in ``LOG_DIR/train_rank{R}.log``; the console shows ``megatron_agentic``/``data_tools`` records at INFO
(rank 0; WARNING elsewhere) and third-party records only from ERROR up. ``--verbose`` restores everything on the
console at DEBUG. Records emitted before the log directory is known (imports) are buffered and written once it is.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

OWN_LOGGERS = ("megatron_agentic", "data_tools", "__main__")
FORMAT = "[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s"
BUFFER_LIMIT = 10_000


class ConsoleFilter(logging.Filter):
    """Pass the project's own records; from other loggers (and Python warnings) only errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "root" or record.name.split(".")[0] in OWN_LOGGERS
        return own or record.levelno >= logging.ERROR


class DeferredFileHandler(logging.Handler):
    """Buffer records until :meth:`open` names the file, then write the buffer and everything after it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._buffer: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        self.path: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)
        elif len(self._buffer) < BUFFER_LIMIT:
            self._buffer.append(record)

    def open(self, path: Path) -> None:
        """Start writing to ``path`` (appended: a resumed run keeps the earlier attempts' lines)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
        self._file.setFormatter(self.formatter)
        self.path = path
        for record in self._buffer:
            self._file.emit(record)
        self._buffer.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


_FILE_HANDLER: DeferredFileHandler | None = None


def configure_logging(rank: int, verbose: bool = False) -> None:
    """Install the console handler and the (deferred) file handler on the root logger; capture Python warnings."""
    global _FILE_HANDLER
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(FORMAT.format(rank=rank))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    if verbose:
        console.setLevel(logging.DEBUG)
    else:
        console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        console.addFilter(ConsoleFilter())
    _FILE_HANDLER = DeferredFileHandler()
    _FILE_HANDLER.setFormatter(formatter)
    root.addHandler(console)
    root.addHandler(_FILE_HANDLER)
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)


def open_log_file(log_dir: str | Path, rank: int) -> Path | None:
    """Write this rank's full log to ``LOG_DIR/train_rank{rank}.log`` from now on (buffered records first)."""
    if _FILE_HANDLER is None:
        return None
    path = Path(log_dir) / f"train_rank{rank}.log"
    try:
        _FILE_HANDLER.open(path)
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log file %s: %s", path, exc)
        return None
    return path
