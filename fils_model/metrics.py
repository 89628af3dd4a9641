"""Metric sink: long-format CSV (``step,name,value``) plus optional TensorBoard, main rank only."""

from __future__ import annotations

import csv
from pathlib import Path


def _truncate_after(path: Path, step: int) -> None:
    """Drop the rows logged after ``step``: a run resumed from that checkpoint logs them again."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) != len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        tmp.replace(path)


class MetricLogger:
    """``resume_step``: the step the run resumes from; rows an interrupted attempt logged after it are dropped."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0) -> None:
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "metrics.csv"
        fresh = not self.csv_path.exists()
        if not fresh:
            _truncate_after(self.csv_path, resume_step)
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
