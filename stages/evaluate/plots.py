"""PNG figures for the report: per-class accuracy, confusion matrix, pre-training loss curves, a metric over
checkpoints. Matplotlib's Agg backend, so it runs on headless machines."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _name(names: list[str], index: int) -> str:
    return names[index] if index < len(names) and names[index] else str(index)


def per_class_accuracy(values: np.ndarray, support: np.ndarray, names: list[str], title: str, path: Path,
                       limit: int) -> Path:
    """Bars of per-class recall (or AP) for the ``limit`` most frequent classes, sorted by value."""
    present = np.flatnonzero(support > 0)
    shown = present[np.argsort(-support[present], kind="stable")][:limit]
    shown = shown[np.argsort(values[shown], kind="stable")]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(shown) + 1)))
    ax.barh([_name(names, i) for i in shown], values[shown], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (recall)" if "AP" not in title else "average precision")
    ax.set_title(title)
    return _save(fig, path)


def confusion(matrix: np.ndarray, names: list[str], title: str, path: Path, limit: int) -> Path:
    """Row-normalised confusion matrix of the ``limit`` most frequent true classes."""
    support = matrix.sum(axis=1)
    shown = np.argsort(-support, kind="stable")[:limit]
    shown = np.sort(shown[support[shown] > 0])
    sub = matrix[np.ix_(shown, shown)].astype(float)
    sub /= np.maximum(sub.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6 + 0.1 * len(shown), 5 + 0.1 * len(shown)))
    image = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
    labels = [_name(names, i) for i in shown]
    ax.set_xticks(range(len(shown)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def read_loss_series(metrics_csv: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every ``loss*`` series of a long-format ``step,name,value`` CSV: name -> (steps, values), by step."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["name"].startswith("loss"):
                series[row["name"]].append((int(row["step"]), float(row["value"])))
    return {name: tuple(np.array(v) for v in zip(*sorted(points))) for name, points in series.items()}


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    sums = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def loss_curves(metrics_csv: Path, path: Path, floors: dict[str, float] | None = None) -> Path | None:
    """One panel per loss term: the logged values, their running mean and, where known, the term's trivial floor
    (its value when nothing is learned, ``fils_model.loss_floors``); None when the CSV holds no loss."""
    series = read_loss_series(metrics_csv)
    if not series:
        return None
    floors = floors or {}
    names = sorted(series, key=lambda n: (n == "loss", n))  # the terms, then their weighted sum
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps, values = series[name]
        ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8)
        ax.plot(steps, running_mean(values, max(1, len(values) // 10)), color="tab:blue", label="running mean")
        if name in floors:
            ax.axhline(floors[name], color="tab:red", linestyle="--", label=f"no learning ({floors[name]:.3g})")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle("pre-training losses")
    return _save(fig, path)


def _trend_panel(ax: plt.Axes, rows: list[dict[str, Any]], metric: str, by_step: bool) -> None:
    for protocol in sorted({r["protocol"] for r in rows}):
        points = {r["checkpoint"]: (r["step"] if by_step else n, r["value"])
                  for n, r in enumerate(rows) if r["protocol"] == protocol}
        xs, ys = zip(*sorted(points.values()))
        ax.plot(xs, [y if "rank" in metric else 100 * y for y in ys], marker="o", label=protocol)
    ax.set_xlabel("checkpoint step" if by_step else "checkpoints without a step (evaluation order)")
    ax.set_ylabel(metric if "rank" in metric else f"{metric} (%)")
    ax.legend(fontsize=7)


def metric_trend(rows: list[dict[str, Any]], metric: str, benchmark: str, path: Path) -> Path:
    """``metric`` over checkpoints, one line per protocol: by training step for the rows that carry one, and in a
    second panel, by evaluation order, for those that do not (fine-tuned classifiers, VideoMAE checkpoints from
    elsewhere). ``rows``: the results table's, in recording order."""
    rows = [r for r in rows if r["metric"] == metric]
    groups = [(group, by_step) for by_step in (True, False)
              if (group := [r for r in rows if (r.get("step") is not None) == by_step])]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4), squeeze=False)
    for ax, (group, by_step) in zip(axes[0], groups):
        _trend_panel(ax, group, metric, by_step)
    fig.suptitle(f"{benchmark}: {metric}")
    return _save(fig, path)
