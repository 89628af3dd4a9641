"""Retrieval metrics against brute-force references (explicit loops over queries and ranked positions, ties
included), hand-computed EPIC-KITCHENS-100 MIR cases, and the parsers of the official annotation files."""
import math
import statistics

import numpy as np
import pytest

from stages.evaluate import epic_mir, epic_mir_files, retrieval

# --------------------------------------------------------------------------------------------------------------
# Brute-force references: sort each query's gallery with Python's sorted() and walk the ranked list
# --------------------------------------------------------------------------------------------------------------


def _reference_rank(row, i, ties):
    """Position of item ``i`` after sorting by similarity descending, the match placed after (pessimistic) or
    before (optimistic) every item scored equal to it; "average" is the midpoint of the two."""
    def position(match_last):
        order = sorted(range(len(row)), key=lambda j: (-row[j], (j == i) == match_last))
        return order.index(i) + 1
    if ties == "pessimistic":
        return position(True)
    if ties == "optimistic":
        return position(False)
    return (position(True) + position(False)) / 2


def _reference_recall(sim, ks, ties):
    ranks = [_reference_rank(list(sim[i]), i, ties) for i in range(len(sim))]
    out = {f"r{k}": sum(1 for rank in ranks if rank <= k) / len(ranks) for k in ks}
    out["median_rank"] = statistics.median(ranks)
    out["mean_rank"] = statistics.fmean(ranks)
    return out


def _reference_order(sim_row, rel_row, ties):
    sign = 1 if ties == "pessimistic" else -1
    return sorted(range(len(sim_row)), key=lambda j: (-sim_row[j], sign * rel_row[j]))


def _reference_map(sim, rel, ties):
    aps = []
    for q in range(len(sim)):
        running, total, hits = 0.0, 0.0, 0
        for position, j in enumerate(_reference_order(sim[q], rel[q], ties), start=1):
            running += rel[q][j]  # the official numerator sums relevances, not hits
            if rel[q][j] == 1:
                total += running / position
                hits += 1
        aps.append(total / hits)
    return sum(aps) / len(aps)


def _reference_ndcg(sim, rel, ties):
    scores = []
    for q in range(len(sim)):
        k = sum(1 for value in rel[q] if value > 0)
        ranked = [rel[q][j] for j in _reference_order(sim[q], rel[q], ties)]
        ideal = sorted(rel[q], reverse=True)
        dcg = sum(ranked[p] / math.log2(p + 2) for p in range(k))
        idcg = sum(ideal[p] / math.log2(p + 2) for p in range(k))
        scores.append(dcg / idcg)
    return sum(scores) / len(scores)


def _reference_relevancy(vv, vn, tv, tn):
    def iou(a, b):
        return len(set(a) & set(b)) / len(set(a) | set(b))
    return [[(iou(vv[i], tv[j]) + iou(vn[i], tn[j])) / 2 for j in range(len(tv))] for i in range(len(vv))]


def _random_epic_case(seed, n_video=7, n_text=5):
    """Clips with random verb/noun sets; caption j takes clip j's classes and clips 5, 6 copy clips 0, 1, so every
    query in both directions has an item of relevance 1. Similarities drawn from 3 values: many ties."""
    rng = np.random.default_rng(seed)
    vv = [{int(rng.integers(0, 3))} for _ in range(n_video)]
    vn = [set(rng.choice(4, size=int(rng.integers(1, 3)), replace=False).tolist()) for _ in range(n_video)]
    vv[5], vn[5], vv[6], vn[6] = vv[0], vn[0], vv[1], vn[1]
    tv, tn = vv[:n_text], vn[:n_text]
    sim = rng.integers(0, 3, (n_video, n_text)).astype(np.float64)
    return sim, (vv, vn, tv, tn)


# --------------------------------------------------------------------------------------------------------------
# One caption per clip
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
@pytest.mark.parametrize("seed", range(4))
def test_recall_matches_brute_force_with_ties(seed, ties):
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 4, (9, 9)).astype(np.float64)  # few distinct values: ties everywhere
    got = retrieval.recall_at_k(sim, ks=(1, 2, 5, 20), ties=ties)
    assert got == pytest.approx(_reference_recall(sim.tolist(), (1, 2, 5, 20), ties))


def _reference_best_rank(row, relevant, ties):
    """Walk the gallery sorted by similarity (descending); irrelevant items tied with the best relevant one go
    before it (pessimistic) or after it (optimistic): the position of the first relevant item."""
    def position(relevant_last):
        order = sorted(range(len(row)), key=lambda j: (-row[j], relevant[j] == relevant_last))
        return next(p for p, j in enumerate(order, start=1) if relevant[j])
    if ties == "pessimistic":
        return position(True)
    if ties == "optimistic":
        return position(False)
    return (position(True) + position(False)) / 2


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
@pytest.mark.parametrize("seed", range(4))
def test_repeated_captions_match_brute_force(seed, ties):
    """Captions repeated word for word: one gallery item per distinct caption, and any clip it describes is a hit."""
    rng = np.random.default_rng(seed)
    caption_of_clip = np.array([0, 1, 1, 2, 0, 3, 1, 2, 4])  # 9 clips, 5 distinct captions
    sim = rng.integers(0, 4, (9, 5)).astype(np.float64)
    got = retrieval.grouped_retrieval_metrics(sim, caption_of_clip, ks=(1, 2, 5), ties=ties)
    relevant = [[caption_of_clip[i] == c for c in range(5)] for i in range(9)]
    v2t = [_reference_best_rank(list(sim[i]), relevant[i], ties) for i in range(9)]
    t2v = [_reference_best_rank(list(sim[:, c]), [relevant[i][c] for i in range(9)], ties) for c in range(5)]
    for prefix, ranks in (("v2t", v2t), ("t2v", t2v)):
        for k in (1, 2, 5):
            assert got[f"{prefix}_r{k}"] == pytest.approx(sum(r <= k for r in ranks) / len(ranks))
        assert got[f"{prefix}_median_rank"] == pytest.approx(statistics.median(ranks))
        assert got[f"{prefix}_mean_rank"] == pytest.approx(statistics.fmean(ranks))
    # Without repeats it is the one-caption-per-clip protocol.
    square = rng.normal(size=(6, 6))
    assert retrieval.grouped_retrieval_metrics(square, np.arange(6)) == pytest.approx(
        retrieval.retrieval_metrics(square))
    with pytest.raises(ValueError, match="every caption must describe a clip"):
        retrieval.grouped_retrieval_metrics(sim, np.zeros(9, dtype=int))


def test_recall_on_continuous_scores_is_the_same_for_every_tie_rule():
    sim = np.random.default_rng(9).normal(size=(12, 12))
    expected = _reference_recall(sim.tolist(), (1, 5, 10), "pessimistic")
    for ties in ("pessimistic", "optimistic", "average"):
        assert retrieval.recall_at_k(sim, ties=ties) == pytest.approx(expected)


def test_retrieval_metrics_both_directions_use_the_transpose():
    sim = np.array([[0.9, 0.8, 0.0],   # clip 0 finds caption 0 first
                    [0.95, 0.5, 0.1],  # clip 1: caption 0 above caption 1 -> rank 2
                    [0.0, 0.2, 0.3]])  # clip 2: rank 1
    got = retrieval.retrieval_metrics(sim, ks=(1, 5))
    # captions as queries (columns): caption 0 -> clip 1 (0.95) above clip 0 (0.9): rank 2; caption 1 -> clip 0
    # (0.8) above clip 1 (0.5): rank 2; caption 2 -> clip 2 first: rank 1
    assert got == pytest.approx({"v2t_r1": 2 / 3, "v2t_r5": 1.0, "v2t_median_rank": 1.0, "v2t_mean_rank": 4 / 3,
                                 "t2v_r1": 1 / 3, "t2v_r5": 1.0, "t2v_median_rank": 2.0, "t2v_mean_rank": 5 / 3})


def test_perfect_and_constant_similarity():
    assert retrieval.retrieval_metrics(np.eye(5))["v2t_r1"] == 1.0 and retrieval.retrieval_metrics(np.eye(5))["t2v_r1"] == 1.0
    constant = np.ones((4, 4))  # a collapsed model: pessimistic ties give it the worst rank, optimistic the best
    assert retrieval.recall_at_k(constant, ks=(1,)) == {"r1": 0.0, "median_rank": 4.0, "mean_rank": 4.0}
    assert retrieval.recall_at_k(constant, ks=(1,), ties="optimistic")["r1"] == 1.0
    assert retrieval.recall_at_k(constant, ks=(1,), ties="average")["mean_rank"] == 2.5


def test_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        retrieval.recall_at_k(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        retrieval.recall_at_k(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive integers"):
        retrieval.recall_at_k(np.eye(2), ks=(0,))
    with pytest.raises(ValueError, match="ties"):
        retrieval.recall_at_k(np.eye(2), ties="random")


# --------------------------------------------------------------------------------------------------------------
# EPIC-KITCHENS-100 MIR
# --------------------------------------------------------------------------------------------------------------


def test_epic_relevancy_hand_computed():
    # verbs {1} vs {1}: IoU 1; nouns {2, 3} vs {3}: IoU 1/2 -> 0.5 * 1 + 0.5 * 0.5 = 0.75
    # verbs {1} vs {2}: IoU 0; nouns {2, 3} vs {2, 3}: IoU 1 -> 0.5
    # nothing shared (verbs {1} vs {4}, nouns {2, 3} vs {36}) -> 0
    # nouns [36, 36] are the set {36}: identical to {36} -> exactly 1
    got = epic_mir.epic_relevancy([{1}, {4}], [{2, 3}, [36, 36]], [{1}, {2}, {4}], [{3}, {2, 3}, {36}])
    np.testing.assert_allclose(got, [[0.75, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert got[1, 2] == 1.0  # exact, so the mAP counts it as relevant


@pytest.mark.parametrize("seed", range(3))
def test_epic_relevancy_matches_brute_force(seed):
    _, sets = _random_epic_case(seed)
    np.testing.assert_allclose(epic_mir.epic_relevancy(*sets), _reference_relevancy(*sets), rtol=0, atol=1e-12)


def test_epic_relevancy_rejects_empty_sets():
    with pytest.raises(ValueError, match=r"text_nouns\[0\] is empty"):
        epic_mir.epic_relevancy([{1}], [{2}], [{1}], [set()])


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("seed", range(5))
def test_epic_map_and_ndcg_match_brute_force_with_ties(seed, ties):
    sim, sets = _random_epic_case(seed)
    rel = epic_mir.epic_relevancy(*sets)
    s, g = sim.tolist(), rel.tolist()
    st, gt = sim.T.tolist(), rel.T.tolist()
    assert epic_mir.epic_map(sim, rel, ties) == pytest.approx(_reference_map(s, g, ties))
    assert epic_mir.epic_ndcg(sim, rel, ties) == pytest.approx(_reference_ndcg(s, g, ties))
    got = epic_mir.epic_mir_metrics(sim, rel, ties)
    v2t_map, t2v_map = _reference_map(s, g, ties), _reference_map(st, gt, ties)
    v2t_ndcg, t2v_ndcg = _reference_ndcg(s, g, ties), _reference_ndcg(st, gt, ties)
    assert got == pytest.approx({"v2t_map": v2t_map, "t2v_map": t2v_map, "avg_map": (v2t_map + t2v_map) / 2,
                                 "v2t_ndcg": v2t_ndcg, "t2v_ndcg": t2v_ndcg, "avg_ndcg": (v2t_ndcg + t2v_ndcg) / 2})


def test_epic_continuous_scores_do_not_depend_on_the_tie_rule():
    sim, sets = _random_epic_case(11)
    sim = sim + np.random.default_rng(11).normal(scale=0.01, size=sim.shape)
    rel = epic_mir.epic_relevancy(*sets)
    assert epic_mir.epic_mir_metrics(sim, rel, "pessimistic") == epic_mir.epic_mir_metrics(sim, rel, "optimistic")


REL_3x3 = np.array([[1.0, 0.5, 0.0],
                    [0.5, 1.0, 0.25],
                    [0.0, 0.25, 1.0]])
SIM_3x3 = np.array([[0.2, 0.9, 0.1],
                    [0.8, 0.7, 0.3],
                    [0.1, 0.3, 0.3]])
L3 = math.log2(3)


def test_epic_3x3_by_hand():
    # v2t (rows query columns), relevances in retrieval order:
    #   q0: 0.9 -> 0.5, 0.2 -> 1, 0.1 -> 0        = [0.5, 1, 0]
    #   q1: 0.8 -> 0.5, 0.7 -> 1, 0.3 -> 0.25     = [0.5, 1, 0.25]
    #   q2: 0.3 tie (col 1: 0.25, col 2: 1), then 0.1 -> 0; pessimistic puts the less relevant first = [0.25, 1, 0]
    # official AP: precision at each hit (R == 1) = sum of the relevances retrieved so far / position:
    #   q0: hit at 2: (0.5 + 1) / 2 = 0.75; q1: 0.75; q2: (0.25 + 1) / 2 = 0.625
    #   (a binary AP would give 0.5, 0.5, 0.5: partially relevant items raise the official precision)
    assert epic_mir.epic_average_precisions(SIM_3x3, REL_3x3) == pytest.approx([0.75, 0.75, 0.625])
    assert epic_mir.epic_map(SIM_3x3, REL_3x3) == pytest.approx((0.75 + 0.75 + 0.625) / 3)
    # optimistic: q2 = [1, 0.25, 0] -> AP 1
    assert epic_mir.epic_map(SIM_3x3, REL_3x3, ties="optimistic") == pytest.approx((0.75 + 0.75 + 1) / 3)
    # nDCG: K = number of non-zero relevances; DCG over the first K positions, gain = relevance, discount log2(i + 1)
    #   q0: K = 2, DCG = 0.5/1 + 1/log2(3), IDCG = 1/1 + 0.5/log2(3)
    #   q1: K = 3, DCG = 0.5 + 1/log2(3) + 0.25/2, IDCG = 1 + 0.5/log2(3) + 0.25/2
    #   q2: K = 2, DCG = 0.25 + 1/log2(3), IDCG = 1 + 0.25/log2(3)
    expected = [(0.5 + 1 / L3) / (1 + 0.5 / L3),
                (0.5 + 1 / L3 + 0.125) / (1 + 0.5 / L3 + 0.125),
                (0.25 + 1 / L3) / (1 + 0.25 / L3)]
    assert epic_mir.epic_ndcgs(SIM_3x3, REL_3x3) == pytest.approx(expected)
    assert epic_mir.epic_ndcg(SIM_3x3, REL_3x3) == pytest.approx(sum(expected) / 3)
    # t2v (transposes): caption j ranks the clips by column j of SIM, relevances column j of REL (symmetric here):
    #   q0: (0.2, 0.8, 0.1) -> [0.5, 1, 0]: AP 0.75
    #   q1: (0.9, 0.7, 0.3) -> [0.5, 1, 0.25]: AP 0.75
    #   q2: (0.1, 0.3, 0.3): clips 1 and 2 tie with relevances 0.25 and 1 -> pessimistic [0.25, 1, 0]: AP 0.625
    # so the three ranked lists, hence AP and nDCG, are those of v2t
    got = epic_mir.epic_mir_metrics(SIM_3x3, REL_3x3)
    assert got["t2v_map"] == pytest.approx((0.75 + 0.75 + 0.625) / 3)
    assert got["avg_map"] == pytest.approx((got["v2t_map"] + got["t2v_map"]) / 2)
    assert got["t2v_ndcg"] == pytest.approx(sum(expected) / 3)  # the same three ranked lists as v2t


def test_epic_ndcg_reproduces_the_official_self_test():
    # the example and value asserted at the bottom of the official nDCG.py (JPoSE / EPIC-KITCHENS MIR evaluation)
    sim = np.array([[1.0, 0.7, 0.4, 0.0], [0.3, 0.9, 0.6, 0.1], [0.2, 0.5, 0.8, 0.4]])
    rel = np.array([[1.0, 0.5, 0.25, 0.0], [0.0, 1.0, 0.4, 0.0], [0.5, 0.3, 1.0, 0.0]])
    assert epic_mir.epic_ndcg(sim, rel) == pytest.approx(0.9371789900735429, rel=1e-12)


def test_epic_perfect_similarity_scores_one():
    _, sets = _random_epic_case(3)
    rel = epic_mir.epic_relevancy(*sets)
    got = epic_mir.epic_mir_metrics(rel.copy(), rel)  # ranking by the relevance itself
    assert got == pytest.approx({key: 1.0 for key in got})


def test_epic_rejects_queries_without_relevant_items_and_bad_relevancy():
    rel = np.array([[1.0, 0.0], [0.5, 0.0]])  # query 1 has no item with R == 1
    with pytest.raises(ValueError, match="first: query 1"):
        epic_mir.epic_map(np.eye(2), rel)
    with pytest.raises(ValueError, match="non-zero relevance"):
        epic_mir.epic_ndcg(np.eye(2), np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        epic_mir.epic_map(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        epic_mir.epic_map(np.eye(2), 2 * np.eye(2))


# --------------------------------------------------------------------------------------------------------------
# Official files
# --------------------------------------------------------------------------------------------------------------

TEST_HEADER = ("uid,narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
               "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")
TEST_ROWS = [
    "7,P90_01_0,P90,P90_01,00:00:01.250,00:00:00.50,00:00:02.75,25,138,open fridge,open,3,fridge,12,['fridge'],[12]",
    '8,P90_01_1,P90,P90_01,00:00:04.000,00:00:03.10,00:00:06.20,155,310,put milk into fridge,put-into,5,milk,30,'
    "\"['milk', 'fridge']\",\"[30, 12]\"",
    "9,P90_01_2,P90,P90_01,00:01:10.500,00:01:09.00,00:01:12.40,3450,3620,open fridge,open,3,fridge,12,['fridge'],[12]",
]


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_test_file(tmp_path):
    clips = epic_mir_files.read_epic_retrieval_test(_write(tmp_path, "EPIC_100_retrieval_test.csv", [TEST_HEADER, *TEST_ROWS]))
    assert [c.narration_id for c in clips] == ["P90_01_0", "P90_01_1", "P90_01_2"]
    second = clips[1]
    assert second == epic_mir_files.EpicRetrievalClip(
        uid=8, narration_id="P90_01_1", participant_id="P90", video_id="P90_01", narration_timestamp="00:00:04.000",
        start_timestamp="00:00:03.10", stop_timestamp="00:00:06.20", start_frame=155, stop_frame=310,
        narration="put milk into fridge", verb="put-into", verb_class=5, noun="milk", noun_class=30,
        all_nouns=("milk", "fridge"), all_noun_classes=(30, 12))
    assert clips[2].start_seconds == pytest.approx(69.0) and clips[2].stop_seconds == pytest.approx(72.4)


def test_read_test_file_without_uid_column(tmp_path):
    header = TEST_HEADER.split(",", 1)[1]
    rows = [row.split(",", 1)[1] for row in TEST_ROWS]
    clips = epic_mir_files.read_epic_retrieval_test(_write(tmp_path, "t.csv", [header, *rows]))
    assert [c.uid for c in clips] == [None, None, None] and clips[0].all_noun_classes == (12,)


def test_read_sentence_file_and_build_relevancy(tmp_path):
    clips = epic_mir_files.read_epic_retrieval_test(_write(tmp_path, "EPIC_100_retrieval_test.csv", [TEST_HEADER, *TEST_ROWS]))
    path = _write(tmp_path, "EPIC_100_retrieval_test_sentence.csv",
                  ["narration_id,narration", "P90_01_0,open fridge", "P90_01_1,put milk into fridge"])
    sentences = epic_mir_files.read_epic_retrieval_sentences(path)
    assert sentences == [epic_mir_files.EpicRetrievalSentence("P90_01_0", "open fridge"),
                         epic_mir_files.EpicRetrievalSentence("P90_01_1", "put milk into fridge")]
    legacy = _write(tmp_path, "legacy.csv", ["index,sentence", "P90_01_0,open fridge", "P90_01_1,put milk into fridge"])
    assert epic_mir_files.read_epic_retrieval_sentences(legacy) == sentences
    # rows: clips (open/fridge, put-into/milk+fridge, open/fridge); columns: the two captions
    # clip 1 vs caption 0: verbs 5 vs 3 -> 0, nouns {30, 12} vs {12} -> 1/2: R = 0.25
    np.testing.assert_allclose(epic_mir.epic_relevancy_from_annotations(clips, sentences),
                               [[1.0, 0.25], [0.25, 1.0], [1.0, 0.25]])
    with pytest.raises(ValueError, match="'P90_01_9'"):
        epic_mir.epic_relevancy_from_annotations(clips, [epic_mir_files.EpicRetrievalSentence("P90_01_9", "x")])


def test_unparsable_cell_names_file_row_and_column(tmp_path):
    bad = TEST_ROWS[1].replace('"[30, 12]"', '"[30, twelve]"')
    path = _write(tmp_path, "EPIC_100_retrieval_test.csv", [TEST_HEADER, TEST_ROWS[0], bad])
    with pytest.raises(ValueError) as error:
        epic_mir_files.read_epic_retrieval_test(path)
    message = str(error.value)
    assert str(path) in message and "row 2 (line 3)" in message and "'all_noun_classes'" in message
    assert "list literal of integers" in message and "[30, twelve]" in message


@pytest.mark.parametrize("column, old, new, expected", [
    ("start_frame", ",25,", ",2x5,", "an integer"),
    ("start_timestamp", "00:00:00.50", "0.5s", "a timestamp"),
    ("all_nouns", "['fridge']", "fridge", "a non-empty list literal of strings"),
    ("all_noun_classes", ",[12]", ",[]", "a non-empty list literal of integers"),
    ("narration", "open fridge", "", "a non-empty value"),
])
def test_other_bad_cells(tmp_path, column, old, new, expected):
    path = _write(tmp_path, "t.csv", [TEST_HEADER, TEST_ROWS[0].replace(old, new, 1)])
    with pytest.raises(ValueError, match=rf"row 1 \(line 2\), column '{column}': expected {expected}"):
        epic_mir_files.read_epic_retrieval_test(path)


def test_missing_column_short_row_and_duplicates(tmp_path):
    header = TEST_HEADER.replace(",verb_class", "")
    path = _write(tmp_path, "EPIC_100_retrieval_test.csv", [header])
    with pytest.raises(ValueError, match=r"EPIC_100_retrieval_test\.csv: missing column\(s\) \['verb_class'\]"):
        epic_mir_files.read_epic_retrieval_test(path)
    path = _write(tmp_path, "short.csv", [TEST_HEADER, TEST_ROWS[0].rsplit(",", 1)[0]])
    with pytest.raises(ValueError, match=r"short\.csv: row 1 \(line 2\), column 'all_noun_classes'"):
        epic_mir_files.read_epic_retrieval_test(path)
    path = _write(tmp_path, "dup.csv", ["narration_id,narration", "P90_01_0,a", "P90_01_0,b"])
    with pytest.raises(ValueError, match=r"dup\.csv: row 2 \(line 3\), column 'narration_id'.*row 1 has it"):
        epic_mir_files.read_epic_retrieval_sentences(path)
    with pytest.raises(ValueError, match="empty file"):
        epic_mir_files.read_epic_retrieval_sentences(_write(tmp_path, "empty.csv", []))
