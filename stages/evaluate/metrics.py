"""The standard action-recognition metrics, written out so that every number is auditable.

No offsets, no re-mapping (docs/method.md B6/B7): top-k accuracy, mean-class accuracy (mean per-class recall over
classes present in the ground truth), confusion matrix, Charades mAP (LaViLa's ``charades_map``: clips without any
positive are ignored, AP averaged over classes with positives) and EPIC-KITCHENS verb/noun scores obtained by
marginalising action probabilities.
"""
from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"scores must be (N, K) and labels (N, ...); got {scores.shape} and {labels.shape}")


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
    """Per sample: whether its true class is among the ``k`` highest scores (ties: the lower class index first)."""
    _check(scores, labels)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores."""
    return float(np.mean(topk_hits(scores, labels, k)))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    """Recall of every class; NaN for classes absent from the ground truth."""
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def class_mean(hits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes that occur in ``labels`` of the fraction of their samples with a hit."""
    support = np.bincount(labels)
    present = support > 0
    return float(np.mean(np.bincount(labels, weights=hits.astype(np.float64))[present] / support[present]))


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean of per-class recall over the classes that occur in ``labels`` (EGTEA's mean accuracy)."""
    return class_mean(topk_hits(scores, labels, 1), labels)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive (NaN without positives)."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Charades(-Ego) mAP: clips with no positive label are dropped, classes without positives are skipped."""
    _check(scores, targets)
    keep = targets.sum(axis=1) > 0
    aps = [average_precision(scores[keep, c], targets[keep, c]) for c in range(scores.shape[1])]
    valid = [ap for ap in aps if not np.isnan(ap)]
    if not valid:
        raise ValueError("mAP undefined: no class has a positive sample in the evaluation set")
    return float(np.mean(valid))


def marginal_matrix(action_to_class: np.ndarray, num_classes: int) -> np.ndarray:
    """``(A, C)`` 0/1 matrix mapping each action to its verb (or noun); -1 entries map to nothing."""
    matrix = np.zeros((len(action_to_class), num_classes), dtype=np.float64)
    known = action_to_class >= 0
    matrix[np.flatnonzero(known), action_to_class[known]] = 1.0
    return matrix


def marginalise(action_probs: np.ndarray, action_to_class: np.ndarray, num_classes: int) -> np.ndarray:
    """Verb (or noun) probabilities: the sum of the probabilities of the actions sharing each verb (noun)."""
    return action_probs @ marginal_matrix(action_to_class, num_classes)


def average_views(logits: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """``(N, V, K)`` logits of V views -> ``(N, K)`` mean of per-view softmax (sigmoid for multi-label)."""
    if multi_label:
        probs = 1.0 / (1.0 + np.exp(-logits))
    else:
        shifted = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs.mean(axis=1)
