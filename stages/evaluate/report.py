"""The markdown report of one evaluation: headline metrics, excluded clips, per-class table, figures, and the
benchmark's history from the results table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.evaluate.scoring import Scored


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def excluded_clips(excluded: list[dict[str, Any]]) -> int:
    """Clips behind the exclusion rows (a row for a whole rejected video stands for all of its clips)."""
    return sum(e.get("clips", 1) for e in excluded)


def render_report(*, benchmark: str, checkpoint: str, checkpoint_path: str, protocol: str, views: str,
                  clips: int, scored: Scored, excluded: list[dict[str, str]], class_names: list[str],
                  figures: list[Path], history: list[dict[str, Any]], top_classes: int,
                  ema_metrics: dict[str, float] | None = None) -> str:
    lines = [f"# Evaluation: {benchmark}", "",
             f"* checkpoint `{checkpoint}` ({checkpoint_path}), protocol **{protocol}**",
             f"* {clips} clips scored, views {views} (temporal x spatial, probabilities averaged)",
             f"* **{excluded_clips(excluded)} clips of the split excluded** (rejected by the shard stage or undecodable): the "
             "metrics are over the scored clips only" if excluded else "* every clip of the split was scored",
             "", "## Metrics (%)", ""]
    if ema_metrics is None:
        lines += _table(["metric", "value"], [[k, _fmt(v)] for k, v in scored.metrics.items()])
    else:
        lines += _table(["metric", "trained weights", "model EMA"],
                        [[k, _fmt(v), _fmt(ema_metrics.get(k, float("nan")))] for k, v in scored.metrics.items()])
    if excluded:
        lines += ["", "## Excluded clips", ""] + _table(["clip", "clips", "reason"],
                                                        [[e["key"], e.get("clips", 1), e["reason"]] for e in excluded])
    for head, values in scored.per_class.items():
        support = scored.confusion[head].sum(axis=1) if head in scored.confusion else np.ones(len(values))
        present = np.flatnonzero(~np.isnan(values))
        worst = present[np.argsort(values[present], kind="stable")][:top_classes]
        names = class_names if head in ("label", "action") else []
        lines += ["", f"## Hardest classes ({head})", ""]
        lines += _table(["class", "score (%)", "clips"],
                        [[names[i] if i < len(names) and names[i] else i, _fmt(values[i]), int(support[i])]
                         for i in worst])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.as_posix()})" for f in figures]
    if history:
        lines += ["", f"## History of {benchmark} (results table)", ""]
        lines += _table(["when", "checkpoint", "protocol", "views", "metric", "value (%)"],
                        [[str(r["timestamp"]), r["checkpoint"], r["protocol"], r["views"], r["metric"],
                          _fmt(r["value"])] for r in history])
    return "\n".join(lines) + "\n"
