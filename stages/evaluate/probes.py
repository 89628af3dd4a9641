"""Probe sweeps on the frozen-feature bank, with the setting chosen on held-out training clips.

Every setting (learning rate x weight decay) is trained side by side in one pass over the training features
(``fils_model.probe_sweep``) on the training clips outside a held-out part; the setting with the best headline
metric on the held-out part wins, is trained again on every training clip, and only that probe is scored on the
evaluation split. The held-out part is chosen by a hash of each clip's source video (clips of one video are all
held out or all fitted: neighbouring windows would otherwise flatter settings that memorise), so every checkpoint
is judged on the same clips and a rerun chooses the same way. The evaluation split never chooses anything.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.probe_sweep import AttentiveHeads, LinearHeads, ProbeSetting, train_probe_sweep
from stages.evaluate.feature_bank import Features
from stages.evaluate.metrics import average_views
from stages.evaluate.scoring import HEADLINE, Scored, score

ProbeKind = Literal["linear", "attentive"]
Resolve = Callable[[int], FinetuneRecipe]  # training clips -> the recipe with its epochs turned into steps


def held_out(groups: Sequence[str], fraction: float) -> np.ndarray:
    """True for the clips in the held-out part: those whose group (source video) hashes below ``fraction`` of the
    hash range."""
    return np.array([int.from_bytes(hashlib.sha256(g.encode()).digest()[:8], "big") < fraction * 2**64
                     for g in groups], dtype=bool)


def _inputs(features: Features, kind: ProbeKind) -> torch.Tensor:
    """``(clips, views, ...)``: pooled features for linear probes, every token for attentive ones."""
    if kind == "linear":
        return features.pooled
    if features.tokens is None:
        raise ValueError("attentive probes read the encoder's tokens: set evaluate.bank.tokens: true")
    return features.tokens.float()


def _make_probe(kind: ProbeKind, dim: int, head: HeadConfig) -> Callable[[], nn.Module]:
    return (lambda: LinearHeads(dim, head)) if kind == "linear" else (lambda: AttentiveHeads(dim, head))


@torch.no_grad()
def view_scores(probe: nn.Module, inputs: torch.Tensor, head: HeadConfig, chunk: int = 1024
                ) -> dict[str, np.ndarray]:
    """Per clip, the probabilities of each head averaged over the clip's views (``inputs``: clips, views, ...),
    ``chunk`` clips at a time."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(inputs), chunk):
        block = inputs[start:start + chunk]
        for name, value in probe(block.flatten(0, 1)).items():
            logits = value.float().reshape(*block.shape[:2], -1).numpy()
            parts.setdefault(name, []).append(average_views(logits, head.task == "multi_label"))
    return {name: np.concatenate(values) for name, values in parts.items()}


def headline(metrics: dict[str, float]) -> float:
    return metrics[next(name for name in HEADLINE if name in metrics)]


@dataclass
class ProbeOutcome:
    scored: Scored  # the chosen probe on the evaluation split
    chosen: ProbeSetting
    held_out: dict[str, float]  # setting label -> headline metric on the held-out training clips
    train_clips: int
    test_clips: int  # the labelled clips of the evaluation split that were scored


def probe_sweep(train: Features, test: Features, head: HeadConfig, resolve: Resolve,
                settings: Sequence[ProbeSetting], holdout: float, kind: ProbeKind = "linear",
                action_verbs: np.ndarray | None = None, action_nouns: np.ndarray | None = None) -> ProbeOutcome:
    """Choose a setting on held-out training clips, retrain it on all of them, score it on ``test``."""
    index, targets = train.labelled(head)
    inputs = _inputs(train, kind)[index, 0]  # the training bank has one view per clip
    videos = [train.clips[i].get("source_path") or train.keys[i] for i in index]
    held = torch.from_numpy(held_out(videos, holdout))
    if held.all() or not held.any():
        raise ValueError(f"the {len(index)} labelled training clips of {len(set(videos))} videos cannot be split into "
                         f"a fit and a held-out part at evaluate.sweep.probes.holdout={holdout}: more training "
                         "videos are needed")
    make = _make_probe(kind, inputs.shape[-1], head)
    fit = ~held
    probes = train_probe_sweep(make, inputs[fit], {k: v[fit] for k, v in targets.items()},
                               resolve(int(fit.sum())), settings)
    held_targets = Features.scoring_targets({k: v[held] for k, v in targets.items()})
    choice = {}
    for setting, probe in zip(settings, probes):
        scores = view_scores(probe, inputs[held][:, None], head)
        choice[setting.label] = headline(score(head, scores, held_targets, action_verbs, action_nouns).metrics)
    chosen = max(settings, key=lambda s: choice[s.label])  # ties: the first listed
    (final,) = train_probe_sweep(make, inputs, targets, resolve(len(index)), [chosen])
    test_index, test_targets = test.labelled(head)
    scores = view_scores(final, _inputs(test, kind)[test_index], head)
    scored = score(head, scores, Features.scoring_targets(test_targets), action_verbs, action_nouns)
    return ProbeOutcome(scored, chosen, choice, len(index), len(test_index))
