"""Video-text retrieval with one caption per clip (MSR-VTT style): ``similarity[i, j]`` scores clip ``i`` against
caption ``j`` and the match of query ``i`` is gallery item ``i``. :func:`recall_at_k` gives Recall@k, median and
mean rank for one direction; :func:`retrieval_metrics` both (clip-to-caption on the rows, caption-to-clip on the
transpose). Metrics are fractions in ``[0, 1]``; ranks are 1-based. The EPIC-KITCHENS-100 protocol, with graded
relevance, is :mod:`stages.evaluate.epic_mir`.

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


def match_ranks(similarity: np.ndarray, ties: RankTies = "pessimistic") -> np.ndarray:
    """1-based rank of each query's match when query ``i``'s match is gallery item ``i``.

    Args:
        similarity: ``(N, N)`` matrix, ``similarity[i, j]`` = score of gallery item ``j`` for query ``i`` (higher is
            more similar). Must be square and finite.
        ties: how gallery items scored *exactly* equal to the match are counted. With ``g`` items strictly above
            the match and ``t`` other items equal to it: ``"pessimistic"`` (default) -> ``g + t + 1`` (the number of
            items scored >= the match: every tie is ranked ahead of the match); ``"optimistic"`` -> ``g + 1``
            (frozen-in-time's ``t2v_metrics``, and CLIP4Clip's ``compute_metrics`` whenever there are no ties);
            ``"average"`` -> ``g + t / 2 + 1``, the mean over the tied positions (frozen-in-time's ``v2t_metrics``),
            possibly half-integer.

    Returns:
        ``(N,)`` float64 array of ranks in ``[1, N]``.
    """
    sim = check_similarity(similarity)
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(f"one caption per clip needs a square similarity matrix; got shape {sim.shape}")
    match = np.diagonal(sim)[:, None]
    greater = np.sum(sim > match, axis=1)
    tied = np.sum(sim == match, axis=1) - 1  # the match itself is not a tie
    if ties == "pessimistic":
        ranks = greater + tied + 1.0
    elif ties == "optimistic":
        ranks = greater + 1.0
    elif ties == "average":
        ranks = greater + tied / 2 + 1.0
    else:
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'average'; got {ties!r}")
    return ranks.astype(np.float64)


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                ties: RankTies = "pessimistic") -> dict[str, float]:
    """Recall@k, median rank and mean rank for one retrieval direction, one caption per clip.

    Query ``i`` (row ``i``) has exactly one correct gallery item, column ``i``. Its rank ``r_i`` is computed by
    :func:`match_ranks` (1-based; ties per ``ties``, pessimistic by default: rank = number of gallery items whose
    similarity is >= the match's).

    Args:
        similarity: ``(N, N)`` matrix, rows = queries, columns = gallery, higher = more similar.
        ks: the cut-offs, positive integers; a ``k`` beyond ``N`` gives recall 1.
        ties: tie convention, see :func:`match_ranks`.

    Returns:
        ``{"r{k}": fraction of queries with r_i <= k for k in ks, "median_rank": median of r_i (the mean of the two
        middle ranks when N is even), "mean_rank": mean of r_i}``. Recalls are fractions in ``[0, 1]``, not percent.
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}")
    ranks = match_ranks(similarity, ties)
    out = {f"r{int(k)}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


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
