"""How good the captions are, per shard, before pre-training consumes them: the ways automatic captions fail
silently (empty, looping, one caption for a whole shard, the same caption for every clip of a video) measured,
reported (``quality.parquet``, ``quality.md``, ``quality.png``) and gated by ``captions.quality``.

Metrics of a group of clips (a shard, or all clips):
  * ``empty_rate``: clips without a usable caption (any status but ``ok``);
  * ``duplicate_rate``: captioned clips whose caption another clip of the group has too (exact text);
  * ``top_caption_share``: the most frequent caption's share of the captioned clips;
  * ``distinct_2``: distinct word bigrams over all bigrams of the group's captions (1: no bigram repeats);
  * ``looping_rate``: captions that repeat one of their own word trigrams ("a man holding a man holding ...");
  * length in words (mean, 5th and 95th percentile);
  * ``neighbour_cosine``: the mean cosine between the embeddings of consecutive captioned clips of one video
    (by start time), over the pairs whose first clip is in the group: near 1 when a video's clips all get one
    caption.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from stages.captions.config import CaptionQualityConfig
from stages.captions.tables import STATUS_OK

ALL = "(all)"
GATED = ("empty_rate", "top_caption_share", "neighbour_cosine")  # metric -> threshold `max_<metric>`


@dataclass
class GroupQuality:
    shard: str
    clips: int
    captioned: int
    empty_rate: float
    duplicate_rate: float
    top_caption_share: float
    distinct_2: float
    looping_rate: float
    words_mean: float
    words_p5: float
    words_p95: float
    neighbour_pairs: int
    neighbour_cosine: float  # NaN without pairs


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _loops(words: list[str]) -> bool:
    trigrams = _ngrams(words, 3)
    return len(set(trigrams)) < len(trigrams)


def _group(shard: str, statuses: list[str], captions: list[str], cosines: list[float]) -> GroupQuality:
    texts = [c.strip().lower() for c, s in zip(captions, statuses) if s == STATUS_OK]
    words = [t.split() for t in texts]
    counts = Counter(texts)
    bigrams = [b for w in words for b in _ngrams(w, 2)]
    lengths = np.array([len(w) for w in words], dtype=np.float64)
    n = len(texts)
    return GroupQuality(
        shard=shard, clips=len(statuses), captioned=n,
        empty_rate=1 - n / len(statuses) if statuses else 0.0,
        duplicate_rate=sum(c for c in counts.values() if c > 1) / n if n else 0.0,
        top_caption_share=max(counts.values()) / n if n else 0.0,
        distinct_2=len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        looping_rate=sum(_loops(w) for w in words) / n if n else 0.0,
        words_mean=float(lengths.mean()) if n else 0.0,
        words_p5=float(np.percentile(lengths, 5)) if n else 0.0,
        words_p95=float(np.percentile(lengths, 95)) if n else 0.0,
        neighbour_pairs=len(cosines), neighbour_cosine=float(np.mean(cosines)) if cosines else math.nan)


def neighbour_cosines(keys: list[str], videos: dict[str, tuple[str, float]], ok: np.ndarray,
                      vectors: np.ndarray) -> dict[str, float]:
    """First clip's key -> cosine with the next captioned clip of the same video (``videos``: key -> (video,
    start)). Embeddings of captioned clips are L2-normalised (stages.captions.tables)."""
    row = {key: i for i, key in enumerate(keys)}
    by_video: dict[str, list[tuple[float, str]]] = {}
    for key in keys:
        if ok[row[key]] and key in videos:
            video, start = videos[key]
            by_video.setdefault(video, []).append((start, key))
    cosines = {}
    for clips in by_video.values():
        clips.sort()
        for (_, first), (_, second) in zip(clips, clips[1:]):
            cosines[first] = float(vectors[row[first]] @ vectors[row[second]])
    return cosines


def measure(captions: pa.Table, embeddings: pa.Table, videos: dict[str, tuple[str, float]]) -> list[GroupQuality]:
    """One row per shard (in name order), then the row of all clips; both tables sorted by key."""
    keys = captions.column("key").to_pylist()
    statuses = captions.column("status").to_pylist()
    texts = captions.column("caption").to_pylist()
    shards = captions.column("shard").to_pylist()
    vectors = np.array(embeddings.column("embedding").to_pylist(), dtype=np.float32)
    cosines = neighbour_cosines(keys, videos, np.array([s == STATUS_OK for s in statuses]), vectors)
    by_shard: dict[str, list[int]] = {}
    for i, shard in enumerate(shards):
        by_shard.setdefault(shard, []).append(i)
    rows = []
    for shard, members in sorted(by_shard.items()):
        rows.append(_group(shard, [statuses[i] for i in members], [texts[i] for i in members],
                           [cosines[keys[i]] for i in members if keys[i] in cosines]))
    rows.append(_group(ALL, statuses, texts, list(cosines.values())))
    return rows


def gate_applies(cfg: CaptionQualityConfig, source: str) -> bool:
    return cfg.gate == "always" or (cfg.gate == "generated" and source == "videoblip")


def violations(rows: list[GroupQuality], cfg: CaptionQualityConfig) -> list[str]:
    """What fails the gate: one line per shard and metric past its threshold. Shards with fewer than ``min_clips``
    clips are reported, not judged, and so is the neighbour cosine of fewer than ``min_clips`` pairs (a long video
    whose windows share its one narration is a couple of pairs in a large shard)."""
    failed = []
    for row in rows:
        if row.shard == ALL or row.clips < cfg.min_clips:
            continue
        for metric in GATED:
            limit, value = getattr(cfg, f"max_{metric}"), getattr(row, metric)
            if metric == "neighbour_cosine" and row.neighbour_pairs < cfg.min_clips:
                continue
            if limit is not None and not math.isnan(value) and value > limit:
                failed.append(f"{row.shard}: {metric} {value:.2f} > captions.quality.max_{metric} {limit}")
    return failed


def _captioned(captions: pa.Table) -> list[str]:
    return [c.strip().lower() for c, s in zip(captions.column("caption").to_pylist(),
                                               captions.column("status").to_pylist()) if s == STATUS_OK]


def top_captions(captions: pa.Table, limit: int) -> list[tuple[str, int]]:
    return Counter(_captioned(captions)).most_common(limit)


def caption_lengths(captions: pa.Table) -> list[int]:
    """Words of every usable caption."""
    return [len(text.split()) for text in _captioned(captions)]


def as_records(rows: list[GroupQuality]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
