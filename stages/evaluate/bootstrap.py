"""Percentile-bootstrap intervals over the evaluated clips, and paired intervals for the gain of one set of
weights over another scored on the same clips.

Every set of weights is scored on the same resampled clip sets (the draws are shared), so a difference of two
metrics is computed draw by draw: its interval is the paired one, much narrower than the two single intervals
suggest when both models find the same clips hard. The intervals cover the sampling of the evaluation clips, not
the training run's seed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

MetricsOf = Callable[[np.ndarray], dict[str, float]]  # clip indices (with repeats) -> metric -> value


@dataclass(frozen=True)
class Interval:
    value: float  # on all clips
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def resample(clips: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``resamples`` arrays of ``clips`` clip indices drawn with replacement, one at a time (a large split's
    draws do not all sit in memory); the same ``seed`` gives the same draws."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, clips, clips)


def metric_draws(metrics_of: MetricsOf, draws: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Metric -> its value on every draw, ``(resamples,)``."""
    per_draw = [metrics_of(indices) for indices in draws]
    return {name: np.array([d[name] for d in per_draw]) for name in per_draw[0]} if per_draw else {}


def percentile_interval(value: float, draws: np.ndarray, level: float = 0.95) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail]) if len(draws) else (np.nan, np.nan)
    return Interval(float(value), float(low), float(high))


def intervals(values: dict[str, float], draws: dict[str, np.ndarray], level: float = 0.95) -> dict[str, Interval]:
    """Each metric of ``values`` (on all clips) with its interval from ``draws``."""
    return {name: percentile_interval(value, draws.get(name, np.array([])), level) for name, value in values.items()}


def paired_differences(values_a: dict[str, float], draws_a: dict[str, np.ndarray], values_b: dict[str, float],
                       draws_b: dict[str, np.ndarray], level: float = 0.95) -> dict[str, Interval]:
    """``a - b`` for every metric both have, with the interval of the draw-by-draw differences."""
    common = [name for name in values_a if name in values_b]
    return {name: percentile_interval(values_a[name] - values_b[name],
                                      draws_a[name] - draws_b[name] if name in draws_a and name in draws_b
                                      else np.array([]), level) for name in common}
