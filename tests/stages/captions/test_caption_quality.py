"""The caption quality metrics against values worked out by hand, and the gate's thresholds."""
import math

import numpy as np
import pyarrow as pa
import pytest

from stages.captions.config import CaptionQualityConfig
from stages.captions.quality import ALL, gate_applies, measure, neighbour_cosines, violations


def _tables(rows: list[tuple[str, str, str, list[float]]]) -> tuple[pa.Table, pa.Table]:
    """(key, shard, caption, embedding) rows; an empty caption is a clip without a usable caption."""
    captions = pa.table({"key": [r[0] for r in rows], "shard": [r[1] for r in rows], "caption": [r[2] for r in rows],
                         "status": ["ok" if r[2] else "empty: no text" for r in rows]})
    embeddings = pa.table({"key": [r[0] for r in rows], "embedding": [r[3] for r in rows]})
    return captions, embeddings


def test_metrics_of_a_degenerate_and_a_healthy_shard():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    captions, embeddings = _tables([
        ("a0", "s0", "a man cuts bread", e1), ("a1", "s0", "a man cuts bread", e1),
        ("a2", "s0", "a man cuts bread", e1), ("a3", "s0", "", [0.0, 0.0]),
        ("b0", "s1", "open the drawer", e1), ("b1", "s1", "take a knife", e2),
        ("b2", "s1", "a man holding a man holding a man", e2),
    ])
    videos = {"a0": ("v1", 0.0), "a1": ("v1", 1.0), "a2": ("v1", 2.0), "a3": ("v1", 3.0),
              "b0": ("v2", 0.0), "b1": ("v2", 1.0), "b2": ("v3", 0.0)}
    s0, s1, everything = measure(captions, embeddings, videos)
    assert (s0.shard, s0.clips, s0.captioned, s0.empty_rate) == ("s0", 4, 3, 0.25)
    assert s0.duplicate_rate == 1.0 and s0.top_caption_share == 1.0
    assert s0.distinct_2 == pytest.approx(3 / 9)  # 3 distinct bigrams among 3 x 3
    assert (s0.neighbour_pairs, s0.neighbour_cosine) == (2, 1.0)  # a0->a1, a1->a2 (a3 has no caption)
    assert s0.words_mean == 4.0 and s0.looping_rate == 0.0
    assert s1.duplicate_rate == 0.0 and s1.top_caption_share == pytest.approx(1 / 3)
    assert s1.distinct_2 == pytest.approx(7 / 11)  # the looping caption's 7 bigrams are 3 distinct ones
    assert s1.looping_rate == pytest.approx(1 / 3)
    assert (s1.neighbour_pairs, s1.neighbour_cosine) == (1, 0.0)  # b0->b1 only: b2 is another video
    assert everything.shard == ALL and everything.clips == 7 and everything.neighbour_pairs == 3
    assert everything.neighbour_cosine == pytest.approx(2 / 3)


def test_neighbours_follow_start_time_not_key_order():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    cosines = neighbour_cosines(["k0", "k1", "k2"], {"k0": ("v", 2.0), "k1": ("v", 0.0), "k2": ("v", 1.0)},
                                np.array([True, True, True]), vectors)
    assert cosines == {"k1": pytest.approx(0.8), "k2": pytest.approx(0.6)}  # k1 -> k2 -> k0


def test_the_gate_judges_large_enough_shards_against_each_threshold():
    captions, embeddings = _tables([(f"k{i}", "s0", "same words", [1.0, 0.0]) for i in range(12)]
                                   + [(f"m{i}", "s1", "", [0.0, 0.0]) for i in range(3)])
    rows = measure(captions, embeddings, {f"k{i}": ("v", float(i)) for i in range(12)})
    cfg = CaptionQualityConfig()
    assert violations(rows, cfg) == [
        "s0: top_caption_share 1.00 > captions.quality.max_top_caption_share 0.5",
        "s0: neighbour_cosine 1.00 > captions.quality.max_neighbour_cosine 0.98"]  # s1: 3 clips, below min_clips
    assert "s1: empty_rate 1.00 > captions.quality.max_empty_rate 0.5" in violations(rows, CaptionQualityConfig(min_clips=3))
    assert violations(rows, CaptionQualityConfig(max_top_caption_share=None, max_neighbour_cosine=None)) == []
    assert violations(rows, CaptionQualityConfig(min_clips=12)) == [  # 12 clips, but 11 neighbouring pairs
        "s0: top_caption_share 1.00 > captions.quality.max_top_caption_share 0.5"]
    assert math.isnan(rows[1].neighbour_cosine)


@pytest.mark.parametrize(("gate", "source", "applies"), [
    ("generated", "videoblip", True), ("generated", "narration", False), ("generated", "file", False),
    ("always", "file", True), ("never", "videoblip", False)])
def test_which_captions_the_gate_judges(gate, source, applies):
    assert gate_applies(CaptionQualityConfig(gate=gate), source) is applies
