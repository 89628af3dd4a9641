"""EPIC-KITCHENS-100 multi-instance retrieval (MIR): every clip/caption pair has a graded semantic relevance
(:func:`epic_relevancy`, the mean of the verb-class IoU and the noun-class IoU); :func:`epic_map` and
:func:`epic_ndcg` score one direction exactly as the challenge's evaluation code does, and :func:`epic_mir_metrics`
reports both directions and their average the way the leaderboard does. Metrics are fractions in ``[0, 1]``.
Among exactly tied similarities the less relevant items come first by default (ties count against the model; see
:mod:`stages.evaluate.retrieval`); the official files are read by :mod:`stages.evaluate.epic_mir_files`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from stages.evaluate.epic_mir_files import EpicRetrievalClip, EpicRetrievalSentence
from stages.evaluate.retrieval import check_similarity

OrderTies = Literal["pessimistic", "optimistic"]


def _class_sets(sets: Sequence[Iterable[int]], name: str) -> list[frozenset[int]]:
    out = []
    for i, classes in enumerate(sets):
        members = frozenset(classes)
        if not members:
            raise ValueError(f"{name}[{i}] is empty: the IoU of two class sets needs at least one class in each")
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in members):
            raise ValueError(f"{name}[{i}] must hold integer class ids; got {sorted(members, key=repr)!r}")
        out.append(members)
    return out


def _iou(left: list[frozenset[int]], right: list[frozenset[int]], rows: slice) -> np.ndarray:
    """IoU of every set in ``left[rows]`` with every set in ``right``, via 0/1 membership matrices (exact counts)."""
    classes = {c: n for n, c in enumerate(sorted(set().union(*left[rows], *right)))}
    a = np.zeros((len(left[rows]), len(classes)))
    b = np.zeros((len(right), len(classes)))
    for i, members in enumerate(left[rows]):
        a[i, [classes[c] for c in members]] = 1.0
    for j, members in enumerate(right):
        b[j, [classes[c] for c in members]] = 1.0
    intersection = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - intersection
    return intersection / union


def epic_relevancy(video_verbs: Sequence[Iterable[int]], video_nouns: Sequence[Iterable[int]],
                   text_verbs: Sequence[Iterable[int]], text_nouns: Sequence[Iterable[int]]) -> np.ndarray:
    """The EPIC-KITCHENS-100 MIR semantic relevance of every clip/caption pair.

    ``R(v, t) = (|V_v ∩ V_t| / |V_v ∪ V_t| + |N_v ∩ N_t| / |N_v ∪ N_t|) / 2``: the mean of the verb-class IoU and the
    noun-class IoU, as in the challenge's relevancy files (JPoSE's ``create_relevancy_files.py``: verb IoU of the
    single ``verb_class``, noun IoU of the sets of ``all_noun_classes``, then their average). Class lists are taken
    as sets, so repeated ids (the file has e.g. ``[36, 36]``) count once. A caption's classes are those of the clip
    row its narration was taken from (see :func:`epic_relevancy_from_annotations`). Identical class sets give
    exactly ``1.0``, which is what :func:`epic_map` counts as relevant.

    Args:
        video_verbs, video_nouns: per clip, its verb classes and its noun classes (each non-empty).
        text_verbs, text_nouns: per caption, likewise.

    Returns:
        ``(N_video, N_text)`` float64 matrix with values in ``[0, 1]``.
    """
    if len(video_verbs) != len(video_nouns) or len(text_verbs) != len(text_nouns):
        raise ValueError(f"verb and noun lists must pair up: {len(video_verbs)} vs {len(video_nouns)} clips, "
                         f"{len(text_verbs)} vs {len(text_nouns)} captions")
    vv, vn = _class_sets(video_verbs, "video_verbs"), _class_sets(video_nouns, "video_nouns")
    tv, tn = _class_sets(text_verbs, "text_verbs"), _class_sets(text_nouns, "text_nouns")
    out = np.empty((len(vv), len(tv)))
    step = 1024  # bounds the intermediates to a block of rows (the official test set is 9668 x 3843)
    for start in range(0, len(vv), step):
        rows = slice(start, start + step)
        out[rows] = (_iou(vv, tv, rows) + _iou(vn, tn, rows)) / 2
    return out


def _relevancy(relevancy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rel = np.asarray(relevancy, dtype=np.float64)
    if rel.shape != shape:
        raise ValueError(f"relevancy must have the similarity matrix's shape {shape}; got {rel.shape}")
    if not np.all(np.isfinite(rel)) or rel.min() < 0 or rel.max() > 1:
        raise ValueError("relevancy must be finite and within [0, 1]")
    return rel


def _ranked_relevance(similarity: np.ndarray, relevancy: np.ndarray, ties: OrderTies) -> np.ndarray:
    """Each row's relevances in retrieval order: similarity descending; within exactly tied similarities the less
    relevant first (``"pessimistic"``) or the more relevant first (``"optimistic"``), so the result depends on the
    two matrices alone, not on the gallery's order."""
    sim = check_similarity(similarity)
    rel = _relevancy(relevancy, sim.shape)
    if ties == "pessimistic":
        order = np.lexsort((rel, -sim), axis=1)
    elif ties == "optimistic":
        order = np.lexsort((-rel, -sim), axis=1)
    else:
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic'; got {ties!r}")
    return np.take_along_axis(rel, order, axis=1)


def _no_relevant(count: np.ndarray, what: str) -> None:
    empty = np.flatnonzero(count == 0)
    if empty.size:
        raise ValueError(f"{empty.size} queries have no gallery item with {what} (first: query {empty[0]}); "
                         "the metric is undefined for them (the official code would return NaN)")


def epic_average_precisions(similarity: np.ndarray, relevancy: np.ndarray,
                            ties: OrderTies = "pessimistic") -> np.ndarray:
    """Per-query average precision of the EPIC-KITCHENS-100 MIR protocol (one direction).

    Reproduces the official ``calculate_mAP`` exactly, including how graded relevance enters:

    * the **relevant** items of a query are those with relevance exactly ``1`` (identical verb and noun classes);
      partially relevant items (``0 < R < 1``) are never a "hit" and are not counted in the denominator;
    * the precision at the rank ``k`` of each relevant item is the **sum of the relevances** (not the count of
      relevant items) of the first ``k`` retrieved items, divided by ``k``: partially relevant items ranked ahead of
      a hit raise that hit's precision by their relevance;
    * ``AP = sum over hits of precision@k / number of items with R == 1``.

    Items are ranked by similarity, descending; exact ties per ``ties`` (see :func:`_ranked_relevance`; the official
    code leaves the order of ties to ``np.argsort``).

    Args:
        similarity: ``(Q, G)``, rows = queries, columns = gallery, higher = more similar.
        relevancy: ``(Q, G)`` relevance in ``[0, 1]`` (e.g. :func:`epic_relevancy`).
        ties: ``"pessimistic"`` (default) or ``"optimistic"``.

    Returns:
        ``(Q,)`` float64 AP per query. Raises ``ValueError`` if a query has no item with relevance 1.
    """
    ranked = _ranked_relevance(similarity, relevancy, ties)
    hits = ranked == 1.0
    count = hits.sum(axis=1)
    _no_relevant(count, "relevance exactly 1")
    precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
    return np.where(hits, precision, 0.0).sum(axis=1) / count


def epic_map(similarity: np.ndarray, relevancy: np.ndarray, ties: OrderTies = "pessimistic") -> float:
    """Mean over queries of :func:`epic_average_precisions` (the official MIR mAP of one direction, a fraction)."""
    return float(np.mean(epic_average_precisions(similarity, relevancy, ties)))


def epic_ndcgs(similarity: np.ndarray, relevancy: np.ndarray, ties: OrderTies = "pessimistic") -> np.ndarray:
    """Per-query normalised discounted cumulative gain of the EPIC-KITCHENS-100 MIR protocol (one direction).

    Reproduces the official ``calculate_nDCG``: with ``K`` = the number of gallery items with relevance ``> 0`` for
    the query, only the first ``K`` retrieved positions count,

    ``DCG = sum_{i=1..K} R(item ranked i) / log2(i + 1)`` (linear gain, base-2 log, position ``i`` is 1-based),

    and the ideal ``IDCG`` is the same sum over the query's relevances sorted in descending order (so also its ``K``
    largest, i.e. all its non-zero relevances). ``nDCG = DCG / IDCG``. Ranking and ties as in
    :func:`epic_average_precisions`; the pessimistic order gives the lowest nDCG over all orders of the ties.

    Returns:
        ``(Q,)`` float64 nDCG per query. Raises ``ValueError`` if a query has no item with non-zero relevance.
    """
    ranked = _ranked_relevance(similarity, relevancy, ties)
    ideal = -np.sort(-np.asarray(relevancy, dtype=np.float64), axis=1)
    count = np.sum(ideal > 0, axis=1)
    _no_relevant(count, "non-zero relevance")
    positions = np.arange(1, ranked.shape[1] + 1)
    weights = np.where(positions[None, :] <= count[:, None], 1.0 / np.log2(positions + 1.0), 0.0)
    return (ranked * weights).sum(axis=1) / (ideal * weights).sum(axis=1)


def epic_ndcg(similarity: np.ndarray, relevancy: np.ndarray, ties: OrderTies = "pessimistic") -> float:
    """Mean over queries of :func:`epic_ndcgs` (the official MIR nDCG of one direction, a fraction)."""
    return float(np.mean(epic_ndcgs(similarity, relevancy, ties)))


def epic_mir_metrics(similarity_v2t: np.ndarray, relevancy: np.ndarray,
                     ties: OrderTies = "pessimistic") -> dict[str, float]:
    """The EPIC-KITCHENS-100 MIR challenge numbers: mAP and nDCG clip-to-caption, caption-to-clip and their mean.

    Args:
        similarity_v2t: ``(N_video, N_text)``, rows = clips, columns = captions.
        relevancy: ``(N_video, N_text)``, e.g. :func:`epic_relevancy` or the official relevancy pickle.
        ties: as in :func:`epic_average_precisions`.

    Returns:
        ``v2t_map`` / ``v2t_ndcg`` on the matrices as given (clips query captions), ``t2v_map`` / ``t2v_ndcg`` on
        their transposes (captions query clips), ``avg_map`` / ``avg_ndcg`` = the plain mean of the two directions,
        all fractions (the leaderboard shows them x100).
    """
    sim = check_similarity(similarity_v2t, "similarity_v2t")
    rel = _relevancy(relevancy, sim.shape)
    v2t_map, t2v_map = epic_map(sim, rel, ties), epic_map(sim.T, rel.T, ties)
    v2t_ndcg, t2v_ndcg = epic_ndcg(sim, rel, ties), epic_ndcg(sim.T, rel.T, ties)
    return {"v2t_map": v2t_map, "t2v_map": t2v_map, "avg_map": (v2t_map + t2v_map) / 2,
            "v2t_ndcg": v2t_ndcg, "t2v_ndcg": t2v_ndcg, "avg_ndcg": (v2t_ndcg + t2v_ndcg) / 2}


def epic_relevancy_from_annotations(clips: Sequence[EpicRetrievalClip],
                                    sentences: Sequence[EpicRetrievalSentence]) -> np.ndarray:
    """:func:`epic_relevancy` of parsed test clips (rows, file order) against parsed captions (columns, file order).

    A clip's verbs are ``{verb_class}`` and its nouns ``set(all_noun_classes)``; a caption takes the classes of the
    clip row named by its ``narration_id`` (in the official tooling each unique narration takes the classes of the
    first row that has it, and the sentence file's ``narration_id`` is that row).
    """
    by_id = {clip.narration_id: clip for clip in clips}
    missing = [s.narration_id for s in sentences if s.narration_id not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} captions name a narration_id absent from the clips (first: {missing[0]!r})")
    sources = [by_id[s.narration_id] for s in sentences]
    return epic_relevancy([{c.verb_class} for c in clips], [set(c.all_noun_classes) for c in clips],
                          [{c.verb_class} for c in sources], [set(c.all_noun_classes) for c in sources])
