"""The caption quality report of a captions run: ``quality.parquet`` (the metrics of stages.captions.quality, a
row per shard and one of all clips), ``quality.md`` and ``quality.png`` (shown in the Prefect UI)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from stages.captions.config import CaptionQualityConfig  # noqa: E402
from stages.captions.quality import ALL, GATED, GroupQuality, as_records  # noqa: E402
from stages.captions.tables import write_parquet  # noqa: E402

QUALITY_FILE = "quality.parquet"
REPORT_FILE = "quality.md"
PLOT_FILE = "quality.png"
MAX_SHARD_ROWS = 40  # shards listed in the markdown (worst first); the Parquet has all


def _percent(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def _table(rows: list[GroupQuality]) -> list[str]:
    lines = ["| shard | clips | captioned | empty | duplicate | top caption | distinct-2 | looping | words: mean "
             "(p5–p95) | neighbour cosine (pairs) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cosine = "–" if math.isnan(r.neighbour_cosine) else f"{r.neighbour_cosine:.3f} ({r.neighbour_pairs})"
        lines.append(f"| {r.shard} | {r.clips} | {r.captioned} | {_percent(r.empty_rate)} | "
                     f"{_percent(r.duplicate_rate)} | {_percent(r.top_caption_share)} | {r.distinct_2:.3f} | "
                     f"{_percent(r.looping_rate)} | {r.words_mean:.1f} ({r.words_p5:.0f}–{r.words_p95:.0f}) | "
                     f"{cosine} |")
    return lines


def _plot(rows: list[GroupQuality], lengths: list[int], cfg: CaptionQualityConfig, path: Path) -> None:
    shards = [r for r in rows if r.shard != ALL]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.hist(lengths or [0], bins=range(0, max(lengths or [0]) + 2), color="tab:blue")
    left.set_xlabel("caption length (words)")
    left.set_ylabel("captioned clips")
    left.set_title("caption lengths")
    x = range(len(shards))
    for metric, colour in zip(GATED, ("tab:red", "tab:orange", "tab:purple")):
        right.plot(x, [getattr(r, metric) for r in shards], "o", ms=3, color=colour, label=metric)
        limit = getattr(cfg, f"max_{metric}")
        if limit is not None:
            right.axhline(limit, color=colour, lw=0.8, ls="--")
    right.set_xlabel("shard (name order)")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylim(-0.05, 1.05)
    right.set_title("per shard (dashed: the gate's thresholds)")
    right.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_quality_report(out_dir: Path, source: str, rows: list[GroupQuality], lengths: list[int],
                         top: list[tuple[str, int]], cfg: CaptionQualityConfig, gated: bool,
                         failed: list[str]) -> list[str]:
    """Write the three files into ``out_dir``; returns their names."""
    write_parquet(pa.Table.from_pylist(as_records(rows)), out_dir / QUALITY_FILE)
    _plot(rows, lengths, cfg, out_dir / PLOT_FILE)
    overall = rows[-1]
    shards = sorted((r for r in rows if r.shard != ALL), key=lambda r: (-r.top_caption_share, -r.empty_rate, r.shard))
    verdict = ("not applied (`captions.quality.gate: " + cfg.gate + "`, captions from `" + source + "`)" if not gated
               else f"**failed** ({len(failed)} finding(s))" if failed else "passed")
    thresholds = ", ".join(f"`max_{m}` {getattr(cfg, f'max_{m}')}" for m in GATED)
    lines = [f"# Caption quality ({source})", "",
             f"{overall.clips} clips in {len(shards)} shard(s), {overall.captioned} captioned. Gate: {verdict}; "
             f"thresholds per shard of at least {cfg.min_clips} clips: {thresholds}.", ""]
    lines += [f"- {line}" for line in failed] + ([""] if failed else [])
    lines += ["## All clips", "", *_table([overall]), "",
              f"## Shards ({min(len(shards), MAX_SHARD_ROWS)} of {len(shards)}, the most repetitive first)", "",
              *_table(shards[:MAX_SHARD_ROWS]), "", f"![caption quality]({PLOT_FILE})", "",
              "## Most frequent captions", "", "| caption | clips | share of captioned |", "|---|---|---|"]
    lines += [f"| {text or '(empty)'} | {count} | {_percent(count / max(1, overall.captioned))} |"
              for text, count in top]
    (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
    return [QUALITY_FILE, REPORT_FILE, PLOT_FILE]
