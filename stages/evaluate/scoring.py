"""Which metrics each task reports, computed from view-averaged probabilities.

single/multi-label: top-1, top-5, mean-class accuracy (mAP for multi-label); ``epic_action``: action top-1/5 and
verb/noun top-1/5 from marginalised action probabilities (D15); ``epic_verb_noun``: verb/noun top-1/5 from their
heads, action top-1 = both correct (VideoMAE/MOFO convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fils_model.finetune_config import HeadConfig
from stages.evaluate import metrics as m


@dataclass
class Scored:
    metrics: dict[str, float]
    per_class: dict[str, np.ndarray]  # head (or verb/noun) -> per-class recall (or AP), NaN where absent
    confusion: dict[str, np.ndarray]  # head -> (K, K) counts (single-label heads)


def _single(name: str, scores: np.ndarray, labels: np.ndarray, out: Scored, tables: bool) -> None:
    prefix = "" if name == "label" else f"{name}_"
    out.metrics[f"{prefix}top1"] = m.topk_accuracy(scores, labels, 1)
    if scores.shape[1] > 5:
        out.metrics[f"{prefix}top5"] = m.topk_accuracy(scores, labels, 5)
    out.metrics[f"{prefix}mean_class_accuracy"] = m.mean_class_accuracy(scores, labels)
    if not tables:
        return
    out.confusion[name] = m.confusion_matrix(labels, scores.argmax(axis=1), scores.shape[1])
    out.per_class[name] = m.per_class_recall(out.confusion[name])


def score(head: HeadConfig, scores: dict[str, np.ndarray], targets: dict[str, np.ndarray],
          action_verbs: np.ndarray | None = None, action_nouns: np.ndarray | None = None, tables: bool = True
          ) -> Scored:
    """The task's metrics; with ``tables`` also the per-class scores and confusion matrices (the bootstrap, which
    scores a thousand resampled clip sets, needs only the metrics)."""
    if not targets or not len(next(iter(targets.values()))):
        raise ValueError("nothing to score: no labelled, decodable clip in the evaluation split")
    out = Scored({}, {}, {})
    if head.task == "multi_label":
        out.metrics["mAP"] = m.mean_average_precision(scores["label"], targets["label"])
        if not tables:
            return out
        keep = targets["label"].sum(axis=1) > 0
        out.per_class["label"] = np.array([m.average_precision(scores["label"][keep, c], targets["label"][keep, c])
                                           for c in range(head.num_classes)])
        return out
    for name in scores:
        _single(name, scores[name], targets[name], out, tables)
    if head.task == "epic_action":
        if action_verbs is None or action_nouns is None:
            raise ValueError("epic_action scoring needs the action -> verb/noun map saved with the classifier")
        verb_of, noun_of = np.asarray(action_verbs), np.asarray(action_nouns)
        labels = targets["action"]
        _single("verb", m.marginalise(scores["action"], verb_of, head.num_verbs), verb_of[labels], out, tables)
        _single("noun", m.marginalise(scores["action"], noun_of, head.num_nouns), noun_of[labels], out, tables)
    elif head.task == "epic_verb_noun":
        both = (scores["verb"].argmax(1) == targets["verb"]) & (scores["noun"].argmax(1) == targets["noun"])
        out.metrics["action_top1"] = float(both.mean())
    return out
