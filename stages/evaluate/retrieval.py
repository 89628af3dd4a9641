"""Video-text retrieval with one caption per clip (MSR-VTT style): ``similarity[i, j]`` scores clip ``i`` against
caption ``j`` and the match of query ``i`` is gallery item ``i``. :func:`recall_at_k` gives Recall@k, median and
mean rank for one direction; :func:`retrieval_metrics` both (clip-to-caption on the rows, caption-to-clip on the
transpose). Captions that repeat word for word (automatic captions and narrations do) go through
:func:`grouped_retrieval_metrics`: distinct captions, and every clip a caption describes counts as its match.
Metrics are fractions in ``[0, 1]``; ranks are 1-based. The EPIC-KITCHENS-100 protocol, with graded relevance, is
:mod:`stages.evaluate.epic_mir`.

**Ties.** Exactly equal similarities are resolved *pessimistically* by default: a tie counts against the query. The
published reference codes do not agree on ties (CLIP4Clip's ``compute_metrics`` locates the match by value in the
sorted row, so a tied row contributes one entry per tied position and the denominators stop being the number of
queries; frozen-in-time's ``t2v_metrics`` breaks ties optimistically and its ``v2t_metrics`` averages the tied
positions; the EPIC evaluation sorts with ``np.argsort``, whose order among ties numpy leaves unspecified). With
continuous similarities ties do not occur and every convention gives the same numbers; they matter for degenerate
embeddings, where an optimistic rule would give a collapsed model (a constant similarity matrix) a perfect score.
So the pessimistic rule is the default, and ``ties="optimistic"`` (and, for the ranks, ``"average"``, as
frozen-in-time's ``v2t_metrics``) reproduce the others.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

RankTies = Literal["pessimistic", "optimistic", "average"]


def check_similarity(similarity: np.ndarray, name: str = "similarity") -> np.ndarray:
    """``similarity`` as a finite, real, non-empty 2-D array, or a ValueError saying what is wrong."""
    sim = np.asarray(similarity)
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(f"{name} must be a non-empty 2-D (queries x gallery) matrix; got shape {sim.shape}")
    if not np.issubdtype(sim.dtype, np.number) or np.issubdtype(sim.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued; got dtype {sim.dtype}")
    if not np.all(np.isfinite(sim)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(sim)))} non-finite entries (NaN or inf)")
    return sim


def relevant_ranks(similarity: np.ndarray, relevant: np.ndarray, ties: RankTies = "pessimistic") -> np.ndarray:
    """1-based rank of each query's best-scored relevant gallery item, when a query may have several (a caption
    shared word for word by several clips: finding any of them is a hit).

    Args:
        similarity: ``(Q, G)`` matrix, ``similarity[q, g]`` = score of gallery item ``g`` for query ``q`` (higher is
            more similar). Must be finite.
        relevant: ``(Q, G)`` boolean, at least one True per row.
        ties: how *irrelevant* gallery items scored exactly equal to the best relevant one are counted. With ``g``
            irrelevant items strictly above it and ``t`` equal to it: ``"pessimistic"`` (default) -> ``g + t + 1``;
            ``"optimistic"`` -> ``g + 1`` (frozen-in-time's ``t2v_metrics``, and CLIP4Clip's ``compute_metrics``
            whenever there are no ties); ``"average"`` -> ``g + t / 2 + 1``, the mean over the tied positions
            (frozen-in-time's ``v2t_metrics``), possibly half-integer.

    Returns:
        ``(Q,)`` float64 array of ranks in ``[1, G]``.
    """
    sim = check_similarity(similarity)
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != sim.shape:
        raise ValueError(f"relevant must have the similarity matrix's shape {sim.shape}; got {relevant.shape}")
    if not relevant.any(axis=1).all():
        raise ValueError(f"query {int(np.argmin(relevant.any(axis=1)))} has no relevant gallery item")
    best = np.where(relevant, sim, -np.inf).max(axis=1, keepdims=True)
    greater = np.sum(~relevant & (sim > best), axis=1)
    tied = np.sum(~relevant & (sim == best), axis=1)
    if ties == "pessimistic":
        ranks = greater + tied + 1.0
    elif ties == "optimistic":
        ranks = greater + 1.0
    elif ties == "average":
        ranks = greater + tied / 2 + 1.0
    else:
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'average'; got {ties!r}")
    return ranks.astype(np.float64)


def match_ranks(similarity: np.ndarray, ties: RankTies = "pessimistic") -> np.ndarray:
    """:func:`relevant_ranks` when query ``i``'s one match is gallery item ``i`` (a square ``(N, N)`` matrix):
    ``"pessimistic"`` counts every other item scored >= the match ahead of it."""
    sim = check_similarity(similarity)
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(f"one caption per clip needs a square similarity matrix; got shape {sim.shape}")
    return relevant_ranks(sim, np.eye(len(sim), dtype=bool), ties)


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}")
    return ks


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"r{k}": fraction of ranks <= k, "median_rank", "mean_rank"}`` of 1-based ranks (recalls are fractions)."""
    out = {f"r{int(k)}": float(np.mean(ranks <= k)) for k in _check_ks(ks)}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                ties: RankTies = "pessimistic") -> dict[str, float]:
    """Recall@k, median rank and mean rank for one retrieval direction, one caption per clip.

    Query ``i`` (row ``i``) has exactly one correct gallery item, column ``i``. Its rank ``r_i`` is computed by
    :func:`match_ranks` (1-based; ties per ``ties``, pessimistic by default: rank = number of gallery items whose
    similarity is >= the match's).

    Args:
        similarity: ``(N, N)`` matrix, rows = queries, columns = gallery, higher = more similar.
        ks: the cut-offs, positive integers; a ``k`` beyond ``N`` gives recall 1.
        ties: tie convention, see :func:`relevant_ranks`.

    Returns:
        ``{"r{k}": fraction of queries with r_i <= k for k in ks, "median_rank": median of r_i (the mean of the two
        middle ranks when N is even), "mean_rank": mean of r_i}``. Recalls are fractions in ``[0, 1]``, not percent.
    """
    _check_ks(ks)
    return rank_summary(match_ranks(similarity, ties), ks)


def retrieval_metrics(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                      ties: RankTies = "pessimistic") -> dict[str, float]:
    """:func:`recall_at_k` in both directions for a clip x caption similarity matrix (one caption per clip).

    Args:
        similarity: ``(N, N)``, rows = clips, columns = captions; caption ``i`` describes clip ``i``.
        ks, ties: as in :func:`recall_at_k`.

    Returns:
        Clip-to-caption metrics on the rows, prefixed ``v2t_`` (``v2t_r1``, ``v2t_r5``, ``v2t_r10``,
        ``v2t_median_rank``, ``v2t_mean_rank``), and caption-to-clip metrics on the transpose, prefixed ``t2v_``.
    """
    sim = check_similarity(similarity)
    out = {f"v2t_{key}": value for key, value in recall_at_k(sim, ks, ties).items()}
    out.update({f"t2v_{key}": value for key, value in recall_at_k(sim.T, ks, ties).items()})
    return out


def grouped_retrieval_metrics(similarity: np.ndarray, caption_of_clip: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                              ties: RankTies = "pessimistic") -> dict[str, float]:
    """Both directions when captions repeat word for word (automatic captions and narrations do): ``similarity`` is
    clips x *distinct* captions and ``caption_of_clip[i]`` the column of clip ``i``'s caption.

    Clip to caption: each clip's one correct caption among the distinct ones (a duplicate is not a competitor).
    Caption to clip: each distinct caption is one query, and any clip it describes is a correct answer
    (:func:`relevant_ranks`). Keys as :func:`retrieval_metrics`.
    """
    sim = check_similarity(similarity)
    caption_of_clip = np.asarray(caption_of_clip)
    if (caption_of_clip.shape != (sim.shape[0],) or not np.issubdtype(caption_of_clip.dtype, np.integer)
            or not ((caption_of_clip >= 0) & (caption_of_clip < sim.shape[1])).all()
            or not np.isin(np.arange(sim.shape[1]), caption_of_clip).all()):
        raise ValueError(f"caption_of_clip must give each of the {sim.shape[0]} clips the index of one of the "
                         f"{sim.shape[1]} captions, and every caption must describe a clip")
    relevant = caption_of_clip[:, None] == np.arange(sim.shape[1])[None, :]
    out = {f"v2t_{key}": value for key, value in rank_summary(relevant_ranks(sim, relevant, ties), ks).items()}
    out.update({f"t2v_{key}": value for key, value in rank_summary(relevant_ranks(sim.T, relevant.T, ties),
                                                                   ks).items()})
    return out
