"""Training metrics: rich console lines, ``LOG_DIR/metrics.jsonl`` and TensorBoard (rank 0 only).

Every logged step appends one JSON object (``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens``,
``tokens_per_s``, ``aux_loss``, ``expert_load``, ...); evaluations append ``{"step", "eval": {...}}``.
A resumed run first drops records after the checkpoint it resumes from, so the file never holds
duplicated or orphaned steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from data_tools.common.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping unreadable line %r", path, line[:80])
    return records


class MetricsLogger:
    """Writes metrics on rank 0; a no-op elsewhere."""

    def __init__(self, log_dir: str | os.PathLike, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / "metrics.jsonl"
        self._writer = None
        self._console = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.log_dir / "tensorboard"))
            except Exception as exc:  # pragma: no cover - tensorboard missing
                logger.warning("TensorBoard disabled: %s", exc)
        from rich.console import Console

        self._console = Console(stderr=True, highlight=False, soft_wrap=True)

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (resume from a checkpoint at ``step``)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def log_step(self, record: dict[str, Any]) -> None:
        """Append a training-step record and mirror scalars to TensorBoard and the console."""
        if not self.enabled:
            return
        self._append(record)
        step = int(record["step"])
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(f"train/{key}", value, step)
            for i, value in enumerate(record.get("expert_load") or []):
                self._writer.add_scalar(f"expert_load/expert_{i}", value, step)
        if self._console is not None:
            load = record.get("expert_load")
            load_text = f" load[min/max] {min(load):.2f}/{max(load):.2f}" if load else ""
            self._console.print(
                f"[bold]step {step:>6}[/bold] loss {record['loss']:.4f} lr {record['lr']:.3e} "
                f"gnorm {record['grad_norm']:.3f} aux {record.get('aux_loss', float('nan')):.4f} "
                f"tok/s {record['tokens_per_s']:.0f} tokens {record['tokens']}{load_text}"
            )

    def log_eval(self, step: int, losses: dict[str, float]) -> None:
        """Append ``{"step", "eval": {...}}``."""
        if not self.enabled:
            return
        self._append({"step": step, "eval": losses})
        if self._writer is not None:
            for name, value in losses.items():
                self._writer.add_scalar(f"eval/{name}", value, step)
        if self._console is not None:
            text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self._console.print(f"[cyan]eval  step {step:>6}[/cyan] {text}")

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
