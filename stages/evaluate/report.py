"""The markdown report of one evaluation: headline metrics, excluded clips, per-class table, figures, and the
benchmark's history from the results table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.evaluate.bootstrap import Interval
from stages.evaluate.scoring import HEADLINE, Scored


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def _fmt_interval(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    if np.isnan(interval.low):
        return _fmt(interval.value)
    return f"{_fmt(interval.value)} [{_fmt(interval.low)}, {_fmt(interval.high)}]"


def _gain_sentence(gain: dict[str, Interval], level: float | None) -> list[str]:
    """What the headline metric's paired difference to the random-init encoder says, in words."""
    metric = next((name for name in HEADLINE if name in gain), next(iter(gain)))
    interval = gain[metric]
    points = f"{100 * interval.value:+.2f} points {metric}"
    if level is None or np.isnan(interval.low):
        return [f"Gain of the pre-trained encoder over the random-init one: {points} (no interval computed)."]
    bounds = f"{100 * level:.0f} % paired bootstrap interval [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"
    verdict = ("**is not measurably better than the random-init encoder**" if not interval.excludes_zero else
               "**beats the random-init encoder**" if interval.low > 0 else "**is worse than the random-init encoder**")
    return [f"The pre-trained encoder {verdict} under the same probe and recipe: {points}, {bounds}."]


LANGUAGE_TITLES = {"zero_shot": "Zero-shot classification (class prompts, no training)",
                   "retrieval": "Clip-caption retrieval (the split's own captions)",
                   "epic_mir": "EPIC-KITCHENS-100 multi-instance retrieval"}


def _fmt_metric(name: str, value: float, interval: Interval | None) -> str:
    """Ranks as they are, fractions in %, with the interval when there is one."""
    if "rank" in name:
        return f"{value:.1f}"
    return _fmt(value) if interval is None else _fmt_interval(interval)


def language_section(checkpoint: Path, results: list[Any], intervals: dict[str, dict[str, Interval]],
                     skipped: dict[str, str]) -> list[str]:
    """The report's language-space part: one table per evaluation (``LanguageResult``s) and what was skipped."""
    lines = ["", "## Language space", "", f"The pre-trained encoder `{checkpoint}`, frozen, with its language "
             "projector: clip embeddings against text embeddings, nothing trained on labels."]
    for result in results:
        found = intervals.get(result.protocol, {})
        gallery = "" if result.captions is None else f", {result.captions} distinct captions"
        lines += ["", f"### {LANGUAGE_TITLES[result.protocol]}: {result.clips} clips{gallery}", ""]
        lines += _table(["metric", "value (% unless a rank)"],
                        [[k, _fmt_metric(k, v, found.get(k))] for k, v in result.metrics.items()])
    if skipped:
        lines += [""] + [f"* {name} not scored: {why}" for name, why in skipped.items()]
    return lines


def excluded_clips(excluded: list[dict[str, Any]]) -> int:
    """Clips behind the exclusion rows (a row for a whole rejected video stands for all of its clips)."""
    return sum(e.get("clips", 1) for e in excluded)


def render_report(*, benchmark: str, checkpoint: str, checkpoint_path: str, protocol: str, views: str,
                  clips: int, scored: Scored, excluded: list[dict[str, str]], class_names: list[str],
                  figures: list[Path], history: list[dict[str, Any]], top_classes: int,
                  columns: dict[str, dict[str, Interval]], level: float | None,
                  gain: dict[str, Interval] | None = None, language: list[str] | None = None) -> str:
    """``columns``: title -> metric -> value with interval, one column per set of weights scored (the trained
    weights first); ``gain``: the trained weights minus the random-init baseline, paired; ``level``: the intervals'
    coverage (None: none computed); ``language``: the lines of :func:`language_section`."""
    lines = [f"# Evaluation: {benchmark}", "",
             f"* checkpoint `{checkpoint}` ({checkpoint_path}), protocol **{protocol}**",
             f"* {clips} clips scored, views {views} (temporal x spatial, probabilities averaged)",
             f"* **{excluded_clips(excluded)} clips of the split excluded** (rejected by the shard stage or undecodable): the "
             "metrics are over the scored clips only" if excluded else "* every clip of the split was scored",
             "", "## Metrics (%)", ""]
    if level is not None:
        lines += [f"Brackets: {100 * level:.0f} % percentile-bootstrap intervals over the scored clips (they cover the "
                  "choice of evaluation clips, not the training seed); the gain's interval is paired (same resampled "
                  "clips for both encoders).", ""]
    header = ["metric", *columns] + (["gain over random init"] if gain else [])
    lines += _table(header, [[k, *(_fmt_interval(c.get(k)) for c in columns.values())]
                             + ([_fmt_interval(gain.get(k))] if gain else []) for k in scored.metrics])
    if gain:
        lines += [""] + _gain_sentence(gain, level)
    lines += language or []
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
