"""Metric sink: long-format CSV (``step,name,value``) plus optional TensorBoard, main rank only."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "metrics.csv"
        fresh = not self.csv_path.exists()
        self._file = self.csv_path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if fresh:
            self._csv.writerow(["step", "name", "value"])
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._csv.writerow([step, name, f"{value:.6g}"])
            if self._writer is not None:
                self._writer.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._writer is not None:
                self._writer.close()
