"""Which metrics each task reports, computed from view-averaged probabilities.

single/multi-label: top-1, top-5, mean-class accuracy (mAP for multi-label); ``epic_action``: action top-1/5 and
verb/noun top-1/5 from marginalised action probabilities (D15); ``epic_verb_noun``: verb/noun top-1/5 from their
heads, action top-1 = both correct (VideoMAE/MOFO convention).

Every metric is computed from per-clip outcomes (:class:`ClipOutcomes`: the hits of each clip, its class), so the
bootstrap scores a resampled clip set by indexing them, without ranking the scores again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fils_model.finetune_config import HeadConfig
from stages.evaluate import metrics as m

HEADLINE = ("top1", "action_top1", "mAP")  # the metric a benchmark is summarised by: the first one it reports


Term = tuple[Literal["mean", "class_mean", "mAP"], tuple[np.ndarray, ...]]


@dataclass
class ClipOutcomes:
    """Metric -> how to compute it from per-clip arrays: ``mean`` of per-clip hits, ``class_mean`` of (hits,
    labels), ``mAP`` of (scores, targets); in the order the task reports its metrics."""

    terms: dict[str, Term] = field(default_factory=dict)

    def metrics(self, pick: np.ndarray | None = None) -> dict[str, float]:
        """Every metric on all clips, or on the clips at the indices ``pick`` (repeats allowed). mAP of a resampled
        set without any positive is NaN; on all clips that is an error."""
        out = {}
        for name, (kind, arrays) in self.terms.items():
            arrays = arrays if pick is None else tuple(a[pick] for a in arrays)
            if kind == "mean":
                out[name] = float(arrays[0].mean())
            elif kind == "class_mean":
                out[name] = m.class_mean(*arrays)
            else:
                try:
                    out[name] = m.mean_average_precision(*arrays)
                except ValueError:
                    if pick is None:
                        raise
                    out[name] = float("nan")
        return out


def _single_label_heads(head: HeadConfig, scores: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                        action_verbs: np.ndarray | None, action_nouns: np.ndarray | None
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Head -> (scores, labels), with the verb and noun marginals of an ``epic_action`` head."""
    heads = {name: (scores[name], targets[name]) for name in scores}
    if head.task == "epic_action":
        if action_verbs is None or action_nouns is None:
            raise ValueError("epic_action scoring needs the action -> verb/noun map saved with the classifier")
        verb_of, noun_of = np.asarray(action_verbs), np.asarray(action_nouns)
        labels = targets["action"]
        heads["verb"] = m.marginalise(scores["action"], verb_of, head.num_verbs), verb_of[labels]
        heads["noun"] = m.marginalise(scores["action"], noun_of, head.num_nouns), noun_of[labels]
    return heads


def _check_targets(targets: dict[str, np.ndarray]) -> None:
    if not targets or not len(next(iter(targets.values()))):
        raise ValueError("nothing to score: no labelled, decodable clip in the evaluation split")


def _outcomes(head: HeadConfig, heads: dict[str, tuple[np.ndarray, np.ndarray]], scores: dict[str, np.ndarray],
              targets: dict[str, np.ndarray]) -> ClipOutcomes:
    out = ClipOutcomes()
    for name, (head_scores, labels) in heads.items():
        prefix = "" if name == "label" else f"{name}_"
        top1 = m.topk_hits(head_scores, labels, 1)
        out.terms[f"{prefix}top1"] = ("mean", (top1,))
        if head_scores.shape[1] > 5:
            out.terms[f"{prefix}top5"] = ("mean", (m.topk_hits(head_scores, labels, 5),))
        out.terms[f"{prefix}mean_class_accuracy"] = ("class_mean", (top1, labels))
    if head.task == "epic_verb_noun":
        both = (scores["verb"].argmax(1) == targets["verb"]) & (scores["noun"].argmax(1) == targets["noun"])
        out.terms["action_top1"] = ("mean", (both,))
    return out


@dataclass
class Scored:
    metrics: dict[str, float]
    per_class: dict[str, np.ndarray]  # head (or verb/noun) -> per-class recall (or AP), NaN where absent
    confusion: dict[str, np.ndarray]  # head -> (K, K) counts (single-label heads)
    outcomes: ClipOutcomes  # what ``metrics`` were computed from: a resampled clip set is scored from them


def score(head: HeadConfig, scores: dict[str, np.ndarray], targets: dict[str, np.ndarray],
          action_verbs: np.ndarray | None = None, action_nouns: np.ndarray | None = None) -> Scored:
    """The task's metrics with per-class scores and confusion matrices."""
    _check_targets(targets)
    per_class: dict[str, np.ndarray] = {}
    confusion: dict[str, np.ndarray] = {}
    if head.task == "multi_label":
        outcomes = ClipOutcomes({"mAP": ("mAP", (scores["label"], targets["label"]))})
        keep = targets["label"].sum(axis=1) > 0
        per_class["label"] = np.array([m.average_precision(scores["label"][keep, c], targets["label"][keep, c])
                                       for c in range(head.num_classes)])
    else:
        heads = _single_label_heads(head, scores, targets, action_verbs, action_nouns)
        outcomes = _outcomes(head, heads, scores, targets)
        for name, (head_scores, labels) in heads.items():
            confusion[name] = m.confusion_matrix(labels, head_scores.argmax(axis=1), head_scores.shape[1])
            per_class[name] = m.per_class_recall(confusion[name])
    return Scored(outcomes.metrics(), per_class, confusion, outcomes)
